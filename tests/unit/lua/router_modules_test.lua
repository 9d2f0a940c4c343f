-- Tests for hookd.router's module_dependents: which loaded hooks use a
-- module of plugins_dir/lib, directly or through another module, for the
-- running version and for a load attempt that failed; unloaded hooks and
-- `hookd try` runs count for nothing.

local router = require "hookd.router"
local testing = require "testing"

local check, eq = testing.check, testing.eq

local root = testing.temp_dir()
assert(router.configure(('{"plugins_dir": %q}'):format(root), root))

local function module(rel, text)
  testing.write_file(root .. "/lib/" .. rel, text)
end

-- A hook source that requires the given modules.
local function hook_src(...)
  local lines = {}
  for i, name in ipairs({ ... }) do
    lines[#lines + 1] = ("local m%d = require %q"):format(i, name)
  end
  lines[#lines + 1] = [[return {database = "all", actions = {"click"},
    send = {type = "http", url = "http://127.0.0.1:1/"}}]]
  return table.concat(lines, "\n")
end

-- Loads and commits hook id as the core does; returns the load error.
local slots = 0
local function load(id, src)
  slots = slots + 1
  local info, err = router.load(id, slots, root .. "/" .. id .. ".lua", src)
  router.commit(id, info ~= nil)
  return err
end

local function dependents(...)
  return table.concat(router.module_dependents(...), ",")
end

module("a.lua", "return {v = 1}")
module("b.lua", "local a = require 'a' return {v = a.v}")
module("sub/c.lua", "return {}")

check("router_dependents_direct_and_nested", function()
  eq(load("direct", hook_src("a")), nil, "direct loads")
  eq(load("nested", hook_src("b")), nil, "nested loads")
  eq(load("other", hook_src("sub.c")), nil, "other loads")
  eq(load("none", hook_src()), nil, "none loads")
  eq(dependents("a.lua"), "direct,nested", "users of a")
  eq(dependents("b.lua"), "nested", "users of b")
  eq(dependents("sub/c.lua"), "other", "users of sub/c")
  eq(dependents("a.lua", "sub/c.lua"), "direct,nested,other", "several")
  eq(dependents("zzz.lua"), "", "nobody")
  eq(dependents(), "", "no paths")
end)

check("router_dependents_keep_running_version_after_failed_load", function()
  module("broken.lua", "return {")
  local err = load("direct", hook_src("broken"))
  assert(err and err:find("broken.lua", 1, true), tostring(err))
  eq(dependents("a.lua"), "direct,nested", "the running version uses a")
  eq(dependents("broken.lua"), "direct", "the failed attempt counts")
  module("broken.lua", "return {}")
  eq(load("direct", hook_src("broken")), nil, "fixed")
  eq(dependents("a.lua"), "nested", "a no longer used by direct")
  eq(dependents("broken.lua"), "direct", "used now")
end)

check("router_dependents_missing_module_of_a_never_loaded_hook", function()
  local err = load("waiting", hook_src("not_yet"))
  assert(err and err:find("not_yet", 1, true), tostring(err))
  eq(dependents("not_yet.lua"), "waiting", "reloaded once it appears")
end)

check("router_dependents_forget_unloaded_hooks", function()
  router.unload("waiting")
  router.unload("nested")
  eq(dependents("not_yet.lua"), "", "waiting gone")
  eq(dependents("a.lua", "b.lua"), "", "nested gone")
end)

check("router_dependents_ignore_try_runs", function()
  local lines = router.try(root .. "/tried.lua", hook_src("sub.c"), {})
  eq(type(lines), "table", "try ran")
  eq(dependents("sub/c.lua"), "other", "try recorded nothing")
end)

check("router_dependents_failed_transport_counts_as_attempt", function()
  -- The core refuses the transport: the new version is dropped.
  slots = slots + 1
  local info = router.load("other", slots, root .. "/other.lua",
    hook_src("a"))
  assert(info, "validated")
  router.commit("other", false)
  eq(dependents("sub/c.lua"), "other", "the running version")
  eq(dependents("a.lua"), "other", "the dropped attempt")
end)
