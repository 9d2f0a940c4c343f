-- The environment a hook script runs in: a safe subset of the standard
-- library, no files, sockets or processes, and no accidental globals.
local json = require "hookd.json"
local core = require "hookd.core"
local guard = require "hookd.guard"

local M = {}

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

local SAFE_GLOBALS = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select",
  "tonumber", "tostring", "type", "unpack", "xpcall", "rawequal", "rawget",
  "rawset", "rawlen", "setmetatable",
}

-- What hooks get as the json module: the codec without internals.
local hook_json = {
  decode = json.decode, encode = json.encode, null = json.null,
  array = json.array, object = json.object, is_array = json.is_array,
}

-- Strings share one metatable; a hook must not reach it to change the
-- string library for every other hook.
local function safe_getmetatable(v)
  if type(v) == "string" then return nil end
  return getmetatable(v)
end

local function make_log(hook_id)
  return function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    core.log("info", "hook", "hook=" .. hook_id .. " " ..
      table.concat(parts, " "))
  end
end

-- Compiles lib/<name>.lua of the plugins folder in env. Module names are
-- plain identifiers with dots for subfolders.
local function make_require(env, lib_dir, loaded)
  return function(name)
    if type(name) ~= "string" or not name:match("^[%w_]+[%w_.]*$") then
      error("require: invalid module name " .. tostring(name), 2)
    end
    if name == "json" then return hook_json end
    if loaded[name] ~= nil then return loaded[name] end
    local path = lib_dir .. "/" .. name:gsub("%.", "/") .. ".lua"
    local src, err = core.read_file(path)
    if src == nil then error("require '" .. name .. "': " .. err, 2) end
    local chunk, cerr = loadstring(src, "@" .. path)
    if chunk == nil then error(cerr, 2) end
    setfenv(guard.prepare(chunk), env)
    local value = chunk(name)
    if value == nil then value = true end
    loaded[name] = value
    return value
  end
end

-- Returns a fresh environment for hook hook_id. Assigning a global in it
-- raises an error; reading an unknown one gives nil.
function M.new_env(hook_id, lib_dir)
  local base = {}
  for _, name in ipairs(SAFE_GLOBALS) do base[name] = _G[name] end
  base.string = copy(string)
  base.string.dump = nil -- bytecode is for loaders, which hooks do not get
  base.table = copy(table)
  base.math = copy(math)
  base.os = {time = os.time, date = os.date, clock = os.clock}
  base.bit = copy(require "bit")
  base.json = hook_json
  base.getmetatable = safe_getmetatable
  base.log = make_log(hook_id)
  base.print = base.log
  base._VERSION = _VERSION
  local env = setmetatable({}, {
    __index = base,
    __newindex = function(_, key)
      error("assignment to global '" .. tostring(key) ..
        "' (declare it local)", 2)
    end,
  })
  base.require = make_require(env, lib_dir, {})
  base._G = env
  return env
end

-- Compiles src as chunkname in a new environment and runs it. Returns what
-- the script returned, or nil and "file:line: message".
function M.run(hook_id, chunkname, src, lib_dir)
  local chunk, err = loadstring(src, "@" .. chunkname)
  if chunk == nil then return nil, err end
  setfenv(guard.prepare(chunk), M.new_env(hook_id, lib_dir))
  local ok, result = guard.call(chunk, tostring)
  if not ok then return nil, result end
  return result
end

return M
