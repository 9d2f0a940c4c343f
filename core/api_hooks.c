/* The API endpoints of hooks: list and show, activate and stop, clone,
 * delete, test sends and historical exports. A change that is stored is
 * answered only once the store has committed it. */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api_internal.h"
#include "datetime.h"
#include "hook_files.h"
#include "json_scan.h"
#include "json_write.h"
#include "log.h"
#include "plugins.h"
#include "splice.h"

#define DELETE_POLL_MS 20

/* A hook request waiting for the store, a delivery or a test send. */
typedef struct hook_call {
  hk_api *api;
  hk_http_request *req;
  char id[HK_HOOK_ID_MAX + 1];
  char other[HK_HOOK_ID_MAX + 1]; /* a clone's id */
  char name[256];                 /* a clone's name */
  int flag;                       /* activate: 1; delete: discard */
  size_t op;
  char trashed[4400]; /* a deleted hook's file, now in the trash */
  char file[4096];    /* where it was */
  hk_dispatch *dispatch; /* a deleted hook's, until nothing is in flight */
  uv_timer_t timer;
} hook_call;

static hook_call *call_new(hk_api *api, hk_http_request *req,
                           const char *id) {
  hook_call *c = calloc(1, sizeof *c);

  if (c == NULL) abort();
  c->api = api;
  c->req = req;
  snprintf(c->id, sizeof c->id, "%s", id);
  return c;
}

static void answer_hook(hk_api *api, hk_http_request *req, const char *id,
                        int status) {
  hk_buf b = HK_BUF_INIT;

  if (hk_router_render_hook(api->router, id, &b) == 0)
    hk_api_json(req, status, &b);
  else
    hk_api_error(req, 404, "no such hook", -1);
  hk_buf_free(&b);
}

/* Fields of a JSON body through the runtime: 0 with out filled, or -1
 * after answering 400. */
static int body_fields(hk_api *api, hk_http_request *req, hk_strlist *out,
                       const char *a, const char *b) {
  const char *args[3] = {req->body ? req->body : "", a, b};
  size_t lens[3] = {req->body_len, strlen(a), strlen(b)};
  char err[512];

  if (hk_bridge_call_strings(api->bridge, "string_fields", 3, args, lens, out,
                             err, sizeof err) == 0)
    return 0;
  hk_api_error(req, 400, err, -1);
  return -1;
}

/* ---- activate and stop ---- */

static void state_stored(hk_store_batch *b, int ok, void *ctx) {
  hook_call *c = ctx;

  if (ok) {
    hk_router_set_active(c->api->router, c->id, c->flag);
    if (c->api->exports)
      hk_exports_hook_active(c->api->exports, c->id, c->flag);
    answer_hook(c->api, c->req, c->id, 200);
  } else {
    hk_api_store_refused(c->req, b, "hook state");
  }
  free(c);
}

static void set_state(hk_api *api, hk_http_request *req, const char *id,
                      int active) {
  hk_store_batch *b = hk_store_batch_new();
  hook_call *c = call_new(api, req, id);

  c->flag = active;
  hk_store_add_hook_state(b, id, active);
  hk_store_submit(api->store, b, state_stored, c);
}

/* ---- clone ---- */

static void clone_stored(hk_store_batch *b, int ok, void *ctx) {
  hook_call *c = ctx;
  const char *src = hk_router_hook_file(c->api->router, c->id);
  char path[4200], err[1200];
  int rc;

  if (!ok) {
    hk_api_store_refused(c->req, b, "the clone's state");
    goto done;
  }
  snprintf(path, sizeof path, "%s/%s.lua", c->api->config->plugins_dir,
           c->other);
  rc = src ? hk_hook_file_clone(src, path, c->name, err, sizeof err) : -1;
  if (rc != 0) {
    hk_api_error(c->req, rc == 1 ? 409 : 500, rc == 1
                 ? "a hook with that id already exists"
                 : src ? err : "the hook went away", -1);
    goto done;
  }
  hk_info("api", "hook=%s cloned_to=%s file=%s active=0", c->id, c->other,
          path);
  if (c->api->plugins) hk_plugins_load_one(c->api->plugins, c->other);
  if (hk_router_has_hook(c->api->router, c->other)) {
    answer_hook(c->api, c->req, c->other, 201);
    goto done;
  }
  /* Not expected from a copy of a loaded hook; the file goes again. */
  snprintf(err, sizeof err, "the clone does not load, and was removed: %s",
           hk_router_hook_error(c->api->router, c->other)
               ? hk_router_hook_error(c->api->router, c->other) : "?");
  unlink(path);
  hk_api_error(c->req, 422, err, -1);
done:
  free(c);
}

static void clone_hook(hk_api *api, hk_http_request *req, const char *id) {
  hk_strlist f;
  char path[4200];
  struct stat st;
  hook_call *c;
  hk_store_batch *b;

  if (!hk_router_has_hook(api->router, id)) {
    hk_api_error(req, 409, "only a loaded hook can be cloned", -1);
    return;
  }
  if (hk_router_hook_error(api->router, id)) {
    hk_api_error(req, 409, "the hook's file does not load now (an older "
                 "version runs): fix the file before cloning it", -1);
    return;
  }
  if (body_fields(api, req, &f, "id", "name") != 0) return;
  snprintf(path, sizeof path, "%s/%s.lua", api->config->plugins_dir, f.s[0]);
  if (!hk_hook_id_valid(f.s[0]))
    hk_api_error(req, 400, "id must be 1-120 letters, digits, _ or -", -1);
  else if (hk_router_hook_exists(api->router, f.s[0]) || stat(path, &st) == 0)
    hk_api_error(req, 409, "a hook with that id already exists", -1);
  else {
    c = call_new(api, req, id);
    snprintf(c->other, sizeof c->other, "%s", f.s[0]);
    snprintf(c->name, sizeof c->name, "%s", f.s[1]);
    b = hk_store_batch_new();
    hk_store_add_hook_state(b, c->other, 0); /* stopped until activated */
    hk_store_submit(api->store, b, clone_stored, c);
  }
  hk_strlist_free(&f);
}

/* ---- delete ---- */

static void call_free_cb(uv_handle_t *h) { free(h->data); }

/* The delete could not finish: the file goes back and is loaded again. */
static void undelete(hook_call *c) {
  if (c->trashed[0]) hk_hook_file_restore(c->trashed, c->file);
  if (c->api->plugins) hk_plugins_load_one(c->api->plugins, c->id);
}

static void delete_stored(hk_store_batch *b, int ok, void *ctx) {
  hook_call *c = ctx;
  hk_buf out = HK_BUF_INIT;
  long n = (long)hk_store_batch_result(b, c->op);

  if (!ok) {
    undelete(c);
    hk_api_store_refused(c->req, b, "the delete");
    goto done;
  }
  hk_router_deleted(c->api->router, c->id);
  if (c->api->exports) hk_exports_forget(c->api->exports, c->id);
  hk_info("api", "hook=%s deleted=1 trash=%s %s=%ld", c->id,
          c->trashed[0] ? c->trashed : "-",
          c->flag ? "discarded" : "dead_letters", n);
  hk_buf_append(&out, "{\"deleted\":", 11);
  hk_json_write_cstr(&out, c->id);
  hk_buf_append(&out, ",\"file\":", 8);
  hk_json_write_cstr(&out, c->trashed[0] ? c->trashed : NULL);
  hk_buf_printf(&out, ",\"%s\":%ld}", c->flag ? "discarded" : "dead_letters",
                n);
  hk_api_json(c->req, 200, &out);
  hk_buf_free(&out);
done:
  uv_close((uv_handle_t *)&c->timer, call_free_cb);
}

/* Once no delivery of the hook is in flight: its file goes to the trash
 * and its outbox to the dead letters (or nowhere), in that order. */
static void delete_when_settled(uv_timer_t *t) {
  hook_call *c = t->data;
  hk_dispatch *d = c->dispatch;
  const char *dest = hk_router_destination(c->api->router, c->id);
  char err[600];
  struct stat st;
  hk_store_batch *b;

  if (d && !hk_dispatch_settled(d)) return; /* polled again */
  uv_timer_stop(t);
  if (c->file[0] && stat(c->file, &st) == 0 &&
      hk_hook_file_trash(c->file, c->api->config->data_dir, c->id, c->trashed,
                         sizeof c->trashed, err, sizeof err) != 0) {
    c->trashed[0] = '\0';
    undelete(c);
    hk_api_error(c->req, 500, err, -1);
    uv_close((uv_handle_t *)&c->timer, call_free_cb);
    return;
  }
  b = hk_store_batch_new();
  c->op = hk_store_add_hook_delete(b, c->id, c->flag, dest,
                                   "the hook was deleted through the API");
  hk_store_submit(c->api->store, b, delete_stored, c);
}

static void delete_hook(hk_api *api, hk_http_request *req, const char *id) {
  const char *file = hk_router_hook_file(api->router, id);
  hook_call *c = call_new(api, req, id);
  char v[16] = "";

  if (hk_api_query(req->query, "discard", v, sizeof v) == 0) {
    c->flag = strcmp(v, "true") == 0 || strcmp(v, "1") == 0;
    if (!c->flag && strcmp(v, "false") != 0 && strcmp(v, "0") != 0) {
      hk_api_error(req, 400, "discard must be true or false (or 1, 0)",
                   -1);
      free(c);
      return;
    }
  }
  snprintf(c->file, sizeof c->file, "%s", file ? file : "");
  c->dispatch = hk_router_dispatch(api->router, id);
  hk_router_delete(api->router, id);
  uv_timer_init(hk_router_loop(api->router), &c->timer);
  c->timer.data = c;
  uv_timer_start(&c->timer, delete_when_settled, 0, DELETE_POLL_MS);
}

/* ---- test sends ---- */

typedef struct test_call {
  hk_http_request *req;
  hk_strlist parts; /* "ok", event, message, route, key, keyed */
  char dest[512];
} test_call;

static const char *outcome(hk_tx_status s) {
  return s == HK_TX_OK ? "delivered" : s == HK_TX_RETRY ? "retriable"
                                                        : "failed";
}

static void test_done(void *ctx, const hk_tx_result *res) {
  test_call *t = ctx;
  hk_buf b = HK_BUF_INIT;

  hk_buf_printf(&b, "{\"delivered\":%s,\"outcome\":\"%s\",\"status\":",
                res->status == HK_TX_OK ? "true" : "false",
                outcome(res->status));
  if (res->http_status > 0) hk_buf_printf(&b, "%ld", res->http_status);
  else hk_buf_append(&b, "null", 4);
  hk_buf_append(&b, ",\"reason\":", 10);
  hk_json_write_cstr(&b, res->reason);
  hk_buf_append(&b, ",\"destination\":", 15);
  hk_json_write_cstr(&b, t->dest);
  hk_buf_append(&b, ",\"route\":", 9);
  hk_json_write_cstr(&b, t->parts.s[3][0] ? t->parts.s[3] : NULL);
  hk_buf_printf(&b, ",\"event\":%s,\"message\":%s}", t->parts.s[1],
                t->parts.s[2]);
  hk_api_json(t->req, 200, &b);
  hk_buf_free(&b);
  hk_strlist_free(&t->parts);
  free(t);
}

/* The hook's code failed on the event or dropped it: 422 with both. */
static void test_refused(hk_http_request *req, hk_strlist *p) {
  hk_buf b = HK_BUF_INIT;

  hk_buf_append(&b, "{\"error\":", 9);
  hk_json_write_cstr(&b, p->s[1]);
  hk_buf_printf(&b, ",\"event\":%s}", p->n > 2 ? p->s[2] : "null");
  hk_api_json(req, 422, &b);
  hk_buf_free(&b);
}

/* A caller's own event must be one ingest would accept: its "event" as
 * the request wrote it (escapes and all), or else the event the runtime
 * made of the request (text). Returns 0, or -1 after answering 400 with
 * the reason. */
static int check_event(hk_api *api, hk_http_request *req, const char *text,
                       size_t len) {
  hk_scan_options opt = {0};
  hk_event_span *spans = NULL;
  hk_scan_error err;
  size_t n = 0;
  char msg[300];
  const char *own;
  size_t own_len;
  int rc;

  /* The runtime decoded the body, so it is one valid JSON object. */
  if (hk_splice_member(req->body, req->body_len, "event", &own,
                       &own_len) == 1) {
    text = own;
    len = own_len;
  }
  opt.max_depth = api->config->max_nesting_depth;
  rc = hk_scan_events(text, len, &opt, &spans, &n, &err);
  free(spans);
  if (rc == 0) return 0;
  snprintf(msg, sizeof msg, "event: %s", err.message);
  hk_api_error(req, 400, msg, -1);
  return -1;
}

/* Where the event is in the runtime's answer: {"ok", event, ...} or
 * {"hook", reason, event}. */
static size_t event_at(const hk_strlist *parts) {
  return strcmp(parts->s[0], "hook") == 0 ? 2 : 1;
}

static void test_hook(hk_api *api, hk_http_request *req, const char *id) {
  const char *args[2] = {id, req->body ? req->body : ""};
  size_t lens[2] = {strlen(id), req->body_len};
  hk_dispatch *d = hk_router_dispatch(api->router, id);
  test_call *t = calloc(1, sizeof *t);
  char err[512];
  hk_tx_msg m;

  if (t == NULL) abort();
  t->req = req;
  if (!hk_router_has_hook(api->router, id) || d == NULL) {
    hk_api_error(req, 409, "the hook is not loaded", -1);
  } else if (hk_bridge_call_strings(api->bridge, "test_message", 2, args,
                                    lens, &t->parts, err, sizeof err) != 0) {
    hk_api_error(req, 500, err, -1);
  } else if (strcmp(t->parts.s[0], "request") == 0) {
    hk_api_error(req, 400, t->parts.s[1], -1);
  } else if (check_event(api, req, t->parts.s[event_at(&t->parts)],
                         t->parts.len[event_at(&t->parts)]) != 0) {
    /* answered */
  } else if (strcmp(t->parts.s[0], "hook") == 0) {
    hk_router_test_failed(api->router, id, t->parts.s[1]);
    test_refused(req, &t->parts);
  } else {
    snprintf(t->dest, sizeof t->dest, "%s",
             hk_router_destination(api->router, id));
    m = (hk_tx_msg){t->parts.s[2], t->parts.len[2], t->parts.s[3],
                    t->parts.s[5][0] == '1' ? t->parts.s[4] : NULL,
                    t->parts.len[4]};
    if (hk_dispatch_test(d, &m, test_done, t, err, sizeof err) == 0) return;
    hk_api_error(req, 409, err, -1);
  }
  hk_strlist_free(&t->parts);
  free(t);
}

/* ---- exports ---- */

static void export_done(void *ctx, int status, const char *body) {
  hk_http_request *req = ctx;

  if (status == 201)
    hk_http_respond(req, 201, NULL, NULL, body, strlen(body));
  else
    hk_api_error(req, status, body, -1);
}

/* Checks the range: whole UTC days, from 1970-01-01 to yesterday. */
static const char *range_problem(int parsed, double from, double to) {
  double today = (double)(time(NULL) / 86400 * 86400);

  if (!parsed) return "from and to must be dates as YYYY-MM-DD";
  if (from < 0) return "from must be 1970-01-01 or later";
  if (to >= today) return "to must be yesterday (UTC) or earlier";
  if (from > to) return "from must not be after to";
  return NULL;
}

static void start_export(hk_api *api, hk_http_request *req, const char *id) {
  hk_strlist f;
  double from = 0, to = 0;
  const char *why;
  int parsed;

  if (!hk_router_has_hook(api->router, id)) {
    hk_api_error(req, 409, "the hook is not loaded", -1);
    return;
  }
  if (body_fields(api, req, &f, "from", "to") != 0) return;
  parsed = hk_datetime_parse_day(f.s[0], &from) == 0 &&
           hk_datetime_parse_day(f.s[1], &to) == 0;
  if ((why = range_problem(parsed, from, to)) != NULL)
    hk_api_error(req, 400, why, -1);
  else if (!api->keep_history)
    hk_api_error(req, 409, "history_days is 0: no events are kept", -1);
  else if (!hk_router_hook_active(api->router, id))
    hk_api_error(req, 409, "the hook is stopped: activate it first", -1);
  else
    hk_export_start(api->exports, id, f.s[0], f.s[1], from, to + 86400.0,
                    export_done, req);
  hk_strlist_free(&f);
}

static void export_route(hk_api *api, hk_http_request *req, const char *id,
                         const char *what) {
  hk_buf b = HK_BUF_INIT;
  int status;

  if (*what == '\0' && req->method == HTTP_GET) {
    if (hk_export_render(api->exports, id, &b) == 0) hk_api_json(req, 200, &b);
    else hk_api_error(req, 404, "the hook has no export", -1);
  } else if (*what == '\0' && req->method == HTTP_POST) {
    start_export(api, req, id);
  } else if (*what == '\0') {
    hk_api_not_allowed(req, "GET, HEAD, POST");
  } else if (strcmp(what, "/pause") != 0 && strcmp(what, "/resume") != 0 &&
             strcmp(what, "/abort") != 0) {
    hk_api_error(req, 404, "no such endpoint", -1);
  } else if (req->method != HTTP_POST) {
    hk_api_not_allowed(req, "POST");
  } else {
    status = hk_export_control(api->exports, id, what + 1, &b);
    if (status == 200) hk_api_json(req, 200, &b);
    else hk_api_error(req, status, hk_buf_cstr(&b), -1);
  }
  hk_buf_free(&b);
}

/* ---- routing /v1/hooks/... ---- */

static void hook_action(hk_api *api, hk_http_request *req, const char *id,
                        const char *action) {
  if (strncmp(action, "export", 6) == 0 &&
      (action[6] == '\0' || action[6] == '/')) {
    export_route(api, req, id, action + 6);
    return;
  }
  if (strcmp(action, "activate") != 0 && strcmp(action, "stop") != 0 &&
      strcmp(action, "clone") != 0 && strcmp(action, "test") != 0) {
    hk_api_error(req, 404, "no such endpoint", -1);
  } else if (req->method != HTTP_POST) {
    hk_api_not_allowed(req, "POST");
  } else if (strcmp(action, "activate") == 0 || strcmp(action, "stop") == 0) {
    set_state(api, req, id, action[0] == 'a');
  } else if (strcmp(action, "clone") == 0) {
    clone_hook(api, req, id);
  } else {
    test_hook(api, req, id);
  }
}

static void hook_root(hk_api *api, hk_http_request *req, const char *id) {
  if (req->method == HTTP_GET)
    answer_hook(api, req, id, 200);
  else if (req->method == HTTP_DELETE)
    delete_hook(api, req, id);
  else
    hk_api_not_allowed(req, "GET, HEAD, DELETE");
}

void hk_api_hooks(hk_api *api, hk_http_request *req) {
  const char *rest = req->path + strlen("/v1/hooks"), *slash;
  char id[HK_HOOK_ID_MAX + 1];
  hk_buf b = HK_BUF_INIT;
  size_t n;

  if (*rest == '\0') {
    if (req->method != HTTP_GET) {
      hk_api_not_allowed(req, "GET, HEAD");
      return;
    }
    hk_router_render_hooks(api->router, &b);
    hk_api_json(req, 200, &b);
    hk_buf_free(&b);
    return;
  }
  slash = strchr(rest + 1, '/');
  n = slash ? (size_t)(slash - rest - 1) : strlen(rest + 1);
  snprintf(id, sizeof id, "%.*s", (int)(n > HK_HOOK_ID_MAX ? 0 : n),
           rest + 1);
  if (!hk_hook_id_valid(id) || !hk_router_hook_exists(api->router, id))
    hk_api_error(req, 404, "no such hook", -1);
  else if (slash == NULL)
    hook_root(api, req, id);
  else
    hook_action(api, req, id, slash + 1);
}
