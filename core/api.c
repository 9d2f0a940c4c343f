/* Request handling for the HTTP API. Every error answer is a JSON object
 * {"error": "..."} with a fitting status; ingest errors add the index of
 * the refused event. */
#include <errno.h>
#include <pthread.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_internal.h"
#include "json_scan.h"
#include "json_write.h"
#include "log.h"

#define ROUTE_CHUNK 1024 /* events per call into the runtime */
/* Events of a request routed per turn of the loop: a slice takes about a
 * millisecond, so the loop's other work (answering requests the store has
 * committed, reading the next ones, delivering) waits no longer than that
 * while a large request is routed. */
#define ROUTE_SLICE 256

void hk_api_json(hk_http_request *req, int status, hk_buf *b) {
  hk_http_respond(req, status, NULL, NULL, b->data ? b->data : "", b->len);
}

static void error_with(hk_http_request *req, int status, const char *msg,
                       long index, const char *extra) {
  hk_buf b = HK_BUF_INIT;

  hk_buf_append(&b, "{\"error\":", 9);
  hk_json_write_cstr(&b, msg);
  if (index >= 0) hk_buf_printf(&b, ",\"index\":%ld", index);
  hk_buf_putc(&b, '}');
  hk_http_respond(req, status, NULL, extra, b.data, b.len);
  hk_buf_free(&b);
}

void hk_api_error(hk_http_request *req, int status, const char *msg,
                  long index) {
  error_with(req, status, msg, index,
             status == 503 ? "Retry-After: 5\r\n" : NULL);
}

void hk_api_unauthorized(hk_http_request *req, const char *msg) {
  error_with(req, 401, msg, -1, "WWW-Authenticate: Bearer\r\n");
}

void hk_api_not_allowed(hk_http_request *req, const char *allow) {
  char extra[64], msg[64];

  snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
  snprintf(msg, sizeof msg, "method not allowed: use %s", allow);
  error_with(req, 405, msg, -1, extra);
}

/* One line a second at most: a full disk refuses every request, and the
 * log must not fill what is left of it. The lines held back are counted
 * in the next one. */
static void log_refusal(const char *path, const char *reason) {
  static hk_log_limit limit;
  char quoted[512];
  long held;

  if (!hk_log_limit_pass(&limit, hk_store_now(), &held)) return;
  hk_error("api", "status=503 path=%s suppressed=%ld reason=\"%s\"", path,
           held, hk_log_escape(quoted, sizeof quoted, reason));
}

void hk_api_store_refused(hk_http_request *req, hk_store_batch *b,
                          const char *what) {
  char msg[512];

  snprintf(msg, sizeof msg, "%s not stored, try again later: %s", what,
           hk_store_batch_error(b));
  log_refusal(req->path, hk_store_batch_error(b));
  hk_api_error(req, 503, msg, -1);
}

/* True when the request carries "Bearer <token>" (or no token is set). */
static int authorized(const hk_http_request *req, const char *token) {
  const char *auth = req->authorization;
  size_t n;
  unsigned diff = 0;

  if (token == NULL) return 1;
  if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0) return 0;
  auth += 7;
  n = strlen(token);
  if (strlen(auth) != n) return 0;
  for (size_t i = 0; i < n; i++) diff |= (unsigned)(auth[i] ^ token[i]);
  return diff == 0;
}

int hk_api_query(const char *query, const char *name, char *out,
                 size_t outlen) {
  size_t nlen = strlen(name);
  const char *p = query;

  while (p && *p) {
    const char *end = strchr(p, '&');
    size_t seglen = end ? (size_t)(end - p) : strlen(p);

    if (seglen > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
      size_t j = 0;
      for (size_t i = nlen + 1; i < seglen && j + 1 < outlen; i++) {
        unsigned hi, lo;
        if (p[i] == '%' && i + 2 < seglen &&
            sscanf(p + i + 1, "%1x%1x", &hi, &lo) == 2) {
          if (hi == 0 && lo == 0) return -1; /* would cut the value */
          out[j++] = (char)(hi * 16 + lo);
          i += 2;
        } else {
          out[j++] = p[i] == '+' ? ' ' : p[i];
        }
      }
      out[j] = '\0';
      return 0;
    }
    p = end ? end + 1 : NULL;
  }
  return -1;
}

/* Whether the media type (before any parameters, in any case, as media
 * types are) is one of the names NDJSON goes by. */
static int is_ndjson(const char *content_type) {
  static const char *const names[] = {
      "application/x-ndjson", "application/ndjson", "application/jsonl",
      "application/x-jsonl",  "application/jsonlines",
      "application/x-jsonlines"};
  size_t n;

  if (content_type == NULL) return 0;
  content_type += strspn(content_type, " \t");
  n = strcspn(content_type, "; \t");
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i]) == n && strncasecmp(content_type, names[i], n) == 0)
      return 1;
  return 0;
}

/* Routes the accepted events in chunks, one call into Lua per chunk.
 * Stops once what the request holds passes max_pending_bytes (TOO_BIG),
 * or that and what the requests still waiting for the store hold (BUSY):
 * many hooks can turn one large request into many times its size in
 * messages. */
enum { TOO_BIG = -1, BUSY = -2 };

/* Sizes the store batch of a request up front: its events' texts when
 * history is kept, and about as much again for the messages routing adds,
 * a message and an acknowledgement per event at most. */
static void reserve_for(hk_store_batch *b, const hk_event_span *spans,
                        size_t n, int keep_history) {
  size_t bytes = 0;

  for (size_t i = 0; i < n; i++) bytes += spans[i].json_len + 32;
  (void)hk_store_batch_reserve(b, keep_history ? 2 * n : n,
                               keep_history ? 2 * bytes : bytes);
}

static int route_spans(hk_api *api, hk_route_job *job, hk_store_batch *b,
                       const hk_event_span *spans, size_t n) {
  const char *texts[ROUTE_CHUNK];
  size_t lens[ROUTE_CHUNK];
  hk_event_skips skips[ROUTE_CHUNK];

  for (size_t i = 0; i < n; i += ROUTE_CHUNK) {
    size_t m = n - i < ROUTE_CHUNK ? n - i : ROUTE_CHUNK;

    for (size_t j = 0; j < m; j++) {
      texts[j] = spans[i + j].json;
      lens[j] = spans[i + j].json_len;
      skips[j] = spans[i + j].skips;
    }
    hk_router_route(api->router, job, texts, lens, skips, m);
    if (hk_store_batch_bytes(b) > api->config->max_pending_bytes)
      return TOO_BIG;
    if (api->pending_bytes + hk_store_batch_bytes(b) >
        api->config->max_pending_bytes)
      return BUSY;
  }
  return 0;
}

/* A request whose events are routed and wait for the store. */
typedef struct ingest_call {
  hk_api *api;
  hk_http_request *req;
  hk_route_job *job;
  size_t events;
  size_t bytes; /* counted in api->pending_bytes until committed */
} ingest_call;

/* The events and their messages are committed (202), or nothing of the
 * request is kept (503). */
static void ingest_done(hk_store_batch *b, int ok, void *ctx) {
  ingest_call *call = ctx;
  char answer[64];

  call->api->pending_bytes -= call->bytes;
  hk_router_job_finish(call->api->router, call->job, ok);
  if (ok) {
    call->api->events_accepted += (long)call->events;
    snprintf(answer, sizeof answer, "{\"accepted\":%zu}", call->events);
    hk_http_respond(call->req, 202, NULL, NULL, answer, strlen(answer));
  } else {
    call->api->requests_refused++;
    hk_api_store_refused(call->req, b, "events");
  }
  free(call);
}

/* The request made more than max_pending_bytes of events and messages
 * (alone: 413, it must be split; with the others waiting: 503, try
 * later). Nothing of it is kept. */
static void refuse_too_big(hk_api *api, ingest_call *call,
                           hk_store_batch *batch, int why) {
  int alone = why == TOO_BIG;
  char msg[256];

  hk_router_job_finish(api->router, call->job, 0);
  hk_store_batch_free(batch);
  api->requests_refused++;
  snprintf(msg, sizeof msg, alone
           ? "the hooks' messages for this request exceed max_pending_bytes "
             "(%zu): send fewer events per request"
           : "busy: earlier requests are still being stored; try again "
             "(max_pending_bytes %zu)", api->config->max_pending_bytes);
  hk_warn("ingest", "refused=1 status=%d events=%zu reason=\"%s\"",
          alone ? 413 : 503, call->events, msg);
  hk_api_error(call->req, alone ? 413 : 503, msg, -1);
  free(call);
}

/* Logs a malformed request, at most once a second: a producer sending bad
 * requests in a loop must not flood the log. The line says how many were
 * refused unlogged since the last one (every refusal is in
 * hookd_ingest_requests_refused_total). */
static void log_malformed(hk_api *api, const hk_scan_error *err) {
  long held;

  if (!hk_log_limit_pass(&api->malformed_log, hk_store_now(), &held))
    return;
  hk_info("ingest", "refused=1 status=%d index=%ld reason=\"%s\" "
          "unlogged_before=%ld", err->http_status, err->index, err->message,
          held);
}

/* A body sent compressed (any Content-Encoding but identity) cannot be
 * read as JSON: fills why (for a 415) and returns 1 when it is. */
static int encoded_body(hk_http_request *req, hk_scan_error *why) {
  const char *e = req->content_encoding;

  if (e == NULL) return 0;
  e += strspn(e, " \t");
  if (*e == '\0' || strcasecmp(e, "identity") == 0) return 0;
  why->index = -1;
  why->http_status = 415;
  snprintf(why->message, sizeof why->message, "Content-Encoding %.60s is "
           "not supported: send the body uncompressed", e);
  return 1;
}

/* A request without the ingest token, while shutting down, or with a
 * compressed body is answered at once (the last is logged as a malformed
 * request). Returns 1 when it was. */
static int refused_at_the_door(hk_api *api, hk_http_request *req) {
  hk_scan_error why;

  if (!authorized(req, api->config->ingest_token)) {
    hk_api_unauthorized(req, "missing or wrong ingest token");
  } else if (api->closing) {
    hk_api_error(req, 503, "shutting down: events not accepted", -1);
  } else if (encoded_body(req, &why)) {
    log_malformed(api, &why);
    hk_api_error(req, why.http_status, why.message, -1);
  } else {
    return 0;
  }
  api->requests_refused++;
  return 1;
}

void hk_api_log_flush(hk_api *api) {
  long held = hk_log_limit_due(&api->malformed_log, hk_store_now(), 1);

  if (held == 0) return;
  hk_info("ingest", "refused=%ld unlogged=1 reason=\"malformed requests "
          "after the last one logged\"", held);
}

/* An ingest request being checked on a worker thread. Checking every
 * byte of a request and copying its events into the store batch touch
 * nothing but the request and the batch, so they run beside the loop,
 * which meanwhile routes other requests; only routing, which needs the
 * hooks' Lua state, runs on the loop. */
typedef struct ingest_scan {
  uv_work_t work;
  hk_api *api;
  hk_http_request *req;
  hk_scan_options opt;
  int keep_history;
  int rc;                 /* hk_scan_events's */
  hk_scan_error err;
  hk_event_span *spans;
  size_t n;
  hk_store_batch *batch;  /* the events, for the history when kept */
  ingest_call *call;      /* once routing has begun */
  size_t routed;          /* events routed so far */
  struct ingest_scan *next; /* in api's queue of checked requests */
} ingest_scan;

/* On a worker thread (of libuv's pool), named so that operators (top -H)
 * and the benchmark can tell it from the loop. */
static void scan_work(uv_work_t *w) {
  static __thread int named;
  ingest_scan *sc = w->data;
  hk_http_request *req = sc->req;

  if (!named) {
    pthread_setname_np(pthread_self(), "hookd-worker");
    named = 1;
  }
  sc->rc = hk_scan_events(req->body, req->body_len, &sc->opt, &sc->spans,
                          &sc->n, &sc->err);
  if (sc->rc != 0) return;
  sc->batch = hk_store_batch_new();
  if (sc->batch == NULL) abort();
  reserve_for(sc->batch, sc->spans, sc->n, sc->keep_history);
  for (size_t i = 0; sc->keep_history && i < sc->n; i++) {
    const hk_event_span *e = &sc->spans[i];

    hk_store_add_event(sc->batch, e->json, e->json_len, e->type,
                       e->type_len, e->list_id,
                       (double)e->date_sec + e->date_nsec / 1e9);
  }
}

/* Routes the next slice of a checked request's events. Returns 0 while
 * events remain; 1 once the request is decided: its batch handed to the
 * store, or an answer given saying why not. */
static int route_some(ingest_scan *sc) {
  hk_api *api = sc->api;
  size_t m = sc->n - sc->routed < ROUTE_SLICE ? sc->n - sc->routed
                                               : ROUTE_SLICE;
  ingest_call *call = sc->call;
  int rc;

  if (call == NULL) {
    if (api->pending_bytes > api->config->max_pending_bytes) {
      api->requests_refused++;
      hk_api_error(sc->req, 503, "busy: earlier requests are still being "
                   "stored; try again", -1);
      return 1;
    }
    if ((call = calloc(1, sizeof *call)) == NULL) abort();
    *call = (ingest_call){api, sc->req,
                          hk_router_job_begin(api->router, sc->batch), sc->n,
                          0};
    sc->call = call;
  }
  rc = route_spans(api, call->job, sc->batch, sc->spans + sc->routed, m);
  sc->routed += m;
  if (rc != 0) {
    refuse_too_big(api, call, sc->batch, rc);
    sc->batch = NULL;
    return 1;
  }
  if (sc->routed < sc->n) return 0;
  call->bytes = hk_store_batch_bytes(sc->batch);
  api->pending_bytes += call->bytes;
  hk_store_submit(api->store, sc->batch, ingest_done, call);
  sc->batch = NULL;
  return 1;
}

/* Checked requests wait in a queue and are routed in order, a slice per
 * turn of the loop, after the turn's reads and completions: while one is
 * routed, the workers check the next ones, which the loop has read
 * meanwhile, and requests the store has committed are answered between
 * slices rather than after the whole of a request. Routed at once as each
 * check finished, a request held up the reads of the others, whose checks
 * then started only when it was done, and the loop sat waiting for them.
 * The idle handle keeps the loop from blocking while requests wait. */
static void route_next_cb(uv_check_t *h) {
  hk_api *api = h->data;
  ingest_scan *sc = api->ready_head;

  if (sc != NULL && route_some(sc)) {
    api->ready_head = sc->next;
    if (api->ready_head == NULL) api->ready_tail = NULL;
    api->scanning--;
    hk_store_batch_free(sc->batch);
    free(sc->spans);
    free(sc);
  }
  if (api->ready_head == NULL) {
    uv_check_stop(&api->route_check);
    uv_idle_stop(&api->route_idle);
  }
}

static void keep_turning_cb(uv_idle_t *h) { (void)h; }

static void queue_checked(hk_api *api, ingest_scan *sc) {
  if (!api->route_handles) {
    uv_check_init(api->loop, &api->route_check);
    uv_idle_init(api->loop, &api->route_idle);
    api->route_check.data = api;
    api->route_handles = 1;
  }
  sc->next = NULL;
  if (api->ready_tail) api->ready_tail->next = sc;
  else api->ready_head = sc;
  api->ready_tail = sc;
  uv_check_start(&api->route_check, route_next_cb);
  uv_idle_start(&api->route_idle, keep_turning_cb);
}

/* Back on the loop: queues the checked events for routing, or answers
 * why they were refused. */
static void scan_done(uv_work_t *w, int status) {
  ingest_scan *sc = w->data;
  hk_api *api = sc->api;
  hk_http_request *req = sc->req;

  if (status == 0 && sc->rc == 0) {
    queue_checked(api, sc);
    return;
  }
  api->scanning--;
  api->requests_refused++;
  if (status != 0) {
    hk_api_error(req, 503, "the request could not be checked", -1);
  } else {
    log_malformed(api, &sc->err);
    hk_api_error(req, sc->err.http_status, sc->err.message, sc->err.index);
  }
  hk_store_batch_free(sc->batch);
  free(sc->spans);
  free(sc);
}

static void handle_events(hk_api *api, hk_http_request *req) {
  ingest_scan *sc;

  if (refused_at_the_door(api, req)) return;
  if ((sc = calloc(1, sizeof *sc)) == NULL) abort();
  sc->api = api;
  sc->req = req;
  sc->opt.ndjson = is_ndjson(req->content_type);
  sc->opt.max_depth = api->config->max_nesting_depth;
  sc->keep_history = api->keep_history;
  sc->work.data = sc;
  api->scanning++;
  if (uv_queue_work(api->loop, &sc->work, scan_work, scan_done) != 0) {
    scan_work(&sc->work);
    scan_done(&sc->work, 0);
  }
}

long hk_api_parse_count(const char *s) {
  char *end;
  long v;

  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  v = strtol(s, &end, 10);
  return *end == '\0' && errno == 0 ? v : -1; /* out of range: not one */
}

static int path_is(const hk_http_request *req, const char *prefix) {
  size_t n = strlen(prefix);

  return strncmp(req->path, prefix, n) == 0 &&
         (req->path[n] == '\0' || req->path[n] == '/');
}

/* Endpoints under the API token, by path prefix. */
static const struct admin_route {
  const char *prefix;
  void (*handle)(hk_api *api, hk_http_request *req);
} admin_routes[] = {
    {"/v1/hooks", hk_api_hooks},
    {"/v1/dead-letters", hk_api_dead_letters},
    {"/v1/content", hk_api_content},
    {"/v1/profiles", hk_api_profiles},
    {"/v1/catalog", hk_api_catalog},
};

static void handle_admin(hk_api *api, hk_http_request *req,
                         const struct admin_route *route) {
  hk_scan_error why;

  if (!authorized(req, api->config->api_token))
    hk_api_unauthorized(req, "missing or wrong API token");
  else if (encoded_body(req, &why))
    hk_api_error(req, why.http_status, why.message, -1);
  else
    route->handle(api, req);
}

void hk_api_handle_cb(hk_http_request *req, void *data) {
  hk_api *api = data;

  if (strcmp(req->path, "/healthz") == 0) {
    if (req->method == HTTP_GET)
      hk_http_respond(req, 200, NULL, NULL, "{\"status\":\"ok\"}", 15);
    else
      hk_api_not_allowed(req, "GET, HEAD");
    return;
  }
  if (strcmp(req->path, "/metrics") == 0) {
    if (!authorized(req, api->config->metrics_token))
      hk_api_unauthorized(req, "missing or wrong metrics token");
    else if (req->method == HTTP_GET)
      hk_api_metrics(api, req);
    else
      hk_api_not_allowed(req, "GET, HEAD");
    return;
  }
  if (strcmp(req->path, "/v1/events") == 0) {
    if (req->method == HTTP_POST)
      handle_events(api, req);
    else
      hk_api_not_allowed(req, "POST");
    return;
  }
  for (size_t i = 0; i < sizeof admin_routes / sizeof admin_routes[0]; i++)
    if (path_is(req, admin_routes[i].prefix)) {
      handle_admin(api, req, &admin_routes[i]);
      return;
    }
  hk_api_error(req, 404, "no such endpoint", -1);
}
