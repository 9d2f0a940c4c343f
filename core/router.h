/* The set of hooks as the core sees it: for each hook its loaded version,
 * state, counters and dispatcher; loading scripts through the bridge and
 * routing event batches into the hooks' queues. Loop thread only. */
#ifndef HOOKD_ROUTER_H
#define HOOKD_ROUTER_H

#include <stddef.h>
#include <stdio.h>
#include <uv.h>

#include "bridge.h"
#include "buf.h"
#include "dispatch.h"
#include "store.h"
#include "transport/http.h"

typedef struct hk_router hk_router;

typedef struct hk_route_job hk_route_job;

/* content_hours: how long stored content may be attached. */
hk_router *hk_router_create(uv_loop_t *loop, hk_bridge *bridge,
                            hk_http_client *http, hk_store *store,
                            const hk_retry_policy *policy,
                            double content_hours);

/* Loads (or reloads) hook id from path. On failure the previous version
 * keeps running and the error is kept for the API. Returns 0 or -1. */
int hk_router_load_file(hk_router *r, const char *id, const char *path);

/* The same for a file already read: src and len its text, or src NULL and
 * read_errno why it could not be read. `hookd check` reads each file once
 * (it may be a FIFO) and hands the text to the runtime twice. */
int hk_router_load_text(hk_router *r, const char *id, const char *path,
                        const char *src, size_t len, int read_errno);

/* The hook's file is gone: it stops capturing; what it queued is still
 * delivered. */
void hk_router_remove(hk_router *r, const char *id);

/* The hooks that use the module at path (relative to plugins_dir/lib, as
 * "geo.lua" or "sub/x.lua"): those whose running version or last load
 * attempt required it, directly or through another module. Returns 0 with
 * their ids in out (free it with hk_strlist_free), or -1 (logged). */
int hk_router_module_dependents(hk_router *r, const char *path,
                                hk_strlist *out);

/* Routing a request: begin a job on the store batch that will carry its
 * results, route its events (in one or more calls), submit the batch,
 * and once the store reports on it, finish the job: committed, the
 * messages go to their dispatchers; refused, they are forgotten. */
hk_route_job *hk_router_job_begin(hk_router *r, hk_store_batch *batch);
void hk_router_route(hk_router *r, hk_route_job *job,
                     const char *const *events, const size_t *lens,
                     const hk_event_skips *skips, size_t n);
void hk_router_job_finish(hk_router *r, hk_route_job *job, int committed);
/* Routes stored events through hook id alone, as a historical export,
 * into job. Returns the events it captured, or -1 (logged). */
long hk_router_route_export(hk_router *r, hk_route_job *job, const char *id,
                            const char *const *events, const size_t *lens,
                            size_t n);
size_t hk_router_job_messages(const hk_route_job *job);
/* Events a hook's code failed on while the job was routed. */
long hk_router_job_failed(const hk_route_job *job);
/* The outbox ids of the job's first and last message, once committed
 * (0 and 0 when it made none). */
void hk_router_job_ids(const hk_route_job *job, int64_t *first,
                       int64_t *last);

/* n dead letters of hook id went back to its outbox: they count as
 * queued again, and its dispatcher reads them from the store. */
void hk_router_resent(hk_router *r, const char *id, long n);

/* Activate (1) or stop (0) hook id, as stored through the API: a stopped
 * hook captures nothing and holds its queue. Returns -1 when there is no
 * such hook. */
int hk_router_set_active(hk_router *r, const char *id, int active);

/* Deleting hook id: hk_router_delete unloads it and holds its queue at
 * once; once the store has emptied its outbox, hk_router_deleted forgets
 * its window and counters. A file of that id loaded later is a new hook. */
void hk_router_delete(hk_router *r, const char *id);
void hk_router_deleted(hk_router *r, const char *id);

uv_loop_t *hk_router_loop(hk_router *r);

/* The hook's dispatcher, file and destination (for logs: "-" when none);
 * NULL for a hook that does not exist or was deleted. */
hk_dispatch *hk_router_dispatch(hk_router *r, const char *id);
const char *hk_router_hook_file(hk_router *r, const char *id);
const char *hk_router_destination(hk_router *r, const char *id);
/* The hook's last load error (its file does not load now), or NULL. */
const char *hk_router_hook_error(hk_router *r, const char *id);

/* Nonzero when hook id is loaded, active and not suspended. */
int hk_router_hook_active(hk_router *r, const char *id);
/* Nonzero when hook id is listed by the API (loaded, broken, or removed
 * with messages still queued). */
int hk_router_hook_exists(hk_router *r, const char *id);

/* A test send failed before it left: the hook's code failed on the
 * event or dropped it. Counted and logged. */
void hk_router_test_failed(hk_router *r, const char *id, const char *reason);

/* Nonzero when hook id exists and has a loaded version. */
int hk_router_has_hook(hk_router *r, const char *id);

/* Appends {"hooks": [...]} or one hook's object; the latter returns -1 when
 * there is no such hook. */
void hk_router_render_hooks(hk_router *r, hk_buf *out);
int hk_router_render_hook(hk_router *r, const char *id, hk_buf *out);

/* What the metrics show of a hook. */
typedef struct hk_hook_view {
  const char *id, *transport, *state;
  const hk_counters *counters;
  long loads, load_failures;
  double lua_seconds; /* estimated time in its Lua code */
} hk_hook_view;

/* Reads what the runtime measured (Lua time per hook) into the views of
 * hk_router_each; once per scrape. */
void hk_router_refresh_stats(hk_router *r);
/* Calls cb for every hook the API lists. */
void hk_router_each(hk_router *r,
                    void (*cb)(void *ctx, const hk_hook_view *v),
                    void *ctx);

/* Number of hooks whose file failed to load (for `hookd check`). */
int hk_router_broken_count(hk_router *r);

/* Shutting down: deliveries in flight finish, nothing new is sent. */
void hk_router_quiet(hk_router *r);
/* Nonzero when no delivery is in flight. */
int hk_router_settled(hk_router *r);

/* Logs, per hook, the messages still in its outbox (they are sent after
 * the next start); returns how many that is in all. */
long hk_router_log_undelivered(hk_router *r);

/* Warns about messages in the outbox of hooks that have no file. */
void hk_router_log_orphans(hk_router *r);

/* Prints "file: error" for every hook that failed to load, to out. */
void hk_router_print_problems(hk_router *r, FILE *out);

/* There is no destroy: a router lives as long as the process. After the
 * loop stops, main returns and the operating system takes the memory back;
 * queues were drained or reported by then (see hk_router_log_undelivered).
 */

#endif
