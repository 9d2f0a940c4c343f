-- Runs a hook's own code under the core's guard, which stops it when it
-- runs too long or takes too much memory (see core/guard.c). Hook code is
-- kept out of the JIT compiler: only interpreted code can be interrupted.
local core = require "hookd.core"

local M = {}

-- The reason given when a call was stopped for memory (set by the core
-- from main.json).
M.memory_reason = "used more memory in one call than its limit allows"
M.total_memory_reason = "the hooks together would use more memory than " ..
  "lua_memory_limit_mb allows"

local guard_call = core.guard_call

-- Calls fn(a, b) under the guard, like xpcall with handler. Returns what
-- xpcall returns, and true as a third value when the guard stopped fn
-- (CPU or memory). A memory error does not reach the handler, so its
-- message is made here.
function M.call(fn, handler, a, b)
  local ok, r, stopped = guard_call(fn, handler, a, b)
  if stopped == 2 then r = M.memory_reason end
  if stopped == 3 then r = M.total_memory_reason end
  return ok, r, stopped ~= 0
end

-- Keeps a chunk of hook code, and every function it defines, interpreted.
function M.prepare(chunk)
  jit.off(chunk, true)
  return chunk
end

return M
