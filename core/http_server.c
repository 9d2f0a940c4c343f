/* The HTTP/1.1 server: listening and accepting (with a connection limit and
 * a reserve descriptor for when they run out), one connection object per
 * client, request parsing with http-parser, limits and timeouts, keep-alive
 * and in-order pipelining with back-pressure, and writing the handler's
 * answers. At the connection limit the connection idle longest makes way
 * for a new one; only when every connection is busy is the new one
 * refused. */
#include "http_server.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "json_write.h"
#include "log.h"

#define HK_HTTP_DEFAULT_MAX_BODY (1024 * 1024)
#define HK_HTTP_DEFAULT_MAX_HEADER (64 * 1024)
#define HK_HTTP_DEFAULT_MAX_UNSENT (1024 * 1024)
#define HK_HTTP_DEFAULT_MAX_CONNS 1024
#define HK_HTTP_IDLE_MS 120000   /* quiet keep-alive connections */
#define HK_HTTP_FIRST_BYTE_MS 10000 /* default wait for a new connection's
                                       first request to start */
#define HK_HTTP_HEAD_MS 30000    /* default time for a request's head */
#define HK_HTTP_REQUEST_MS 60000 /* default time for a whole request */
#define HK_HTTP_LINGER_MS 5000   /* reading leftovers after our FIN */
#define HK_HTTP_READ_SIZE 65536
#define HK_HTTP_BACKLOG 511
#define HK_HTTP_ACCEPT_BATCH 64     /* connections taken per wake-up */
#define HK_HTTP_ACCEPT_PAUSE_MS 100 /* when accept cannot make progress */
#define HK_HTTP_MAX_REFUSING 64     /* 503 answers at the limit in flight */
#define HK_HTTP_EVICT_PEEKS 16      /* idle ones found with input waiting
                                       before an eviction gives up */
#define HK_HTTP_LOG_EVERY_MS 1000   /* one line per kind and second */

#define HK_HTTP_LIMIT_MSG "too many connections, try again later"
#define HK_HTTP_NOFD_MSG "server out of file descriptors, try again later"

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
  hk_buf content_encoding;
  hk_buf transfer_encoding; /* every Transfer-Encoding line, joined */
  hk_buf expect;
  char *path_query; /* decoded path, NUL, raw query, NUL */
  unsigned has_content_type : 1;
  unsigned has_authorization : 1;
  unsigned has_content_encoding : 1;
  unsigned keep_alive : 1;
  unsigned http10 : 1;
  unsigned head : 1;
} hk_req;

struct hk_conn {
  uv_tcp_t tcp;
  uv_timer_t timer; /* idle timeout, deadlines, linger, deferred resume */
  uv_shutdown_t shutdown;
  hk_http_server *server;
  hk_conn *prev, *next;
  http_parser parser;
  hk_buf in; /* bytes read past a request still waiting for its answer */
  size_t in_off;
  hk_req *cur;     /* request being parsed, owned here */
  hk_req *pending; /* request handed to the handler, not yet answered */
  hk_conn *idle_prev, *idle_next; /* in the server's idle queue */
  uint64_t last_active;
  uint64_t first_due; /* loop time by which the first request must have
                         begun, or 0 once it has */
  uint64_t head_due; /* loop time by which the head must be in, or 0 */
  uint64_t req_due;  /* the same for the whole request, or 0 */
  size_t header_bytes;
  int state;
  int handles; /* open uv handles; the conn is freed when it reaches 0 */
  unsigned reading : 1, eof : 1, in_parse : 1, ready : 1, resume_due : 1;
  unsigned hdr_in_value : 1;
  unsigned paused : 1;  /* not read until its unsent output drains */
  unsigned refused : 1; /* over the connection limit: only gets a 503 */
  unsigned idle_queued : 1; /* linked in the server's idle queue */
  unsigned in_body : 1;     /* between the head and the end of a body of
                               known length */
  unsigned in_chunks : 1;   /* the same for a chunked body */
  char hdr_name[20];    /* start of the current header name */
  size_t hdr_name_len;
  hk_buf *hdr_target; /* where the current header value goes, or NULL */
  int refuse_status;  /* set by a parser callback that refused the request */
  char refuse_msg[128];
};

/* Refusals and evictions of one kind are logged at most once a second;
 * the ones in between are only counted, and the count goes out as
 * suppressed= with the next line, written a second after the last at the
 * latest. */
typedef struct rate_log {
  uint64_t last;      /* loop time of the last line */
  unsigned long held; /* refusals since then without a line */
  int logged;         /* a line has been written at all */
  int err;            /* errno of the latest accept failure */
} rate_log;

enum refusal_kind {
  REFUSED_LIMIT,  /* 503: at the limit with every connection busy */
  REFUSED_ACCEPT, /* accept failed */
  EVICTED_IDLE,   /* an idle connection closed to make room */
  REFUSAL_KINDS
};

struct hk_http_server {
  uv_loop_t *loop;
  uv_poll_t poll;         /* readiness of the listening socket */
  uv_timer_t pause_timer; /* starts accepting again after a pause */
  uv_timer_t log_timer;   /* writes counts of suppressed refusals */
  int lfd;                /* the listening socket */
  int spare_fd;           /* given up for a moment when fds run out */
  hk_http_handler_cb handler;
  void *data;
  size_t max_body;
  size_t max_header;
  size_t max_unsent;
  uint64_t head_timeout_ms;
  uint64_t request_timeout_ms;
  uint64_t first_byte_timeout_ms;
  unsigned max_conns;
  unsigned open;     /* served connections, counted until closed */
  unsigned refusing; /* refused connections, counted until closed */
  int head_as_get;
  int port;
  int closing;
  int draining; /* every answer from now on ends its connection */
  int accept_paused;
  int handles; /* listener handles plus live connections; freed at 0 when
                  closing */
  hk_conn *conns;
  /* Connections with nothing in progress, in the order they became so:
   * the head has been idle longest and is the first to make way. */
  hk_conn *idle_head, *idle_tail;
  rate_log logs[REFUSAL_KINDS];
  size_t peak_unsent;
  unsigned long refused, shed, accept_errors, evicted;
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
static void conn_continue(hk_conn *c);
static void conn_note_idle(hk_conn *c);

/* ---- small helpers ---------------------------------------------------- */

static int hex_value(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Percent-decodes src[0..n) into dst (room for n bytes); returns the decoded
 * length, or -1 for a broken escape, an encoded NUL or an encoded '/'. A
 * "%2F" decoded would split a path segment in two: "/v1/hooks/a%2Fstop"
 * would reach what "/v1/hooks/a/stop" does, behind the back of a proxy
 * that allows paths by their text. */
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
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0) || hi * 16 + lo == '/')
      return -1;
    dst[o++] = (char)(hi * 16 + lo);
    i += 2;
  }
  return (long)o;
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
  hk_buf_free(&r->content_encoding);
  hk_buf_free(&r->transfer_encoding);
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

/* Fills the public fields once the whole request is in. A HEAD is shown
 * as GET with head_as_get: the answer is built the same and its body left
 * out when written. Returns 0, or -1 when the target cannot be decoded. */
static int req_complete(hk_req *r, const http_parser *p, int head_as_get) {
  if (req_split_target(r) != 0) return -1;
  r->head = p->method == HTTP_HEAD;
  r->pub.head = r->head;
  r->pub.method = r->head && head_as_get ? HTTP_GET : (int)p->method;
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
  if (r->has_content_encoding) {
    trim_right(&r->content_encoding);
    r->pub.content_encoding = hk_buf_cstr(&r->content_encoding);
  }
  r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
  r->http10 = p->http_major == 1 && p->http_minor == 0;
  return 0;
}

/* ---- writing ------------------------------------------------------------ */

/* Output queued on the connection that the kernel has not taken yet. */
static size_t conn_unsent(const hk_conn *c) {
  return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

/* Reading and parsing wait while this holds: a client that pipelines
 * requests without reading the answers would otherwise have every answer
 * queued in memory here. */
static int conn_backed_up(const hk_conn *c) {
  return conn_unsent(c) > c->server->max_unsent;
}

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
  /* Half the limit, so that a client reading slowly does not make every
   * single write stop and start reading again. */
  if (c->paused && c->state == CONN_ACTIVE &&
      conn_unsent(c) <= c->server->max_unsent / 2) {
    c->paused = 0;
    conn_continue(c);
  }
  if (c->state != CONN_CLOSED) conn_note_idle(c);
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
  len = conn_unsent(c);
  if (len > c->server->peak_unsent) c->server->peak_unsent = len;
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

/* Answers a request refused before the handler with a JSON error (and
 * extra, NULL or header lines), then closes the connection gracefully. */
static void conn_send_error_with(hk_conn *c, int status, const char *extra,
                                 const char *msg) {
  hk_buf body = HK_BUF_INIT, out = HK_BUF_INIT;
  int rc;

  hk_debug("http", "status=%d error=\"%s\"", status, msg);
  /* Room for the message with every byte escaped: the writer, which
   * cannot report running out of memory, then cannot run out. */
  rc = hk_buf_reserve(&body, 6 * strlen(msg) + 16);
  if (rc == 0) {
    hk_buf_append(&body, "{\"error\":", 9);
    hk_json_write_cstr(&body, msg);
    hk_buf_putc(&body, '}');
  }
  if (rc == 0)
    rc = build_response(&out, NULL, status, NULL, extra, body.data,
                        body.len, 1);
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

static void conn_send_error(hk_conn *c, int status, const char *msg) {
  conn_send_error_with(c, status, NULL, msg);
}

/* ---- connection lifecycle ----------------------------------------------- */

static void server_handle_closed(hk_http_server *s) {
  if (--s->handles == 0 && s->closing) free(s);
}

static void server_handle_cb(uv_handle_t *h) {
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

/* ---- idle connections ------------------------------------------------ */

/* Whether closing c would cost its client nothing it is waiting for: no
 * request begun, with the handler or read ahead, nothing left to write;
 * or only lingering after its last answer went out. Such a connection is
 * a keep-alive one between requests, or a new one that has sent nothing
 * yet, and may be closed to make room for a new client. */
static int conn_is_idle(const hk_conn *c) {
  if (c->refused) return 0;
  if (c->state == CONN_LINGERING) return 1;
  return c->state == CONN_ACTIVE && c->cur == NULL && c->pending == NULL &&
         c->in_off >= c->in.len && !c->resume_due && conn_unsent(c) == 0;
}

/* Takes c out of the idle queue, when it is in it. Called whenever c gets
 * busy again or goes, so that the queue holds idle connections only. */
static void idle_unlink(hk_conn *c) {
  hk_http_server *s = c->server;

  if (!c->idle_queued) return;
  if (c->idle_prev != NULL)
    c->idle_prev->idle_next = c->idle_next;
  else
    s->idle_head = c->idle_next;
  if (c->idle_next != NULL)
    c->idle_next->idle_prev = c->idle_prev;
  else
    s->idle_tail = c->idle_prev;
  c->idle_prev = c->idle_next = NULL;
  c->idle_queued = 0;
}

/* Queues c at the tail once it has become idle. One already queued keeps
 * its place: stray bytes between requests (blank lines, which start no
 * request) must not let a client look fresher than it is. */
static void conn_note_idle(hk_conn *c) {
  hk_http_server *s = c->server;

  if (c->idle_queued || !conn_is_idle(c)) return;
  c->idle_prev = s->idle_tail;
  c->idle_next = NULL;
  if (s->idle_tail != NULL)
    s->idle_tail->idle_next = c;
  else
    s->idle_head = c;
  s->idle_tail = c;
  c->idle_queued = 1;
}

/* Closes at once, dropping unsent output. A pending request is orphaned:
 * its answer will only be freed. Memory goes in the close callbacks. */
static void conn_close(hk_conn *c) {
  hk_http_server *s = c->server;

  if (c->state == CONN_CLOSED) return;
  c->state = CONN_CLOSED;
  idle_unlink(c);
  if (c->refused)
    s->refusing--;
  else
    s->open--;
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

/* Arms the timer for the nearest of the idle limit and, while a request
 * comes in, its deadlines. A request with the handler is given time: the
 * timer then only comes back to look. */
static void conn_arm_next(hk_conn *c) {
  uint64_t now = uv_now(c->server->loop);
  uint64_t due = c->last_active + HK_HTTP_IDLE_MS;

  if (c->pending != NULL) due = now + HK_HTTP_IDLE_MS;
  if (c->state == CONN_ACTIVE) {
    if (c->first_due != 0 && c->first_due < due) due = c->first_due;
    if (c->head_due != 0 && c->head_due < due) due = c->head_due;
    if (c->req_due != 0 && c->req_due < due) due = c->req_due;
  }
  conn_arm_timer(c, due > now ? due - now : 0);
}

/* A client that trickles a request in (slowloris) gets 408 once the head
 * or the whole request is late. Returns 1 when it did. */
static int conn_request_late(hk_conn *c) {
  uint64_t now = uv_now(c->server->loop);
  int head_late = c->head_due != 0 && now >= c->head_due;
  int req_late = c->req_due != 0 && now >= c->req_due;

  if (c->state != CONN_ACTIVE || !(head_late || req_late)) return 0;
  conn_send_error(c, 408, c->head_due != 0
                              ? "request headers did not arrive in time"
                              : "request body did not arrive in time");
  return 1;
}

/* A new connection that has not begun a request in time is closed
 * without an answer: it has asked nothing, and a slot held by a silent
 * client is one a real client cannot have. Returns 1 when it was. */
static int conn_first_byte_late(hk_conn *c) {
  if (c->state != CONN_ACTIVE || c->first_due == 0 ||
      uv_now(c->server->loop) < c->first_due)
    return 0;
  hk_debug("http", "closing=first_byte_timeout timeout_ms=%llu",
           (unsigned long long)c->server->first_byte_timeout_ms);
  conn_close(c);
  return 1;
}

static void conn_timer_cb(uv_timer_t *t) {
  hk_conn *c = t->data;
  uint64_t idle;

  if (c->resume_due) {
    c->resume_due = 0;
    conn_resume(c);
    if (c->state != CONN_CLOSED) conn_arm_next(c);
    return;
  }
  if (c->state == CONN_LINGERING || c->refused) {
    conn_close(c);
    return;
  }
  if (c->pending != NULL) {
    conn_arm_next(c);
    return;
  }
  if (conn_request_late(c) || conn_first_byte_late(c)) return;
  idle = uv_now(c->server->loop) - c->last_active;
  if (idle >= HK_HTTP_IDLE_MS) {
    hk_debug("http", "closing=idle idle_ms=%llu", (unsigned long long)idle);
    conn_close(c);
    return;
  }
  conn_arm_next(c);
}

/* Reads into the shared buffer, except the rest of a body of known
 * length, which is read straight into the request's own buffer (made at
 * its full size with the head): a large body is then never copied. Only
 * what remains of the body is asked for, so the next request's bytes
 * still go through the shared buffer. */
static void conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  hk_conn *c = h->data;
  hk_buf *b = c->cur != NULL ? &c->cur->body : NULL;
  uint64_t rest = c->parser.content_length;

  (void)hint;
  buf->base = c->server->rbuf;
  buf->len = sizeof c->server->rbuf;
  if (c->in_body && c->in_off >= c->in.len && b != NULL && rest > 0 &&
      rest < b->cap - b->len) {
    buf->base = b->data + b->len;
    buf->len = (size_t)rest;
  }
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
  /* Its answers are all out and it only waits for the client's close, so
   * at the limit it may make way like any idle connection. */
  conn_note_idle(c);
}

/* Ends the connection after everything queued is written: shuts down the
 * sending side, then keeps discarding input until EOF or the linger
 * timeout, so a client still sending sees our answer instead of a reset. */
static void conn_finish(hk_conn *c) {
  if (c->state != CONN_ACTIVE) return;
  c->state = CONN_FLUSHING;
  idle_unlink(c);
  c->resume_due = 0;
  c->paused = 0;
  c->first_due = c->head_due = c->req_due = 0;
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

/* After parsing: wait for the pending answer, or for unsent output to
 * drain, without reading; or read the next request, or finish when the
 * client has stopped sending. Whatever was read ahead stays in c->in, and
 * as reading stops whenever some is left, that is at most one read. */
static void conn_after_parse(hk_conn *c) {
  if (c->state != CONN_ACTIVE) return;
  if (c->pending != NULL) {
    conn_read_stop(c);
  } else if (conn_backed_up(c)) {
    c->paused = 1;
    conn_read_stop(c);
  } else if (c->eof) {
    conn_finish(c);
  } else {
    conn_read_start(c);
  }
  conn_note_idle(c);
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
  c->in_body = c->in_chunks = 0;
  c->cur = calloc(1, sizeof *c->cur);
  if (c->cur == NULL) return refuse_no_memory(c);
  /* A request is in progress: the connection is no longer one to close
   * for room, and the first-byte wait is over for good. */
  idle_unlink(c);
  c->first_due = 0;
  c->header_bytes = 0;
  /* Both deadlines count from the request's first byte. */
  c->head_due = uv_now(c->server->loop) + c->server->head_timeout_ms;
  c->req_due = uv_now(c->server->loop) + c->server->request_timeout_ms;
  if (!c->resume_due && c->state == CONN_ACTIVE) conn_arm_next(c);
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
  } else if (header_is(c, "content-encoding")) {
    r->has_content_encoding = 1;
    b = &r->content_encoding;
  } else if (header_is(c, "expect")) {
    b = &r->expect;
  } else if (header_is(c, "transfer-encoding")) {
    /* Codings add up over several lines, as they do within one. */
    if (r->transfer_encoding.len > 0 &&
        hk_buf_append(&r->transfer_encoding, ", ", 2) != 0)
      return NULL;
    return &r->transfer_encoding;
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

/* Whether the Transfer-Encoding value is "chunked" alone: another coding
 * (gzip, say) would leave the body unreadable as JSON. */
static int only_chunked(hk_buf *te) {
  const char *v;

  trim_right(te);
  v = hk_buf_cstr(te);
  while (*v == ' ' || *v == '\t') v++;
  return strcasecmp(v, "chunked") == 0;
}

/* 501 for a transfer coding the server cannot read, naming it: its first
 * 40 bytes, anything but printable ASCII shown as '?', so the answer
 * stays valid JSON and short enough to keep its advice. */
static int refuse_coding(hk_conn *c, const hk_buf *te) {
  char shown[41];
  size_t n = te->len < 40 ? te->len : 40;

  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)te->data[i];

    shown[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  shown[n] = '\0';
  return conn_refuse(c, 501, "Transfer-Encoding \"%s\" is not supported: "
                     "send the body as it is, or chunked", shown);
}

static int on_headers_complete(http_parser *p) {
  hk_conn *c = p->data;
  hk_req *r = c->cur;
  int chunked = (p->flags & F_CHUNKED) != 0;
  int has_length = !chunked && p->content_length != UINT64_MAX;
  size_t max = c->server->max_body;

  c->head_due = 0;
  if (p->uses_transfer_encoding && !only_chunked(&r->transfer_encoding))
    return refuse_coding(c, &r->transfer_encoding);
  if (has_length && p->content_length > max)
    return conn_refuse(c, 413, "request body exceeds %zu bytes", max);
  c->in_chunks = chunked;
  if (has_length && p->content_length > 0) {
    r->body.data = malloc((size_t)p->content_length + 1);
    if (r->body.data == NULL) return refuse_no_memory(c);
    r->body.cap = (size_t)p->content_length + 1;
    c->in_body = 1;
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
  if (at == b->data + b->len) { /* read in place (conn_alloc_cb) */
    b->len += len;
    return 0;
  }
  if (body_append(b, at, len, max) != 0) return refuse_no_memory(c);
  return 0;
}

/* A chunk that announces more than the body may still take is refused
 * before any of its bytes arrive, rather than once they have. */
static int on_chunk_header(http_parser *p) {
  hk_conn *c = p->data;
  size_t max = c->server->max_body;

  if (p->content_length > (uint64_t)(max - c->cur->body.len))
    return conn_refuse(c, 413, "request body exceeds %zu bytes", max);
  return 0;
}

/* Stops the parser after each request so the next one is parsed only once
 * this one is answered. */
static int on_message_complete(http_parser *p) {
  hk_conn *c = p->data;

  if (req_complete(c->cur, p, c->server->head_as_get) != 0)
    return conn_refuse(c, 400, "malformed HTTP request: invalid path (a "
                       "broken %%-escape, or an encoded NUL or '/')");
  c->req_due = 0;
  c->ready = 1;
  c->in_body = c->in_chunks = 0;
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
    /* The parser reports a chunk size too large for 64 bits as a bad
     * Content-Length, which the request may not even have. */
    snprintf(msg, sizeof msg, "malformed HTTP request: %s",
             c->in_chunks && err == HPE_INVALID_CONTENT_LENGTH
                 ? "chunk size too large"
                 : http_errno_description(err));
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
 * answer, the answers wait to be sent, or the connection stops. Returns
 * the bytes used. */
static size_t conn_parse(hk_conn *c, const char *data, size_t len) {
  size_t used = 0;

  c->in_parse = 1;
  while (used < len && c->state == CONN_ACTIVE && c->pending == NULL &&
         !conn_backed_up(c))
    used += conn_execute(c, data + used, len - used);
  c->in_parse = 0;
  return used;
}

/* Parses input kept while a request was pending or output backed up. */
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

/* Goes on after output drained: with the input read ahead, else by
 * reading again. */
static void conn_continue(hk_conn *c) {
  if (c->in_off < c->in.len)
    conn_resume(c);
  else
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

/* ---- refusal logs ----------------------------------------------------- */

static void write_refusal_line(hk_http_server *s, int kind) {
  rate_log *rl = &s->logs[kind];

  if (kind == REFUSED_LIMIT)
    hk_warn("http", "refused=connection_limit open=%u limit=%u "
            "suppressed=%lu", s->open, s->max_conns, rl->held);
  else if (kind == EVICTED_IDLE)
    hk_info("http", "evicted=idle open=%u limit=%u suppressed=%lu",
            s->open, s->max_conns, rl->held);
  else
    hk_error("http", "refused=accept_failed reason=\"%s\" open=%u "
             "suppressed=%lu", uv_strerror(uv_translate_sys_error(rl->err)),
             s->open, rl->held);
  rl->held = 0;
  rl->last = uv_now(s->loop);
  rl->logged = 1;
}

/* Writes the counts held back once their second is over. */
static void log_timer_cb(uv_timer_t *t) {
  hk_http_server *s = t->data;
  uint64_t now = uv_now(s->loop), next = 0;

  for (int k = 0; k < REFUSAL_KINDS; k++) {
    rate_log *rl = &s->logs[k];
    uint64_t due = rl->last + HK_HTTP_LOG_EVERY_MS;

    if (rl->held == 0) continue;
    if (now >= due)
      write_refusal_line(s, k);
    else if (next == 0 || due - now < next)
      next = due - now;
  }
  if (next != 0) uv_timer_start(&s->log_timer, log_timer_cb, next, 0);
}

/* Logs one refusal, or counts it when its kind had a line this second. */
static void note_refusal(hk_http_server *s, int kind, int err) {
  rate_log *rl = &s->logs[kind];
  uint64_t now = uv_now(s->loop);

  rl->err = err;
  if (!rl->logged || now - rl->last >= HK_HTTP_LOG_EVERY_MS) {
    write_refusal_line(s, kind);
    return;
  }
  rl->held++;
  if (!uv_is_active((uv_handle_t *)&s->log_timer))
    uv_timer_start(&s->log_timer, log_timer_cb,
                   rl->last + HK_HTTP_LOG_EVERY_MS - now, 0);
}

static void server_flush_logs(hk_http_server *s) {
  for (int k = 0; k < REFUSAL_KINDS; k++)
    if (s->logs[k].held > 0) write_refusal_line(s, k);
}

/* ---- accepting -------------------------------------------------------- */

static int open_spare(void) { return open("/dev/null", O_RDONLY | O_CLOEXEC); }

/* Answers 503 on a socket that gets no connection object and closes it.
 * Best effort: a new socket's send buffer has room for these few bytes. */
static void shed_socket(int fd, const char *msg) {
  char out[320];
  int n = snprintf(out, sizeof out,
                   "HTTP/1.1 503 Service Unavailable\r\n"
                   "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                   "Retry-After: 1\r\nConnection: close\r\n\r\n"
                   "{\"error\":\"%s\"}",
                   strlen(msg) + 12, msg);

  if (n > 0 && (size_t)n < sizeof out)
    (void)send(fd, out, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
  close(fd);
}

/* Sets c up on the accepted socket fd, counted as served or refused, and
 * links it in. Returns 0, or -1 after closing both. */
static int conn_open(hk_http_server *s, hk_conn *c, int fd) {
  int rc;

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
  if (c->refused)
    s->refusing++;
  else
    s->open++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->last_active = uv_now(s->loop);
  c->first_due = c->last_active + s->first_byte_timeout_ms;
  rc = uv_tcp_open(&c->tcp, fd);
  if (rc == 0) return 0;
  hk_warn("http", "accept_error=\"%s\"", uv_strerror(rc));
  close(fd);
  conn_close(c);
  return -1;
}

/* Whether bytes from c's client wait in the kernel, not yet read: its
 * next request may be there, which a close would lose (and turn into a
 * reset). Such a connection is busy in all but name. */
static int conn_has_unread(const hk_conn *c) {
  uv_os_fd_t fd;
  char ch;

  if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0) return 0;
  return recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Makes room at the limit by closing the connection idle longest. Were
 * idle ones kept instead, a few clients that connect and say nothing, or
 * hold keep-alive connections open, could lock everyone else out. An idle
 * connection loses nothing by the close: its client reconnects when it
 * has something to ask. Returns 1 when one was closed, 0 when every
 * connection is busy (or, past a few, has input waiting to be read). */
static int server_evict_idle(hk_http_server *s) {
  hk_conn *c, *next;
  int peeked = 0;

  for (c = s->idle_head; c != NULL; c = next) {
    next = c->idle_next;
    if (!conn_is_idle(c))
      idle_unlink(c); /* the queue holds idle ones only: makes sure */
    else if (!conn_has_unread(c))
      break;
    else if (++peeked >= HK_HTTP_EVICT_PEEKS)
      return 0;
  }
  if (c == NULL) return 0;
  s->evicted++;
  note_refusal(s, EVICTED_IDLE, 0);
  conn_close(c);
  return 1;
}

/* Serves a new connection. At max_connections an idle one is closed for
 * it; when all are busy it is answered 503 instead. The 503 goes out like
 * any answer, with a linger so that a request already sent does not turn
 * it into a reset; past a number of those in flight it is sent on the
 * bare socket, closed at once. */
static void server_take(hk_http_server *s, int fd) {
  int refuse;
  hk_conn *c;

  if (s->open >= s->max_conns) server_evict_idle(s);
  refuse = s->open >= s->max_conns;
  if (refuse) {
    s->refused++;
    note_refusal(s, REFUSED_LIMIT, 0);
  }
  if (refuse && s->refusing >= HK_HTTP_MAX_REFUSING) {
    shed_socket(fd, HK_HTTP_LIMIT_MSG);
    return;
  }
  c = calloc(1, sizeof *c);
  if (c == NULL) {
    hk_error("http", "accept_error=\"out of memory\"");
    shed_socket(fd, "out of memory");
    return;
  }
  c->refused = refuse;
  if (conn_open(s, c, fd) != 0) return;
  if (refuse) {
    conn_arm_timer(c, HK_HTTP_LINGER_MS);
    conn_send_error_with(c, 503, "Retry-After: 1\r\n", HK_HTTP_LIMIT_MSG);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  conn_arm_next(c);
  conn_read_start(c);
  conn_note_idle(c);
}

static void listener_poll_cb(uv_poll_t *p, int status, int events);

static void pause_timer_cb(uv_timer_t *t) {
  hk_http_server *s = t->data;

  s->accept_paused = 0;
  if (s->closing) return;
  if (s->spare_fd < 0) s->spare_fd = open_spare();
  uv_poll_start(&s->poll, UV_READABLE, listener_poll_cb);
}

/* Stops watching the listener for a moment: a failure accept cannot get
 * past would otherwise wake the loop again at once, round after round. */
static void server_pause_accept(hk_http_server *s) {
  if (s->accept_paused || s->closing) return;
  s->accept_paused = 1;
  uv_poll_stop(&s->poll);
  uv_timer_start(&s->pause_timer, pause_timer_cb, HK_HTTP_ACCEPT_PAUSE_MS, 0);
}

/* With every descriptor in use, gives up the spare one so that accept can
 * take the waiting connections one at a time, answers each 503 and closes
 * it, then takes the spare back. Returns 0 when the backlog was dealt
 * with, -1 when there was no spare or accept failed again. */
static int server_shed_with_spare(hk_http_server *s) {
  int fd, n = 0, rc = 0;

  if (s->spare_fd < 0) s->spare_fd = open_spare();
  if (s->spare_fd < 0) return -1;
  close(s->spare_fd);
  s->spare_fd = -1;
  while (n < HK_HTTP_ACCEPT_BATCH) {
    fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      rc = errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
      break;
    }
    shed_socket(fd, HK_HTTP_NOFD_MSG);
    n++;
  }
  s->shed += (unsigned long)n;
  s->spare_fd = open_spare();
  return rc;
}

static void server_accept_failed(hk_http_server *s, int err) {
  s->accept_errors++;
  note_refusal(s, REFUSED_ACCEPT, err);
  if ((err == EMFILE || err == ENFILE) && server_shed_with_spare(s) == 0)
    return;
  server_pause_accept(s);
}

/* Takes the connections waiting on the listener, a bounded number per
 * wake-up so a flood of them cannot starve the open ones. */
static void listener_poll_cb(uv_poll_t *p, int status, int events) {
  hk_http_server *s = p->data;

  (void)events;
  if (status < 0) {
    hk_warn("http", "accept_error=\"%s\"", uv_strerror(status));
    server_pause_accept(s);
    return;
  }
  for (int i = 0; i < HK_HTTP_ACCEPT_BATCH; i++) {
    int fd;

    if (s->closing || s->accept_paused) return;
    fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      server_take(s, fd);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return;
    } else if (errno != EINTR && errno != ECONNABORTED) {
      server_accept_failed(s, errno);
      return;
    }
  }
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

int hk_http_listen_addr_valid(const char *addr, int *loopback) {
  struct sockaddr_storage ss;
  const struct sockaddr_in *v4 = (const struct sockaddr_in *)&ss;
  const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&ss;

  memset(&ss, 0, sizeof ss);
  if (addr == NULL || parse_listen_addr(addr, &ss) != 0) return 0;
  *loopback = ss.ss_family == AF_INET6
                  ? IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)
                  : ntohl(v4->sin_addr.s_addr) >> 24 == 127;
  return 1;
}

static void server_settings_init(http_parser_settings *st) {
  http_parser_settings_init(st);
  st->on_message_begin = on_message_begin;
  st->on_url = on_url;
  st->on_header_field = on_header_field;
  st->on_header_value = on_header_value;
  st->on_headers_complete = on_headers_complete;
  st->on_body = on_body;
  st->on_chunk_header = on_chunk_header;
  st->on_message_complete = on_message_complete;
}

static int server_bound_port(hk_http_server *s) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;

  if (getsockname(s->lfd, (struct sockaddr *)&ss, &len) != 0) return -1;
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Reads the options over their defaults (0 or no options: the default). */
static void server_set_options(hk_http_server *s,
                               const hk_http_server_options *o) {
  hk_http_server_options none = {0};

  if (o == NULL) o = &none;
  s->max_body = o->max_body_bytes ? o->max_body_bytes
                                  : HK_HTTP_DEFAULT_MAX_BODY;
  s->max_header = o->max_header_bytes ? o->max_header_bytes
                                      : HK_HTTP_DEFAULT_MAX_HEADER;
  s->max_unsent = o->max_unsent_bytes ? o->max_unsent_bytes
                                      : HK_HTTP_DEFAULT_MAX_UNSENT;
  s->max_conns = o->max_connections ? o->max_connections
                                    : HK_HTTP_DEFAULT_MAX_CONNS;
  s->request_timeout_ms = o->request_timeout_ms ? o->request_timeout_ms
                                                : HK_HTTP_REQUEST_MS;
  s->head_timeout_ms = o->head_timeout_ms ? o->head_timeout_ms
                                          : HK_HTTP_HEAD_MS;
  /* The head is part of the request: its time cannot be the longer. */
  if (s->head_timeout_ms > s->request_timeout_ms)
    s->head_timeout_ms = s->request_timeout_ms;
  s->first_byte_timeout_ms = o->first_byte_timeout_ms
                                 ? o->first_byte_timeout_ms
                                 : HK_HTTP_FIRST_BYTE_MS;
  /* Nor can the wait for a head's first byte be longer than the head's. */
  if (s->first_byte_timeout_ms > s->head_timeout_ms)
    s->first_byte_timeout_ms = s->head_timeout_ms;
  s->head_as_get = o->head_as_get;
}

static hk_http_server *server_create(uv_loop_t *loop,
                                     const hk_http_server_options *opts,
                                     hk_http_handler_cb handler, void *data) {
  hk_http_server *s = calloc(1, sizeof *s);

  if (s == NULL) return NULL;
  s->loop = loop;
  s->handler = handler;
  s->data = data;
  s->lfd = -1;
  s->spare_fd = -1;
  server_set_options(s, opts);
  server_settings_init(&s->settings);
  return s;
}

/* Makes the listening socket. The server accepts on it itself, watched
 * by a poll handle, rather than through a libuv listener: that way it
 * sees accept fail when descriptors run out (libuv would deal with that
 * silently) and decides about each connection at once. Returns the fd,
 * or a libuv error code (< 0). */
static int listen_socket(const struct sockaddr_storage *ss) {
  socklen_t len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
  int on = 1, off = 0, rc;
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  0);

  if (fd < 0) return uv_translate_sys_error(errno);
  /* "[::]:port" takes IPv4 clients too, whatever the system default. */
  if (ss->ss_family == AF_INET6)
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      bind(fd, (const struct sockaddr *)ss, len) != 0 ||
      listen(fd, HK_HTTP_BACKLOG) != 0) {
    rc = uv_translate_sys_error(errno);
    close(fd);
    return rc;
  }
  return fd;
}

/* Listens on ss and starts accepting. Returns 0, or a libuv error code
 * with nothing left open. */
static int server_listen(hk_http_server *s,
                         const struct sockaddr_storage *ss) {
  int fd = listen_socket(ss), rc;

  if (fd < 0) return fd;
  rc = uv_poll_init_socket(s->loop, &s->poll, fd);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  s->lfd = fd;
  uv_timer_init(s->loop, &s->pause_timer);
  uv_timer_init(s->loop, &s->log_timer);
  s->poll.data = s->pause_timer.data = s->log_timer.data = s;
  s->handles = 3;
  /* Opened now, while there are descriptors to spare. */
  s->spare_fd = open_spare();
  uv_poll_start(&s->poll, UV_READABLE, listener_poll_cb);
  return 0;
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
  rc = server_listen(s, &ss);
  if (rc != 0) {
    snprintf(err, errlen, "listen %s: %s", addr, uv_strerror(rc));
    free(s);
    return NULL;
  }
  s->port = server_bound_port(s);
  return s;
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
  closing = !r->keep_alive || c->server->closing || c->server->draining;
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

void hk_http_server_stats_get(const hk_http_server *s,
                              hk_http_server_stats *out) {
  memset(out, 0, sizeof *out);
  out->open = s->open;
  out->refusing = s->refusing;
  out->peak_unsent = s->peak_unsent;
  out->refused = s->refused;
  out->shed = s->shed;
  out->accept_errors = s->accept_errors;
  out->evicted = s->evicted;
  for (const hk_conn *c = s->conns; c != NULL; c = c->next) {
    out->idle += (unsigned)conn_is_idle(c);
    out->paused += c->paused;
    out->buffered_in += c->in.len - c->in_off;
    out->unsent += conn_unsent(c);
  }
}

void hk_http_server_drain(hk_http_server *s) { s->draining = 1; }

void hk_http_server_close(hk_http_server *s) {
  if (s == NULL || s->closing) return;
  s->closing = 1;
  server_flush_logs(s);
  /* Closing the poll handle stops watching the fd at once, so the fd can
   * go right after it. */
  uv_close((uv_handle_t *)&s->poll, server_handle_cb);
  close(s->lfd);
  uv_close((uv_handle_t *)&s->pause_timer, server_handle_cb);
  uv_close((uv_handle_t *)&s->log_timer, server_handle_cb);
  if (s->spare_fd >= 0) close(s->spare_fd);
  s->spare_fd = -1;
  while (s->conns != NULL) conn_close(s->conns);
}
