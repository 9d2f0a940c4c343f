/* The bridge to the Lua hook runtime: the "hookd.core" module of C helpers
 * and the calls into lua/hookd/router.lua, each under pcall with a
 * traceback so a broken script never takes the router down. */
#include "bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lua5.1/lua-cjson.h>
#include <lualib.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "datetime.h"
#include "guard.h"
#include "json_scan.h"
#include "log.h"
#include "lua_json.h"
#include "splice.h"

struct hk_bridge {
  lua_State *L;
  hk_bridge_callbacks cbs;
  hk_buf scratch;   /* one encoded message at a time */
  hk_buf extra;     /* custom_data and content of a spliced message */
  int router_ref;   /* registry reference to the router module table */
  size_t max_message; /* bytes of one encoded message, at most */
  /* The events being routed, read through core.event(i) rather than
   * copied into Lua strings first. */
  const char *const *batch;
  const size_t *batch_lens;
  const hk_event_skips *batch_skips; /* NULL when not known */
  size_t batch_n;
};

/* ---- random bytes for UUIDs, drawn from the kernel in blocks ---- */

static unsigned char rand_pool[4096];
static size_t rand_left;

static int random_fill(unsigned char *out, size_t n) {
  while (n > 0) {
    size_t take;

    if (rand_left == 0) {
      ssize_t got = getrandom(rand_pool, sizeof rand_pool, 0);
      if (got <= 0) return -1;
      rand_left = (size_t)got;
    }
    take = n < rand_left ? n : rand_left;
    memcpy(out, rand_pool + sizeof rand_pool - rand_left, take);
    rand_left -= take;
    out += take;
    n -= take;
  }
  return 0;
}

/* core.uuid4() -> "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" */
static int core_uuid4(lua_State *L) {
  static const char hex[] = "0123456789abcdef";
  unsigned char b[16];
  char out[36];
  int j = 0;

  if (random_fill(b, sizeof b) != 0) return luaL_error(L, "getrandom failed");
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[j++] = '-';
    out[j++] = hex[b[i] >> 4];
    out[j++] = hex[b[i] & 15];
  }
  lua_pushlstring(L, out, sizeof out);
  return 1;
}

/* core.parse_time(s) -> sec, nsec | nil, message */
static int core_parse_time(lua_State *L) {
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  int64_t sec;
  int32_t nsec;

  if (s == NULL || lua_type(L, 1) != LUA_TSTRING ||
      hk_datetime_parse(s, len, &sec, &nsec) != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "not an RFC 3339 time");
    return 2;
  }
  lua_pushnumber(L, (lua_Number)sec);
  lua_pushnumber(L, (lua_Number)nsec);
  return 2;
}

/* core.check_regex(re) -> true | nil, reason. The same POSIX extended
 * syntax the HTTP transport compiles success_regex with. */
static int core_check_regex(lua_State *L) {
  const char *re = luaL_checkstring(L, 1);
  char reason[256];
  regex_t rx;
  int rc = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB);

  if (rc == 0) {
    regfree(&rx);
    lua_pushboolean(L, 1);
    return 1;
  }
  regerror(rc, &rx, reason, sizeof reason);
  lua_pushnil(L);
  lua_pushstring(L, reason);
  return 2;
}

/* core.log(level, component, message) */
static int core_log(lua_State *L) {
  int level = hk_log_level_parse(luaL_checkstring(L, 1));
  const char *component = luaL_checkstring(L, 2);
  const char *msg = luaL_checkstring(L, 3);

  if (level < 0) return luaL_error(L, "unknown log level");
  hk_log(level, component, "%s", msg);
  return 0;
}

/* core.now() -> wall clock seconds as a float */
static int core_now(lua_State *L) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + ts.tv_nsec / 1e9);
  return 1;
}

/* core.read_file(path) -> text | nil, message. The runtime uses it for
 * plugins/lib modules and the catalog; hooks never see it. */
static int core_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  /* Without O_NONBLOCK opening a FIFO would wait for a writer. */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  FILE *f = NULL;
  hk_buf b = HK_BUF_INIT;
  char chunk[65536];
  struct stat st;
  size_t n;

  if (fd < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      (f = fdopen(fd, "rb")) == NULL) {
    close(fd);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: not a readable regular file", path);
    return 2;
  }
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    hk_buf_append(&b, chunk, n);
  fclose(f);
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  hk_buf_free(&b);
  return 1;
}

static hk_bridge *bridge_upvalue(lua_State *L) {
  hk_bridge *b = lua_touserdata(L, lua_upvalueindex(1));

  if (b == NULL) luaL_error(L, "not available outside the router");
  return b;
}

/* The text of event i (from 1) of the batch being routed, or NULL. */
static const char *batch_event(hk_bridge *b, lua_Integer i, size_t *len) {
  if (b->batch == NULL || i < 1 || (size_t)i > b->batch_n) return NULL;
  *len = b->batch_lens[i - 1];
  return b->batch[i - 1];
}

/* Where the top-level containers of event i (from 1, in the batch) end,
 * or NULL when that is not known. */
static const hk_event_skips *batch_skips(hk_bridge *b, lua_Integer i) {
  if (b->batch_skips == NULL || i < 1 || (size_t)i > b->batch_n) return NULL;
  return &b->batch_skips[i - 1];
}

/* Gives one encoded message to the core, or refuses it for its size:
 * pushes true, or nil and the reason. */
static int hand_over(lua_State *L, hk_bridge *b, int slot, const char *text,
                     size_t len, const hk_emit_meta *meta) {
  if (len > b->max_message) {
    lua_pushnil(L);
    lua_pushfstring(L, "the message is %d bytes, over max_message_bytes "
                    "(%d)", (int)len, (int)b->max_message);
    return 2;
  }
  if (b->cbs.emit_cb) b->cbs.emit_cb(b->cbs.ctx, slot, text, len, meta);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.emit(slot, message [, route [, key]]) -> true | nil, reason.
 * message is a table, encoded here straight into the core's buffer, or
 * its JSON text already encoded; the bytes go to the core with a broker
 * message's route and key. A message that cannot be encoded or is over
 * max_message_bytes is refused: nil and the reason. */
static int core_emit(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);
  int slot = (int)luaL_checkinteger(L, 1);
  hk_emit_meta meta = {NULL, NULL, 0};
  const char *text;
  size_t len;
  char err[256];

  meta.route = luaL_optstring(L, 3, NULL);
  meta.key = luaL_optlstring(L, 4, NULL, &meta.key_len);
  if (lua_type(L, 2) == LUA_TSTRING) {
    text = lua_tolstring(L, 2, &len);
  } else {
    hk_buf_reset(&b->scratch);
    if (hk_json_encode_append(L, 2, &b->scratch, err, sizeof err) != 0) {
      lua_pushnil(L);
      lua_pushfstring(L, "cannot encode message: %s", err);
      return 2;
    }
    text = b->scratch.data;
    len = b->scratch.len;
  }
  return hand_over(L, b, slot, text, len, &meta);
}

/* Encodes the value at idx (unless nil) at the end of b->extra; sets *at
 * to where it starts. With as_text, a string there is JSON text already
 * (content as the store keeps it) and is copied as it is. Returns 0, or
 * -1 with err. */
static int encode_extra(lua_State *L, hk_bridge *b, int idx, int as_text,
                        size_t *at, char *err, size_t errlen) {
  size_t len;
  const char *text;

  *at = b->extra.len;
  if (lua_isnoneornil(L, idx)) return 0;
  if (as_text && lua_type(L, idx) == LUA_TSTRING) {
    text = lua_tolstring(L, idx, &len);
    if (hk_buf_append(&b->extra, text, len) == 0) return 0;
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return hk_json_encode_append(L, idx, &b->extra, err, errlen);
}

/* Splices the message of event (text, or index in the batch being routed)
 * into b->scratch with the custom_data at 3 (a table or nil) and content
 * at 4 (a table, its JSON text, or nil); keep_content at 5. Returns 0, 1
 * when the event cannot be spliced, or -1 with err. */
static int splice_event(lua_State *L, hk_bridge *b, char *err,
                        size_t errlen) {
  size_t len = 0, cd_at, content_at;
  int at = lua_type(L, 2) == LUA_TNUMBER;
  const char *ev = at ? batch_event(b, lua_tointeger(L, 2), &len)
                      : luaL_checklstring(L, 2, &len);
  hk_splice how = {lua_toboolean(L, 5), NULL, 0, NULL, 0, NULL};
  int rc;

  if (ev == NULL) return luaL_argerror(L, 2, "no such event in the batch");
  if (at) how.skips = batch_skips(b, lua_tointeger(L, 2));
  hk_buf_reset(&b->extra);
  if (encode_extra(L, b, 3, 0, &cd_at, err, errlen) != 0) return -1;
  if (encode_extra(L, b, 4, 1, &content_at, err, errlen) != 0) return -1;
  if (!lua_isnoneornil(L, 3)) {
    how.custom_data = b->extra.data + cd_at;
    how.custom_data_len = content_at - cd_at;
  }
  if (!lua_isnoneornil(L, 4)) {
    how.content = b->extra.data + content_at;
    how.content_len = b->extra.len - content_at;
  }
  hk_buf_reset(&b->scratch);
  rc = hk_splice_message(&b->scratch, ev, len, &how);
  if (rc < 0) snprintf(err, errlen, "out of memory");
  return rc;
}

/* Splices the message of the event at 2 (see splice_event) into
 * b->scratch and returns 0; or, when there is none to hand on, pushes
 * false (cannot splice: build the message) or nil and the reason, and
 * returns how many values it pushed. */
static int splice_or_push(lua_State *L, hk_bridge *b) {
  char err[256];
  int rc = splice_event(L, b, err, sizeof err);

  if (rc > 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot encode message: %s", err);
    return 2;
  }
  return 0;
}

/* core.emit_event(slot, event, custom_data, content, keep_content, route,
 * key) -> true | false (cannot splice: build the message) | nil, reason.
 * The message is the event's own text (event: its text, or its index in
 * the batch being routed) with custom_data and content as splice.h says. */
static int core_emit_event(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);
  int slot = (int)luaL_checkinteger(L, 1), pushed;
  hk_emit_meta meta = {NULL, NULL, 0};

  meta.route = luaL_optstring(L, 6, NULL);
  meta.key = luaL_optlstring(L, 7, NULL, &meta.key_len);
  if ((pushed = splice_or_push(L, b)) > 0) return pushed;
  return hand_over(L, b, slot, b->scratch.data, b->scratch.len, &meta);
}

/* core.splice(event, custom_data, content, keep_content) -> the message
 * text | false (cannot splice: build the message) | nil, reason. The
 * message core.emit_event would send, for `hookd try` to print. */
static int core_splice(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);
  int pushed;

  lua_pushnil(L); /* the event goes to 2, where splice_event reads it */
  lua_insert(L, 1);
  if ((pushed = splice_or_push(L, b)) > 0) return pushed;
  lua_pushlstring(L, b->scratch.data, b->scratch.len);
  return 1;
}

/* core.matched(slot, count) */
static int core_matched(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);

  if (b->cbs.matched_cb)
    b->cbs.matched_cb(b->cbs.ctx, (int)luaL_checkinteger(L, 1),
                      (long)luaL_checkinteger(L, 2));
  return 0;
}

/* core.event(i) -> event i (from 1) of the batch being routed, decoded;
 * its nested objects and arrays are decoded when first read. */
static int core_event(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);
  size_t len = 0;
  lua_Integer i = luaL_checkinteger(L, 1);
  const char *text = batch_event(b, i, &len);
  char err[160];

  if (text == NULL) return luaL_argerror(L, 1, "no such event in the batch");
  for (int k = 2; k <= 1 + HK_JSON_EVENT_CTX; k++)
    lua_pushvalue(L, lua_upvalueindex(k));
  if (hk_json_decode_event_with(L, lua_gettop(L) - HK_JSON_EVENT_CTX + 1,
                                text, len, batch_skips(b, i), err,
                                sizeof err) != 0)
    return luaL_error(L, "event %d: %s", (int)i, err);
  return 1;
}

/* core.failed(slot, reason [, event]): event is the event's text, or its
 * index in the batch being routed. */
static int core_failed(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);
  size_t len = 0;
  const char *event = NULL;

  if (lua_type(L, 3) == LUA_TSTRING) event = lua_tolstring(L, 3, &len);
  else if (lua_type(L, 3) == LUA_TNUMBER)
    event = batch_event(b, lua_tointeger(L, 3), &len);

  if (b->cbs.failed_cb)
    b->cbs.failed_cb(b->cbs.ctx, (int)luaL_checkinteger(L, 1),
                     luaL_checkstring(L, 2), event, len);
  return 0;
}

/* core.suspended(slot, reason): the runtime stopped routing to a hook
 * until it is loaded again. */
static int core_suspended(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);

  if (b->cbs.suspended_cb)
    b->cbs.suspended_cb(b->cbs.ctx, (int)luaL_checkinteger(L, 1),
                        luaL_checkstring(L, 2));
  return 0;
}

/* Hands a store write of the batch being routed, (kind, key1, key2) at
 * 1-3 of the stack, to the core. */
static void store_put(lua_State *L, hk_bridge *b, const char *json,
                      size_t len) {
  const char *kind = luaL_checkstring(L, 1);
  const char *k1 = luaL_checkstring(L, 2), *k2 = luaL_optstring(L, 3, NULL);

  if (b->cbs.store_put_cb)
    b->cbs.store_put_cb(b->cbs.ctx, kind, k1, k2, json, len);
}

/* core.store_put(kind, key1, key2, value): a write for the store batch
 * being routed ("content" or "profile"); value is encoded here. */
static int core_store_put(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);
  char err[256];

  hk_buf_reset(&b->scratch);
  if (hk_json_encode_append(L, 4, &b->scratch, err, sizeof err) != 0)
    return luaL_error(L, "store_put: %s", err);
  store_put(L, b, b->scratch.data, b->scratch.len);
  return 0;
}

/* core.store_put_json(kind, key1, key2, text): the same for a value that
 * is already JSON text, such as a member of an event as it came. */
static int core_store_put_json(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);
  size_t len;
  const char *text = luaL_checklstring(L, 4, &len);

  store_put(L, b, text, len);
  return 0;
}

/* core.event_member(i, name) -> the JSON text of the top-level member
 * name of event i of the batch being routed; nil when it has none; false
 * when only decoding can tell which (a key with escapes, or given twice). */
static int core_event_member(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);
  size_t len = 0, value_len = 0;
  lua_Integer i = luaL_checkinteger(L, 1);
  const char *text = batch_event(b, i, &len);
  const char *name = luaL_checkstring(L, 2), *value = NULL;
  int found;

  if (text == NULL) return luaL_argerror(L, 1, "no such event in the batch");
  found = hk_splice_member_skips(text, len, batch_skips(b, i), name, &value,
                                 &value_len);
  if (found > 0) lua_pushlstring(L, value, value_len);
  else if (found == 0) lua_pushnil(L);
  else lua_pushboolean(L, 0);
  return 1;
}

/* core.store_get(kind, key1, key2) -> JSON text | nil */
static int core_store_get(lua_State *L) {
  hk_bridge *b = bridge_upvalue(L);
  const char *kind = luaL_checkstring(L, 1);
  const char *k1 = luaL_checkstring(L, 2), *k2 = luaL_optstring(L, 3, NULL);
  size_t len = 0;
  char *text = NULL;

  if (b->cbs.store_get_cb)
    text = b->cbs.store_get_cb(b->cbs.ctx, kind, k1, k2, &len);
  if (text == NULL) return 0;
  lua_pushlstring(L, text, len);
  free(text);
  return 1;
}

static const luaL_Reg core_funcs[] = {
    {"store_put", core_store_put}, {"store_get", core_store_get},
    {"store_put_json", core_store_put_json},
    {"event_member", core_event_member},
    {"uuid4", core_uuid4},     {"parse_time", core_parse_time},
    {"log", core_log},         {"now", core_now},
    {"read_file", core_read_file}, {"emit", core_emit},
    {"emit_event", core_emit_event},
    {"splice", core_splice},
    {"matched", core_matched}, {"failed", core_failed},
    {"guard_call", hk_guard_call},     {"check_regex", core_check_regex},
    {"suspended", core_suspended}, {NULL, NULL}};

/* package.preload["hookd.core"]; upvalue 1 is the bridge or NULL. */
static int open_core(lua_State *L) {
  lua_newtable(L);
  for (const luaL_Reg *f = core_funcs; f->name; f++) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  /* core.event decodes every event routed: it keeps what makes that
   * cheaper as upvalues, after the bridge. */
  lua_pushvalue(L, lua_upvalueindex(1));
  hk_json_push_event_ctx(L);
  lua_pushcclosure(L, core_event, 1 + HK_JSON_EVENT_CTX);
  lua_setfield(L, -2, "event");
  lua_pushstring(L, HOOKD_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction fn,
                    void *upvalue) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushlightuserdata(L, upvalue);
  lua_pushcclosure(L, fn, 1);
  lua_setfield(L, -2, name);
  lua_pop(L, 2);
}

static int open_runtime(lua_State *L, const char *lua_dir, void *bridge,
                        char *err, size_t errlen) {
  luaL_openlibs(L);
  preload(L, "hookd.json", luaopen_hookd_json, NULL);
  preload(L, "hookd.core", open_core, bridge);
  preload(L, "cjson", luaopen_cjson, NULL);

  /* Only the runtime's own folder: no ./?.lua, no system paths. */
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.lua", lua_dir);
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  lua_pushstring(L, lua_dir);
  lua_setfield(L, LUA_REGISTRYINDEX, "hookd.lua_dir");
  (void)err;
  (void)errlen;
  return 0;
}

int hk_lua_open_runtime(lua_State *L, const char *lua_dir, char *err,
                        size_t errlen) {
  return open_runtime(L, lua_dir, NULL, err, errlen);
}

/* Message handler for lua_pcall: adds a traceback to string errors.
 * Stack: [msg] -> [msg with traceback]. */
static int traceback_cb(lua_State *L) {
  const char *msg = lua_tostring(L, 1);

  if (msg == NULL) msg = "(error object is not a string)";
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls router[fname] with nargs arguments already pushed above it.
 * Stack: [args...] -> [results...] (nresults) on success, [] on failure
 * with err filled from the error message and its traceback. */
static int call_router(hk_bridge *b, const char *fname, int nargs,
                       int nresults, char *err, size_t errlen) {
  lua_State *L = b->L;
  int base = lua_gettop(L) - nargs;

  lua_pushcfunction(L, traceback_cb);
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->router_ref);
  lua_getfield(L, -1, fname);
  lua_remove(L, -2);
  lua_insert(L, base + 1);
  lua_insert(L, base + 1);
  if (lua_pcall(L, nargs, nresults, base + 1) != 0) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, base);
    return -1;
  }
  lua_remove(L, base + 1);
  return 0;
}

/* Calls a router function that answers "value" or "nil, message".
 * Stack: [args...] -> [value] and 0, or [] and -1 with err filled. */
static int call_router_value(hk_bridge *b, const char *fname, int nargs,
                             char *err, size_t errlen) {
  if (call_router(b, fname, nargs, 2, err, errlen) != 0) return -1;
  if (lua_isnil(b->L, -2)) {
    snprintf(err, errlen, "%s", lua_tostring(b->L, -1));
    lua_pop(b->L, 2);
    return -1;
  }
  lua_pop(b->L, 1);
  return 0;
}

hk_bridge *hk_bridge_create(const char *lua_dir, char *err, size_t errlen) {
  hk_bridge *b = calloc(1, sizeof *b);

  if (b == NULL) goto fail;
  b->max_message = (size_t)1 << 20;
  b->L = hk_guard_new_state();
  if (b->L == NULL) goto fail;
  open_runtime(b->L, lua_dir, b, err, errlen);
  if (hk_guard_start(b->L, lua_dir) != 0)
    hk_warn("lua", "cpu_guard=off reason=\"%s\"", strerror(errno));
  lua_getglobal(b->L, "require");
  lua_pushliteral(b->L, "hookd.router");
  if (lua_pcall(b->L, 1, 1, 0) != 0) {
    snprintf(err, errlen, "cannot load the Lua runtime from %s: %s", lua_dir,
             lua_tostring(b->L, -1));
    goto fail;
  }
  b->router_ref = luaL_ref(b->L, LUA_REGISTRYINDEX);
  /* A collection cycle starts when the heap is three times what the last
   * one left (twice by default): routing makes garbage fast, and each
   * cycle marks everything live and sweeps the whole string table, so
   * fewer cycles spare the loop more than the larger heap costs (a
   * megabyte or two of RSS in the benchmark). */
  lua_gc(b->L, LUA_GCSETPAUSE, 300);
  return b;

fail:
  if (b && !b->L) snprintf(err, errlen, "out of memory");
  hk_bridge_destroy(b);
  return NULL;
}

void hk_bridge_destroy(hk_bridge *b) {
  if (b == NULL) return;
  hk_guard_stop(b->L);
  if (b->L) lua_close(b->L);
  hk_buf_free(&b->scratch);
  hk_buf_free(&b->extra);
  free(b);
}

lua_State *hk_bridge_state(hk_bridge *b) { return b->L; }

void hk_bridge_set_max_message(hk_bridge *b, size_t bytes) {
  if (bytes > 0) b->max_message = bytes;
}

void hk_bridge_set_callbacks(hk_bridge *b, const hk_bridge_callbacks *cbs) {
  b->cbs = *cbs;
}

int hk_bridge_load_config(hk_bridge *b, const char *text, size_t len,
                          const char *config_dir, char *err, size_t errlen) {
  lua_pushlstring(b->L, text, len);
  lua_pushstring(b->L, config_dir);
  return call_router_value(b, "configure", 2, err, errlen);
}

int hk_bridge_load_hook(hk_bridge *b, const char *id, int slot,
                        const char *chunkname, const char *src, size_t len,
                        char *err, size_t errlen) {
  lua_pushstring(b->L, id);
  lua_pushinteger(b->L, slot);
  lua_pushstring(b->L, chunkname);
  lua_pushlstring(b->L, src, len);
  return call_router_value(b, "load", 4, err, errlen);
}

void hk_bridge_commit_hook(hk_bridge *b, const char *id, int keep_new) {
  char err[512];

  lua_pushstring(b->L, id);
  lua_pushboolean(b->L, keep_new);
  if (call_router(b, "commit", 2, 0, err, sizeof err) != 0)
    hk_error("lua", "hook=%s commit failed: %s", id, err);
}

void hk_bridge_unload_hook(hk_bridge *b, const char *id) {
  char err[512];

  lua_pushstring(b->L, id);
  if (call_router(b, "unload", 1, 0, err, sizeof err) != 0)
    hk_error("lua", "hook=%s unload failed: %s", id, err);
}

/* Pushes the events as one Lua array of strings. */
static void push_events(lua_State *L, const char *const *events,
                        const size_t *lens, size_t n) {
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushlstring(L, events[i], lens[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
}

/* Makes events the batch core.event reads, and pushes its size and seq. */
static void open_batch(hk_bridge *b, const char *const *events,
                       const size_t *lens, const hk_event_skips *skips,
                       size_t n, long seq) {
  b->batch = events;
  b->batch_lens = lens;
  b->batch_skips = skips;
  b->batch_n = n;
  lua_pushnumber(b->L, (lua_Number)n);
  lua_pushnumber(b->L, (lua_Number)seq);
}

static void close_batch(hk_bridge *b) {
  b->batch = NULL;
  b->batch_lens = NULL;
  b->batch_skips = NULL;
  b->batch_n = 0;
}

int hk_bridge_route(hk_bridge *b, const char *const *events,
                    const size_t *lens, const hk_event_skips *skips,
                    size_t n, long seq) {
  char err[1024];
  int rc;

  open_batch(b, events, lens, skips, n, seq);
  rc = call_router(b, "route", 2, 0, err, sizeof err);
  close_batch(b);
  if (rc != 0) {
    hk_error("lua", "routing failed events=%zu error=\"%s\"", n, err);
    return -1;
  }
  return 0;
}

long hk_bridge_route_export(hk_bridge *b, const char *id,
                            const char *const *events, const size_t *lens,
                            size_t n, long seq) {
  char err[1024];
  long captured;
  int rc;

  open_batch(b, events, lens, NULL, n, seq);
  lua_pushstring(b->L, id);
  rc = call_router(b, "route_export", 3, 1, err, sizeof err);
  close_batch(b);
  if (rc != 0) {
    hk_error("lua", "hook=%s export routing failed events=%zu "
             "error=\"%s\"", id, n, err);
    return -1;
  }
  captured = (long)lua_tonumber(b->L, -1);
  lua_pop(b->L, 1);
  return captured;
}

void hk_bridge_settle(hk_bridge *b, long seq) {
  char err[512];

  lua_pushnumber(b->L, (lua_Number)seq);
  if (call_router(b, "settle", 1, 0, err, sizeof err) != 0)
    hk_error("lua", "settle failed: %s", err);
}

void hk_bridge_flush_logs(hk_bridge *b) {
  char err[512];

  if (call_router(b, "flush_logs", 0, 0, err, sizeof err) != 0)
    hk_error("lua", "flush_logs failed: %s", err);
}

/* Copies the strings of the array at the top of the stack into out. */
static void take_strings(lua_State *L, hk_strlist *out) {
  size_t n = lua_objlen(L, -1);

  out->s = calloc(n ? n : 1, sizeof *out->s);
  out->len = calloc(n ? n : 1, sizeof *out->len);
  for (size_t i = 0; out->s && out->len && i < n; i++) {
    const char *v;
    size_t len;

    lua_rawgeti(L, -1, (int)i + 1);
    v = lua_tolstring(L, -1, &len);
    out->s[i] = malloc(len + 1);
    if (out->s[i] == NULL) break;
    memcpy(out->s[i], v ? v : "", len);
    out->s[i][len] = '\0';
    out->len[i] = len;
    out->n = i + 1;
    lua_pop(L, 1);
  }
}

int hk_bridge_call_strings(hk_bridge *b, const char *fname, int nargs,
                           const char *const *args, const size_t *lens,
                           hk_strlist *out, char *err, size_t errlen) {
  lua_State *L = b->L;

  memset(out, 0, sizeof *out);
  out->index = -1;
  for (int i = 0; i < nargs; i++) lua_pushlstring(L, args[i], lens[i]);
  if (call_router(b, fname, nargs, 3, err, errlen) != 0) return -1;
  if (!lua_istable(L, -3)) {
    snprintf(err, errlen, "%s", lua_isstring(L, -2) ? lua_tostring(L, -2)
                                                     : "invalid");
    if (lua_isnumber(L, -1)) out->index = (long)lua_tonumber(L, -1);
    lua_pop(L, 3);
    return -1;
  }
  lua_pop(L, 2);
  take_strings(L, out);
  lua_pop(L, 1);
  return 0;
}

void hk_strlist_free(hk_strlist *l) {
  for (size_t i = 0; i < l->n; i++) free(l->s[i]);
  free(l->s);
  free(l->len);
  memset(l, 0, sizeof *l);
}

int hk_bridge_set_catalog(hk_bridge *b, const char *text, size_t len,
                          char *err, size_t errlen) {
  lua_pushlstring(b->L, text, len);
  if (call_router_value(b, "set_catalog", 1, err, errlen) != 0) return -1;
  lua_pop(b->L, 1);
  return 0;
}

int hk_bridge_try_load(hk_bridge *b, const char *chunkname, const char *src,
                       size_t len, char *err, size_t errlen) {
  lua_pushstring(b->L, chunkname);
  lua_pushlstring(b->L, src, len);
  if (call_router_value(b, "try", 2, err, errlen) != 0) return -1;
  lua_pop(b->L, 1);
  return 0;
}

long hk_bridge_try_events(hk_bridge *b, const char *const *events,
                          const size_t *lens, size_t n, FILE *out, char *err,
                          size_t errlen) {
  lua_State *L = b->L;
  size_t lines;
  long failures = 0;

  push_events(L, events, lens, n);
  if (call_router_value(b, "try_events", 1, err, errlen) != 0) return -1;
  lines = lua_objlen(L, -1);
  for (size_t i = 1; i <= lines; i++) {
    size_t len;
    const char *line;

    lua_rawgeti(L, -1, (int)i);
    line = lua_tolstring(L, -1, &len);
    fwrite(line, 1, len, out);
    fputc('\n', out);
    if (strncmp(line, "error:", 6) == 0) failures++;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return failures;
}

int hk_bridge_check_hook(hk_bridge *b, const char *id, const char *chunkname,
                         const char *src, size_t len, const char *view_json,
                         size_t view_len, hk_strlist *problems, char *err,
                         size_t errlen) {
  const char *args[4] = {id, chunkname, src, view_json ? view_json : ""};
  size_t lens[4] = {strlen(id), strlen(chunkname), len,
                    view_json ? view_len : 0};

  return hk_bridge_call_strings(b, "check", 4, args, lens, problems, err,
                                errlen);
}
