/* Events decoded on demand. Routing reads a few top-level fields of each
 * event (its type, database, profile id, dates) and seldom its nested
 * objects and arrays (event_data, subscription, profile, content,
 * custom_data), which are most of its values, or its other top-level
 * strings (hashes, secondary ids), each a Lua string to make and collect.
 * So an event is decoded with its top-level numbers, booleans, nulls and
 * event_type, event_date and profile_id in the table and its other
 * members ("kept as text") beside it; such a member is decoded the first
 * time it is read. Code that walks the table (pairs, next, rawget, the
 * encoder, json.copy) first has every member decoded ("materialized"),
 * after which the table is an ordinary decoded object. */
#ifndef HOOKD_LUA_EVENT_H
#define HOOKD_LUA_EVENT_H

#include <lua.h>
#include <stddef.h>

/* Members an event may keep as text, and their bytes; an event whose
 * containers find no room is decoded whole. Strings are kept only while
 * fewer than half of the places are taken (later ones are decoded), so
 * containers always have at least the 16 places they had before strings
 * were kept. Decoding 64 KiB takes well under a millisecond and
 * about a megabyte, so a hook that reads such a member pays little of its
 * limits for it, while a larger event is decoded before the hook runs, as
 * every event was before. */
#define HK_EVENT_LAZY_MAX 32
#define HK_EVENT_LAZY_STRINGS (HK_EVENT_LAZY_MAX / 2)
#define HK_EVENT_LAZY_BYTES ((size_t)64 << 10)

/* The members the decoder left as text, noted while it decodes the
 * top-level object: keys and values point into the event's text. */
typedef struct hk_event_lazy {
  int n;
  size_t bytes; /* keys and values together */
  struct {
    const char *key, *value;
    size_t key_len, value_len;
  } m[HK_EVENT_LAZY_MAX];
} hk_event_lazy;

/* The decoder that notes them is hk_json_decode_event_push (lua_json.h).
 * This keeps the members noted in lazy with the table at idx
 * (absolute) and gives it the events' metatable, found at stack slot mt
 * (absolute), or in the registry when mt is 0. */
void hk_event_attach(lua_State *L, int idx, int mt,
                     const hk_event_lazy *lazy);

/* Whether the table at idx (absolute) still keeps members as text. */
int hk_event_is_lazy(lua_State *L, int idx);

/* Decodes every member the table at idx (absolute) still keeps as
 * text into it and makes it an ordinary decoded object. Does nothing for
 * any other value. Raises a Lua error only when out of memory. */
void hk_event_materialize(lua_State *L, int idx);

/* json.peek(t, key, name) -> t[key][name] when t[key] is a table, else
 * nil; when t is an event that keeps t[key] as text, only that one member
 * of it is decoded (and nothing is kept), so reading one id of event_data
 * does not decode all of it. */
int hk_event_peek(lua_State *L);

/* Pushes the metatable of events that keep members as text. */
void hk_event_push_mt(lua_State *L);

#endif
