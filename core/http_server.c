/* The HTTP/1.1 server: listening, one connection object per client, request
 * parsing with http-parser, limits, keep-alive and in-order pipelining, and
 * writing the handler's answers. */
#include "http_server.h"

#include <http_parser.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "log.h"

#define HK_HTTP_DEFAULT_MAX_BODY (1024 * 1024)
#define HK_HTTP_DEFAULT_MAX_HEADER (64 * 1024)
#define HK_HTTP_IDLE_MS 120000 /* quiet keep-alive connections */
#define HK_HTTP_HEAD_MS 30000  /* default time for a request's head */
#define HK_HTTP_LINGER_MS 5000 /* reading leftovers after our FIN */
#define HK_HTTP_READ_SIZE 65536
#define HK_HTTP_BACKLOG 511

/* ACTIVE parses requests; FLUSHING waits for the last answer to be written
 * (shutdown pending) and discards input; LINGERING has sent FIN and drains
 * input briefly so a close does not reset a client still sending. */
enum conn_state { CONN_ACTIVE, CONN_FLUSHING, CONN_LINGERING, CONN_CLOSED };

typedef struct hk_conn hk_conn;

/* The server's view of one request. pub comes first: the handler's pointer
 * converts back. Owned by the connection while parsed, by the handler
 * between dispatch and hk_http_respond. */
typedef struct hk_req {
  hk_http_request pub;
  hk_conn *conn; /* set while pending; NULL once the connection is gone */
  hk_buf url;
  hk_buf body;
  hk_buf content_type;
  hk_buf authorization;
  hk_buf expect;
  char *path_query; /* decoded path, NUL, raw query, NUL */
  unsigned has_content_type : 1;
  unsigned has_authorization : 1;
  unsigned keep_alive : 1;
  unsigned http10 : 1;
  unsigned head : 1;
} hk_req;

struct hk_conn {
  uv_tcp_t tcp;
  uv_timer_t timer; /* idle timeout, linger timeout, deferred resume */
  uv_shutdown_t shutdown;
  hk_http_server *server;
  hk_conn *prev, *next;
  http_parser parser;
  hk_buf in; /* bytes read past a request still waiting for its answer */
  size_t in_off;
  hk_req *cur;     /* request being parsed, owned here */
  hk_req *pending; /* request handed to the handler, not yet answered */
  uint64_t last_active;
  uint64_t head_due; /* loop time by which the head must be in, or 0 */
  size_t header_bytes;
  int state;
  int handles; /* open uv handles; the conn is freed when it reaches 0 */
  unsigned reading : 1, eof : 1, in_parse : 1, ready : 1, resume_due : 1;
  unsigned hdr_in_value : 1;
  char hdr_name[16]; /* start of the current header name */
  size_t hdr_name_len;
  hk_buf *hdr_target; /* where the current header value goes, or NULL */
  int refuse_status;  /* set by a parser callback that refused the request */
  char refuse_msg[128];
};

struct hk_http_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  hk_http_handler_cb handler;
  void *data;
  size_t max_body;
  size_t max_header;
  uint64_t head_timeout_ms;
  int port;
  int closing;
  int handles; /* listener plus live connections; freed at 0 when closing */
  hk_conn *conns;
  http_parser_settings settings;
  char rbuf[HK_HTTP_READ_SIZE]; /* read buffer shared by the connections */
};

typedef struct hk_write {
  uv_write_t req;
  char *data;
} hk_write;

static void conn_close(hk_conn *c);
static void conn_finish(hk_conn *c);
static void conn_resume(hk_conn *c);

/* ---- small helpers ---------------------------------------------------- */

static int hex_value(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Percent-decodes src[0..n) into dst (room for n bytes); returns the decoded
 * length, or -1 for a broken escape or an encoded NUL. */
static long percent_decode(char *dst, const char *src, size_t n) {
  size_t i, o = 0;

  for (i = 0; i < n; i++) {
    int hi, lo;

    if (src[i] != '%') {
      dst[o++] = src[i];
      continue;
    }
    if (i + 2 >= n) return -1;
    hi = hex_value(src[i + 1]);
    lo = hex_value(src[i + 2]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -1;
    dst[o++] = (char)(hi * 16 + lo);
    i += 2;
  }
  return (long)o;
}

/* Appends s as the inside of a JSON string. */
static int json_escape(hk_buf *b, const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    int rc;

    if (ch == '"' || ch == '\\')
      rc = hk_buf_printf(b, "\\%c", ch);
    else if (ch < 0x20)
      rc = hk_buf_printf(b, "\\u%04x", ch);
    else
      rc = hk_buf_putc(b, (char)ch);
    if (rc != 0) return -1;
  }
  return 0;
}

static const char *status_reason(int status) {
  const char *s = http_status_str((enum http_status)status);

  return strcmp(s, "<unknown>") == 0 ? "" : s;
}

static void trim_right(hk_buf *b) {
  while (b->len > 0 &&
         (b->data[b->len - 1] == ' ' || b->data[b->len - 1] == '\t'))
    b->len--;
}

/* ---- requests ----------------------------------------------------------- */

static void req_free(hk_req *r) {
  if (r == NULL) return;
  hk_buf_free(&r->url);
  hk_buf_free(&r->body);
  hk_buf_free(&r->content_type);
  hk_buf_free(&r->authorization);
  hk_buf_free(&r->expect);
  free(r->path_query);
  free(r);
}

/* Splits the request target into a decoded path and a raw query. Accepts
 * origin form ("/p?q"), absolute form ("http://h/p?q") and "*". Returns 0,
 * or -1 with no change when the target is unusable. */
static int req_split_target(hk_req *r) {
  const char *u = hk_buf_cstr(&r->url), *p = u, *path_end, *q, *q_end;
  char *out;
  long n;

  if (u[0] != '/' && u[0] != '*') {
    const char *scheme_end = strstr(u, "://");

    if (scheme_end == NULL) return -1;
    p = scheme_end + 3;
    p += strcspn(p, "/?#");
  }
  path_end = p + strcspn(p, "?#");
  q = *path_end == '?' ? path_end + 1 : path_end;
  q_end = q + strcspn(q, "#");
  out = malloc((size_t)(path_end - p) + (size_t)(q_end - q) + 3);
  if (out == NULL) return -1;
  if (path_end == p) {
    n = 1;
    out[0] = '/';
  } else if ((n = percent_decode(out, p, (size_t)(path_end - p))) < 0) {
    free(out);
    return -1;
  }
  out[n] = '\0';
  memcpy(out + n + 1, q, (size_t)(q_end - q));
  out[n + 1 + (q_end - q)] = '\0';
  r->path_query = out;
  r->pub.path = out;
  r->pub.query = out + n + 1;
  return 0;
}

/* Fills the public fields once the whole request is in. Returns 0, or -1
 * when the target cannot be decoded. */
static int req_complete(hk_req *r, const http_parser *p) {
  if (req_split_target(r) != 0) return -1;
  r->pub.method = (int)p->method;
  r->pub.body = hk_buf_cstr(&r->body);
  r->pub.body_len = r->body.len;
  if (r->has_content_type) {
    trim_right(&r->content_type);
    r->pub.content_type = hk_buf_cstr(&r->content_type);
  }
  if (r->has_authorization) {
    trim_right(&r->authorization);
    r->pub.authorization = hk_buf_cstr(&r->authorization);
  }
  r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
  r->http10 = p->http_major == 1 && p->http_minor == 0;
  r->head = p->method == HTTP_HEAD;
  return 0;
}

/* ---- writing ------------------------------------------------------------ */

static void conn_write_cb(uv_write_t *wr, int status) {
  hk_write *w = (hk_write *)wr;
  hk_conn *c = wr->data;

  free(w->data);
  free(w);
  if (status < 0) {
    if (status != UV_ECANCELED) conn_close(c);
    return;
  }
  c->last_active = uv_now(c->server->loop);
}

/* Queues out's bytes on the connection; takes them from out in all cases.
 * Returns 0, or -1 after closing the connection. */
static int conn_write(hk_conn *c, hk_buf *out) {
  hk_write *w = malloc(sizeof *w);
  uv_buf_t b;
  size_t len;

  if (w == NULL) goto fail;
  w->data = hk_buf_steal(out, &len);
  w->req.data = c;
  b = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb) != 0) {
    free(w->data);
    free(w);
    goto fail;
  }
  return 0;
fail:
  hk_buf_free(out);
  conn_close(c);
  return -1;
}

/* Builds a complete response. A body is left out where HTTP forbids one
 * (HEAD, 204, 304). Returns 0 or -1 when memory runs out. */
static int build_response(hk_buf *out, const hk_req *r, int status,
                          const char *ctype, const char *extra,
                          const char *body, size_t body_len, int closing) {
  int no_length = status == 204 || status == 304;
  int no_body = no_length || (r != NULL && r->head);
  int rc;

  rc = hk_buf_reserve(out, 256 + (no_body ? 0 : body_len));
  rc |= hk_buf_printf(out, "HTTP/1.1 %d %s\r\n", status,
                      status_reason(status));
  if (!no_length)
    rc |= hk_buf_printf(out, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                        ctype ? ctype : "application/json", body_len);
  if (extra != NULL) rc |= hk_buf_append(out, extra, strlen(extra));
  if (closing)
    rc |= hk_buf_printf(out, "Connection: close\r\n");
  else if (r != NULL && r->http10)
    rc |= hk_buf_printf(out, "Connection: keep-alive\r\n");
  rc |= hk_buf_append(out, "\r\n", 2);
  if (!no_body && body_len > 0) rc |= hk_buf_append(out, body, body_len);
  return rc != 0 ? -1 : 0;
}

/* Answers a request refused before the handler with a JSON error, then
 * closes the connection gracefully. */
static void conn_send_error(hk_conn *c, int status, const char *msg) {
  hk_buf body = HK_BUF_INIT, out = HK_BUF_INIT;
  int rc;

  hk_debug("http", "status=%d error=\"%s\"", status, msg);
  rc = hk_buf_printf(&body, "{\"error\":\"");
  if (rc == 0) rc = json_escape(&body, msg);
  if (rc == 0) rc = hk_buf_printf(&body, "\"}");
  if (rc == 0)
    rc = build_response(&out, NULL, status, NULL, NULL, body.data, body.len,
                        1);
  hk_buf_free(&body);
  req_free(c->cur);
  c->cur = NULL;
  if (rc != 0) {
    hk_buf_free(&out);
    conn_close(c);
    return;
  }
  if (conn_write(c, &out) == 0) conn_finish(c);
}

/* ---- connection lifecycle ----------------------------------------------- */

static void server_handle_closed(hk_http_server *s) {
  if (--s->handles == 0 && s->closing) free(s);
}

static void listener_closed_cb(uv_handle_t *h) {
  server_handle_closed(h->data);
}

static void conn_closed_cb(uv_handle_t *h) {
  hk_conn *c = h->data;
  hk_http_server *s = c->server;

  if (--c->handles > 0) return;
  req_free(c->cur);
  hk_buf_free(&c->in);
  free(c);
  server_handle_closed(s);
}

static void conn_read_stop(hk_conn *c) {
  if (!c->reading) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

/* Closes at once, dropping unsent output. A pending request is orphaned:
 * its answer will only be freed. Memory goes in the close callbacks. */
static void conn_close(hk_conn *c) {
  hk_http_server *s = c->server;

  if (c->state == CONN_CLOSED) return;
  c->state = CONN_CLOSED;
  if (c->pending != NULL) c->pending->conn = NULL;
  c->pending = NULL;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  conn_read_stop(c);
  uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
  uv_close((uv_handle_t *)&c->timer, conn_closed_cb);
}

static void conn_timer_cb(uv_timer_t *t);

static void conn_arm_timer(hk_conn *c, uint64_t ms) {
  uv_timer_start(&c->timer, conn_timer_cb, ms, 0);
}

static void conn_timer_cb(uv_timer_t *t) {
  hk_conn *c = t->data;
  uint64_t idle;

  if (c->resume_due) {
    c->resume_due = 0;
    conn_resume(c);
    if (c->state != CONN_CLOSED) conn_arm_timer(c, HK_HTTP_IDLE_MS);
    return;
  }
  if (c->state == CONN_LINGERING) {
    conn_close(c);
    return;
  }
  if (c->pending != NULL) {
    conn_arm_timer(c, HK_HTTP_IDLE_MS);
    return;
  }
  /* A client that trickles a request's head in (slowloris) gets 408. */
  if (c->head_due != 0 && uv_now(c->server->loop) >= c->head_due) {
    c->head_due = 0;
    conn_send_error(c, 408, "request headers did not arrive in time");
    return;
  }
  idle = uv_now(c->server->loop) - c->last_active;
  if (idle >= HK_HTTP_IDLE_MS) {
    hk_debug("http", "closing=idle idle_ms=%llu", (unsigned long long)idle);
    conn_close(c);
    return;
  }
  if (c->head_due != 0 &&
      c->head_due - uv_now(c->server->loop) < HK_HTTP_IDLE_MS - idle)
    conn_arm_timer(c, c->head_due - uv_now(c->server->loop));
  else
    conn_arm_timer(c, HK_HTTP_IDLE_MS - idle);
}

static void conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  hk_conn *c = h->data;

  (void)hint;
  buf->base = c->server->rbuf;
  buf->len = sizeof c->server->rbuf;
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(hk_conn *c) {
  if (c->reading || c->eof) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) !=
      0) {
    conn_close(c);
    return;
  }
  c->reading = 1;
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status) {
  hk_conn *c = req->data;

  if (c->state != CONN_FLUSHING) return;
  if (status < 0 || c->eof) {
    conn_close(c);
    return;
  }
  c->state = CONN_LINGERING;
  c->resume_due = 0;
  conn_arm_timer(c, HK_HTTP_LINGER_MS);
}

/* Ends the connection after everything queued is written: shuts down the
 * sending side, then keeps discarding input until EOF or the linger
 * timeout, so a client still sending sees our answer instead of a reset. */
static void conn_finish(hk_conn *c) {
  if (c->state != CONN_ACTIVE) return;
  c->state = CONN_FLUSHING;
  c->resume_due = 0;
  c->shutdown.data = c;
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, conn_shutdown_cb) !=
      0) {
    conn_close(c);
    return;
  }
  if (c->eof)
    conn_read_stop(c);
  else
    conn_read_start(c);
}

/* After parsing: wait for the pending answer without reading, or read the
 * next request, or finish when the client has stopped sending. */
static void conn_after_parse(hk_conn *c) {
  if (c->state != CONN_ACTIVE) return;
  if (c->pending != NULL)
    conn_read_stop(c);
  else if (c->eof)
    conn_finish(c);
  else
    conn_read_start(c);
}

/* ---- parser callbacks ------------------------------------------------- */

/* Records why a request is refused; the parser callback then fails. */
static int conn_refuse(hk_conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int conn_refuse(hk_conn *c, int status, const char *fmt, ...) {
  va_list ap;

  c->refuse_status = status;
  va_start(ap, fmt);
  vsnprintf(c->refuse_msg, sizeof c->refuse_msg, fmt, ap);
  va_end(ap);
  return -1;
}

static int refuse_no_memory(hk_conn *c) {
  return conn_refuse(c, 503, "out of memory");
}

static int count_header_bytes(hk_conn *c, size_t len) {
  c->header_bytes += len;
  if (c->header_bytes <= c->server->max_header) return 0;
  return conn_refuse(c, 431, "request headers exceed %zu bytes",
                     c->server->max_header);
}

static int on_message_begin(http_parser *p) {
  hk_conn *c = p->data;

  req_free(c->cur);
  c->cur = calloc(1, sizeof *c->cur);
  if (c->cur == NULL) return refuse_no_memory(c);
  c->header_bytes = 0;
  c->head_due = uv_now(c->server->loop) + c->server->head_timeout_ms;
  if (!c->resume_due && c->state == CONN_ACTIVE)
    conn_arm_timer(c, c->server->head_timeout_ms);
  c->hdr_in_value = 0;
  c->hdr_name_len = 0;
  c->hdr_target = NULL;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  hk_conn *c = p->data;

  if (count_header_bytes(c, len) != 0) return -1;
  if (hk_buf_append(&c->cur->url, at, len) != 0) return refuse_no_memory(c);
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  hk_conn *c = p->data;
  size_t room;

  if (count_header_bytes(c, len) != 0) return -1;
  if (c->hdr_in_value) {
    c->hdr_in_value = 0;
    c->hdr_name_len = 0;
    c->hdr_target = NULL;
  }
  if (c->hdr_name_len < sizeof c->hdr_name) {
    room = sizeof c->hdr_name - c->hdr_name_len;
    memcpy(c->hdr_name + c->hdr_name_len, at, len < room ? len : room);
  }
  c->hdr_name_len += len;
  return 0;
}

static int header_is(const hk_conn *c, const char *name) {
  size_t n = strlen(name);

  return c->hdr_name_len == n && strncasecmp(c->hdr_name, name, n) == 0;
}

/* Picks the buffer for the header whose name just ended; NULL to ignore
 * it. A repeated header replaces the earlier value. */
static hk_buf *header_target(hk_conn *c) {
  hk_req *r = c->cur;
  hk_buf *b = NULL;

  if (header_is(c, "content-type")) {
    r->has_content_type = 1;
    b = &r->content_type;
  } else if (header_is(c, "authorization")) {
    r->has_authorization = 1;
    b = &r->authorization;
  } else if (header_is(c, "expect")) {
    b = &r->expect;
  }
  if (b != NULL) hk_buf_reset(b);
  return b;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  hk_conn *c = p->data;

  if (count_header_bytes(c, len) != 0) return -1;
  if (!c->hdr_in_value) {
    c->hdr_in_value = 1;
    c->hdr_target = header_target(c);
  }
  if (c->hdr_target != NULL && hk_buf_append(c->hdr_target, at, len) != 0)
    return refuse_no_memory(c);
  return 0;
}

/* Tells a client waiting on "Expect: 100-continue" to send its body. */
static void conn_send_continue(hk_conn *c) {
  static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
  hk_buf out = HK_BUF_INIT;

  if (hk_buf_append(&out, line, sizeof line - 1) == 0)
    conn_write(c, &out);
}

static int on_headers_complete(http_parser *p) {
  hk_conn *c = p->data;
  hk_req *r = c->cur;
  int chunked = (p->flags & F_CHUNKED) != 0;
  int has_length = !chunked && p->content_length != UINT64_MAX;
  size_t max = c->server->max_body;

  c->head_due = 0;
  if (has_length && p->content_length > max)
    return conn_refuse(c, 413, "request body exceeds %zu bytes", max);
  if (has_length && p->content_length > 0) {
    r->body.data = malloc((size_t)p->content_length + 1);
    if (r->body.data == NULL) return refuse_no_memory(c);
    r->body.cap = (size_t)p->content_length + 1;
  }
  trim_right(&r->expect);
  if ((chunked || (has_length && p->content_length > 0)) &&
      p->http_major == 1 && p->http_minor >= 1 && r->expect.len == 12 &&
      strncasecmp(r->expect.data, "100-continue", 12) == 0)
    conn_send_continue(c);
  return c->state == CONN_ACTIVE ? 0 : -1;
}

/* Appends body bytes, growing the buffer by doubling but never past the
 * limit (plus the NUL). The caller has checked b->len + len <= max. */
static int body_append(hk_buf *b, const char *at, size_t len, size_t max) {
  size_t need = b->len + len + 1, cap;
  char *p;

  if (need > b->cap) {
    cap = b->cap ? b->cap * 2 : 4096;
    if (cap < need) cap = need;
    if (cap > max + 1) cap = max + 1;
    p = realloc(b->data, cap);
    if (p == NULL) return -1;
    b->data = p;
    b->cap = cap;
  }
  memcpy(b->data + b->len, at, len);
  b->len += len;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  hk_conn *c = p->data;
  hk_buf *b = &c->cur->body;
  size_t max = c->server->max_body;

  if (len > max - b->len)
    return conn_refuse(c, 413, "request body exceeds %zu bytes", max);
  if (body_append(b, at, len, max) != 0) return refuse_no_memory(c);
  return 0;
}

/* Stops the parser after each request so the next one is parsed only once
 * this one is answered. */
static int on_message_complete(http_parser *p) {
  hk_conn *c = p->data;

  if (req_complete(c->cur, p) != 0)
    return conn_refuse(c, 400, "malformed HTTP request: invalid path");
  c->ready = 1;
  http_parser_pause(p, 1);
  return 0;
}

/* ---- parsing ---------------------------------------------------------- */

static void conn_dispatch(hk_conn *c) {
  hk_http_server *s = c->server;
  hk_req *r = c->cur;

  c->cur = NULL;
  c->pending = r;
  r->conn = c;
  s->handler(&r->pub, s->data);
}

/* Answers a parse failure: a refusal from a callback, an oversized header
 * section, or malformed HTTP. */
static void conn_parse_failed(hk_conn *c, enum http_errno err) {
  char msg[160];

  if (c->refuse_status != 0) {
    conn_send_error(c, c->refuse_status, c->refuse_msg);
  } else if (err == HPE_HEADER_OVERFLOW) {
    snprintf(msg, sizeof msg, "request headers exceed %zu bytes",
             c->server->max_header);
    conn_send_error(c, 431, msg);
  } else {
    snprintf(msg, sizeof msg, "malformed HTTP request: %s",
             http_errno_description(err));
    conn_send_error(c, 400, msg);
  }
}

/* Feeds one stretch of input to the parser and dispatches a request that
 * completed in it. Returns the bytes used (all of them after a failure). */
static size_t conn_execute(hk_conn *c, const char *data, size_t len) {
  enum http_errno err;
  size_t n;

  http_parser_pause(&c->parser, 0);
  n = http_parser_execute(&c->parser, &c->server->settings, data, len);
  err = HTTP_PARSER_ERRNO(&c->parser);
  if (c->ready) {
    c->ready = 0;
    conn_dispatch(c);
    return n;
  }
  if (c->state != CONN_ACTIVE) return len;
  if (err != HPE_OK && err != HPE_PAUSED) {
    conn_parse_failed(c, err);
    return len;
  }
  if (n < len) {
    conn_send_error(c, 400, "malformed HTTP request: unsupported upgrade");
    return len;
  }
  return n;
}

/* Parses requests from data until it is used up, a request waits for its
 * answer, or the connection stops. Returns the bytes used. */
static size_t conn_parse(hk_conn *c, const char *data, size_t len) {
  size_t used = 0;

  c->in_parse = 1;
  while (used < len && c->state == CONN_ACTIVE && c->pending == NULL)
    used += conn_execute(c, data + used, len - used);
  c->in_parse = 0;
  return used;
}

/* Parses input kept while a request was pending. */
static void conn_resume(hk_conn *c) {
  size_t used;

  if (c->state != CONN_ACTIVE || c->pending != NULL) return;
  used = conn_parse(c, c->in.data + c->in_off, c->in.len - c->in_off);
  c->in_off += used;
  if (c->in_off >= c->in.len) {
    hk_buf_free(&c->in);
    c->in_off = 0;
  }
  conn_after_parse(c);
}

static void conn_on_read_error(hk_conn *c, ssize_t nread) {
  if (nread != UV_EOF || c->state != CONN_ACTIVE) {
    conn_close(c);
    return;
  }
  c->eof = 1;
  conn_read_stop(c);
  if (c->pending == NULL && c->in_off >= c->in.len) conn_finish(c);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  hk_conn *c = st->data;
  size_t used, n = (size_t)nread;

  if (nread < 0) {
    conn_on_read_error(c, nread);
    return;
  }
  if (nread == 0 || c->state != CONN_ACTIVE) return;
  c->last_active = uv_now(c->server->loop);
  if (c->in_off < c->in.len) {
    if (hk_buf_append(&c->in, buf->base, n) != 0) conn_close(c);
    conn_resume(c);
    return;
  }
  used = conn_parse(c, buf->base, n);
  if (used < n && c->state == CONN_ACTIVE &&
      hk_buf_append(&c->in, buf->base + used, n - used) != 0)
    conn_close(c);
  conn_after_parse(c);
}

/* ---- accepting -------------------------------------------------------- */

static int conn_open(hk_http_server *s, hk_conn *c) {
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->server = s;
  c->handles = 2;
  c->state = CONN_ACTIVE;
  c->next = s->conns;
  if (s->conns != NULL) s->conns->prev = c;
  s->conns = c;
  s->handles++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->last_active = uv_now(s->loop);
  return uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp);
}

static void server_connection_cb(uv_stream_t *ls, int status) {
  hk_http_server *s = ls->data;
  hk_conn *c;
  int rc;

  if (status < 0) {
    hk_warn("http", "accept_error=\"%s\"", uv_strerror(status));
    return;
  }
  c = calloc(1, sizeof *c);
  if (c == NULL) {
    hk_error("http", "accept_error=\"out of memory\"");
    return;
  }
  rc = conn_open(s, c);
  if (rc != 0) {
    hk_warn("http", "accept_error=\"%s\"", uv_strerror(rc));
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  conn_arm_timer(c, HK_HTTP_IDLE_MS);
  conn_read_start(c);
}

/* ---- public interface ------------------------------------------------- */

/* Parses "host:port", "[v6]:port" or ":port" (127.0.0.1). Returns 0 or -1. */
static int parse_listen_addr(const char *addr, struct sockaddr_storage *ss) {
  char host[64];
  const char *colon, *h = addr, *h_end;
  char *end;
  unsigned long port;

  if (addr[0] == '[') {
    h = addr + 1;
    h_end = strchr(h, ']');
    if (h_end == NULL || h_end[1] != ':') return -1;
    colon = h_end + 1;
  } else {
    colon = strrchr(addr, ':');
    if (colon == NULL) return -1;
    h_end = colon;
    if (memchr(addr, ':', (size_t)(colon - addr)) != NULL) return -1;
  }
  if ((size_t)(h_end - h) >= sizeof host) return -1;
  memcpy(host, h, (size_t)(h_end - h));
  host[h_end - h] = '\0';
  if (colon[1] < '0' || colon[1] > '9') return -1;
  port = strtoul(colon + 1, &end, 10);
  if (*end != '\0' || port > 65535 || strlen(colon + 1) > 5) return -1;
  if (host[0] == '\0' || strcmp(host, "localhost") == 0)
    strcpy(host, "127.0.0.1");
  if (addr[0] == '[')
    return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) ? -1 : 0;
  return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) ? -1 : 0;
}

static void server_settings_init(http_parser_settings *st) {
  http_parser_settings_init(st);
  st->on_message_begin = on_message_begin;
  st->on_url = on_url;
  st->on_header_field = on_header_field;
  st->on_header_value = on_header_value;
  st->on_headers_complete = on_headers_complete;
  st->on_body = on_body;
  st->on_message_complete = on_message_complete;
}

static int server_bound_port(hk_http_server *s) {
  struct sockaddr_storage ss;
  int len = sizeof ss;

  if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) != 0)
    return -1;
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static hk_http_server *server_create(uv_loop_t *loop,
                                     const hk_http_server_options *opts,
                                     hk_http_handler_cb handler, void *data) {
  hk_http_server *s = calloc(1, sizeof *s);

  if (s == NULL) return NULL;
  s->loop = loop;
  s->handler = handler;
  s->data = data;
  s->max_body = opts && opts->max_body_bytes ? opts->max_body_bytes
                                              : HK_HTTP_DEFAULT_MAX_BODY;
  s->max_header = opts && opts->max_header_bytes ? opts->max_header_bytes
                                                  : HK_HTTP_DEFAULT_MAX_HEADER;
  s->head_timeout_ms = opts && opts->head_timeout_ms ? opts->head_timeout_ms
                                                     : HK_HTTP_HEAD_MS;
  server_settings_init(&s->settings);
  return s;
}

hk_http_server *hk_http_server_start(uv_loop_t *loop, const char *addr,
                                     const hk_http_server_options *opts,
                                     hk_http_handler_cb handler, void *data,
                                     char *err, size_t errlen) {
  struct sockaddr_storage ss;
  hk_http_server *s;
  int rc;

  memset(&ss, 0, sizeof ss);
  if (addr == NULL || parse_listen_addr(addr, &ss) != 0) {
    snprintf(err, errlen, "listen %s: invalid address, want host:port",
             addr ? addr : "(null)");
    return NULL;
  }
  s = server_create(loop, opts, handler, data);
  if (s == NULL) {
    snprintf(err, errlen, "listen %s: out of memory", addr);
    return NULL;
  }
  rc = uv_tcp_init(loop, &s->listener);
  if (rc != 0) goto fail_init;
  s->listener.data = s;
  s->handles = 1;
  rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->listener, HK_HTTP_BACKLOG,
                   server_connection_cb);
  if (rc != 0) goto fail_listen;
  s->port = server_bound_port(s);
  return s;
fail_listen:
  /* The listener handle exists: the server is freed in its close callback
   * on the next loop turn. */
  s->closing = 1;
  uv_close((uv_handle_t *)&s->listener, listener_closed_cb);
  snprintf(err, errlen, "listen %s: %s", addr, uv_strerror(rc));
  return NULL;
fail_init:
  free(s);
  snprintf(err, errlen, "listen %s: %s", addr, uv_strerror(rc));
  return NULL;
}

int hk_http_server_port(const hk_http_server *s) { return s->port; }

/* Picks up the connection after an answer: the next buffered request is
 * parsed on a later loop turn, so a handler is never entered from inside
 * hk_http_respond. */
static void conn_after_answer(hk_conn *c) {
  if (c->in_parse || c->state != CONN_ACTIVE) return;
  if (c->in_off < c->in.len) {
    c->resume_due = 1;
    conn_arm_timer(c, 0);
    return;
  }
  conn_after_parse(c);
}

void hk_http_respond(hk_http_request *req, int status,
                     const char *content_type, const char *extra_headers,
                     const char *body, size_t body_len) {
  hk_req *r = (hk_req *)req;
  hk_conn *c;
  hk_buf out = HK_BUF_INIT;
  int closing;

  if (r == NULL) return;
  c = r->conn;
  if (c == NULL) goto done;
  c->pending = NULL;
  r->conn = NULL;
  if (c->state != CONN_ACTIVE) goto done;
  c->last_active = uv_now(c->server->loop);
  if (status < 200 || status > 999) {
    hk_warn("http", "bad_status=%d answered=500", status);
    status = 500;
  }
  closing = !r->keep_alive || c->server->closing;
  if (build_response(&out, r, status, content_type, extra_headers, body,
                     body_len, closing) != 0) {
    hk_buf_free(&out);
    conn_close(c);
    goto done;
  }
  if (conn_write(c, &out) != 0) goto done;
  if (closing)
    conn_finish(c);
  else
    conn_after_answer(c);
done:
  req_free(r);
}

void hk_http_server_close(hk_http_server *s) {
  if (s == NULL || s->closing) return;
  s->closing = 1;
  uv_close((uv_handle_t *)&s->listener, listener_closed_cb);
  while (s->conns != NULL) conn_close(s->conns);
}
