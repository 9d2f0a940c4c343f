/* The guard on hook code (see guard.h).
 *
 * CPU: a hook's own code (file, filter, shape, lib modules) runs in
 * LuaJIT's interpreter (the runtime turns the JIT off for it), where a
 * count hook can stop it; compiled traces would not see the hook. A
 * CPU-time timer of the loop thread ticks every GUARD_TICK_MS of CPU it
 * uses; while hook code runs (called through hk_guard_call), the signal
 * handler counts the ticks and, past the limit, sets a count hook that
 * raises an error inside the hook's code. An idle router uses no CPU and
 * gets no ticks.
 *
 * Memory: the state's allocator counts the bytes it holds. During a call
 * of hook code, an allocation that would take the state more than the
 * limit above where it stood when the call began is refused; LuaJIT then
 * raises "not enough memory" inside the hook's code, and the runtime
 * reports the memory limit. The limit is on what one call adds, so a
 * hook that keeps its data across calls is bounded call by call; a
 * second limit on the whole state bounds what all hooks keep together. */
#include "guard.h"

#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define GUARD_TICK_MS 10
#define CALL_SLACK ((size_t)1 << 20)

/* What the guard knows of the call of hook code in progress; read by the
 * CPU timer's signal handler and the allocator. */
typedef struct hk_guard_state {
  volatile int32_t active;  /* 1 while hook code runs */
  volatile int32_t ticks;   /* CPU ticks since it started */
  volatile int32_t tripped; /* 1: stopped for CPU; 2: for its memory;
                               3: for the memory of all hooks */
  volatile int32_t calls;   /* bumped at each call */
} hk_guard_state;

static hk_guard_state guard_state;
static lua_State *guard_L; /* the state the guard interrupts */
static char guard_runtime_src[4096]; /* "@<lua_dir>/": the runtime's code */
static timer_t guard_timer;
static int guard_armed;
static int limit_ms = 50;

static lua_Alloc base_alloc;  /* LuaJIT's own allocator, which does the work */
static void *base_ud;
static size_t mem_total;      /* bytes the state holds */
static size_t mem_limit = (size_t)64 << 20;
static size_t mem_total_limit = (size_t)1 << 30; /* all of the state */
static size_t mem_call_start; /* mem_total when the current call began */
static int32_t mem_call_seen; /* guard_state.calls mem_call_start is of */

/* ---- memory ---- */

/* Refuses growth past the call's allowance while hook code runs. Once a
 * call was refused, it stays refused until it ends, so a hook that
 * catches the error with pcall cannot go on allocating. */
static int over_limit(size_t grow) {
  if (!guard_state.active || grow == 0) return 0;
  if (mem_call_seen != guard_state.calls) {
    mem_call_seen = guard_state.calls;
    mem_call_start = mem_total;
  }
  /* Written so that memory freed during the call (mem_total below its
   * start) cannot wrap the unsigned arithmetic. Over the limit for all
   * hooks, a call may still take CALL_SLACK: a hook that needs little is
   * not failed for what another hook keeps. */
  size_t after = mem_total + grow;
  int over_call = after > mem_call_start + mem_limit;
  int over_total = after > mem_total_limit &&
                   after > mem_call_start + CALL_SLACK;

  if (guard_state.tripped < 2 && !over_call && !over_total) return 0;
  if (guard_state.tripped < 2) guard_state.tripped = over_call ? 2 : 3;
  return 1;
}

/* Counts every block, then lets LuaJIT's own allocator (faster for its
 * many small objects than the C library's) do the work. */
static void *guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  size_t old = ptr ? osize : 0;
  void *p;

  (void)ud;
  if (nsize == 0) {
    base_alloc(base_ud, ptr, osize, 0);
    mem_total -= old;
    return NULL;
  }
  if (nsize > old && over_limit(nsize - old)) return NULL;
  p = base_alloc(base_ud, ptr, osize, nsize);
  if (p != NULL) mem_total = mem_total - old + nsize;
  return p;
}

static int guard_panic(lua_State *L) {
  hk_error("lua", "panic=1 reason=\"%s\"", lua_tostring(L, -1));
  abort();
}

lua_State *hk_guard_new_state(void) {
  lua_State *L = luaL_newstate();

  if (L == NULL) return NULL;
  lua_atpanic(L, guard_panic);
  if (base_alloc == NULL) {
    base_alloc = lua_getallocf(L, &base_ud);
    /* What the new state already holds counts, or freeing it would
     * take the count below zero. */
    mem_total = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 +
                (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, guard_alloc, NULL);
  }
  return L;
}

size_t hk_guard_memory(void) { return mem_total; }

void hk_guard_set_limits(int cpu_ms, size_t memory_bytes,
                         size_t total_bytes) {
  if (cpu_ms > 0) limit_ms = cpu_ms;
  if (memory_bytes > 0) mem_limit = memory_bytes;
  if (total_bytes > 0) mem_total_limit = total_bytes;
}

/* ---- CPU ---- */

/* True when the function running is a hook's own code: Lua code that is
 * not the runtime's (C functions report "=[C]"). */
static int guard_in_hook_code(const char *source) {
  return source[0] == '@' &&
         strncmp(source, guard_runtime_src, strlen(guard_runtime_src)) != 0;
}

/* Runs before every interpreted instruction once the limit is passed, and
 * raises the error at each one that belongs to the hook's code, so the
 * hook's own pcall cannot swallow it; the runtime's code (the wrapper and
 * the error handler) runs on. The runtime clears active when the hook's
 * code has finished, and the next call here removes the hook. */
static void guard_hook_cb(lua_State *L, lua_Debug *ar) {
  if (!guard_state.active) {
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  lua_getinfo(L, "Sl", ar);
  if (!guard_in_hook_code(ar->source)) return;
  guard_state.tripped = 1;
  lua_pushfstring(L, "%s:%d: ran longer than %d ms of CPU", ar->short_src,
                  ar->currentline, limit_ms);
  lua_error(L);
}

static void guard_signal_cb(int sig) {
  (void)sig;
  if (!guard_state.active || guard_L == NULL) return;
  if (++guard_state.ticks * GUARD_TICK_MS >= limit_ms)
    lua_sethook(guard_L, guard_hook_cb, LUA_MASKCOUNT, 1);
}

int hk_guard_start(lua_State *L, const char *lua_dir) {
  struct sigevent ev;
  struct sigaction sa;
  struct itimerspec its;

  if (guard_L != NULL) return 0; /* one state per process has it */
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = guard_signal_cb;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGRTMIN + 3, &sa, NULL) != 0) return -1;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_THREAD_ID;
  ev.sigev_signo = SIGRTMIN + 3;
  ev._sigev_un._tid = (pid_t)gettid();
  if (timer_create(CLOCK_THREAD_CPUTIME_ID, &ev, &guard_timer) != 0)
    return -1;
  its.it_interval.tv_sec = its.it_value.tv_sec = 0;
  its.it_interval.tv_nsec = its.it_value.tv_nsec = GUARD_TICK_MS * 1000000L;
  if (timer_settime(guard_timer, 0, &its, NULL) != 0) {
    timer_delete(guard_timer);
    return -1;
  }
  snprintf(guard_runtime_src, sizeof guard_runtime_src, "@%s/", lua_dir);
  guard_L = L;
  guard_armed = 1;
  return 0;
}

void hk_guard_stop(lua_State *L) {
  if (!guard_armed || guard_L != L) return;
  timer_delete(guard_timer);
  guard_armed = 0;
  guard_L = NULL;
}

/* Marking the call is done here, in one call from Lua, because the
 * runtime's routing runs interpreted (the hook code it calls is kept out
 * of the JIT compiler), where each access to shared C memory through FFI
 * costs more than a whole C call. */
int hk_guard_call(lua_State *L) {
  int guarded = guard_L == L, ok, tripped = 0;

  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 4);
  lua_pushvalue(L, 2); /* 5: the handler */
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  if (guarded) {
    guard_state.ticks = 0;
    guard_state.tripped = 0;
    guard_state.calls = (guard_state.calls + 1) & INT32_MAX;
    guard_state.active = 1;
  }
  ok = lua_pcall(L, 2, 1, 5) == 0;
  if (guarded) {
    guard_state.active = 0;
    tripped = guard_state.tripped;
  }
  lua_pushboolean(L, ok);
  lua_insert(L, -2);
  lua_pushinteger(L, tripped);
  return 3;
}
