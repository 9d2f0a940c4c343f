-- Tests for hookd.sandbox's require: modules of plugins/lib (and its
-- subfolders) load in the hook's environment, every module asked for is
-- recorded (also through other modules, also when missing), precompiled
-- bytecode is refused for modules and hooks, and bad names and loops fail
-- with a clear message.

-- Kept before the sandbox module removes it from the string library.
local dump = string.dump
local sandbox = require "hookd.sandbox"
local testing = require "testing"

local check, eq = testing.check, testing.eq

local root = testing.temp_dir()
local lib = root .. "/lib"

local function module(rel, text) testing.write_file(lib .. "/" .. rel, text) end

-- Runs src as hook h; returns the result, the error and the required set.
-- (Tests write `local m = require(...) return m`: a tail call would leave
-- the hook's line out of the error.)
local function run(src)
  return sandbox.run("h", root .. "/h.lua", src, lib)
end

-- The keys of a set, sorted and joined with ",".
local function keys(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return table.concat(out, ",")
end

-- An error message must contain every one of parts.
local function has(err, parts)
  for _, part in ipairs(parts) do
    if not tostring(err):find(part, 1, true) then
      error(("error %q lacks %q"):format(tostring(err), part), 2)
    end
  end
end

module("plain.lua", "return {answer = 42}")
module("sub/inner.lua", "return {name = 'inner'}")
module("outer.lua", [[
local inner = require "sub.inner"
return {name = "outer of " .. inner.name}]])
module("uses_global.lua", "leak = 1 return {}")
module("broken.lua", "return {")
module("loop_a.lua", "return require 'loop_b'")
module("loop_b.lua", "return require 'loop_a'")
module("bytecode.lua", dump(function() return 1 end))
module("fails.lua", "error('module failed on purpose')")

check("sandbox_require_loads_module_in_hook_env", function()
  local r, err, required = run("return require('plain')")
  eq(err, nil, "error")
  eq(r.answer, 42, "module value")
  eq(keys(required), "plain.lua", "required")
end)

check("sandbox_require_records_nested_modules_as_paths", function()
  local r, err, required = run("return require('outer')")
  eq(err, nil, "error")
  eq(r.name, "outer of inner", "value through the nested module")
  eq(keys(required), "outer.lua,sub/inner.lua", "both modules recorded")
end)

check("sandbox_require_json_is_builtin_and_not_recorded", function()
  local r, err, required = run("return require('json').encode({1})")
  eq(err, nil, "error")
  eq(r, "[1]", "json module")
  eq(keys(required), "", "nothing recorded")
end)

check("sandbox_require_missing_module_fails_and_is_recorded", function()
  local r, err, required = run("local m = require('later.added') return m")
  eq(r, nil, "result")
  has(err, { "h.lua:1:", "require 'later.added'", "later/added.lua" })
  eq(keys(required), "later/added.lua", "a missing module is recorded")
end)

check("sandbox_require_broken_module_names_its_file", function()
  local _, err, required = run("local m = require('broken') return m")
  has(err, { "h.lua:1:", "lib/broken.lua:1:" })
  eq(keys(required), "broken.lua", "recorded")
end)

check("sandbox_require_error_in_module_fails_the_hook", function()
  local _, err = run("return require('fails')")
  has(err, { "lib/fails.lua:1:", "module failed on purpose" })
end)

check("sandbox_module_cannot_assign_globals", function()
  local _, err = run("return require('uses_global')")
  has(err, { "uses_global.lua:1:", "assignment to global 'leak'" })
end)

check("sandbox_require_refuses_bytecode_module", function()
  local _, err, required = run("return require('bytecode')")
  has(err, { "lib/bytecode.lua", "precompiled bytecode is refused" })
  eq(keys(required), "bytecode.lua", "recorded, so a fix reloads the hook")
end)

check("sandbox_refuses_bytecode_hook", function()
  local r, err = run(dump(function() return {} end))
  eq(r, nil, "result")
  has(err, { "h.lua", "precompiled bytecode is refused" })
end)

check("sandbox_text_mode_still_loads_source", function()
  local r, err = run("return 'source'")
  eq(err, nil, "error")
  eq(r, "source", "result")
end)

check("sandbox_require_rejects_bad_names", function()
  for _, name in ipairs({ "a..b", "a.", ".a", "../x", "a/b", "", "a-b" }) do
    local _, err = run(("return require(%q)"):format(name))
    has(err, { "invalid module name" })
  end
  local _, err = run("return require(5)")
  has(err, { "invalid module name 5" })
end)

check("sandbox_require_loop_is_reported", function()
  local _, err = run("return require('loop_a')")
  has(err, { "require 'loop_a'", "requires itself" })
end)

check("sandbox_modules_are_cached_per_hook_version", function()
  module("counter.lua", "return {n = 0}")
  local r, err = run([[
local a = require "counter"
a.n = a.n + 1
local b = require "counter"
return b.n]])
  eq(err, nil, "error")
  eq(r, 1, "one instance within a hook")
  local again = run("return require('counter').n")
  eq(again, 0, "a new load gets a fresh instance")
end)

check("sandbox_require_in_function_records_later", function()
  local r, err, required = run([[
return function() return require("plain").answer end]])
  eq(err, nil, "error")
  eq(keys(required), "", "nothing yet")
  eq(r(), 42, "late require works")
  eq(keys(required), "plain.lua", "recorded when it ran")
end)

check("sandbox_removes_string_dump_everywhere", function()
  eq(string.dump, nil, "string.dump")
  eq(("").dump, nil, "reached through a string")
end)
