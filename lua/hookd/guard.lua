-- Marks where a hook's own code runs, so the core's CPU guard can stop it
-- when it runs too long (see core/bridge.c). Hook code is kept out of the
-- JIT compiler: only interpreted code can be interrupted.
local core = require "hookd.core"
local ffi = require "ffi"

local M = {}

ffi.cdef [[
typedef struct hk_guard_state {
  volatile int32_t active;
  volatile int32_t ticks;
  volatile int32_t tripped;
  volatile int32_t calls;
} hk_guard_state;
]]

local ptr = core.guard and core.guard()
local state = ptr and ffi.cast("hk_guard_state *", ptr)
  or {active = 0, ticks = 0, tripped = 0, calls = 0}

-- The reason given when a call was stopped for memory (set by the core
-- from main.json).
M.memory_reason = "used more memory in one call than its limit allows"
M.total_memory_reason = "the hooks together would use more memory than " ..
  "lua_memory_limit_mb allows"

-- Marks the hook's code finished inside the protected call, so the guard
-- can never raise its error outside it.
local function run(fn, a, b)
  local r = fn(a, b)
  state.active = 0
  return r
end

-- Calls fn(a, b) under the guard, like xpcall with handler. Returns what
-- xpcall returns, and true as a third value when the guard stopped fn
-- (CPU or memory). A memory error does not reach the handler, so its
-- message is made here.
function M.call(fn, handler, a, b)
  state.ticks = 0
  state.tripped = 0
  state.calls = (state.calls + 1) % 2147483647
  state.active = 1
  local ok, r = xpcall(run, handler, fn, a, b)
  state.active = 0
  local tripped = state.tripped
  if tripped == 2 then r = M.memory_reason end
  if tripped == 3 then r = M.total_memory_reason end
  return ok, r, tripped ~= 0
end

-- Keeps a chunk of hook code, and every function it defines, interpreted.
function M.prepare(chunk)
  jit.off(chunk, true)
  return chunk
end

return M
