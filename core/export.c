/* Historical exports. An export reads the stored events of its range in
 * the order they were received, a page at a time, routes each page
 * through its hook alone, and commits the messages to the hook's outbox
 * together with its new position, in one store batch: a crash can
 * neither skip a page nor send one twice.
 *
 * Live traffic is not starved: the next page is read only once the last
 * page's messages have left the outbox (delivered, or set aside as dead
 * letters), so at most one page of export messages stands in front of
 * live messages at any time. */
#include "export.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "datetime.h"
#include "hook_files.h"
#include "json_write.h"
#include "log.h"

#define TICK_MS 50
#define PAGE_EVENTS 1000
#define STORE_RETRY_SEC 1.0
#define READ_FAILURES_MAX 20 /* in a row, before the export is an error */

typedef struct hk_export {
  struct hk_export *next;
  char hook[HK_HOOK_ID_MAX + 1];
  char from[16], to[16];
  double from_ts, to_ts;
  char status[16];   /* in_progress, paused, completed, error, aborted */
  char paused_by[8]; /* "user" or "hook" while paused */
  char reason[256];
  long total, scanned, sent;
  long failed; /* events the hook's code failed on: dead letters */
  double started_at, ended_at;
  double cursor_date; /* the date of the last event taken */
  int64_t cursor_id;  /* its history id: pages go on after it */
  int64_t chunk_first, chunk_last; /* outbox ids of the page in flight */
  long chunk_count;                /* its messages; 0 when none */
  int busy;                        /* a page is being committed */
  int gone;                        /* forgotten while busy: freed after */
  double not_before;               /* after a store failure */
  int read_failures;
} hk_export;

struct hk_exports {
  uv_loop_t *loop;
  uv_timer_t tick;
  hk_router *router;
  hk_store *store;
  hk_export *list;
  int quiet;
};

static double now_sec(void) { return hk_store_now(); }

static int is(const hk_export *x, const char *status) {
  return strcmp(x->status, status) == 0;
}

static void set_status(hk_export *x, const char *status, const char *reason) {
  snprintf(x->status, sizeof x->status, "%s", status);
  snprintf(x->reason, sizeof x->reason, "%s", reason ? reason : "");
  if (!is(x, "paused")) x->paused_by[0] = '\0';
  if (is(x, "completed") || is(x, "error") || is(x, "aborted"))
    x->ended_at = now_sec();
}

static hk_export *find(hk_exports *xs, const char *hook) {
  for (hk_export *x = xs->list; x; x = x->next)
    if (strcmp(x->hook, hook) == 0) return x;
  return NULL;
}

static void unlink_export(hk_exports *xs, hk_export *x) {
  for (hk_export **p = &xs->list; *p; p = &(*p)->next)
    if (*p == x) {
      *p = x->next;
      free(x);
      return;
    }
}

/* ---- the stored form ---- */

static void put_str(hk_buf *b, const char *key, const char *v) {
  hk_buf_printf(b, ",\"%s\":", key);
  hk_json_write_cstr(b, v && v[0] ? v : NULL);
}

static void state_json(const hk_export *x, hk_buf *b) {
  hk_buf_printf(b, "{\"total\":%ld,\"scanned\":%ld,\"sent\":%ld,"
                "\"started_at\":%.6f,\"ended_at\":%.6f,\"cursor_date\":"
                "%.9f,\"cursor_id\":%lld,\"chunk_first\":%lld,"
                "\"chunk_last\":%lld,\"chunk_count\":%ld,\"failed\":%ld",
                x->total, x->scanned, x->sent, x->started_at, x->ended_at,
                x->cursor_date, (long long)x->cursor_id,
                (long long)x->chunk_first, (long long)x->chunk_last,
                x->chunk_count, x->failed);
  put_str(b, "from", x->from);
  put_str(b, "to", x->to);
  put_str(b, "status", x->status);
  put_str(b, "paused_by", x->paused_by);
  put_str(b, "reason", x->reason);
  hk_buf_putc(b, '}');
}

static void add_state(hk_store_batch *b, const hk_export *x) {
  hk_buf json = HK_BUF_INIT;

  state_json(x, &json);
  hk_store_add_export(b, x->hook, json.data, json.len);
  hk_buf_free(&json);
}

/* Stores x's state; kept trying until it commits (see
 * hk_store_batch_persistent). */
static void save(hk_exports *xs, hk_export *x) {
  hk_store_batch *b = hk_store_batch_new();

  if (b == NULL) abort();
  hk_store_batch_persistent(b);
  add_state(b, x);
  hk_store_submit(xs->store, b, NULL, NULL);
}

/* The start of day YYYY-MM-DD (UTC) plus `plus` days, in unix seconds. */
static double day_start(const char *day, int plus) {
  double t;

  return hk_datetime_parse_day(day, &t) == 0 ? t + plus * 86400.0 : 0;
}

static void render_time(hk_buf *b, const char *key, double t) {
  hk_buf_printf(b, ",\"%s\":", key);
  hk_json_write_time(b, t, 0);
}

static void render(const hk_export *x, hk_buf *b) {
  double pct = x->total > 0 ? 100.0 * (double)x->scanned / (double)x->total
                            : 100.0;

  if (is(x, "completed") || pct > 100.0) pct = 100.0;
  hk_buf_append(b, "{\"hook\":", 8);
  hk_json_write_cstr(b, x->hook);
  put_str(b, "status", x->status);
  put_str(b, "paused_by", x->paused_by);
  put_str(b, "reason", x->reason);
  put_str(b, "from", x->from);
  put_str(b, "to", x->to);
  hk_buf_printf(b, ",\"total\":%ld,\"scanned\":%ld,\"sent\":%ld,"
                "\"failed\":%ld,\"in_flight\":%ld,\"percent\":%.1f",
                x->total, x->scanned, x->sent, x->failed, x->chunk_count,
                pct);
  render_time(b, "started_at", x->started_at);
  render_time(b, "ended_at", x->ended_at);
  hk_buf_putc(b, '}');
}

/* ---- pages ---- */

/* A page being committed, with what to restore if the store refuses. */
typedef struct page_call {
  hk_exports *xs;
  hk_export *x;
  hk_export before;
  hk_route_job *job;
} page_call;

static void page_done(hk_store_batch *b, int ok, void *ctx) {
  page_call *c = ctx;
  hk_export *x = c->x;

  if (ok) hk_router_job_ids(c->job, &x->chunk_first, &x->chunk_last);
  hk_router_job_finish(c->xs->router, c->job, ok);
  x->busy = 0;
  if (x->gone) {
    unlink_export(c->xs, x);
  } else if (!ok) {
    /* Nothing of the page was kept: read it again a little later. */
    x->cursor_date = c->before.cursor_date;
    x->cursor_id = c->before.cursor_id;
    x->scanned = c->before.scanned;
    x->failed = c->before.failed;
    x->chunk_count = 0;
    x->not_before = now_sec() + STORE_RETRY_SEC;
    hk_warn("export", "hook=%s page_not_stored=1 retry_in=1s reason=\"%s\"",
            x->hook, hk_store_batch_error(b));
  }
  free(c);
}

/* Routes one page and submits it with the export's new position. */
static void send_page(hk_exports *xs, hk_export *x, hk_event_page *p) {
  hk_store_batch *b = hk_store_batch_new();
  page_call *c = calloc(1, sizeof *c);

  if (b == NULL || c == NULL) abort();
  *c = (page_call){xs, x, *x, hk_router_job_begin(xs->router, b)};
  hk_router_route_export(xs->router, c->job, x->hook,
                         (const char *const *)p->texts, p->lens, p->n);
  x->scanned += (long)p->n;
  x->failed += hk_router_job_failed(c->job);
  x->cursor_date = p->last_date;
  x->cursor_id = p->last_id;
  x->chunk_count = (long)hk_router_job_messages(c->job);
  x->chunk_first = x->chunk_last = 0;
  add_state(b, x);
  x->busy = 1;
  hk_store_submit(xs->store, b, page_done, c);
}

/* Reads the next page; at the end of the range the export is done. */
static void next_page(hk_exports *xs, hk_export *x) {
  hk_event_page p = {0};
  long n;

  n = hk_store_events_page(xs->store, x->from_ts, x->to_ts, x->cursor_id,
                           PAGE_EVENTS, hk_event_page_add, &p);
  if (n < 0 && ++x->read_failures >= READ_FAILURES_MAX) {
    set_status(x, "error", "the store could not be read (see the log)");
    save(xs, x);
  } else if (n < 0) {
    x->not_before = now_sec() + STORE_RETRY_SEC;
  } else if (n == 0) {
    set_status(x, "completed", NULL);
    hk_info("export", "hook=%s completed=1 scanned=%ld sent=%ld", x->hook,
            x->scanned, x->sent);
    save(xs, x);
  } else {
    x->read_failures = 0;
    send_page(xs, x, &p);
  }
  hk_event_page_free(&p);
}

/* Moves x on when it can: its last page must have left the outbox. A
 * paused or aborted export still counts what its last page sent. */
static void step(hk_exports *xs, hk_export *x) {
  long left;

  if (x->busy || now_sec() < x->not_before) return;
  if (x->chunk_count > 0) {
    left = hk_store_outbox_range(xs->store, x->hook, x->chunk_first,
                                 x->chunk_last);
    if (left != 0) return; /* still on its way (or a read error: later) */
    x->sent += x->chunk_count;
    x->chunk_count = 0;
    if (!is(x, "in_progress")) save(xs, x);
  }
  if (is(x, "in_progress") && hk_router_hook_active(xs->router, x->hook))
    next_page(xs, x);
}

static void tick_cb(uv_timer_t *t) {
  hk_exports *xs = t->data;

  if (xs->quiet) return;
  for (hk_export *x = xs->list; x; x = x->next) step(xs, x);
}

/* ---- loading and starting ---- */

static hk_export *add(hk_exports *xs, const char *hook) {
  hk_export *x = find(xs, hook);

  if (x) {
    hk_export *next = x->next;
    memset(x, 0, sizeof *x);
    x->next = next;
  } else {
    x = calloc(1, sizeof *x);
    if (x == NULL) abort();
    x->next = xs->list;
    xs->list = x;
  }
  snprintf(x->hook, sizeof x->hook, "%s", hook);
  return x;
}

static void copy(char *dst, size_t n, const char *src) {
  snprintf(dst, n, "%s", src ? src : "");
}

/* One stored export. Its range's dates are recomputed from the days. */
static void load_cb(void *ctx, const hk_store_export_row *r) {
  hk_exports *xs = ctx;
  hk_export *x = add(xs, r->hook);

  copy(x->from, sizeof x->from, r->from);
  copy(x->to, sizeof x->to, r->to);
  copy(x->status, sizeof x->status, r->status);
  copy(x->paused_by, sizeof x->paused_by, r->paused_by);
  copy(x->reason, sizeof x->reason, r->reason);
  x->from_ts = day_start(x->from, 0);
  x->to_ts = day_start(x->to, 1);
  x->total = r->total;
  x->scanned = r->scanned;
  x->sent = r->sent;
  x->started_at = r->started_at;
  x->ended_at = r->ended_at;
  x->cursor_date = r->cursor_date;
  x->cursor_id = r->cursor_id;
  x->chunk_first = r->chunk_first;
  x->chunk_last = r->chunk_last;
  x->chunk_count = r->chunk_count;
  x->failed = r->failed;
  if (is(x, "in_progress") || is(x, "paused"))
    hk_info("export", "hook=%s status=%s resumed_from_store=1 scanned=%ld "
            "total=%ld", x->hook, x->status, x->scanned, x->total);
}

hk_exports *hk_exports_create(uv_loop_t *loop, hk_router *router,
                              hk_store *store) {
  hk_exports *xs = calloc(1, sizeof *xs);

  if (xs == NULL) return NULL;
  xs->loop = loop;
  xs->router = router;
  xs->store = store;
  if (hk_store_exports(store, load_cb, xs) != 0)
    hk_error("export", "reason=\"stored exports could not be read; they "
             "resume after the next start\"");
  uv_timer_init(loop, &xs->tick);
  xs->tick.data = xs;
  uv_timer_start(&xs->tick, tick_cb, TICK_MS, TICK_MS);
  uv_unref((uv_handle_t *)&xs->tick);
  return xs;
}

typedef struct start_call {
  hk_exports *xs;
  hk_export *x;
  hk_export_done_cb done;
  void *ctx;
} start_call;

static void started(hk_store_batch *b, int ok, void *ctx) {
  start_call *c = ctx;
  hk_export *x = c->x;
  hk_buf body = HK_BUF_INIT;
  int status = 201;

  x->busy = 0;
  if (ok && !x->gone) {
    render(x, &body);
    hk_info("export", "hook=%s started=1 from=%s to=%s total=%ld", x->hook,
            x->from, x->to, x->total);
  } else {
    status = x->gone ? 409 : 503;
    if (x->gone)
      hk_buf_printf(&body, "the hook was deleted");
    else
      hk_buf_printf(&body, "export not stored, try again later: %s",
                    hk_store_batch_error(b));
    unlink_export(c->xs, x);
  }
  hk_buf_putc(&body, '\0');
  c->done(c->ctx, status, body.data);
  hk_buf_free(&body);
  free(c);
}

void hk_export_start(hk_exports *xs, const char *hook, const char *from,
                     const char *to, double from_ts, double to_ts,
                     hk_export_done_cb done, void *ctx) {
  hk_export *x = find(xs, hook);
  start_call *c;
  hk_store_batch *b;
  long total;
  char why[160];

  if (x && (is(x, "in_progress") || is(x, "paused") || x->busy)) {
    snprintf(why, sizeof why, "an export of this hook is %s: abort it "
             "first", is(x, "paused") ? "paused" : "in progress");
    done(ctx, 409, why);
    return;
  }
  if ((total = hk_store_events_count(xs->store, from_ts, to_ts)) < 0) {
    done(ctx, 503, "the store could not be read, try again later");
    return;
  }
  x = add(xs, hook);
  copy(x->from, sizeof x->from, from);
  copy(x->to, sizeof x->to, to);
  x->from_ts = from_ts;
  x->to_ts = to_ts;
  x->total = total;
  x->started_at = now_sec();
  x->cursor_date = from_ts - 1;
  set_status(x, "in_progress", NULL);
  x->busy = 1; /* until the start is stored */
  c = calloc(1, sizeof *c);
  b = hk_store_batch_new();
  if (c == NULL || b == NULL) abort();
  *c = (start_call){xs, x, done, ctx};
  add_state(b, x);
  hk_store_submit(xs->store, b, started, c);
}

/* ---- controls ---- */

static int refuse(hk_buf *out, int status, const char *fmt, const char *v) {
  hk_buf_printf(out, fmt, v);
  return status;
}

int hk_export_control(hk_exports *xs, const char *hook, const char *what,
                      hk_buf *out) {
  hk_export *x = find(xs, hook);
  int running;

  if (x == NULL) return refuse(out, 404, "the hook has no export%s", "");
  running = is(x, "in_progress") || is(x, "paused");
  if (!running)
    return refuse(out, 409, "the export is %s: nothing to control",
                  x->status);
  if (strcmp(what, "pause") == 0) {
    set_status(x, "paused", NULL);
    copy(x->paused_by, sizeof x->paused_by, "user");
  } else if (strcmp(what, "resume") == 0) {
    if (!is(x, "paused"))
      return refuse(out, 409, "the export is %s: only a paused one resumes",
                    x->status);
    if (!hk_router_hook_active(xs->router, hook))
      return refuse(out, 409, "%s is not running: activate the hook to "
                    "resume its export", hook);
    set_status(x, "in_progress", NULL);
  } else {
    set_status(x, "aborted", "aborted through the API");
  }
  hk_info("export", "hook=%s control=%s status=%s", hook, what, x->status);
  save(xs, x);
  render(x, out);
  return 200;
}

int hk_export_render(hk_exports *xs, const char *hook, hk_buf *out) {
  hk_export *x = find(xs, hook);

  if (x == NULL) return -1;
  render(x, out);
  return 0;
}

void hk_exports_hook_active(hk_exports *xs, const char *hook, int active) {
  hk_export *x = find(xs, hook);

  if (x == NULL) return;
  if (!active && is(x, "in_progress")) {
    set_status(x, "paused", "the hook is stopped");
    copy(x->paused_by, sizeof x->paused_by, "hook");
  } else if (active && is(x, "paused") &&
             strcmp(x->paused_by, "hook") == 0) {
    set_status(x, "in_progress", NULL);
  } else {
    return;
  }
  hk_info("export", "hook=%s status=%s reason=\"hook %s\"", hook, x->status,
          active ? "activated" : "stopped");
  save(xs, x);
}

void hk_exports_forget(hk_exports *xs, const char *hook) {
  hk_export *x = find(xs, hook);

  if (x == NULL) return;
  if (!x->busy) {
    unlink_export(xs, x);
    return;
  }
  x->gone = 1; /* its batch is still out: freed when it is answered */
  x->hook[0] = '\0';
}

void hk_exports_quiet(hk_exports *xs) {
  xs->quiet = 1;
  uv_timer_stop(&xs->tick);
}

void hk_exports_each(hk_exports *xs,
                     void (*cb)(void *ctx, const hk_export_progress *p),
                     void *ctx) {
  for (hk_export *x = xs->list; x; x = x->next) {
    if (x->gone) continue;
    hk_export_progress p = {x->hook, x->status, x->total, x->scanned,
                            x->sent};
    cb(ctx, &p);
  }
}
