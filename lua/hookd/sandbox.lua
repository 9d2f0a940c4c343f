-- The environment a hook script runs in: a safe subset of the standard
-- library, no files, sockets or processes, and no accidental globals.
local json = require "hookd.json"
local core = require "hookd.core"
local guard = require "hookd.guard"
local bit = require "bit"

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

-- What hooks get as the json module: the codec without internals. Each
-- hook gets a copy of its own, so that no hook can replace a function of
-- it for the others.
local hook_json = {
  decode = json.decode, encode = json.encode, null = json.null,
  array = json.array, object = json.object, is_array = json.is_array,
}

-- Metatables every hook's values share: the string library's, and the
-- codec's for arrays, objects and number literals. A hook that reached
-- one could change how every other hook's events read or encode, so
-- getmetatable answers nil for them.
local SHARED_MT = {
  [getmetatable("")] = true, [json.array_mt] = true,
  [json.object_mt] = true, [json.number_mt] = true,
  [json.event_mt] = true,
}

local function safe_getmetatable(v)
  local mt = getmetatable(v)
  if mt ~= nil and SHARED_MT[mt] then return nil end
  return mt
end

-- An event's nested objects and arrays are decoded when first read (see
-- core/lua_event.h); what walks or bypasses the table's reads has them
-- all decoded first, so a hook sees every member whichever way it looks.
local event_mt, materialize = json.event_mt, json.materialize
local raw_next, raw_rawget, raw_rawset, raw_setmetatable =
  next, rawget, rawset, setmetatable

local function whole(t)
  if getmetatable(t) == event_mt then materialize(t) end
  return t
end

-- The CPU guard stops hook code at its next instruction, so a C function
-- that C calls back over and over (a sort comparator, a metamethod) runs
-- out of its reach: tostring as __tostring loops in C for ever, a slow
-- one as comparator stalls for as long as the sort lasts. Such functions
-- are wrapped in a Lua function loaded as the hook's own code, so every
-- call runs an instruction the guard can stop.
local as_hook_code = guard.prepare(assert(loadstring(
  "local f = ... return function(...) return f(...) end",
  "@(hookd call)")))
local debug_getinfo = debug.getinfo

local function stoppable(f)
  if type(f) == "function" and debug_getinfo(f, "S").what == "C" then
    return as_hook_code(f)
  end
  return f
end

local hook_tostring = as_hook_code(tostring)

-- A metatable's C-function metamethods are wrapped when it is set (in
-- place: the hook's own table).
local function stoppable_metatable(mt)
  if type(mt) ~= "table" or SHARED_MT[mt] then return mt end
  for k, v in raw_next, mt do
    if type(k) == "string" and k:sub(1, 2) == "__" then
      local w = stoppable(v)
      if w ~= v then raw_rawset(mt, k, w) end
    end
  end
  return mt
end

-- pairs hands out this next, not the raw one, so that no hook can get
-- hold of a next that skips the check.
local function safe_next(t, k) return raw_next(whole(t), k) end

local WALKERS = {
  next = safe_next,
  pairs = function(t) return safe_next, whole(t), nil end,
  rawget = function(t, k) return raw_rawget(whole(t), k) end,
  rawset = function(t, k, v) return raw_rawset(whole(t), k, v) end,
  -- An event given as the metatable is read raw for its metamethods.
  setmetatable = function(t, mt)
    return raw_setmetatable(whole(t), stoppable_metatable(mt and whole(mt)))
  end,
}
local raw_foreach = table.foreach

-- The bytecode of a function is of no use without a loader, which hooks
-- do not get; it is removed from the shared string library too, since
-- ("").dump reaches it through the strings' metatable.
string.dump = nil

-- ---- pattern matching that the CPU guard can stop ----
-- The library's matcher is C: a call cannot be interrupted, and some
-- patterns backtrack for hours over a few hundred bytes. A call whose
-- worst case could pass PATTERN_BUDGET steps (about n^(q+1) for q
-- quantifiers over n bytes) goes to lua/hookd/patterns.lua instead,
-- loaded under a name outside the runtime so that the guard treats it as
-- the hook's own code. Every other call, which is nearly all of them,
-- stays in C. The string library itself is changed, since hooks reach it
-- through their own copy and through the methods of strings alike.
local PATTERN_BUDGET = 1e7

local function load_patterns()
  local path = package.searchpath("hookd.patterns", package.path)
  local src = path and core.read_file(path)
  local chunk = src and loadstring(src, "@(hookd patterns)")
  if not chunk then error("cannot load hookd.patterns") end
  return guard.prepare(chunk)()
end

local slow = load_patterns()

-- table.sort is C: over a large array without a comparator it could run
-- for seconds where nothing can stop it. There it gets a comparator of
-- the same order that counts as the hook's code (it lives with the
-- matcher), so the CPU guard can stop the sort.
local SORT_IN_C_MAX = 10000

local function guarded_sort(t, less)
  if less == nil and type(t) == "table" and #t > SORT_IN_C_MAX then
    less = slow.less
  end
  return table.sort(t, stoppable(less))
end
local native = {
  find = string.find, match = string.match, gmatch = string.gmatch,
  gsub = string.gsub,
}
local byte = string.byte
local quantifier_cache, cached = {}, 0

-- How many quantifiers (* + - ?) the pattern has outside sets and
-- escapes; counting a literal '-' too only errs on the safe side.
local function quantifiers(p)
  local q = quantifier_cache[p]
  if q then return q end
  q = 0
  local i, n = 1, #p
  while i <= n do
    local c = byte(p, i)
    if c == 37 then -- %x
      i = i + 2
    elseif c == 91 then -- [set]
      i = i + 1
      if byte(p, i) == 94 then i = i + 1 end
      repeat
        if byte(p, i) == 37 then i = i + 1 end
        i = i + 1
      until i > n or byte(p, i) == 93
      i = i + 1
    else
      if c == 42 or c == 43 or c == 45 or c == 63 then q = q + 1 end
      i = i + 1
    end
    if c == 37 and byte(p, i - 1) == 98 then q = q + 1 end -- %b
  end
  if #p <= 256 then -- a cache of short patterns only: it is shared
    if cached >= 1000 then quantifier_cache, cached = {}, 0 end
    quantifier_cache[p], cached = q, cached + 1
  end
  return q
end

-- The worst case of a match, roughly: every start position, every
-- split the quantifiers allow (a %b counts as one), each step comparing
-- up to the whole pattern (a set is compared character by character).
local function costly(s, p, plain)
  if type(s) ~= "string" or type(p) ~= "string" then return false end
  local n, m = #s + 1, #p + 1
  if plain then return n * m > PATTERN_BUDGET end
  return n ^ (quantifiers(p) + 1) * m > PATTERN_BUDGET
end

string.find = function(s, p, init, plain)
  if not costly(s, p, plain) then return native.find(s, p, init, plain) end
  if plain then return slow.find_plain(s, p, init) end
  return slow.find(s, p, init)
end
string.match = function(s, p, init)
  if not costly(s, p) then return native.match(s, p, init) end
  return slow.match(s, p, init)
end
string.gmatch = function(s, p)
  if not costly(s, p) then return native.gmatch(s, p) end
  return slow.gmatch(s, p)
end
string.gsub = function(s, p, repl, n)
  if not costly(s, p) then return native.gsub(s, p, repl, n) end
  return slow.gsub(s, p, repl, n)
end

-- A copy of what a hook returned, made with raw reads only: the router
-- must not run a metamethod of the hook outside the guard (an __index
-- that loops would stall everything). Tables keep only the codec's own
-- metatables. A table met twice is copied once (the copy is shared the
-- same way) but counted each time, since whatever walks the settings
-- later (examples, encoding) meets it each time; a cycle, a very deep
-- table, or more than MAX_VALUES values in all is an error.
local MAX_DEPTH, MAX_VALUES = 64, 200000

local function too_many()
  error("the settings hold more than " .. MAX_VALUES .. " values", 0)
end

local function plain(v, depth, st)
  if type(v) ~= "table" then return v end
  if st.open[v] then error("the settings contain a cycle", 0) end
  if st.done[v] then
    st.count = st.count + st.size[v]
    if st.count > MAX_VALUES then too_many() end
    return st.done[v]
  end
  if depth > MAX_DEPTH then error("the settings nest too deeply", 0) end
  local before = st.count
  st.open[v] = true
  local out, k, item = {}, next(v)
  while k ~= nil do
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" and kt ~= "boolean" then
      error("a settings key must be a string or a number", 0)
    end
    st.count = st.count + 1
    if st.count > MAX_VALUES then too_many() end
    out[k] = plain(item, depth + 1, st)
    k, item = next(v, k)
  end
  st.open[v], st.done[v], st.size[v] = nil, out, st.count - before
  local mt = getmetatable(v)
  if mt == json.array_mt or mt == json.object_mt then
    setmetatable(out, mt)
  end
  return out
end

function M.plain(v)
  local ok, out = pcall(plain, v, 1,
    { open = {}, done = {}, size = {}, count = 0 })
  if ok then return out end
  return nil, out
end

-- log(...) from a hook: one info line whose text is a quoted field, so
-- a hook cannot add key=value fields of its own (or lines) to the log.
local function hex(c) return string.format("\\x%02x", c:byte()) end

-- Whether a run of bytes from 0x80 up is well-formed UTF-8.
local function utf8_run(run)
  local i, n = 1, #run
  while i <= n do
    local b, len, lo, hi = run:byte(i), 0, 0x80, 0xBF
    if b >= 0xC2 and b <= 0xDF then len = 1
    elseif b >= 0xE0 and b <= 0xEF then
      len = 2
      if b == 0xE0 then lo = 0xA0 elseif b == 0xED then hi = 0x9F end
    elseif b >= 0xF0 and b <= 0xF4 then
      len = 3
      if b == 0xF0 then lo = 0x90 elseif b == 0xF4 then hi = 0x8F end
    else
      return false
    end
    if i + len > n then return false end
    local c = run:byte(i + 1)
    if c < lo or c > hi then return false end
    for j = i + 2, i + len do
      c = run:byte(j)
      if c < 0x80 or c > 0xBF then return false end
    end
    i = i + len + 1
  end
  return true
end

-- The text escaped: quotes, backslashes, control characters, and bytes
-- that are not UTF-8 (which would make the log a binary file to tools).
local function escaped(text)
  local out = text:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    if c == "\n" then return "\\n" end
    return hex(c)
  end)
  -- Runs of bytes from 0x80 up, found without a pattern quantifier (the
  -- shared string library matches those slowly, for hooks' sake).
  local at = out:find("[\128-\255]")
  if not at then return out end
  local parts, from, n = {}, 1, #out
  while at do
    local to = at
    while to < n and out:byte(to + 1) >= 0x80 do to = to + 1 end
    local run = out:sub(at, to)
    parts[#parts + 1] = out:sub(from, at - 1)
    parts[#parts + 1] = utf8_run(run) and run or run:gsub(".", hex)
    from = to + 1
    at = out:find("[\128-\255]", from)
  end
  parts[#parts + 1] = out:sub(from)
  return table.concat(parts)
end

-- The first n bytes of escaped text at most, not cutting an escape.
local function cut(s, n)
  if #s <= n then return s end
  local i = 1
  while true do
    local w = 1
    if s:byte(i) == 92 then w = s:byte(i + 1) == 120 and 4 or 2 end
    if i + w - 1 > n then break end
    i = i + w
  end
  return s:sub(1, i - 1)
end

-- At most LOG_BURST lines at once and LOG_RATE a second per hook, each
-- cut to LOG_MAX bytes before it is escaped and to LOG_ESCAPED after, so
-- that the line stays within the core's 2048 bytes with its closing quote
-- and the count that follows it: a hook cannot flood the log (or spend
-- the runtime's time escaping megabytes). Lines held back are counted in
-- the next one written.
local LOG_RATE, LOG_BURST, LOG_MAX, LOG_ESCAPED = 20, 100, 2000, 1800

local function make_log(hook_id)
  local tokens, at, held = LOG_BURST, core.now(), 0
  return function(...)
    local now = core.now()
    tokens = math.min(LOG_BURST, tokens + (now - at) * LOG_RATE)
    at = now
    if tokens < 1 then
      held = held + 1
      return
    end
    tokens = tokens - 1
    local parts = {}
    for i = 1, select("#", ...) do
      parts[i] = tostring((select(i, ...))):sub(1, LOG_MAX)
    end
    local text = table.concat(parts, " "):sub(1, LOG_MAX)
    core.log("info", "hook", "hook=" .. hook_id .. ' msg="' ..
      cut(escaped(text), LOG_ESCAPED) .. '"' ..
      (held > 0 and " held_back=" .. held or ""))
    held = 0
  end
end

-- math.random and math.randomseed of a hook's own: the library's share
-- one generator, which a hook could seed for everybody. A 32-bit
-- xorshift is plenty for hook code (none of it is cryptographic).
local function make_random(hook_id)
  local state = (math.floor(core.now() * 1000) + #hook_id * 7919) %
    2147483647 + 1
  local function float()
    state = bit.bxor(state, bit.lshift(state, 13))
    state = bit.bxor(state, bit.rshift(state, 17))
    state = bit.bxor(state, bit.lshift(state, 5))
    return (state % 4294967296) / 4294967296
  end
  local function random(m, n)
    local r = float()
    if m == nil then return r end
    if n == nil then m, n = 1, m end
    m, n = math.floor(m), math.floor(n)
    if m > n then error("bad argument to 'random' (interval is empty)", 2) end
    return m + math.floor(r * (n - m + 1))
  end
  local function randomseed(x)
    state = math.floor(tonumber(x) or 0) % 2147483647 + 1
  end
  return random, randomseed
end

-- Hook and module files are Lua source only. Precompiled bytecode skips
-- the compiler's checks, and LuaJIT's loader trusts bytecode to be well
-- formed, so a crafted file could reach past the sandbox; it is refused by
-- its first byte (ESC, the signature of every dump) with a clear message,
-- and text mode makes the loader itself refuse it too.
local BYTECODE_SIGNATURE = 27

local function compile(src, chunkname)
  if src:byte(1) == BYTECODE_SIGNATURE then
    return nil, chunkname .. ": precompiled bytecode is refused; give " ..
      "the Lua source"
  end
  return loadstring(src, "@" .. chunkname, "t")
end

-- Marks a module whose file is still running, so a module that requires
-- itself (directly or through others) fails with a clear message rather
-- than recursing until the stack runs out.
local LOADING = {}

-- A module name is words of letters, digits and _ joined by single dots;
-- an empty part ("a..b", "a.") would name no file the watcher can see.
local function valid_name(name)
  for part in (name .. "."):gmatch("(.-)%.") do
    if not part:match("^[%w_]+$") then return false end
  end
  return true
end

-- Compiles lib/<name>.lua of the plugins folder in env. Module names are
-- plain identifiers with dots for subfolders. Every module asked for,
-- found or not, goes into required as its path under lib/ ("geo.lua",
-- "sub/x.lua"): the router reloads the hook when one of them changes,
-- appears or goes away. A module's own requires land there too, since it
-- runs in the same environment.
local function make_require(env, lib_dir, loaded, required)
  return function(name)
    if type(name) ~= "string" or not valid_name(name) then
      error("require: invalid module name " .. tostring(name), 2)
    end
    if name == "json" then return env.json end
    if loaded[name] == LOADING then
      error("require '" .. name .. "': the module requires itself " ..
        "(directly or through other modules)", 2)
    end
    if loaded[name] ~= nil then return loaded[name] end
    local rel = name:gsub("%.", "/") .. ".lua"
    required[rel] = true
    local path = lib_dir .. "/" .. rel
    local src, err = core.read_file(path)
    if src == nil then error("require '" .. name .. "': " .. err, 2) end
    local chunk, cerr = compile(src, path)
    if chunk == nil then error(cerr, 2) end
    setfenv(guard.prepare(chunk), env)
    loaded[name] = LOADING
    local ok, value = pcall(chunk, name)
    if not ok then
      loaded[name] = nil
      error(value, 0)
    end
    if value == nil then value = true end
    loaded[name] = value
    return value
  end
end

-- Returns a fresh environment for hook hook_id, and the set of module
-- paths its require has been asked for (filled as the code runs).
-- Assigning a global in it raises an error; reading an unknown one gives
-- nil.
function M.new_env(hook_id, lib_dir)
  local base = {}
  for _, name in ipairs(SAFE_GLOBALS) do
    base[name] = WALKERS[name] or _G[name]
  end
  base.string = copy(string)
  base.string.dump = nil -- bytecode is for loaders, which hooks do not get
  base.table = copy(table)
  base.table.sort = guarded_sort
  base.table.foreach = function(t, f) return raw_foreach(whole(t), f) end
  base.math = copy(math)
  base.math.random, base.math.randomseed = make_random(hook_id)
  base.os = {time = os.time, date = os.date, clock = os.clock}
  base.bit = copy(require "bit")
  base.json = copy(hook_json)
  base.getmetatable = safe_getmetatable
  base.tostring = hook_tostring
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
  local required = {}
  base.require = make_require(env, lib_dir, {}, required)
  base._G = env
  return env, required
end

-- Compiles src as chunkname in a new environment and runs it. Returns what
-- the script returned, or nil and "file:line: message"; either way the
-- third value is the set of module paths it required (see make_require).
function M.run(hook_id, chunkname, src, lib_dir)
  local env, required = M.new_env(hook_id, lib_dir)
  local chunk, err = compile(src, chunkname)
  if chunk == nil then return nil, err, required end
  setfenv(guard.prepare(chunk), env)
  local ok, result = guard.call(chunk, tostring)
  if not ok then
    if not tostring(result):find(chunkname, 1, true) then
      result = chunkname .. ": " .. tostring(result)
    end
    return nil, result, required
  end
  local settings, err = M.plain(result)
  if err then return nil, chunkname .. ": " .. err, required end
  return settings, nil, required
end

return M
