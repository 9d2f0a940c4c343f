-- Warehouse hook: every delivery event of every database, in large
-- batches, for a data warehouse that loads JSON arrays as they come.
return {
  name = "Warehouse: deliveries",
  database = "all",
  actions = {
    "send", "deliv", "undeliv", "sbounce", "hbounce", "complain", "suppress",
    "send_sms", "deliv_sms", "undeliv_sms",
    "send_push", "deliv_push", "undeliv_push",
  },
  -- The destination comes from main.json; batching is this hook's own.
  send = {destination = "warehouse", batch_size = 500, timeout_sec = 2},
}
