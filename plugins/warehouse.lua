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
  send = {
    type = "http",
    url = "http://127.0.0.1:18766/warehouse",
    batch_size = 500,
    timeout_sec = 2,
    headers = {["X-Source"] = "hookd"},
  },
}
