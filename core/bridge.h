/* The bridge between the C core and the Lua hook runtime in lua/. It owns
 * the router's lua_State, exposes the C functions the runtime may call
 * (module "hookd.core") and calls the runtime's documented entry points.
 * Everything here runs on the loop thread. */
#ifndef HOOKD_BRIDGE_H
#define HOOKD_BRIDGE_H

#include <lua.h>
#include <stddef.h>
#include <stdio.h>

#include "json_lex.h"

typedef struct hk_bridge hk_bridge;

/* What the runtime reports back while routing. slot is the number the
 * core gave the hook when it was loaded. json is one encoded message, owned
 * by the bridge and valid only during the call. */
/* Where a broker message goes: its queue, routing key or topic, and its
 * Kafka key; all NULL for an HTTP message. Valid during the call. */
typedef struct hk_emit_meta {
  const char *route;
  const char *key;
  size_t key_len;
} hk_emit_meta;

typedef struct hk_bridge_callbacks {
  void (*emit_cb)(void *ctx, int slot, const char *json, size_t len,
                  const hk_emit_meta *meta);
  void (*matched_cb)(void *ctx, int slot, long count);
  /* The hook failed on an event (its text, when the runtime has it). */
  void (*failed_cb)(void *ctx, int slot, const char *reason,
                    const char *event, size_t len);
  void (*suspended_cb)(void *ctx, int slot, const char *reason);
  /* A write for the store batch being routed: kind "content" (key1 the
   * send_message_id) or "profile" (key1 list_id, key2 profile_id, json
   * the fields to merge). */
  void (*store_put_cb)(void *ctx, const char *kind, const char *key1,
                       const char *key2, const char *json, size_t len);
  /* The stored JSON for kind and keys (malloc'd), or NULL. */
  char *(*store_get_cb)(void *ctx, const char *kind, const char *key1,
                        const char *key2, size_t *len);
  void *ctx;
} hk_bridge_callbacks;

/* Opens the standard libraries and registers the runtime's modules in L:
 * "hookd.json", "hookd.core", "cjson", and package.path for lua_dir.
 * Returns 0, or -1 with a message in err. */
int hk_lua_open_runtime(lua_State *L, const char *lua_dir, char *err,
                        size_t errlen);

/* Creates a state with the runtime and requires "hookd.router". Returns
 * NULL with a message in err when lua_dir is unusable. */
hk_bridge *hk_bridge_create(const char *lua_dir, char *err, size_t errlen);
void hk_bridge_destroy(hk_bridge *b);
lua_State *hk_bridge_state(hk_bridge *b);
void hk_bridge_set_callbacks(hk_bridge *b, const hk_bridge_callbacks *cbs);
/* The most bytes one message may have (default 1 MiB); a hook's message
 * over it fails that event. */
void hk_bridge_set_max_message(hk_bridge *b, size_t bytes);

/* Validates main.json (its text) with the runtime and leaves the normalized
 * configuration table in the registry for the router. On success pushes
 * the table and returns 0 (caller pops); on failure returns -1 with the
 * reason, which names the offending key, in err. */
int hk_bridge_load_config(hk_bridge *b, const char *text, size_t len,
                          const char *config_dir, char *err, size_t errlen);

/* Compiles and validates a hook from its source. On success pushes a
 * table describing the new version (name, active, send, settings_json) and
 * returns 0; the caller pops it and then either commits the new version
 * (it replaces the running one) or discards it. On failure the previous
 * version stays, err gets "file:line: message", and -1 is returned. */
int hk_bridge_load_hook(hk_bridge *b, const char *id, int slot,
                        const char *chunkname, const char *src, size_t len,
                        char *err, size_t errlen);
void hk_bridge_commit_hook(hk_bridge *b, const char *id, int keep_new);
void hk_bridge_unload_hook(hk_bridge *b, const char *id);

/* Routes a batch of events (each one valid JSON object text) through every
 * loaded hook, in one call into Lua. Results arrive through the callbacks.
 * skips (one per event, or NULL) say where each event's top-level
 * objects and arrays end (json_lex.h). seq names the store batch they go
 * into. Returns 0, or -1 when the runtime itself failed (logged). */
int hk_bridge_route(hk_bridge *b, const char *const *events,
                    const size_t *lens, const hk_event_skips *skips,
                    size_t n, long seq);

/* Routes stored events through hook id alone, as a historical export
 * does (its filters, no content; see router.lua). Returns the number of
 * events the hook captured, or -1 when the runtime failed (logged). */
long hk_bridge_route_export(hk_bridge *b, const char *id,
                            const char *const *events, const size_t *lens,
                            size_t n, long seq);

/* Store batch seq is committed or refused: the runtime forgets the writes
 * it kept for it. */
void hk_bridge_settle(hk_bridge *b, long seq);

/* Writes the log lines the runtime held back by their rate limits (at
 * shutdown: nothing may come after to carry their counts). */
void hk_bridge_flush_logs(hk_bridge *b);

/* Strings returned by a runtime function (see hk_bridge_call_strings). */
typedef struct hk_strlist {
  char **s;
  size_t *len;
  size_t n;
  long index; /* on failure: the index the runtime blamed, or -1 */
} hk_strlist;

/* Calls router[fname] with string arguments. It answers an array of
 * strings, or nil, a reason and optionally an index. Returns 0 with out
 * filled (free it with hk_strlist_free), or -1 with err and out->index. */
int hk_bridge_call_strings(hk_bridge *b, const char *fname, int nargs,
                           const char *const *args, const size_t *lens,
                           hk_strlist *out, char *err, size_t errlen);
void hk_strlist_free(hk_strlist *l);

/* `hookd try`: compiles and validates the hook in src (its examples are
 * not run) as the one hk_bridge_try_events runs. Returns 0, or -1 with
 * "file:line: message" in err. */
int hk_bridge_try_load(hk_bridge *b, const char *chunkname, const char *src,
                       size_t len, char *err, size_t errlen);

/* Runs the hook hk_bridge_try_load loaded over n events (JSON object
 * texts) without sending or storing anything, and writes one line per
 * event to out: the message, "dropped: <stage>: why" or "error: why".
 * Returns the number of error lines, or -1 with err when the runtime
 * itself failed. */
long hk_bridge_try_events(hk_bridge *b, const char *const *events,
                          const size_t *lens, size_t n, FILE *out, char *err,
                          size_t errlen);

/* `hookd check`: every problem of one hook file, each "file:line:
 * message", into problems (see M.check in router.lua). view_json is the
 * router's view of the hook after it tried to load the file, or "" when
 * it loaded. Returns 0, or -1 with err when the runtime failed. */
int hk_bridge_check_hook(hk_bridge *b, const char *id, const char *chunkname,
                         const char *src, size_t len, const char *view_json,
                         size_t view_len, hk_strlist *problems, char *err,
                         size_t errlen);

/* Sets a named catalog table from decoded JSON text. Returns 0 or -1. */
int hk_bridge_set_catalog(hk_bridge *b, const char *text, size_t len,
                          char *err, size_t errlen);

#endif
