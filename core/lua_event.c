/* Events whose members are decoded when first read (see lua_event.h).
 *
 * The table keeps, under a key no Lua code can write (a light userdata),
 * a userdata holding the key and JSON text of each member kept as text (a
 * container, or a string other than the few routing reads). Its
 * metatable's __index decodes such a member the first time it is read
 * and stores it in the table, so later reads are plain table reads;
 * __newindex notes a member that code sets before reading it. Either way
 * the member counts as resolved: should code then remove it, a later read
 * gives nil, not the text again. */
#include "lua_event.h"

#include <lauxlib.h>
#include <stdint.h>
#include <string.h>

#include "json_lex.h"
#include "lua_json.h"
#include "splice.h"

/* Registry and table keys: their addresses are what is unique. */
static const char k_event_mt_key = 'e';
static const char k_state_key = 's';

/* One member kept as text: offsets into the state's bytes. */
typedef struct lazy_entry {
  uint32_t key, key_len, value, value_len;
} lazy_entry;

typedef struct lazy_state {
  uint32_t n;        /* members kept as text */
  uint32_t resolved; /* bit i: member i was read or set */
  lazy_entry e[];    /* then the keys and values, one after another */
} lazy_state;

static const char *state_bytes(const lazy_state *s) {
  return (const char *)&s->e[s->n];
}

/* The state of the table at idx, or NULL once it has none. */
static lazy_state *state_of(lua_State *L, int idx) {
  lazy_state *s;

  lua_pushlightuserdata(L, (void *)&k_state_key);
  lua_rawget(L, idx);
  s = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return s;
}

/* The member kept as text named by the string at key_idx, or -1. */
static int find(lua_State *L, const lazy_state *s, int key_idx) {
  size_t len;
  const char *key = lua_tolstring(L, key_idx, &len);
  const char *bytes = state_bytes(s);

  for (uint32_t i = 0; i < s->n; i++)
    if (s->e[i].key_len == len && memcmp(bytes + s->e[i].key, key, len) == 0)
      return (int)i;
  return -1;
}

/* Pushes the value if it is one of the common simple ones: a string of
 * ASCII without escapes or control characters, or an integer of at most
 * 15 digits. Returns whether it did; anything else is for the decoder. */
static int push_simple(lua_State *L, const char *text, size_t len) {
  const unsigned char *p = (const unsigned char *)text;
  size_t digits = len - (len > 0 && *p == '-');
  double v = 0;

  if (len >= 2 && p[0] == '"') {
    if (hk_json_plain_run(p + 1, p + len) != p + len - 1 ||
        p[len - 1] != '"')
      return 0;
    lua_pushlstring(L, text + 1, len - 2);
    return 1;
  }
  if (digits == 0 || digits > 15 || (digits > 1 && p[len - digits] == '0'))
    return 0;
  for (size_t i = len - digits; i < len; i++) {
    if (p[i] < '0' || p[i] > '9') return 0;
    v = v * 10 + (p[i] - '0');
  }
  lua_pushnumber(L, digits == len ? v : -v);
  return 1;
}

/* Decodes the JSON text and pushes it; raises on an error. When hook
 * code reads the member, this counts against its limits like any of its
 * work: the decoder keeps events of large members whole (see
 * HK_EVENT_LAZY_BYTES), so that is little. */
static void push_decoded(lua_State *L, const char *key, size_t key_len,
                         const char *text, size_t len) {
  char err[160];

  if (push_simple(L, text, len)) return;
  if (hk_json_decode_push(L, text, len, err, sizeof err) != 0) {
    lua_pushlstring(L, key, key_len);
    luaL_error(L, "event member %s: %s", lua_tostring(L, -1), err);
  }
}

/* Decodes member i and pushes it; marks it resolved. */
static void push_member(lua_State *L, lazy_state *s, int i) {
  const char *bytes = state_bytes(s);

  push_decoded(L, bytes + s->e[i].key, s->e[i].key_len,
               bytes + s->e[i].value, s->e[i].value_len);
  s->resolved |= 1u << i;
}

/* __index(t, k): a member not read yet, decoded and kept in t. */
static int event_index(lua_State *L) {
  lazy_state *s;
  int i;

  if (lua_type(L, 2) != LUA_TSTRING || (s = state_of(L, 1)) == NULL) return 0;
  if ((i = find(L, s, 2)) < 0 || (s->resolved & (1u << i))) return 0;
  push_member(L, s, i);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
}

/* __newindex(t, k, v): sets the key; a member set before it was read
 * is resolved with the value given. */
static int event_newindex(lua_State *L) {
  lazy_state *s;
  int i;

  if (lua_type(L, 2) == LUA_TSTRING && (s = state_of(L, 1)) != NULL &&
      (i = find(L, s, 2)) >= 0)
    s->resolved |= 1u << i;
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 0;
}

void hk_event_push_mt(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&k_event_mt_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (!lua_isnil(L, -1)) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, event_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, event_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "object");
  lua_setfield(L, -2, "__json");
  lua_pushlightuserdata(L, (void *)&k_event_mt_key);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

void hk_event_attach(lua_State *L, int idx, int mt,
                     const hk_event_lazy *lazy) {
  size_t head = sizeof(lazy_state) + (size_t)lazy->n * sizeof(lazy_entry);
  lazy_state *s;
  char *bytes;
  uint32_t at = 0;

  lua_pushlightuserdata(L, (void *)&k_state_key);
  s = lua_newuserdata(L, head + lazy->bytes);
  s->n = (uint32_t)lazy->n;
  s->resolved = 0;
  bytes = (char *)s + head;
  for (int i = 0; i < lazy->n; i++) {
    s->e[i].key = at;
    s->e[i].key_len = (uint32_t)lazy->m[i].key_len;
    memcpy(bytes + at, lazy->m[i].key, lazy->m[i].key_len);
    at += (uint32_t)lazy->m[i].key_len;
    s->e[i].value = at;
    s->e[i].value_len = (uint32_t)lazy->m[i].value_len;
    memcpy(bytes + at, lazy->m[i].value, lazy->m[i].value_len);
    at += (uint32_t)lazy->m[i].value_len;
  }
  lua_rawset(L, idx);
  if (mt) lua_pushvalue(L, mt);
  else hk_event_push_mt(L);
  lua_setmetatable(L, idx);
}

int hk_event_is_lazy(lua_State *L, int idx) {
  int yes;

  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  hk_event_push_mt(L);
  yes = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return yes;
}

void hk_event_materialize(lua_State *L, int idx) {
  lazy_state *s;
  const char *bytes;

  if (!hk_event_is_lazy(L, idx)) return;
  luaL_checkstack(L, 4, "materialize");
  if ((s = state_of(L, idx)) != NULL) {
    bytes = state_bytes(s);
    for (uint32_t i = 0; i < s->n; i++) {
      if (s->resolved & (1u << i)) continue;
      lua_pushlstring(L, bytes + s->e[i].key, s->e[i].key_len);
      push_member(L, s, (int)i);
      lua_rawset(L, idx);
    }
    lua_pushlightuserdata(L, (void *)&k_state_key);
    lua_pushnil(L);
    lua_rawset(L, idx);
  }
  hk_json_push_object_mt(L);
  lua_setmetatable(L, idx);
}

/* Pushes member name of the container at i, decoding only that member;
 * returns 0, or -1 when only decoding the whole container can tell (a
 * key with escapes or given twice). */
static int peek_text(lua_State *L, const lazy_state *s, int i,
                     const char *name) {
  const char *bytes = state_bytes(s), *value;
  size_t value_len;
  int found = hk_splice_member(bytes + s->e[i].value, s->e[i].value_len,
                               name, &value, &value_len);

  if (found < 0) return -1;
  if (found == 0) lua_pushnil(L);
  else push_decoded(L, name, strlen(name), value, value_len);
  return 0;
}

int hk_event_peek(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 3, &len);
  lazy_state *s;
  int i;

  luaL_checkany(L, 2);
  lua_settop(L, 3);
  if (hk_event_is_lazy(L, 1) && lua_type(L, 2) == LUA_TSTRING &&
      strlen(name) == len && (s = state_of(L, 1)) != NULL &&
      (i = find(L, s, 2)) >= 0 && !(s->resolved & (1u << i)) &&
      peek_text(L, s, i, name) == 0)
    return 1;
  if (!lua_istable(L, 1)) return 0;
  lua_pushvalue(L, 2);
  lua_gettable(L, 1);
  if (!lua_istable(L, -1)) return 0;
  lua_pushvalue(L, 3);
  lua_gettable(L, -2);
  return 1;
}
