-- Validation of main.json: known keys with their types and defaults,
-- ${VAR} taken from the environment, paths made relative to the file.
local json = require "hookd.json"
local settings = require "hookd.settings"

local M = {}

local function is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v > -2^53 and v < 2^53
end

-- Each key: kind of value, default, and an optional extra check that
-- returns an error text or nil.
local KEYS = {
  listen = {kind = "string", default = "127.0.0.1:8765"},
  data_dir = {kind = "path", default = "data"},
  plugins_dir = {kind = "path", default = "plugins"},
  catalog = {kind = "path"},
  lua_dir = {kind = "path"},
  log_level = {kind = "string", default = "info", check = function(v)
    if v ~= "debug" and v ~= "info" and v ~= "warn" and v ~= "error" then
      return "must be one of debug, info, warn, error"
    end
  end},
  destinations = {kind = "object", default = {}},
  api_token = {kind = "string"},
  ingest_token = {kind = "string"},
  metrics_token = {kind = "string"},
  max_body_bytes = {kind = "integer", default = 16 * 1024 * 1024, min = 1},
  max_nesting_depth = {kind = "integer", default = 64, min = 1, max = 512},
  shutdown_grace_sec = {kind = "number", default = 10, min = 0},
  HOOK_RETRY_TIMES = {kind = "integer", default = 4, min = 0, max = 100},
  HOOK_RETRY_PERIOD_SEC = {kind = "number", default = 15, min = 0.001},
  HOOK_CONTENT_CLEANUP_HOURS = {kind = "number", default = 72, min = 0},
  history_days = {kind = "number", default = 30, min = 0},
  cleanup_interval_sec = {kind = "number", default = 60, min = 0.05,
    max = 86400},
  max_pending_bytes = {kind = "integer", default = 256 * 1024 * 1024,
    min = 1024 * 1024},
  hook_cpu_limit_ms = {kind = "integer", default = 50, min = 1, max = 60000},
  hook_memory_limit_mb = {kind = "integer", default = 64, min = 1,
    max = 65536},
  lua_memory_limit_mb = {kind = "integer", default = 1024, min = 16,
    max = 1048576},
  max_message_bytes = {kind = "integer", default = 1024 * 1024,
    min = 1024, max = 64 * 1024 * 1024},
  max_connections = {kind = "integer", default = 1024, min = 1, max = 65535},
  request_timeout_sec = {kind = "number", default = 60, min = 1, max = 3600},
}

-- Replaces ${NAME} in every string of v (recursively). Returns the new
-- value, or nil and an error naming the key path and the variable.
local function expand_env(v, path)
  if type(v) == "string" then
    local missing
    local out = v:gsub("%${([%w_]+)}", function(name)
      local value = os.getenv(name)
      if value == nil then missing = missing or name end
      return value or ""
    end)
    if missing then
      return nil, path .. ": environment variable " .. missing .. " is not set"
    end
    if out:find("${", 1, true) then
      return nil, path .. ": '${' must start ${NAME} (letters, digits, _)"
    end
    return out
  elseif type(v) == "table" then
    for k, item in pairs(v) do
      local out, err = expand_env(item, path .. "." .. tostring(k))
      if out == nil then return nil, err end
      v[k] = out
    end
  end
  return v
end

local function join(dir, p)
  if p:sub(1, 1) == "/" then return p end
  return dir .. "/" .. p
end

local function check_value(key, spec, v, config_dir)
  local kind = spec.kind
  if kind == "string" or kind == "path" then
    if type(v) ~= "string" or v == "" then
      return nil, key .. " must be a non-empty string"
    end
    if kind == "path" then v = join(config_dir, v) end
  elseif kind == "object" then
    if type(v) ~= "table" or json.is_array(v) then
      return nil, key .. " must be an object"
    end
  elseif kind == "integer" or kind == "number" then
    if type(v) ~= "number" or (kind == "integer" and not is_integer(v)) then
      return nil, key .. " must be " ..
        (kind == "integer" and "an integer" or "a number")
    end
    if (spec.min and v < spec.min) or (spec.max and v > spec.max) then
      return nil, string.format("%s must be between %s and %s", key,
        tostring(spec.min or "-inf"), tostring(spec.max or "inf"))
    end
  end
  if spec.check then
    local err = spec.check(v)
    if err then return nil, key .. " " .. err end
  end
  return v
end

-- Each destination must be complete send settings on its own, so a
-- mistake in one shows at start, not when a hook first uses it.
local function check_destinations(dests)
  for name, d in pairs(dests) do
    if type(d) ~= "table" or json.is_array(d) then
      return "destinations." .. name .. " must be an object"
    end
    local ok, err = settings.validate_destination(name, d)
    if not ok then return "destinations." .. name .. ": " .. err end
  end
end

-- Parses and validates the text of main.json. Returns the configuration
-- table with every key filled in, or nil and "key: reason".
function M.parse(text, config_dir)
  local raw, err = json.decode(text)
  if raw == nil then return nil, "not valid JSON: " .. err end
  if type(raw) ~= "table" or json.is_array(raw) then
    return nil, "the configuration must be a JSON object"
  end
  local cfg = {}
  for key, v in pairs(raw) do
    local spec = KEYS[key]
    if spec == nil then return nil, "unknown key '" .. tostring(key) .. "'" end
    if v ~= json.null then
      v, err = expand_env(v, key)
      if v == nil then return nil, err end
      v, err = check_value(key, spec, v, config_dir)
      if v == nil then return nil, err end
      cfg[key] = v
    end
  end
  for key, spec in pairs(KEYS) do
    if cfg[key] == nil and spec.default ~= nil then
      local d = spec.default
      cfg[key] = spec.kind == "path" and join(config_dir, d) or d
    end
  end
  err = check_destinations(cfg.destinations)
  if err then return nil, err end
  return cfg
end

return M
