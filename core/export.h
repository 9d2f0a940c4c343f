/* Historical exports: re-sending the stored events of a range of days
 * through one hook, with its current settings, alongside live traffic.
 * One export per hook at a time; its progress is kept in the store, so a
 * restart resumes it where it was. Loop thread only. */
#ifndef HOOKD_EXPORT_H
#define HOOKD_EXPORT_H

#include <uv.h>

#include "buf.h"
#include "router.h"
#include "store.h"

typedef struct hk_exports hk_exports;

/* Reads the exports kept in the store and goes on with those in
 * progress. Returns NULL only when out of memory. */
hk_exports *hk_exports_create(uv_loop_t *loop, hk_router *router,
                              hk_store *store);

/* Starting an export of hook for the UTC days from..to (YYYY-MM-DD),
 * that is event dates in [from_ts, to_ts). done runs once the export's
 * start is stored (status 201, the export rendered into body) or when it
 * cannot start (status 409 or 503, reason in body). */
typedef void (*hk_export_done_cb)(void *ctx, int status, const char *body);
void hk_export_start(hk_exports *xs, const char *hook, const char *from,
                     const char *to, double from_ts, double to_ts,
                     hk_export_done_cb done, void *ctx);

/* "pause", "resume" or "abort". Returns 200 with the export rendered into
 * out, or 404 (none) or 409 (not in a state that allows it) with the
 * reason in out. */
int hk_export_control(hk_exports *xs, const char *hook, const char *what,
                      hk_buf *out);

/* Appends the export's status object. Returns 0, or -1 when hook has
 * never had one. */
int hk_export_render(hk_exports *xs, const char *hook, hk_buf *out);

/* The hook was stopped (an export in progress pauses) or activated (an
 * export the stop paused goes on). */
void hk_exports_hook_active(hk_exports *xs, const char *hook, int active);

/* The hook was deleted (its stored export went with it). */
void hk_exports_forget(hk_exports *xs, const char *hook);

/* Shutting down: no new chunk starts. */
void hk_exports_quiet(hk_exports *xs);

/* Calls cb for each export (for metrics). */
typedef struct hk_export_progress {
  const char *hook, *status;
  long total, scanned, sent;
} hk_export_progress;
void hk_exports_each(hk_exports *xs,
                     void (*cb)(void *ctx, const hk_export_progress *p),
                     void *ctx);

#endif
