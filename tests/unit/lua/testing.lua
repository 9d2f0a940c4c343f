-- The shared part of the Lua unit tests, loaded with require "testing":
-- check() runs one named test and stops the file at its first failure,
-- eq() compares values, fixture() decodes a file from tests/fixtures.

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

function M.fixture_path(name) return root .. "/tests/fixtures/" .. name end

-- The decoded JSON of tests/fixtures/<name>; raises when it cannot be read.
function M.fixture(name)
  local f = assert(io.open(M.fixture_path(name), "rb"))
  local text = f:read("*a")
  f:close()
  return json.decode(text)
end

return M
