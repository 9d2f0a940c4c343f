/* GET /metrics: the router's counters in the Prometheus text format
 * (version 0.0.4). Hook ids are letters, digits, _ and -, so they need no
 * escaping as label values. */
#include <stdio.h>
#include <sys/stat.h>

#include "api_internal.h"
#include "export.h"
#include "guard.h"

typedef struct family {
  const char *name, *type, *help;
} family;

static void head(hk_buf *out, const family *f) {
  hk_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help,
                f->name, f->type);
}

/* The per-hook counters, one family at a time as the format wants. */
static const family hook_families[] = {
    {"hookd_hook_messages_matched_total", "counter",
     "Events the hook captured (passed its match and filter)."},
    {"hookd_hook_messages_sent_total", "counter",
     "Messages the destination acknowledged."},
    {"hookd_hook_messages_failed_total", "counter",
     "Messages that failed in the hook's code or in a delivery attempt."},
    {"hookd_hook_messages_retried_total", "counter",
     "Messages sent again after a failed attempt."},
    {"hookd_hook_messages_dead_total", "counter",
     "Messages set aside as dead letters."},
    {"hookd_hook_messages_queued", "gauge",
     "Messages accepted for the hook and not yet acknowledged or dead."},
    {"hookd_hook_test_sends_total", "counter",
     "Test sends, by outcome."},
    {"hookd_hook_lua_seconds_total", "counter",
     "Time in the hook's Lua code, estimated from one event in 16."},
    {"hookd_hook_loads_total", "counter",
     "Versions of the hook's file loaded (start and reloads)."},
    {"hookd_hook_load_failures_total", "counter",
     "Loads of the hook's file that failed."},
    {"hookd_hook_state", "gauge",
     "1 for the hook's state: running, stopped, suspended, broken, removed."},
    {"hookd_hook_delivery_latency_seconds", "histogram",
     "From acceptance by POST /v1/events to the destination's "
     "acknowledgement."},
    {"hookd_hook_batch_messages", "histogram",
     "Messages per delivery attempt."},
};

enum { N_HOOK_FAMILIES = sizeof hook_families / sizeof hook_families[0] };

typedef struct hook_pass {
  hk_buf *out;
  int family;
} hook_pass;

static void hook_line(void *ctx, const hk_hook_view *v) {
  hook_pass *p = ctx;
  const hk_counters *c = v->counters;
  const char *name = hook_families[p->family].name;
  long values[] = {c->matched, c->sent, c->failed, c->retried, c->dead,
                   c->queued};
  char labels[256];

  snprintf(labels, sizeof labels, "hook=\"%s\",transport=\"%s\"", v->id,
           v->transport);
  if (p->family < 6)
    hk_buf_printf(p->out, "%s{%s} %ld\n", name, labels, values[p->family]);
  else if (p->family == 6)
    hk_buf_printf(p->out, "%s{%s,outcome=\"delivered\"} %ld\n"
                  "%s{%s,outcome=\"failed\"} %ld\n", name, labels,
                  c->test_sent, name, labels, c->test_failed);
  else if (p->family == 7)
    hk_buf_printf(p->out, "%s{hook=\"%s\"} %.6f\n", name, v->id,
                  v->lua_seconds);
  else if (p->family == 8 || p->family == 9)
    hk_buf_printf(p->out, "%s{hook=\"%s\"} %ld\n", name, v->id,
                  p->family == 8 ? v->loads : v->load_failures);
  else if (p->family == 10)
    hk_buf_printf(p->out, "%s{hook=\"%s\",state=\"%s\"} 1\n", name, v->id,
                  v->state);
  else
    hk_histogram_render(p->family == 11 ? &c->latency : &c->batches, p->out,
                        name, labels);
}

static const family export_families[] = {
    {"hookd_export_events", "gauge",
     "Stored events in the range of the hook's last export."},
    {"hookd_export_events_scanned", "gauge",
     "Events of that range read so far."},
    {"hookd_export_messages_sent", "gauge",
     "Messages of that export that have left the outbox."},
    {"hookd_export_status", "gauge",
     "1 for the status of the hook's last export."},
};

typedef struct export_pass {
  hk_buf *out;
  int family;
} export_pass;

static void export_line(void *ctx, const hk_export_progress *x) {
  export_pass *p = ctx;
  const char *name = export_families[p->family].name;
  long values[] = {x->total, x->scanned, x->sent};

  if (p->family < 3)
    hk_buf_printf(p->out, "%s{hook=\"%s\"} %ld\n", name, x->hook,
                  values[p->family]);
  else
    hk_buf_printf(p->out, "%s{hook=\"%s\",status=\"%s\"} 1\n", name,
                  x->hook, x->status);
}

/* The store's database and write-ahead log, in bytes. */
static long long store_bytes(hk_store *s) {
  const char *suffix[] = {"", "-wal"};
  char path[4200];
  long long total = 0;
  struct stat st;

  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s%s", hk_store_path(s), suffix[i]);
    if (stat(path, &st) == 0) total += (long long)st.st_size;
  }
  return total;
}

static void process_lines(hk_api *api, hk_buf *out) {
  static const family f[] = {
      {"hookd_events_accepted_total", "counter",
       "Events accepted by POST /v1/events."},
      {"hookd_ingest_requests_refused_total", "counter",
       "POST /v1/events requests refused: invalid events, token, busy, "
       "store, shutdown (bodies over max_body_bytes are not counted)."},
      {"hookd_store_bytes", "gauge",
       "Size of the store's database and write-ahead log."},
      {"hookd_store_pending_batches", "gauge",
       "Store batches waiting for their commit."},
      {"hookd_lua_memory_bytes", "gauge",
       "Memory of the Lua state that runs the hooks."},
      {"hookd_history_bytes", "gauge",
       "Size of the history files (the texts of accepted events)."},
  };

  head(out, &f[0]);
  hk_buf_printf(out, "%s %ld\n", f[0].name, api->events_accepted);
  head(out, &f[1]);
  hk_buf_printf(out, "%s %ld\n", f[1].name, api->requests_refused);
  head(out, &f[2]);
  hk_buf_printf(out, "%s %lld\n", f[2].name, store_bytes(api->store));
  head(out, &f[3]);
  hk_buf_printf(out, "%s %zu\n", f[3].name, hk_store_pending(api->store));
  head(out, &f[4]);
  hk_buf_printf(out, "%s %zu\n", f[4].name, hk_guard_memory());
  head(out, &f[5]);
  hk_buf_printf(out, "%s %lld\n", f[5].name,
                hk_store_history_bytes(api->store));
}

void hk_api_metrics(hk_api *api, hk_http_request *req) {
  hk_buf out = HK_BUF_INIT;

  process_lines(api, &out);
  hk_router_refresh_stats(api->router);
  for (int i = 0; i < N_HOOK_FAMILIES; i++) {
    hook_pass p = {&out, i};

    head(&out, &hook_families[i]);
    hk_router_each(api->router, hook_line, &p);
  }
  for (int i = 0; api->exports && i < 4; i++) {
    export_pass p = {&out, i};

    head(&out, &export_families[i]);
    hk_exports_each(api->exports, export_line, &p);
  }
  hk_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
                  out.data ? out.data : "", out.len);
  hk_buf_free(&out);
}
