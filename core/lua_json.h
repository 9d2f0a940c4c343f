/* The JSON codec the hook runtime uses, faithful to what came in: empty
 * arrays stay [], empty objects {}, null stays null (also inside arrays),
 * integers stay integers up to 19 digits, '/' is not escaped, strings stay
 * valid UTF-8. Registered in Lua as the module "hookd.json". */
#ifndef HOOKD_LUA_JSON_H
#define HOOKD_LUA_JSON_H

#include <lua.h>
#include <stddef.h>

#include "buf.h"
#include "json_lex.h"

/* Opens the module: pushes its table (decode, encode, null, array, object,
 * is_array, number, is_number_literal, copy, array_mt, object_mt,
 * number_mt; and for the runtime decode_event, materialize and event_mt,
 * see lua_event.h). */
int luaopen_hookd_json(lua_State *L);

/* Decodes len bytes of JSON and pushes the value. Returns 0; on error
 * pushes nothing, writes a message into err and returns -1. */
int hk_json_decode_push(lua_State *L, const char *s, size_t len, char *err,
                        size_t errlen);

/* The same for the text of one event (a JSON object) that routing reads:
 * its nested objects and arrays are decoded when first read (see
 * lua_event.h). Text that is not an object, or whose keys repeat, is
 * decoded whole. */
int hk_json_decode_event_push(lua_State *L, const char *s, size_t len,
                              char *err, size_t errlen);
/* The same, stepping over the top-level containers skips says end where
 * (noted by the ingest scanner over the same text; may be NULL). */
int hk_json_decode_event_skips(lua_State *L, const char *s, size_t len,
                               const hk_event_skips *skips, char *err,
                               size_t errlen);

/* Pushes HK_JSON_EVENT_CTX values that make decoding many events
 * cheaper, for a caller that decodes them one after another to keep at
 * hand (as upvalues): the metatables an event's decoding uses, which each
 * decoding would otherwise look up, and a cache of the strings of the
 * keys events have had. */
#define HK_JSON_EVENT_CTX 6
void hk_json_push_event_ctx(lua_State *L);
/* hk_json_decode_event_skips with those values at stack slots
 * ctx..ctx+HK_JSON_EVENT_CTX-1 (absolute). */
int hk_json_decode_event_with(lua_State *L, int ctx, const char *s,
                              size_t len, const hk_event_skips *skips,
                              char *err, size_t errlen);

/* Pushes the metatable that marks decoded objects (json.object_mt). */
void hk_json_push_object_mt(lua_State *L);

/* Encodes the value at idx and appends it to out. Returns 0; on a value
 * JSON cannot hold (NaN, infinity, function, sparse or mixed table, cycle,
 * invalid UTF-8) appends nothing, writes the reason and returns -1. */
int hk_json_encode_append(lua_State *L, int idx, hk_buf *out, char *err,
                          size_t errlen);

#endif
