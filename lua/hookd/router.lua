-- The router: the set of loaded hooks, and routing a batch of events
-- through all of them in one call from the C core (see core/bridge.c).
local json = require "hookd.json"
local core = require "hookd.core"
local config_mod = require "hookd.config"
local sandbox = require "hookd.sandbox"
local settings_mod = require "hookd.settings"
local filters = require "hookd.filters"
local message = require "hookd.message"
local template = require "hookd.template"
local catalog_mod = require "hookd.catalog"
local guard = require "hookd.guard"
local lookups = require "hookd.lookups"
local examples = require "hookd.examples"
local source = require "hookd.source"
local pipeline = require "hookd.pipeline"

local M = {}

local config = {destinations = {}, plugins_dir = "plugins"}
local catalog = catalog_mod.new({})
local hooks = {}   -- id -> loaded hook
local pending = {} -- id -> a validated version waiting for commit
local order = {}   -- loaded hooks sorted by id: the routing order
-- id -> the module paths (set) the hook's last load attempt required. The
-- running version's set is kept on the hook; a failed attempt has its own,
-- so adding or fixing the module it lacked reloads the hook.
local attempted = {}

local decode, emit, failed = json.decode, core.emit, core.failed
local decode_event = json.decode_event
local event_at, emit_event = core.event, core.emit_event
local null = json.null

local first_line = pipeline.first_line

local function rebuild_order()
  order = {}
  for _, hook in pairs(hooks) do order[#order + 1] = hook end
  table.sort(order, function(a, b) return a.id < b.id end)
end

-- Copies a decoded value so a hook's functions can change it freely.
local deep_copy = json.copy

-- Configures the router from the text of main.json. Returns the
-- normalized configuration, or nil and "key: reason".
function M.configure(text, config_dir)
  local cfg, err = config_mod.parse(text, config_dir)
  if cfg == nil then return nil, err end
  config = cfg
  guard.memory_reason = string.format(
    "used more than %d MiB of memory in one call", cfg.hook_memory_limit_mb)
  guard.total_memory_reason = string.format(
    "the hooks together would use more than %d MiB of memory " ..
    "(lua_memory_limit_mb)", cfg.lua_memory_limit_mb)
  return cfg
end

-- The entries of a catalog file, checked, as a flat list {kind, id,
-- entry JSON, ...} for the store; or nil and the error.
function M.catalog_entries(text)
  local tbl, err = json.decode(text)
  if tbl == nil then return nil, "not valid JSON: " .. err end
  local cat
  cat, err = catalog_mod.new(tbl)
  if cat == nil then return nil, err end
  local out = {}
  for kind, entries in pairs(cat.kinds) do
    for id, entry in pairs(entries) do
      out[#out + 1] = kind
      out[#out + 1] = id
      out[#out + 1] = json.encode(setmetatable(entry, json.object_mt))
    end
  end
  return out
end

-- Checks the kind and id of DELETE /v1/catalog/{kind}/{id}. Returns
-- {canonical id} or nil and the error.
function M.check_catalog_key(kind, id)
  local ok, err = catalog_mod.new({}):set(kind, id, nil)
  if not ok then return nil, err end
  return { catalog_mod.id_key(id) }
end

-- Checks one entry for PUT /v1/catalog/{kind}/{id}. Returns {canonical
-- id, entry JSON} or nil and the error.
function M.check_catalog_entry(kind, id, text)
  local entry, err = json.decode(text)
  if entry == nil then return nil, "not valid JSON: " .. err end
  local scratch = catalog_mod.new({})
  local ok
  ok, err = scratch:set(kind, id, entry)
  if not ok then return nil, err end
  local key = catalog_mod.id_key(id)
  local copy = setmetatable(scratch.kinds[kind][key], json.object_mt)
  return { key, json.encode(copy) }
end

-- Sets one entry that the store has committed; text "null" removes it.
function M.set_catalog_entry(kind, id, text)
  local entry = json.decode(text)
  if entry == json.null then entry = nil end
  local ok, err = catalog:set(kind, id, entry)
  if not ok then return nil, err end
  return {}
end

M.settle = lookups.settle
-- At shutdown: the log lines held back by their rate limits.
M.flush_logs = lookups.flush_not_kept
M.check_content = lookups.check_content
M.check_profile = lookups.check_profile

-- Replaces the catalog of names from the text of a catalog file.
function M.set_catalog(text)
  local tbl, err = json.decode(text)
  if tbl == nil then return nil, "not valid JSON: " .. err end
  local cat
  cat, err = catalog_mod.new(tbl)
  if cat == nil then return nil, err end
  catalog = cat
  return true
end

-- "file: message" of a settings problem as "file:line: message", the
-- line being where the setting named by path is in the source.
local function with_line(chunkname, src, err, path)
  local prefix = chunkname .. ": "
  if err:sub(1, #prefix) ~= prefix then return err end
  return string.format("%s:%d: %s", chunkname,
    path and source.key_line(src, path) or 1, err:sub(#prefix + 1))
end

-- Compiles, runs and validates a hook script. Returns the hook, not yet
-- pending, or nil and "file:line: message".
local function compile(id, slot, chunkname, src)
  if src == "" then return nil, chunkname .. ":1: the file is empty" end
  local tbl, err, required = sandbox.run(id, chunkname, src,
    config.plugins_dir .. "/lib")
  if slot >= 0 then attempted[id] = required end -- not for `hookd try`
  if tbl == nil then return nil, err or (chunkname .. ": returned nothing") end
  if type(tbl) ~= "table" then
    return nil, chunkname .. ": the script must return a table of settings"
  end
  local s, path
  s, err, path = settings_mod.validate(tbl, {
    id = id, file = chunkname, destinations = config.destinations,
  })
  if s == nil then return nil, with_line(chunkname, src, err, path) end
  return {
    id = id, slot = slot, settings = s, active = s.active,
    match = filters.compile(s), filter = s.filter, shape = s.shape,
    isolate = s.filter ~= nil or s.shape ~= nil,
    breaches = {}, suspended = false, requires = required,
  }
end

-- The message of `hookd try` made as route_one makes it from the event's
-- text (parts: custom_data, content, keep_content): spliced, or built
-- from the text decoded again when it cannot be. Returns true and the
-- JSON text on one line, or false and why.
local function spliced(hook, text, ctx, build, cd, content, keep)
  local out, err = core.splice(text, cd, content, keep)
  -- A line break in a message can only be white space between values:
  -- printed as a space, the message stays one line.
  if out then return true, (out:gsub("[\r\n]", " ")) end
  if out == nil then return false, err end
  local ok, msg = pcall(build, hook.settings, decode_event(text), ctx)
  if not ok then return false, first_line(msg) end
  return pcall(json.encode, msg)
end

-- One event through one hook, for `hookd try` and the examples: what
-- route_one does, but the outcome is returned rather than sent, and a
-- drop says which stage made it. text and parts, when given, are the
-- event as it came and live_parts: the message is then made from the
-- text as the router makes it.
-- Returns "message" and its JSON text, "dropped" and why, or "error" and
-- the error (file:line when Lua knows it). Nothing is emitted, counted
-- or stored, and a CPU breach here never counts toward suspending the
-- running version.
local function trial(hook, event, build, text, parts)
  local why = filters.explain(hook.match, event)
  if why then return "dropped", why end
  local ctx = template.new_context(event, catalog)
  if hook.isolate then event = deep_copy(event) end
  local status, msg, where, keep, encoded = pipeline.run(hook, event, ctx,
    build, false, text and parts)
  if status == "parts" then
    local ok, out = spliced(hook, text, ctx, build, msg, where, keep)
    if ok then return "message", out end
    return "error", hook.settings.file .. ": the message cannot be " ..
      "encoded as JSON: " .. first_line(out)
  end
  if status == "filtered" then
    return "dropped", "filter() returned false"
  elseif status == "dropped" then
    return "dropped", "shape() returned " .. tostring(msg)
  elseif status == "error" then
    return "error", msg .. ((where == "message" or where == "encode")
      and " (while building the message)" or " (in " .. where .. "())")
  end
  local ok, text = true, encoded
  if not text then ok, text = pcall(json.encode, msg) end
  if not ok then
    return "error", hook.settings.file .. ": the message cannot be " ..
      "encoded as JSON: " .. first_line(text)
  end
  return "message", text
end

-- The message of an example: the event alone decides it. Stored profiles
-- and content are not looked up, so an example gives the same result in
-- `hookd check` and in every router.
local function example_message(settings, event, ctx)
  return message.build(settings, event, ctx, nil, nil)
end

-- Why example t of a hook fails, or nil when it holds.
-- Why an example's event is one ingest would refuse, or nil.
local function bad_event(e)
  local et = rawget(e, "event_type")
  if type(et) ~= "string" or #et == 0 or #et > 128 or
      not et:match("^[%w_%-%.]+$") then
    return "event_type must be 1-128 letters, digits, _ - ."
  end
  local date = rawget(e, "event_date")
  if type(date) ~= "string" or not core.parse_time(date) then
    return "event_date must be an RFC 3339 time as a string"
  end
  return nil
end

local function run_example(hook, t)
  local why = bad_event(t.event)
  if why then return "the event would be refused by ingest: " .. why end
  local ok, text = pcall(json.encode, t.event)
  if not ok then
    return "the event cannot be encoded as JSON: " .. first_line(text)
  end
  return examples.verdict(t.expect, trial(hook, decode_event(text),
    example_message))
end

-- Runs every example of the hook's tests setting. Returns the failures,
-- each "file:line: tests[i]: why" with the line where the example starts.
-- The time all of a file's examples may take together, in seconds: each
-- call has its own limit, but a file of many slow examples must not hold
-- the router up at every load.
local EXAMPLES_SEC = 0.25

local function failing_examples(hook, chunkname, src)
  local out, tests = {}, hook.settings.tests or {}
  local started = core.now()
  for i = 1, #tests do
    if core.now() - started > EXAMPLES_SEC then
      out[#out + 1] = string.format("%s:%d: tests[%d]: the examples took " ..
        "more than %g s together; the rest were not run", chunkname,
        source.example_line(src, i), i, EXAMPLES_SEC)
      break
    end
    local why = run_example(hook, tests[i])
    if why then
      out[#out + 1] = string.format("%s:%d: tests[%d]: %s", chunkname,
        source.example_line(src, i), i, why)
    end
  end
  return out
end

-- Compiles, runs and validates a hook script and runs its examples. The
-- result waits until the core has also accepted its transport settings
-- and calls commit. Returns a description for the core ({name, active,
-- send, settings_json}) or nil and the error; a failure (a failing
-- example too) leaves the running version alone.
function M.load(id, slot, chunkname, src)
  local hook, err = compile(id, slot, chunkname, src)
  if hook == nil then return nil, err end
  local s = hook.settings
  local shown, settings_json = pcall(json.encode, settings_mod.describe(s))
  if not shown then
    return nil, chunkname .. ": settings cannot be shown as JSON: " ..
      tostring(settings_json)
  end
  local failing = failing_examples(hook, chunkname, src)
  if #failing > 0 then
    -- One line, as logs and the API show it; `hookd check` lists them all.
    local more = #failing - 1
    return nil, failing[1] .. (more == 0 and "" or string.format(
      " (and %d more failing example%s)", more, more == 1 and "" or "s"))
  end
  pending[id] = hook
  return {
    name = s.name, active = s.active, send = s.send,
    settings_json = settings_json,
  }
end

-- For `hookd check`: every problem of one hook file, each as
-- "file:line: message" (or "file: message" when no line is known).
-- view_json is the core's view of the hook after it tried to load the
-- file (as GET /v1/hooks/{id} shows it), or "" when it loaded: it holds
-- what only the core finds, transport settings it cannot use.
function M.check(id, chunkname, src, view_json)
  local hook, err = compile(id, -1, chunkname, src)
  if hook == nil then return { err } end
  local failing = failing_examples(hook, chunkname, src)
  if #failing > 0 then return failing end
  local view = view_json ~= "" and json.decode(view_json) or nil
  err = type(view) == "table" and view.error
  if type(err) ~= "string" then return {} end
  if err:find("^" .. chunkname:gsub("%W", "%%%0") .. ":%d+:") then
    return { err }
  end
  local msg = err:sub(#chunkname + 3)
  return { with_line(chunkname, src, err, settings_mod.problem_path(msg)) }
end

-- Makes the pending version of id the running one (keep_new), or drops it.
function M.commit(id, keep_new)
  local hook = pending[id]
  pending[id] = nil
  if keep_new and hook then
    hooks[id] = hook
    rebuild_order()
  end
  -- Nothing runs between routing calls, so the replaced version (or the
  -- refused one) is garbage now: collect it before the next reload, so a
  -- hook that builds large tables at load does not pile up versions.
  collectgarbage("collect")
end

function M.unload(id)
  hooks[id] = nil
  attempted[id] = nil
  rebuild_order()
  collectgarbage("collect") -- as after a reload (see M.commit)
end

-- True when set (module paths) holds any key of wanted.
local function requires_any(set, wanted)
  if set == nil then return false end
  for path in pairs(wanted) do
    if set[path] then return true end
  end
  return false
end

-- For the plugins watcher: the ids of the hooks whose running version or
-- last load attempt required one of the given module paths (relative to
-- plugins_dir/lib, as "geo.lua" or "sub/x.lua"), sorted. Modules required
-- by other modules count: they run through the hook's own require.
function M.module_dependents(...)
  local wanted, found, ids = {}, {}, {}
  for i = 1, select("#", ...) do wanted[select(i, ...)] = true end
  for id, hook in pairs(hooks) do
    if requires_any(hook.requires, wanted) then found[id] = true end
  end
  for id, set in pairs(attempted) do
    if requires_any(set, wanted) then found[id] = true end
  end
  for id in pairs(found) do ids[#ids + 1] = id end
  table.sort(ids)
  return ids
end

-- Switches a loaded hook on ("1") or off ("0") as the API stored it.
-- Switching on also lifts a suspension: an operator has looked at it.
function M.set_active(id, active)
  local hook = hooks[id]
  if not hook then return nil, "the hook is not loaded" end
  hook.active = active == "1"
  if hook.active then hook.suspended, hook.breaches = false, {} end
  return {}
end

-- A hook whose code the CPU guard stopped BREACH_LIMIT times within
-- BREACH_WINDOW seconds is suspended: it captures nothing until its file
-- is loaded again. This bounds what one runaway hook costs everybody.
local BREACH_LIMIT, BREACH_WINDOW = 10, 60

local function note_breach(hook)
  local now, kept = core.now(), {}
  for _, t in ipairs(hook.breaches) do
    if now - t < BREACH_WINDOW then kept[#kept + 1] = t end
  end
  kept[#kept + 1] = now
  hook.breaches = kept
  if #kept >= BREACH_LIMIT and not hook.suspended then
    hook.suspended = true
    core.suspended(hook.slot, string.format(
      "its code ran over the CPU limit or a memory limit %d times " ..
      "within %d s",
      BREACH_LIMIT, BREACH_WINDOW))
  end
end

local id_key = catalog_mod.id_key

M.destination = pipeline.destination

-- Runs the hook's own functions and the standard message builder for one
-- event; the message or the failure goes to the core. Returns true when the
-- event passed the hook's filter (it counts as matched), false otherwise.
-- The message of live traffic: content attached when the hook asks.
local function live_message(settings, event, ctx)
  return message.build(settings, event, ctx, lookups.profile_field,
    lookups.event_content)
end

-- The message a historical export sends: never content, and null for
-- the profile fields of a profile deleted since (even those the event
-- carried inline: the subscriber asked to be forgotten).
local function null_field() return null end

local function export_view(settings, event)
  local s = setmetatable({ content = false }, { __index = settings })
  if not lookups.profile_deleted(event.list_id, event.profile_id) then
    return s, event, lookups.profile_field
  end
  local bare = {}
  for k, v in pairs(json.materialize(event)) do bare[k] = v end
  bare.profile = nil
  return s, bare, null_field
end

local function export_message(settings, event, ctx)
  local s, ev, lookup = export_view(settings, event)
  return message.build(s, ev, ctx, lookup, nil)
end

-- The same, as the parts of a message made from the event's text.
local function export_parts(settings, event, ctx)
  local s, ev, lookup = export_view(settings, event)
  return message.parts(s, ev, ctx, lookup, nil)
end

-- Content goes into such a message as the JSON text it is stored as.
local function live_parts(settings, event, ctx)
  return message.parts(settings, event, ctx, lookups.profile_field,
    lookups.event_content_text)
end

-- What a failure's reason starts with, by the stage it happened in.
local STAGE = {
  filter = "filter: ", shape = "shape: ", message = "message: ",
  encode = "cannot encode message: ",
}

-- Runs the hook over one event (see pipeline.lua); the message or the
-- failure goes to the core. Returns true when the event passed the hook's
-- filter (it counts as matched), false otherwise. text is the event as it
-- came (or its index in the batch being routed), kept as a dead letter
-- when the hook's code fails on it. shared:
-- another hook will see this event after this one, so a hook with code
-- gets a copy to change at will; the last hook to see it gets the event
-- itself, since nothing reads it afterwards (copying is a third of the
-- cost of routing an event).
local function route_one(hook, event, ctx, build, parts, text, shared)
  if shared and hook.isolate then event = deep_copy(event) end
  local status, a, b, c, route, key = pipeline.run(hook, event, ctx, build,
    false, parts)
  if status == "message" or status == "parts" then
    local sent, err
    if status == "message" then
      sent, err = emit(hook.slot, a, b, c)
    else
      sent, err = emit_event(hook.slot, text, a, b, c, route, key)
      if sent == false then -- a key the core cannot compare: build it here
        local fresh = type(text) == "number" and event_at(text) or
          decode(text)
        sent, err = emit(hook.slot, build(hook.settings, fresh, ctx), route,
          key)
      end
    end
    if not sent then
      failed(hook.slot, err, text)
      if hook.isolate and pipeline.oversized(err) then note_breach(hook) end
    end
    return true
  elseif status == "error" then
    failed(hook.slot, STAGE[b] .. a, text)
    if c then note_breach(hook) end
    return b ~= "filter"
  end
  return status == "dropped"
end

-- Routes the n events of the batch the core is routing (read with
-- core.event) through every active hook. Each event is decoded once
-- whatever the number of hooks; per-hook errors are reported
-- to the core and never stop the batch. seq names the store batch the
-- results go to (see lookups.settle).
-- Time spent in each hook, for the metrics: measured on one event in
-- SAMPLE_EVERY and scaled up, since reading a clock twice per event and
-- hook would cost more than many hooks do.
local SAMPLE_EVERY = 16
local sample_tick = 0
local lua_seconds = {} -- id -> estimated seconds, kept across reloads
local now = core.now

-- Fills takers with the positions in order of the hooks that capture
-- event; returns how many.
local function takers_of(event, takers)
  local k = 0
  for h = 1, #order do
    local hook = order[h]
    if hook.active and not hook.suspended and
        filters.match(hook.match, event) then
      k = k + 1
      takers[k] = h
    end
  end
  return k
end

-- The event being routed, and its template context once a message needs
-- one (see routed_context): most events a filter drops never need it.
local routed_event, routed_ctx = nil, nil

-- The context of routed_event, made on first use and then shared by every
-- hook that takes the event, so its catalog entries and date forms are
-- looked up once.
local function routed_context()
  local ctx = routed_ctx
  if not ctx then
    ctx = template.new_context(routed_event, catalog)
    routed_ctx = ctx
  end
  return ctx
end

function M.route(count, seq)
  local n, matched, takers = #order, {}, {}
  for h = 1, n do matched[h] = 0 end
  lookups.begin(seq or 0)
  for i = 1, count do
    local event = event_at(i)
    routed_event, routed_ctx = event, nil
    sample_tick = sample_tick + 1
    local timed = sample_tick % SAMPLE_EVERY == 0
    lookups.capture(event, event.event_type, i)
    local k = takers_of(event, takers)
    for j = 1, k do
      local h = takers[j]
      local hook = order[h]
      local t0 = timed and now()
      if route_one(hook, event, routed_context, live_message, live_parts, i,
          j < k) then
        matched[h] = matched[h] + 1
      end
      if t0 then
        lua_seconds[hook.id] = (lua_seconds[hook.id] or 0) +
          (now() - t0) * SAMPLE_EVERY
      end
    end
  end
  routed_event, routed_ctx = nil, nil
  for h = 1, n do
    if matched[h] > 0 then core.matched(order[h].slot, matched[h]) end
  end
end

-- For the metrics: {id1, seconds1, id2, seconds2, ...}.
function M.lua_times()
  local out = {}
  for id, t in pairs(lua_seconds) do
    out[#out + 1] = id
    out[#out + 1] = string.format("%.6f", t)
  end
  return out
end

-- Event types a historical export never sends (the store leaves them out
-- too; this holds for events that reach here another way).
local NOT_EXPORTED = {
  campaign_launch = true, profile_merge = true, profile_split = true,
}

-- Routes the count stored events of the core's batch through hook id
-- alone, as a historical export: its current settings and filters, no
-- content. seq names the store batch, as in M.route. Returns the number
-- of events it captured.
function M.route_export(count, seq, id)
  local hook = hooks[id]
  if not hook or hook.suspended then return 0 end
  local captured = 0
  lookups.begin(seq or 0)
  for i = 1, count do
    local event = event_at(i)
    if not NOT_EXPORTED[event.event_type] and
        filters.match(hook.match, event) then
      local ctx = template.new_context(event, catalog)
      if route_one(hook, event, ctx, export_message, export_parts, i) then
        captured = captured + 1
      end
    end
  end
  return captured
end

local EVENT_TYPE = "^[%w_%-%.]+$"

-- The event of a test send: the caller's own, or an example of a type.
local function test_event(hook, doc)
  for key in pairs(doc) do
    if key ~= "event" and key ~= "event_type" then
      return nil, "unknown field '" .. tostring(key) .. "'"
    end
  end
  if doc.event_type ~= nil and type(doc.event_type) ~= "string" then
    return nil, "event_type must be a string"
  end
  if doc.event ~= nil and doc.event_type ~= nil then
    return nil, 'give either "event_type" or "event", not both'
  end
  if doc.event ~= nil then
    local e = doc.event
    if type(e) ~= "table" or getmetatable(e) == json.array_mt then
      return nil, "event must be a JSON object"
    end
    local et = e.event_type
    if type(et) ~= "string" or #et > 128 or not et:match(EVENT_TYPE) then
      return nil, "event.event_type must be 1-128 letters, digits, _ - ."
    end
    return e
  end
  if type(doc.event_type) ~= "string" then
    return nil, 'give {"event_type": "<type>"} or {"event": {...}}'
  end
  local db = hook.settings.database
  return require("hookd.samples").event(doc.event_type, {
    list_id = type(db) == "number" and db or nil, catalog = catalog,
  })
end

-- For a test send: the event (an example of a type, or the caller's own)
-- through hook id's custom_data and shape(), bypassing its filters.
-- Returns {"ok", event, message, route or "", key or "", "1" when keyed};
-- or {"request", reason} for a mistake of the caller, or {"hook", reason,
-- event} when the hook's code failed or dropped the event.
function M.test_message(id, body)
  local hook = hooks[id]
  if not hook then return { "request", "the hook is not loaded" } end
  local doc, err = json.decode(body ~= "" and body or "{}")
  if type(doc) ~= "table" or getmetatable(doc) == json.array_mt then
    return { "request", "the body must be a JSON object" ..
      (err and (": " .. err) or "") }
  end
  local event
  event, err = test_event(hook, doc)
  if not event then return { "request", err } end
  local event_text = json.encode(event)
  event = decode_event(event_text)
  if hook.isolate then event = deep_copy(event) end
  local status, msg, route, key, encoded = pipeline.run(hook, event,
    template.new_context(event, catalog), live_message, true)
  if status == "dropped" then
    return { "hook", "shape() returned nil or false: nothing sent",
      event_text }
  elseif status == "error" then
    return { "hook", STAGE[route] .. msg, event_text }
  end
  local ok, text = true, encoded
  if not text then ok, text = pcall(json.encode, msg) end
  if not ok then
    return { "hook", "cannot encode message: " .. tostring(text), event_text }
  end
  return { "ok", event_text, text, route or "", key or "", key and "1" or "0" }
end

-- For the API: the named string fields of a JSON object body, in order,
-- or nil and the reason. A name is at most 255 bytes of UTF-8 without
-- control characters.
function M.string_fields(text, ...)
  local doc, err = json.decode(text ~= "" and text or "null")
  if type(doc) ~= "table" or getmetatable(doc) == json.array_mt then
    return nil, "the body must be a JSON object" ..
      (err and (": " .. err) or "")
  end
  local out, wanted = {}, {}
  for i = 1, select("#", ...) do wanted[select(i, ...)] = true end
  for key in pairs(doc) do
    if not wanted[key] then
      return nil, "unknown field '" .. tostring(key) .. "'"
    end
  end
  for i = 1, select("#", ...) do
    local name = select(i, ...)
    local v = doc[name]
    if type(v) ~= "string" or v == "" then
      return nil, name .. " must be a non-empty string"
    end
    if #v > 255 or v:find("%c") then
      return nil, name .. " must be at most 255 bytes, without control " ..
        "characters"
    end
    out[i] = v
  end
  return out
end

-- The hook `hookd try` runs, once M.try has loaded it.
local trying = nil

-- For `hookd try`: compiles and validates the hook file (its examples are
-- left to `hookd check`, so a hook can be tried while they fail).
-- Returns {} or nil and the error.
function M.try(chunkname, src)
  local name = chunkname:match("([^/]+)$") or chunkname
  local id = name:gsub("%.lua$", "")
  local hook, err = compile(id, -1, chunkname, src)
  if hook == nil then return nil, err end
  trying = hook
  return {}
end

-- For `hookd try`: runs the loaded hook over event texts without sending
-- anything. Returns one line per event: the message as JSON, "dropped:
-- <stage>: why" or "error: <file:line: message>".
function M.try_events(events)
  if trying == nil then return nil, "no hook loaded" end
  local lines = {}
  for i = 1, #events do
    -- Decoded as the router decodes what it routes (core.event).
    local status, value = trial(trying, decode_event(events[i]),
      live_message, events[i], live_parts)
    lines[i] = status == "message" and value or (status .. ": " .. value)
  end
  return lines
end

return M
