/* Limits on a hook's own code: CPU time and memory per call. The runtime
 * marks where hook code runs (lua/hookd/guard.lua); past either limit the
 * call fails with an error the runtime reports, and the router and the
 * other hooks go on. */
#ifndef HOOKD_GUARD_H
#define HOOKD_GUARD_H

#include <lua.h>
#include <stddef.h>

/* A Lua state whose allocations are counted, so memory can be limited.
 * NULL when out of memory. */
lua_State *hk_guard_new_state(void);

/* Starts the CPU guard for L (one state per process), whose runtime code
 * lives in lua_dir. Returns 0, or -1 with errno (the router then runs
 * without a CPU limit, and says so). */
int hk_guard_start(lua_State *L, const char *lua_dir);
void hk_guard_stop(lua_State *L);

/* The limits of one call of hook code: CPU milliseconds, and bytes it may
 * add to the state's memory; and the bytes hook code may take the whole
 * state to. Defaults: 50 ms, 64 MiB and 1 GiB. */
void hk_guard_set_limits(int cpu_ms, size_t memory_bytes,
                         size_t total_bytes);

/* Bytes the Lua state holds now. */
size_t hk_guard_memory(void);

/* core.guard_call(fn, handler, a, b) -> ok, result, stopped: calls
 * fn(a, b) as hook code, like xpcall with handler. stopped is 0, or why
 * the guard stopped it: 1 for CPU, 2 for its memory, 3 for the memory of
 * all hooks. In a state the guard does not run in, a plain xpcall. */
int hk_guard_call(lua_State *L);

#endif
