/* Request handling for the HTTP API. Every error answer is a JSON object
 * {"error": "..."} with a fitting status; ingest errors add the index of
 * the refused event. */
#include "api.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadletters.h"
#include "json_scan.h"
#include "json_write.h"
#include "log.h"

#define ROUTE_CHUNK 1024 /* events per call into the runtime */

static void respond_buf(hk_http_request *req, int status, hk_buf *b) {
  hk_http_respond(req, status, NULL, NULL, b->data ? b->data : "", b->len);
}

static void respond_error(hk_http_request *req, int status, const char *msg,
                          long index) {
  hk_buf b = HK_BUF_INIT;

  hk_buf_append(&b, "{\"error\":", 9);
  hk_json_write_cstr(&b, msg);
  if (index >= 0) hk_buf_printf(&b, ",\"index\":%ld", index);
  hk_buf_putc(&b, '}');
  respond_buf(req, status, &b);
  hk_buf_free(&b);
}

/* True when the request carries "Bearer <token>" (or no token is set). */
static int authorized(const hk_http_request *req, const char *token) {
  const char *auth = req->authorization;
  size_t n;
  unsigned diff = 0;

  if (token == NULL) return 1;
  if (auth == NULL || strncmp(auth, "Bearer ", 7) != 0) return 0;
  auth += 7;
  n = strlen(token);
  if (strlen(auth) != n) return 0;
  for (size_t i = 0; i < n; i++) diff |= (unsigned)(auth[i] ^ token[i]);
  return diff == 0;
}

/* Copies the value of query parameter name into out (percent-decoded).
 * Returns 0 when found, -1 otherwise. */
static int query_param(const char *query, const char *name, char *out,
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

static int is_ndjson(const char *content_type) {
  return content_type && (strstr(content_type, "ndjson") ||
                          strstr(content_type, "jsonl"));
}

/* Routes the accepted events in chunks, one call into Lua per chunk. */
static void route_spans(hk_router *router, const hk_event_span *spans,
                        size_t n) {
  const char *texts[ROUTE_CHUNK];
  size_t lens[ROUTE_CHUNK];

  for (size_t i = 0; i < n; i += ROUTE_CHUNK) {
    size_t m = n - i < ROUTE_CHUNK ? n - i : ROUTE_CHUNK;

    for (size_t j = 0; j < m; j++) {
      texts[j] = spans[i + j].json;
      lens[j] = spans[i + j].json_len;
    }
    hk_router_route(router, texts, lens, m);
  }
}

static void handle_events(hk_api *api, hk_http_request *req) {
  hk_scan_options opt = {0};
  hk_event_span *spans = NULL;
  hk_scan_error err;
  size_t n = 0;
  char answer[64];

  if (!authorized(req, api->config->ingest_token)) {
    respond_error(req, 401, "missing or wrong ingest token", -1);
    return;
  }
  opt.ndjson = is_ndjson(req->content_type);
  opt.max_depth = api->config->max_nesting_depth;
  if (hk_scan_events(req->body, req->body_len, &opt, &spans, &n, &err) != 0) {
    api->requests_refused++;
    hk_info("ingest", "refused=1 status=%d index=%ld reason=\"%s\"",
            err.http_status, err.index, err.message);
    respond_error(req, err.http_status, err.message, err.index);
    return;
  }
  route_spans(api->router, spans, n);
  api->events_accepted += (long)n;
  free(spans);
  snprintf(answer, sizeof answer, "{\"accepted\":%zu}", n);
  hk_http_respond(req, 202, NULL, NULL, answer, strlen(answer));
}

/* Parses a non-negative decimal integer; returns -1 when s is not one. */
static long parse_count(const char *s) {
  char *end;
  long v;

  if (*s < '0' || *s > '9') return -1;
  v = strtol(s, &end, 10);
  return *end == '\0' ? v : -1;
}

static void handle_dead_letters(hk_api *api, hk_http_request *req) {
  char hook[256], after[32], limit[32];
  hk_buf b = HK_BUF_INIT;
  long lim = 100, from = 0;

  if (query_param(req->query, "limit", limit, sizeof limit) == 0 &&
      ((lim = parse_count(limit)) < 1 || lim > 1000)) {
    respond_error(req, 400, "limit must be an integer from 1 to 1000", -1);
    return;
  }
  if (query_param(req->query, "after", after, sizeof after) == 0 &&
      (from = parse_count(after)) < 0) {
    respond_error(req, 400, "after must be a cursor from \"next\"", -1);
    return;
  }
  hk_deadletters_render(
      &b, query_param(req->query, "hook", hook, sizeof hook) == 0 ? hook : NULL,
      from, (int)lim);
  respond_buf(req, 200, &b);
  hk_buf_free(&b);
}

static void handle_hooks(hk_api *api, hk_http_request *req) {
  const char *rest = req->path + strlen("/v1/hooks");
  hk_buf b = HK_BUF_INIT;

  if (*rest == '\0' || strcmp(rest, "/") == 0) {
    hk_router_render_hooks(api->router, &b);
    respond_buf(req, 200, &b);
  } else if (rest[0] == '/' && strchr(rest + 1, '/') == NULL &&
             hk_router_render_hook(api->router, rest + 1, &b) == 0) {
    respond_buf(req, 200, &b);
  } else {
    respond_error(req, 404, "no such hook", -1);
  }
  hk_buf_free(&b);
}

static int path_is(const hk_http_request *req, const char *prefix) {
  size_t n = strlen(prefix);

  return strncmp(req->path, prefix, n) == 0 &&
         (req->path[n] == '\0' || req->path[n] == '/');
}

void hk_api_handle_cb(hk_http_request *req, void *data) {
  hk_api *api = data;
  int get = req->method == HTTP_GET;

  if (strcmp(req->path, "/healthz") == 0 && get) {
    hk_http_respond(req, 200, NULL, NULL, "{\"status\":\"ok\"}", 15);
  } else if (strcmp(req->path, "/v1/events") == 0) {
    if (req->method == HTTP_POST)
      handle_events(api, req);
    else
      respond_error(req, 405, "use POST for /v1/events", -1);
  } else if (path_is(req, "/v1/hooks") || path_is(req, "/v1/dead-letters")) {
    if (!authorized(req, api->config->api_token))
      respond_error(req, 401, "missing or wrong API token", -1);
    else if (!get)
      respond_error(req, 405, "method not allowed", -1);
    else if (path_is(req, "/v1/hooks"))
      handle_hooks(api, req);
    else
      handle_dead_letters(api, req);
  } else {
    respond_error(req, 404, "no such endpoint", -1);
  }
}
