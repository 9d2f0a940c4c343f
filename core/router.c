/* The core's view of hooks: a slot per hook id, its loaded version, its
 * state and counters, and its dispatcher. Scripts are compiled and run by
 * the Lua runtime; this file turns their results into delivery. */
#include "router.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "json_write.h"
#include "log.h"

typedef struct hk_hook {
  char *id;
  int slot;
  char *name;
  char *file;
  int loaded;  /* a version runs in the runtime */
  int active;
  int removed; /* the file is gone */
  int suspended; /* its code kept breaching the CPU limit */
  int deleted;   /* deleted through the API: not listed, nothing kept */
  long version;
  double loaded_at;
  char *error; /* the last load error, or NULL */
  char *settings_json;
  char *destination;
  char *transport; /* the send type: http, rabbitmq_queue, ... */
  long load_failures;
  double lua_seconds;
  hk_counters counters;
  hk_dispatch *dispatch;
  hk_log_limit fail_log; /* per-event failure lines */
  char fail_last[512];    /* the reason of the last failure held back */
} hk_hook;

/* What routing one request produced, waiting for the store to commit it:
 * the messages (as operations of the store batch) and the match counts. */
typedef struct job_msg {
  int slot;
  size_t op;
} job_msg;

struct hk_route_job {
  hk_store_batch *batch;
  long seq;
  job_msg *msgs;
  size_t n_msgs, cap_msgs;
  long *matched; /* per slot */
  long *dead;    /* per slot: events kept as dead letters */
  size_t n_slots;
  long failed; /* events a hook's code failed on */
};

struct hk_router {
  uv_loop_t *loop;
  uv_timer_t fail_log; /* reports failures held back by the rate limit */
  hk_bridge *bridge;
  hk_http_client *http;
  hk_store *store;
  double content_hours;
  hk_retry_policy policy;
  hk_hook **hooks; /* index = slot */
  size_t n_hooks;
  hk_route_job *job; /* the job being routed, or NULL */
  long next_seq;
};

static double wall_now(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set_str(char **dst, const char *src) {
  free(*dst);
  *dst = src ? strdup(src) : NULL;
}

static hk_hook *hook_find(hk_router *r, const char *id) {
  for (size_t i = 0; i < r->n_hooks; i++)
    if (strcmp(r->hooks[i]->id, id) == 0) return r->hooks[i];
  return NULL;
}

static hk_hook *hook_slot(hk_router *r, int slot) {
  if (slot < 0 || (size_t)slot >= r->n_hooks) return NULL;
  return r->hooks[slot];
}

static hk_hook *hook_get_or_add(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);
  hk_hook **grown;

  if (h) return h;
  grown = realloc(r->hooks, (r->n_hooks + 1) * sizeof *grown);
  if (grown == NULL) return NULL;
  r->hooks = grown;
  h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  h->id = strdup(id);
  h->slot = (int)r->n_hooks;
  h->dispatch = hk_dispatch_create(r->loop, r->http, r->store, h->id,
                                   &r->policy, &h->counters);
  if (r->store) h->counters.queued = hk_store_outbox_count(r->store, h->id);
  if (h->counters.queued < 0) h->counters.queued = 0;
  r->hooks[r->n_hooks++] = h;
  return h;
}

/* ---- callbacks from the runtime while routing ---- */

/* A message goes into the store batch being routed; the dispatcher gets
 * it once the batch is committed (hk_router_job_finish). */
static void emit_cb(void *ctx, int slot, const char *json, size_t len,
                    const hk_emit_meta *meta) {
  hk_router *r = ctx;
  hk_hook *h = hook_slot(r, slot);
  hk_route_job *job = r->job;

  if (h == NULL || job == NULL) return;
  if (job->n_msgs == job->cap_msgs) {
    size_t cap = job->cap_msgs ? job->cap_msgs * 2 : 256;
    job_msg *grown = realloc(job->msgs, cap * sizeof *grown);

    if (grown == NULL) abort();
    job->msgs = grown;
    job->cap_msgs = cap;
  }
  job->msgs[job->n_msgs].slot = slot;
  job->msgs[job->n_msgs++].op =
      hk_store_add_routed(job->batch, h->id, json, len, meta->route,
                          meta->key, meta->key_len, h->version);
}

static void matched_cb(void *ctx, int slot, long count) {
  hk_router *r = ctx;

  if (r->job && slot >= 0 && (size_t)slot < r->job->n_slots)
    r->job->matched[slot] += count;
}

static void store_put_cb(void *ctx, const char *kind, const char *key1,
                         const char *key2, const char *json, size_t len) {
  hk_router *r = ctx;

  if (r->job == NULL) return;
  if (strcmp(kind, "content") == 0)
    hk_store_add_content(r->job->batch, key1, json, len);
  else if (strcmp(kind, "profile") == 0 && key2)
    hk_store_add_profile(r->job->batch, HK_PROFILE_MERGE, key1, key2, json,
                         len);
}

static char *store_get_cb(void *ctx, const char *kind, const char *key1,
                          const char *key2, size_t *len) {
  hk_router *r = ctx;
  double not_before = wall_now() - r->content_hours * 3600.0;

  if (r->store == NULL) return NULL;
  if (strcmp(kind, "content") == 0)
    return hk_store_content_get(r->store, key1, not_before, len);
  if (strcmp(kind, "profile") == 0 && key2)
    return hk_store_profile_get(r->store, key1, key2, len);
  if (strcmp(kind, "tombstone") == 0 && key2 &&
      hk_store_profile_deleted(r->store, key1, key2)) {
    *len = 4;
    return strdup("true");
  }
  return NULL;
}

/* One line per failure, but at most one a second per hook; the lines in
 * between are counted and the count is reported with the next one. The
 * event (when given) is kept as a dead letter with the reason, in the
 * store batch of the request, so it is kept exactly when the request is. */
static void failed_cb(void *ctx, int slot, const char *reason,
                      const char *event, size_t len) {
  hk_router *r = ctx;
  hk_hook *h = hook_slot(r, slot);
  double now = wall_now();
  char quoted[1024];
  long held;

  if (h == NULL) return;
  h->counters.failed++;
  if (r->job) r->job->failed++;
  if (event && r->job) {
    hk_store_add_dead_event(r->job->batch, h->id, event, len,
                            h->destination, reason, h->version);
    if ((size_t)slot < r->job->n_slots) r->job->dead[slot]++;
  }
  if (!hk_log_limit_pass(&h->fail_log, now, &held)) {
    snprintf(h->fail_last, sizeof h->fail_last, "%s", reason);
    return;
  }
  hk_error("hook",
           "hook=%s version=%ld dest=%s event_failed=1 suppressed=%ld "
           "reason=\"%s\"", h->id, h->version,
           h->destination ? h->destination : "-", held,
           hk_log_escape(quoted, sizeof quoted, reason));
}

/* Once a second: a hook whose failure lines were held back and that has
 * had none since gets one line with their count and the last one's
 * reason, so none go unreported. */
static void fail_log_cb(uv_timer_t *t) {
  hk_router *r = t->data;
  double now = wall_now();
  char quoted[1024];

  for (size_t i = 0; i < r->n_hooks; i++) {
    hk_hook *h = r->hooks[i];
    long held = hk_log_limit_due(&h->fail_log, now, 0);

    if (held == 0) continue;
    hk_error("hook", "hook=%s version=%ld dest=%s event_failed=%ld "
             "held_back=1 last_reason=\"%s\"", h->id, h->version,
             h->destination ? h->destination : "-", held,
             hk_log_escape(quoted, sizeof quoted, h->fail_last));
  }
}

/* The runtime stopped routing to a hook; the reason shows as its error
 * until the file is loaded again. */
static void suspended_cb(void *ctx, int slot, const char *reason) {
  hk_hook *h = hook_slot(ctx, slot);
  char text[300];

  if (h == NULL) return;
  h->suspended = 1;
  snprintf(text, sizeof text, "suspended: %s", reason);
  set_str(&h->error, text);
  hk_error("hook", "hook=%s version=%ld dest=%s suspended=1 reason=\"%s\" "
           "until=reload", h->id, h->version,
           h->destination ? h->destination : "-", reason);
}

hk_router *hk_router_create(uv_loop_t *loop, hk_bridge *bridge,
                            hk_http_client *http, hk_store *store,
                            const hk_retry_policy *policy,
                            double content_hours) {
  hk_router *r = calloc(1, sizeof *r);
  hk_bridge_callbacks cbs = {emit_cb,      matched_cb,   failed_cb,
                             suspended_cb, store_put_cb, store_get_cb,
                             NULL};

  if (r == NULL) return NULL;
  r->loop = loop;
  r->bridge = bridge;
  r->http = http;
  r->store = store;
  r->content_hours = content_hours;
  r->policy = *policy;
  cbs.ctx = r;
  hk_bridge_set_callbacks(bridge, &cbs);
  uv_timer_init(loop, &r->fail_log);
  r->fail_log.data = r;
  uv_timer_start(&r->fail_log, fail_log_cb, 1000, 1000);
  uv_unref((uv_handle_t *)&r->fail_log);
  return r;
}

/* ---- reading the validated send settings from the runtime ---- */

/* Strings the settings point to, kept until the dispatcher copied them. */
typedef struct send_strings {
  char *headers[64];
  size_t n_headers;
  long statuses[32];
} send_strings;

/* Stack: [send] -> [send]. */
static const char *field_str(lua_State *L, const char *name) {
  const char *s;

  lua_getfield(L, -1, name);
  s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* still referenced by the send table */
  return s;
}

static double field_num(lua_State *L, const char *name, double dflt) {
  double v = dflt;

  lua_getfield(L, -1, name);
  if (lua_type(L, -1) == LUA_TNUMBER) v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Stack: [send] -> [send]. Fills headers ("Name: value") and statuses. */
static void read_send_lists(lua_State *L, hk_http_settings *http,
                            send_strings *keep) {
  lua_getfield(L, -1, "headers");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0 && keep->n_headers < 64) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
          asprintf(&keep->headers[keep->n_headers], "%s: %s",
                   lua_tostring(L, -2), lua_tostring(L, -1)) >= 0)
        keep->n_headers++;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  http->headers = (const char *const *)keep->headers;
  http->n_headers = keep->n_headers;

  lua_getfield(L, -1, "success_statuses");
  if (lua_istable(L, -1)) {
    size_t n = lua_objlen(L, -1);
    for (size_t i = 1; i <= n && i <= 32; i++) {
      lua_rawgeti(L, -1, (int)i);
      keep->statuses[http->n_success_statuses++] = (long)lua_tonumber(L, -1);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  http->success_statuses = keep->statuses;

  lua_getfield(L, -1, "basic_auth");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "user");
    http->basic_user = lua_tostring(L, -1);
    lua_getfield(L, -2, "password");
    http->basic_password = lua_tostring(L, -1);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
}

/* A broker's settings as text pairs (see hk_kv), kept until the
 * transport copied them. */
typedef struct kv_list {
  hk_kv kv[128];
  char *owned[128];
  size_t n;
} kv_list;

static void kv_add(kv_list *l, char *key, char *value) {
  if (l->n == 128 || key == NULL || value == NULL) {
    free(key);
    free(value);
    return;
  }
  l->kv[l->n].key = key;
  l->kv[l->n].value = value;
  l->owned[l->n++] = key; /* the value is freed with kv_free too */
}

static void kv_free(kv_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->owned[i]);
    free((char *)l->kv[i].value);
  }
}

/* The value at the top of the stack as text: lists joined with ",". */
static char *value_text(lua_State *L) {
  hk_buf b = HK_BUF_INIT;
  size_t n;

  switch (lua_type(L, -1)) {
  case LUA_TBOOLEAN: return strdup(lua_toboolean(L, -1) ? "true" : "false");
  case LUA_TNUMBER:
  case LUA_TSTRING: return strdup(lua_tostring(L, -1));
  case LUA_TTABLE:
    n = lua_objlen(L, -1);
    for (size_t i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, (int)i);
      if (i > 1) hk_buf_putc(&b, ',');
      if (lua_isstring(L, -1)) hk_buf_printf(&b, "%s", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    return hk_buf_steal(&b, &n);
  default: return NULL;
  }
}

/* Stack: [send] -> [send]. Every setting as text; a map (properties) as
 * "name.key" entries. */
static void read_kv(lua_State *L, kv_list *l) {
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    int map = lua_istable(L, -1) && lua_objlen(L, -1) == 0;

    if (map) {
      lua_pushnil(L);
      while (lua_next(L, -2) != 0) {
        char *key = NULL;

        if (lua_type(L, -2) == LUA_TSTRING &&
            asprintf(&key, "%s.%s", k, lua_tostring(L, -2)) >= 0)
          kv_add(l, key, value_text(L));
        lua_pop(L, 1);
      }
    } else {
      kv_add(l, strdup(k), value_text(L));
    }
    lua_pop(L, 1);
  }
}

/* Stack: [send] -> [send]. A broker transport for a broker send type. */
static hk_tx_target *broker_target(hk_router *r, lua_State *L,
                                   const char *type, char *err,
                                   size_t errlen) {
  kv_list l;
  hk_tx_target *t;

  memset(&l, 0, sizeof l);
  read_kv(L, &l);
  if (strcmp(type, "kafka") == 0)
    t = hk_kafka_target_create(r->loop, l.kv, l.n, err, errlen);
  else
    t = hk_amqp_target_create(r->loop, type, l.kv, l.n, err, errlen);
  kv_free(&l);
  return t;
}

/* Configures h's dispatcher from the description the runtime returned.
 * Stack: [info] -> [info]. Returns 0 or -1 with err. */
static int configure_delivery(hk_router *r, hk_hook *h, lua_State *L,
                              char *err, size_t errlen) {
  hk_delivery_settings s;
  send_strings keep;
  const char *type;
  int rc = -1;

  memset(&s, 0, sizeof s);
  memset(&keep, 0, sizeof keep);
  lua_getfield(L, -1, "send");
  type = field_str(L, "type");
  if (type == NULL) {
    snprintf(err, errlen, "%s: send.type is missing", h->file);
    goto done;
  }
  set_str(&h->transport, type);
  s.batch_size = (size_t)field_num(L, "batch_size", 100);
  s.timeout_sec = field_num(L, "timeout_sec", 5);
  if (strcmp(type, "http") != 0) {
    char why[512];

    s.tx = broker_target(r, L, type, why, sizeof why);
    if (s.tx == NULL) {
      snprintf(err, errlen, "%s: send: %s", h->file, why);
      goto done;
    }
    if (hk_dispatch_configure(h->dispatch, &s, err, errlen) != 0) {
      s.tx->ops->destroy(s.tx);
      goto done;
    }
    set_str(&h->destination, s.tx->ops->describe(s.tx));
    rc = 0;
    goto done;
  }
  s.http.url = field_str(L, "url");
  s.http.bearer_token = field_str(L, "bearer_token");
  s.http.success_regex = field_str(L, "success_regex");
  s.http.request_timeout_sec = field_num(L, "request_timeout_sec", 30);
  s.max_body_bytes = (size_t)field_num(L, "max_body_bytes", 0);
  read_send_lists(L, &s.http, &keep);
  if (hk_dispatch_configure(h->dispatch, &s, err, errlen) != 0) goto done;
  free(h->destination);
  h->destination = hk_http_url_shown(s.http.url);
  rc = 0;
done:
  lua_pop(L, 1);
  for (size_t i = 0; i < keep.n_headers; i++) free(keep.headers[i]);
  return rc;
}

/* Takes name, active and settings_json from the description.
 * Stack: [info] -> [info]. */
static void take_description(hk_hook *h, lua_State *L) {
  lua_getfield(L, -1, "name");
  set_str(&h->name, lua_tostring(L, -1));
  lua_getfield(L, -2, "settings_json");
  set_str(&h->settings_json, lua_tostring(L, -1));
  lua_getfield(L, -3, "active");
  h->active = lua_toboolean(L, -1);
  lua_pop(L, 3);
}

static int load_source(hk_router *r, hk_hook *h, const char *src, size_t len,
                       char *err, size_t errlen) {
  lua_State *L = hk_bridge_state(r->bridge);

  if (hk_bridge_load_hook(r->bridge, h->id, h->slot, h->file, src, len, err,
                          errlen) != 0)
    return -1;
  if (configure_delivery(r, h, L, err, errlen) != 0) {
    lua_pop(L, 1);
    hk_bridge_commit_hook(r->bridge, h->id, 0); /* keep the old version */
    return -1;
  }
  take_description(h, L);
  lua_pop(L, 1);
  hk_bridge_commit_hook(r->bridge, h->id, 1);
  return 0;
}

/* Tells the runtime and the dispatcher whether h runs. */
static void apply_active(hk_router *r, hk_hook *h) {
  const char *args[2] = {h->id, h->active ? "1" : "0"};
  size_t lens[2] = {strlen(h->id), 1};
  hk_strlist out;
  char err[256];

  if (h->loaded &&
      hk_bridge_call_strings(r->bridge, "set_active", 2, args, lens, &out,
                             err, sizeof err) == 0)
    hk_strlist_free(&out);
  hk_dispatch_hold(h->dispatch, !h->active);
}

/* A state set through the API wins over the file's `active`. */
static void apply_stored_state(hk_router *r, hk_hook *h) {
  int stored = r->store ? hk_store_hook_state(r->store, h->id) : -1;

  if (stored >= 0) h->active = stored;
  apply_active(r, h);
}

int hk_router_load_file(hk_router *r, const char *id, const char *path) {
  size_t len = 0;
  char *src = hk_read_file(path, &len);
  int rc = hk_router_load_text(r, id, path, src, len, src ? 0 : errno);

  free(src);
  return rc;
}

int hk_router_load_text(hk_router *r, const char *id, const char *path,
                        const char *src, size_t len, int read_errno) {
  hk_hook *h = hook_get_or_add(r, id);
  char err[1024];
  int rc = -1;

  if (h == NULL) return -1;
  set_str(&h->file, path);
  h->removed = 0;
  /* A hook seen for the first time may be stored as stopped: nothing of
   * its outbox leaves before its state is known (apply_stored_state). */
  if (!h->loaded) hk_dispatch_hold(h->dispatch, 1);
  if (src == NULL) {
    snprintf(err, sizeof err, "%s: %s", path, strerror(read_errno));
  } else if (len == 0) {
    snprintf(err, sizeof err, "%s: the file is empty", path);
  } else if (load_source(r, h, src, len, err, sizeof err) == 0) {
    h->loaded = 1;
    h->deleted = 0;
    h->suspended = 0;
    apply_stored_state(r, h);
    h->version++;
    h->loaded_at = wall_now();
    set_str(&h->error, NULL);
    hk_info("plugins", "hook=%s version=%ld loaded=1 active=%d dest=%s", h->id,
            h->version, h->active, h->destination ? h->destination : "-");
    rc = 0;
  }
  if (rc != 0) {
    char quoted[1100];

    set_str(&h->error, err);
    h->load_failures++;
    hk_error("plugins",
             "hook=%s load_failed=1 running_version=%ld error=\"%s\"", h->id,
             h->loaded ? h->version : 0L,
             hk_log_escape(quoted, sizeof quoted, err));
  }
  return rc;
}

void hk_router_remove(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  if (h == NULL || h->removed || h->deleted) return;
  hk_bridge_unload_hook(r->bridge, id);
  h->loaded = 0;
  h->removed = 1;
  hk_info("plugins", "hook=%s removed=1 queued=%ld", id, h->counters.queued);
}

int hk_router_module_dependents(hk_router *r, const char *path,
                                hk_strlist *out) {
  size_t len = strlen(path);
  char err[512], quoted[600];

  if (hk_bridge_call_strings(r->bridge, "module_dependents", 1, &path, &len,
                             out, err, sizeof err) == 0)
    return 0;
  hk_error("plugins", "module=lib/%s dependents=unknown reason=\"%s\"", path,
           hk_log_escape(quoted, sizeof quoted, err));
  return -1;
}

hk_route_job *hk_router_job_begin(hk_router *r, hk_store_batch *batch) {
  hk_route_job *job = calloc(1, sizeof *job);

  if (job == NULL) abort();
  job->batch = batch;
  job->seq = ++r->next_seq;
  job->n_slots = r->n_hooks;
  job->matched = calloc(r->n_hooks ? r->n_hooks : 1, sizeof *job->matched);
  job->dead = calloc(r->n_hooks ? r->n_hooks : 1, sizeof *job->dead);
  if (job->matched == NULL || job->dead == NULL) abort();
  return job;
}

void hk_router_route(hk_router *r, hk_route_job *job,
                     const char *const *events, const size_t *lens,
                     const hk_event_skips *skips, size_t n) {
  r->job = job;
  hk_bridge_route(r->bridge, events, lens, skips, n, job->seq);
  r->job = NULL;
}

long hk_router_route_export(hk_router *r, hk_route_job *job, const char *id,
                            const char *const *events, const size_t *lens,
                            size_t n) {
  long captured;

  r->job = job;
  captured = hk_bridge_route_export(r->bridge, id, events, lens, n, job->seq);
  r->job = NULL;
  return captured;
}

/* Committed: the messages go to their dispatchers and count as matched.
 * Refused: they are forgotten, like the request. */
void hk_router_job_finish(hk_router *r, hk_route_job *job, int committed) {
  hk_store_meta meta;

  for (size_t i = 0; committed && i < job->n_msgs; i++) {
    hk_hook *h = hook_slot(r, job->msgs[i].slot);
    size_t len;
    const char *text = hk_store_batch_text(job->batch, job->msgs[i].op, &len);

    if (h == NULL) continue;
    h->counters.queued++;
    hk_store_batch_meta(job->batch, job->msgs[i].op, &meta);
    hk_dispatch_enqueue(h->dispatch,
                        hk_store_batch_result(job->batch, job->msgs[i].op),
                        text, len, meta.route, meta.key, meta.key_len,
                        h->version);
  }
  for (size_t s = 0; committed && s < job->n_slots; s++) {
    hk_hook *h = hook_slot(r, (int)s);

    if (h == NULL) continue;
    h->counters.matched += job->matched[s];
    h->counters.dead += job->dead[s];
  }
  hk_bridge_settle(r->bridge, job->seq);
  free(job->msgs);
  free(job->matched);
  free(job->dead);
  free(job);
}

size_t hk_router_job_messages(const hk_route_job *job) { return job->n_msgs; }

long hk_router_job_failed(const hk_route_job *job) { return job->failed; }

void hk_router_job_ids(const hk_route_job *job, int64_t *first,
                       int64_t *last) {
  *first = *last = 0;
  if (job->n_msgs == 0) return;
  *first = hk_store_batch_result(job->batch, job->msgs[0].op);
  *last = hk_store_batch_result(job->batch, job->msgs[job->n_msgs - 1].op);
}

void hk_router_resent(hk_router *r, const char *id, long n) {
  hk_hook *h = hook_find(r, id);

  if (h == NULL || n <= 0) return;
  h->counters.queued += n;
  hk_dispatch_outbox_changed(h->dispatch);
}

int hk_router_set_active(hk_router *r, const char *id, int active) {
  hk_hook *h = hook_find(r, id);

  if (h == NULL || h->deleted) return -1;
  h->active = active;
  if (active && h->suspended) {
    h->suspended = 0;
    set_str(&h->error, NULL);
  }
  apply_active(r, h);
  hk_info("api", "hook=%s active=%d", h->id, active);
  return 0;
}

void hk_router_delete(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  if (h == NULL) return;
  if (h->loaded) hk_bridge_unload_hook(r->bridge, id);
  h->loaded = 0;
  h->removed = 1;
  h->deleted = 1;
  h->active = 0;
  hk_dispatch_hold(h->dispatch, 1);
}

void hk_router_deleted(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  if (h == NULL) return;
  hk_dispatch_drop(h->dispatch);
  memset(&h->counters, 0, sizeof h->counters);
  hk_histogram_init(&h->counters.latency, hk_latency_bounds, hk_latency_n);
  hk_histogram_init(&h->counters.batches, hk_batch_bounds, hk_batch_n);
  set_str(&h->error, NULL);
  h->version = 0;
}

uv_loop_t *hk_router_loop(hk_router *r) { return r->loop; }

hk_dispatch *hk_router_dispatch(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  return h && !h->deleted ? h->dispatch : NULL;
}

const char *hk_router_hook_file(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  return h && !h->deleted ? h->file : NULL;
}

const char *hk_router_hook_error(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  return h && !h->deleted ? h->error : NULL;
}

const char *hk_router_destination(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  return h && h->destination ? h->destination : "-";
}

int hk_router_hook_active(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  return h && h->loaded && h->active && !h->suspended && !h->deleted;
}

void hk_router_test_failed(hk_router *r, const char *id, const char *reason) {
  hk_hook *h = hook_find(r, id);
  char quoted[1024];

  if (h == NULL) return;
  h->counters.test_failed++;
  hk_warn("hook", "hook=%s version=%ld dest=%s test_send=1 delivered=0 "
          "reason=\"%s\"", h->id, h->version,
          h->destination ? h->destination : "-",
          hk_log_escape(quoted, sizeof quoted, reason));
}

int hk_router_has_hook(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  return h != NULL && h->loaded;
}

/* ---- the admin API's view ---- */

static const char *hook_state(const hk_hook *h) {
  if (h->removed) return "removed";
  if (!h->loaded) return "broken";
  if (h->suspended) return "suspended";
  return h->active ? "running" : "stopped";
}

static void render_hook(const hk_hook *h, hk_buf *out) {
  const hk_counters *c = &h->counters;

  hk_buf_append(out, "{\"id\":", 6);
  hk_json_write_cstr(out, h->id);
  hk_buf_append(out, ",\"name\":", 8);
  hk_json_write_cstr(out, h->name ? h->name : h->id);
  hk_buf_printf(out, ",\"active\":%s,\"state\":\"%s\",\"version\":%ld",
                h->loaded && h->active ? "true" : "false", hook_state(h),
                h->version);
  hk_buf_append(out, ",\"loaded_at\":", 13);
  hk_json_write_time(out, h->loaded_at, 0);
  hk_buf_append(out, ",\"file\":", 8);
  hk_json_write_cstr(out, h->file);
  hk_buf_append(out, ",\"error\":", 9);
  hk_json_write_cstr(out, h->error);
  hk_buf_append(out, ",\"settings\":", 12);
  if (h->settings_json)
    hk_buf_append(out, h->settings_json, strlen(h->settings_json));
  else
    hk_buf_append(out, "null", 4);
  hk_buf_printf(out,
                ",\"counters\":{\"matched\":%ld,\"sent\":%ld,\"failed\":%ld,"
                "\"retried\":%ld,\"dead\":%ld,\"queued\":%ld,"
                "\"test_sent\":%ld,\"test_failed\":%ld}}",
                c->matched, c->sent, c->failed, c->retried, c->dead,
                c->queued, c->test_sent, c->test_failed);
}

static int hook_listed(const hk_hook *h) {
  return !h->deleted && (!h->removed || h->counters.queued > 0);
}

void hk_router_render_hooks(hk_router *r, hk_buf *out) {
  int first = 1;

  hk_buf_append(out, "{\"hooks\":[", 10);
  for (size_t i = 0; i < r->n_hooks; i++) {
    if (!hook_listed(r->hooks[i])) continue;
    if (!first) hk_buf_putc(out, ',');
    render_hook(r->hooks[i], out);
    first = 0;
  }
  hk_buf_append(out, "]}", 2);
}

int hk_router_hook_exists(hk_router *r, const char *id) {
  hk_hook *h = hook_find(r, id);

  return h != NULL && hook_listed(h);
}

int hk_router_render_hook(hk_router *r, const char *id, hk_buf *out) {
  hk_hook *h = hook_find(r, id);

  if (h == NULL || !hook_listed(h)) return -1;
  render_hook(h, out);
  return 0;
}

int hk_router_broken_count(hk_router *r) {
  int n = 0;

  for (size_t i = 0; i < r->n_hooks; i++)
    if (r->hooks[i]->error) n++;
  return n;
}

/* Reads each hook's estimated Lua time from the runtime. */
static void refresh_lua_times(hk_router *r) {
  hk_strlist l;
  char err[256];
  hk_hook *h;

  if (hk_bridge_call_strings(r->bridge, "lua_times", 0, NULL, NULL, &l, err,
                             sizeof err) != 0)
    return;
  for (size_t i = 0; i + 1 < l.n; i += 2)
    if ((h = hook_find(r, l.s[i])) != NULL) h->lua_seconds = atof(l.s[i + 1]);
  hk_strlist_free(&l);
}

void hk_router_refresh_stats(hk_router *r) { refresh_lua_times(r); }

void hk_router_each(hk_router *r,
                    void (*cb)(void *ctx, const hk_hook_view *v),
                    void *ctx) {
  for (size_t i = 0; i < r->n_hooks; i++) {
    const hk_hook *h = r->hooks[i];
    hk_hook_view v = {h->id, h->transport ? h->transport : "none",
                      hook_state(h), &h->counters, h->version,
                      h->load_failures, h->lua_seconds};

    if (hook_listed(h)) cb(ctx, &v);
  }
}

void hk_router_quiet(hk_router *r) {
  for (size_t i = 0; i < r->n_hooks; i++)
    hk_dispatch_quiet(r->hooks[i]->dispatch);
}

int hk_router_settled(hk_router *r) {
  for (size_t i = 0; i < r->n_hooks; i++)
    if (!hk_dispatch_settled(r->hooks[i]->dispatch)) return 0;
  return 1;
}

long hk_router_log_undelivered(hk_router *r) {
  long total = 0;

  for (size_t i = 0; i < r->n_hooks; i++) {
    const hk_hook *h = r->hooks[i];

    if (h->counters.queued <= 0) continue;
    hk_info("main", "hook=%s dest=%s kept_in_outbox=%ld", h->id,
            h->destination ? h->destination : "-", h->counters.queued);
    total += h->counters.queued;
  }
  return total;
}

/* A hook with messages in its outbox but no file is listed as removed,
 * with its queue, until its file is back and it sends them. */
static void orphan_cb(void *ctx, const char *hook, long n) {
  hk_hook *h;

  if (hook_find(ctx, hook) != NULL) return;
  h = hook_get_or_add(ctx, hook);
  if (h) h->removed = 1;
  hk_warn("main", "hook=%s kept_in_outbox=%ld reason=\"no hook file: "
          "sent once %s.lua is back in plugins_dir\"", hook, n, hook);
}

void hk_router_log_orphans(hk_router *r) {
  if (r->store) hk_store_outbox_hooks(r->store, orphan_cb, r);
}

void hk_router_print_problems(hk_router *r, FILE *out) {
  for (size_t i = 0; i < r->n_hooks; i++)
    if (r->hooks[i]->error) fprintf(out, "%s\n", r->hooks[i]->error);
}
