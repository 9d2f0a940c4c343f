-- CRM hook: clicks and unique clicks in the Customers database (111), with
-- the campaign's name, the subscriber's email and a unique id per event.
-- The CRM answers {"ok": true} when it took the batch.
return {
  name = "CRM: clicks",
  database = 111,
  actions = {"click", "uclick"},
  profile_fields = {"email", "_fname"},
  custom_data = {
    cname = "{{campaign_name}}",
    eventTime = "{{event_date_ymd}}",
    eventTimeUnix = "{{event_date_unix}}",
    id = "{{uuid}}",
    source = "{{database_name}} / {{message_name}}",
  },
  -- URL, token and success rule live in main.json, so this file is the
  -- same in every deployment.
  send = "crm",
}
