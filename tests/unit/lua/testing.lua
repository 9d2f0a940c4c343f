-- The shared part of the Lua unit tests, loaded with require "testing":
-- check() runs one named test and stops the file at its first failure,
-- eq() compares values, fixture() decodes a file from tests/fixtures,
-- lib_module() loads a module of plugins/lib the way a hook does, and
-- temp_dir() and write_file() lay out plugins folders for a test.

local json = require "hookd.json"

local M = {}

-- Runs fn as the test called name; an error in it ends the run with an
-- error naming the test.
function M.check(name, fn)
  local ok, err = pcall(fn)
  if not ok then error(name .. ": " .. tostring(err), 0) end
end

-- An eq function whose failure message is fmt (what, got, want).
local function eq_with(fmt)
  return function(got, want, what)
    if got ~= want then
      error(string.format(fmt, what or "value", tostring(got),
        tostring(want)), 2)
    end
  end
end

-- eq(got, want, what) raises "what: got G, want W" at the caller's line
-- unless got == want; eq_quoted quotes G and W (shows blanks exactly).
M.eq = eq_with("%s: got %s, want %s")
M.eq_quoted = eq_with("%s: got %q, want %q")

-- This file sits in tests/unit/lua; the fixtures are found from there.
local root = (debug.getinfo(1, "S").source:match("^@(.*)/") or ".")
  .. "/../../.."

-- The number of keys of a table.
function M.count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

function M.fixture_path(name) return root .. "/tests/fixtures/" .. name end

-- The decoded JSON of tests/fixtures/<name>; raises when it cannot be read.
function M.fixture(name)
  local f = assert(io.open(M.fixture_path(name), "rb"))
  local text = f:read("*a")
  f:close()
  return json.decode(text)
end

-- The module plugins/lib/<name>.lua, loaded as a hook loads it: through
-- the sandbox's require, in a hook's environment. Reading a global the
-- sandbox does not offer raises here (in a hook it would quietly be nil),
-- so a test that runs a module's code also shows it needs nothing more
-- than the sandbox gives. Returns the module and the environment.
function M.lib_module(name)
  local sandbox = require "hookd.sandbox"
  local env = sandbox.new_env("test", root .. "/plugins/lib")
  local base = getmetatable(env).__index
  setmetatable(base, { __index = function(_, key)
    error("global '" .. tostring(key) .. "' is not in the sandbox", 2)
  end })
  return env.require(name), env
end

-- A new empty folder under /tmp.
function M.temp_dir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -p '" .. path .. "'") == 0, "mkdir " .. path)
  return path
end

-- Writes text to path, making its folder first.
function M.write_file(path, text)
  local dir = path:match("^(.*)/[^/]*$")
  if dir then os.execute("mkdir -p '" .. dir .. "'") end
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

return M
