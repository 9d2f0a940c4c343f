/* The benchmark's counting sink: a loopback HTTP/1.1 server that stands in
 * for tests/sink/sink.py --count-only during throughput runs, at a small
 * fraction of its CPU time (one thread, libuv and http-parser).
 *
 * Usage: hookd-bench-sink [--port N]   (N = 0, the default: any free port)
 *
 * It listens on 127.0.0.1, prints "READY <port>" on stdout once it does and
 * exits with status 0 on SIGTERM or SIGINT. Every POST to a path outside
 * /_sink/ is a batch: its messages are counted by scanning the body (a JSON
 * array: its elements; any other JSON document: 1; anything else: 0, the
 * same verdicts as sink.py's count_messages) and answered 200 {"ok":true}.
 * GET /_sink/stats answers the counts in the shape of sink.py's stats.
 * Every other /_sink/ path (scripts, holds, seqs, records) is a 404: this
 * sink only counts. */
#include <arpa/inet.h>
#include <http_parser.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "json_lex.h"

#define SINK_READ_SIZE (256 * 1024)
#define SINK_MAX_BODY ((size_t)512 * 1024 * 1024)
#define SINK_KEEP_BODY ((size_t)16 * 1024 * 1024) /* buffer kept between
                                                     requests, at most */
#define SINK_MAX_URL 4096
#define SINK_BACKLOG 511
/* Deeper documents count 0: Python's json gives up near its recursion
 * limit of 1000 (with an exception sink.py does not catch). */
#define SINK_MAX_DEPTH 1000
/* Python refuses integers longer than this (sys.int_max_str_digits), so
 * sink.py counts such a document 0; so does this sink. */
#define SINK_MAX_INT_DIGITS 4300

#define OK_BODY "{\"ok\":true}"
#define ONLY_COUNTS                                                        \
  "{\"error\":\"this sink (bench/sink.c) only counts batches and answers " \
  "GET /_sink/stats; scripts, holds, seqs and records need "               \
  "tests/sink/sink.py\"}"

/* -- counting --------------------------------------------------------- */

/* The byte after the UTF-8 sequence that starts at p (a byte >= 0x80), or
 * NULL when it is not well formed. Encoded surrogates (ED A0..BF xx) pass:
 * Python decodes a body with errors="surrogatepass". */
static const char *utf8_next(const char *p, const char *end) {
  const unsigned char *s = (const unsigned char *)p;
  size_t left = (size_t)(end - p), n;
  unsigned lo = 0x80, hi = 0xbf;

  if (s[0] >= 0xc2 && s[0] <= 0xdf) n = 2;
  else if (s[0] >= 0xe0 && s[0] <= 0xef) n = 3;
  else if (s[0] >= 0xf0 && s[0] <= 0xf4) n = 4;
  else return NULL;
  if (left < n) return NULL;
  if (s[0] == 0xe0) lo = 0xa0;      /* overlong */
  else if (s[0] == 0xf0) lo = 0x90; /* overlong */
  else if (s[0] == 0xf4) hi = 0x8f; /* beyond U+10FFFF */
  if (s[1] < lo || s[1] > hi) return NULL;
  for (size_t i = 2; i < n; i++)
    if ((s[i] & 0xc0) != 0x80) return NULL;
  return p + n;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero when one of the 8 bytes of x may end a plain run inside a
 * string: a quote, a backslash, a control character or a byte >= 0x80
 * (each test is exact about whether some byte matches). */
static uint64_t special8(uint64_t x) {
  uint64_t quote = x ^ (ONES * '"'), bslash = x ^ (ONES * '\\');

  return ((quote - ONES) & ~quote) | ((bslash - ONES) & ~bslash) |
         ((x - ONES * 0x20) & ~x) | (x & HIGHS);
}

/* The first byte at or after p that is not plain string text. Most of a
 * batch is such text: it is skipped 8 bytes at a time. */
static const char *skip_plain(const char *p, const char *end) {
  uint64_t x;

  while (end - p >= 8) {
    memcpy(&x, p, 8);
    if (special8(x) & HIGHS) break;
    p += 8;
  }
  while (p < end && hk_json_str_class[(unsigned char)*p] == HK_STR_PLAIN)
    p++;
  return p;
}

/* p is just after an opening quote: the byte after the closing one, or
 * NULL when the string is not valid JSON (a raw control character, a bad
 * escape, bad UTF-8, no end). */
static const char *scan_string(const char *p, const char *end) {
  unsigned code;

  while ((p = skip_plain(p, end)) < end) {
    switch (hk_json_str_class[(unsigned char)*p]) {
    case HK_STR_QUOTE:
      return p + 1;
    case HK_STR_HIGH:
      if (!(p = utf8_next(p, end))) return NULL;
      break;
    case HK_STR_BSLASH:
      if (++p == end) return NULL;
      if (*p == 'u') {
        if (hk_json_hex4(p + 1, end, &code) != 0) return NULL;
        p += 5; /* lone surrogates are fine, as in Python */
      } else if (*p && strchr("\"\\/bfnrt", *p)) {
        p++;
      } else {
        return NULL;
      }
      break;
    default: /* a raw control character */
      return NULL;
    }
  }
  return NULL;
}

static const char *skip_digits(const char *p, const char *end) {
  while (p < end && *p >= '0' && *p <= '9') p++;
  return p;
}

/* A JSON number at p (which is '-' or a digit): the byte after it, or
 * NULL. A '.' or 'e' without digits after it is left for the caller to
 * trip on, as Python's scanner does. */
static const char *scan_number(const char *p, const char *end) {
  const char *digits, *q;
  int integer = 1;

  if (*p == '-') p++;
  digits = p;
  if (p < end && *p == '0') p++;
  else if (p < end && *p >= '1' && *p <= '9') p = skip_digits(p, end);
  else return NULL;
  if (end - p >= 2 && *p == '.' && p[1] >= '0' && p[1] <= '9') {
    p = skip_digits(p + 2, end);
    integer = 0;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    q = p + 1;
    if (q < end && (*q == '+' || *q == '-')) q++;
    if (q < end && *q >= '0' && *q <= '9') {
      p = skip_digits(q, end);
      integer = 0;
    }
  }
  if (integer && p - digits > SINK_MAX_INT_DIGITS) return NULL;
  return p;
}

/* The byte after `word` when the text at p starts with it, else NULL. */
static const char *scan_word(const char *p, const char *end,
                             const char *word, size_t n) {
  return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

/* A string, literal or number at p: the byte after it, or NULL. NaN,
 * Infinity and -Infinity are accepted because Python's json.loads accepts
 * them. */
static const char *scan_scalar(const char *p, const char *end) {
  switch (*p) {
  case '"': return scan_string(p + 1, end);
  case 'n': return scan_word(p, end, "null", 4);
  case 't': return scan_word(p, end, "true", 4);
  case 'f': return scan_word(p, end, "false", 5);
  case 'N': return scan_word(p, end, "NaN", 3);
  case 'I': return scan_word(p, end, "Infinity", 8);
  case '-':
    if (end - p > 1 && p[1] == 'I')
      return scan_word(p, end, "-Infinity", 9);
    return scan_number(p, end);
  default:
    return *p >= '0' && *p <= '9' ? scan_number(p, end) : NULL;
  }
}

/* The scanner's position and its open arrays and objects. */
typedef struct scan {
  const char *p, *end;
  int depth;
  char open[SINK_MAX_DEPTH]; /* '[' or '{' per level */
} scan;

/* At an object member: reads `"key" :` and leaves p before the value.
 * Returns 1 (a value comes next), or -1. */
static int scan_key(scan *s) {
  s->p = hk_json_skip_ws(s->p, s->end);
  if (s->p == s->end || *s->p != '"') return -1;
  s->p = scan_string(s->p + 1, s->end);
  if (!s->p) return -1;
  s->p = hk_json_skip_ws(s->p, s->end);
  if (s->p == s->end || *s->p != ':') return -1;
  s->p++;
  return 1;
}

/* A value at p (white space skipped). Returns 0 when it is complete (a
 * scalar, [] or {}), 1 when it opened a container whose first value comes
 * next, -1 when the text is not JSON. */
static int scan_value(scan *s) {
  char c = *s->p;

  if (c != '[' && c != '{') {
    s->p = scan_scalar(s->p, s->end);
    return s->p ? 0 : -1;
  }
  if (s->depth == SINK_MAX_DEPTH) return -1;
  s->p = hk_json_skip_ws(s->p + 1, s->end);
  if (s->p < s->end && *s->p == (c == '[' ? ']' : '}')) {
    s->p++;
    return 0;
  }
  s->open[s->depth++] = c;
  return c == '[' ? 1 : scan_key(s);
}

/* After a complete value inside a container: a ',' (returns 1: another
 * value comes next) or the container's end (returns 0: the container is
 * complete), else -1. */
static int scan_after(scan *s) {
  char open = s->open[s->depth - 1];

  s->p = hk_json_skip_ws(s->p, s->end);
  if (s->p == s->end) return -1;
  if (*s->p == ',') {
    s->p++;
    return open == '[' ? 1 : scan_key(s);
  }
  if (*s->p != (open == '[' ? ']' : '}')) return -1;
  s->p++;
  s->depth--;
  return 0;
}

/* The messages of a batch body: the elements of a top-level array, 1 for
 * any other JSON document, 0 when the body is not JSON (UTF-8, with or
 * without a BOM; Python would also decode UTF-16 and UTF-32, which hookd
 * never sends). Nested values are validated, never counted. */
static uint64_t count_messages(const char *body, size_t len) {
  scan s;
  uint64_t n = 0;
  int top_array, r;

  if (len == 0) return 0;
  s.p = body;
  s.end = body + len;
  s.depth = 0;
  if (len >= 3 && memcmp(body, "\xef\xbb\xbf", 3) == 0) s.p += 3;
  s.p = hk_json_skip_ws(s.p, s.end);
  top_array = s.p < s.end && *s.p == '[';
  for (;;) {
    s.p = hk_json_skip_ws(s.p, s.end);
    if (s.p == s.end) return 0;
    if (s.depth == 1 && top_array) n++;
    r = scan_value(&s);
    while (r == 0 && s.depth > 0) r = scan_after(&s);
    if (r < 0) return 0;
    if (r == 0) break; /* the top-level value is complete */
  }
  if (hk_json_skip_ws(s.p, s.end) != s.end) return 0;
  return top_array ? n : 1;
}

/* -- text buffers ----------------------------------------------------- */

typedef struct sbuf {
  char *data;
  size_t len, cap;
} sbuf;

/* Makes room for `more` bytes. Returns 0, or -1 when out of memory. */
static int sb_reserve(sbuf *b, size_t more) {
  size_t cap = b->cap ? b->cap : 4096;
  char *data;

  if (b->len + more <= b->cap) return 0;
  while (cap < b->len + more) cap *= 2;
  data = realloc(b->data, cap);
  if (!data) return -1;
  b->data = data;
  b->cap = cap;
  return 0;
}

static int sb_add(sbuf *b, const char *s, size_t n) {
  if (sb_reserve(b, n) != 0) return -1;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  return 0;
}

static int sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || sb_reserve(b, (size_t)n + 1) != 0) return -1;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

static void sb_free(sbuf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* A JSON string of raw bytes (each byte outside printable ASCII as \u00XX,
 * the way Python shows a path it read as Latin-1). */
static int sb_json_string(sbuf *b, const char *s, size_t n) {
  int rc = sb_add(b, "\"", 1);

  for (size_t i = 0; i < n && rc == 0; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') rc = sb_printf(b, "\\%c", c);
    else if (c < 0x20 || c >= 0x7f) rc = sb_printf(b, "\\u%04x", c);
    else rc = sb_add(b, (const char *)&c, 1);
  }
  return rc == 0 ? sb_add(b, "\"", 1) : -1;
}

/* -- counts ----------------------------------------------------------- */

typedef struct path_count {
  char *path;
  size_t len;
  uint64_t requests, messages;
} path_count;

/* Everything the sink remembers (a benchmark has a handful of paths, so
 * they are looked up one by one). */
static struct {
  path_count *paths;
  size_t n_paths, cap_paths;
  uint64_t requests, messages, connections;
  double first_t, last_t; /* valid once some batch had messages */
  int have_t;
} counts;

/* Seconds of CLOCK_MONOTONIC, the clock of Python's time.monotonic(). */
static double monotonic_now(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static path_count *path_entry(const char *path, size_t len) {
  path_count *pc;

  for (size_t i = 0; i < counts.n_paths; i++) {
    pc = &counts.paths[i];
    if (pc->len == len && memcmp(pc->path, path, len) == 0) return pc;
  }
  if (counts.n_paths == counts.cap_paths) {
    size_t cap = counts.cap_paths ? 2 * counts.cap_paths : 16;
    pc = realloc(counts.paths, cap * sizeof *pc);
    if (!pc) return NULL;
    counts.paths = pc;
    counts.cap_paths = cap;
  }
  pc = &counts.paths[counts.n_paths];
  if (!(pc->path = malloc(len ? len : 1))) return NULL;
  memcpy(pc->path, path, len);
  pc->len = len;
  pc->requests = pc->messages = 0;
  counts.n_paths++;
  return pc;
}

/* Counts one batch that arrived at time t. Returns 0, or -1 when out of
 * memory. */
static int record_batch(const char *path, size_t len, uint64_t n, double t) {
  path_count *pc = path_entry(path, len);

  if (!pc) return -1;
  pc->requests++;
  pc->messages += n;
  counts.requests++;
  counts.messages += n;
  if (n > 0) {
    if (!counts.have_t) counts.first_t = t;
    counts.last_t = t;
    counts.have_t = 1;
  }
  return 0;
}

static int stats_time(sbuf *b, const char *name, double t, int have) {
  if (!have) return sb_printf(b, "\"%s\":null,", name);
  return sb_printf(b, "\"%s\":%.9f,", name, t);
}

/* GET /_sink/stats: the shape of sink.py's State.stats(). */
static int stats_json(sbuf *b) {
  int rc = sb_printf(b, "{\"requests\":%llu,\"messages\":%llu,"
                     "\"per_path\":{",
                     (unsigned long long)counts.requests,
                     (unsigned long long)counts.messages);

  for (size_t i = 0; i < counts.n_paths && rc == 0; i++) {
    path_count *pc = &counts.paths[i];
    if (i > 0) rc = sb_add(b, ",", 1);
    if (rc == 0) rc = sb_json_string(b, pc->path, pc->len);
    if (rc == 0)
      rc = sb_printf(b, ":{\"requests\":%llu,\"messages\":%llu}",
                     (unsigned long long)pc->requests,
                     (unsigned long long)pc->messages);
  }
  if (rc == 0)
    rc = sb_printf(b, "},\"connections\":%llu,\"idle_closed\":0,",
                   (unsigned long long)counts.connections);
  if (rc == 0) rc = stats_time(b, "first_t", counts.first_t, counts.have_t);
  if (rc == 0) rc = stats_time(b, "last_t", counts.last_t, counts.have_t);
  if (rc == 0) rc = sb_printf(b, "\"now_t\":%.9f}", monotonic_now());
  return rc;
}

/* -- connections ------------------------------------------------------ */

/* One client connection and the request being parsed on it. */
typedef struct conn {
  uv_tcp_t tcp; /* first: the handle's pointer converts back */
  uv_shutdown_t shutdown;
  http_parser parser;
  char url[SINK_MAX_URL];
  size_t url_len;
  sbuf body;
  char field[16], value[16]; /* the current header, cut short */
  size_t field_len, value_len;
  int in_value;
  int expect_continue; /* the request asked for "100 Continue" */
  int done;            /* no more requests: close once answers are out */
  int shut;            /* uv_shutdown called */
  int closed;          /* uv_close called */
  int writes;          /* uv_write requests in flight */
} conn;

/* A write that did not go out at once, with its own copy of the rest. */
typedef struct write_req {
  uv_write_t req;
  conn *c;
  char data[];
} write_req;

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static http_parser_settings settings;
static char read_buf[SINK_READ_SIZE]; /* one thread: every read uses it */

static void on_conn_closed(uv_handle_t *h) {
  conn *c = (conn *)h;

  sb_free(&c->body);
  free(c);
}

static void conn_close(conn *c) {
  if (c->closed) return;
  c->closed = 1;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn_close(req->data);
}

/* Closes the connection once every answer has been written. */
static void conn_finish(conn *c) {
  c->done = 1;
  if (c->closed || c->shut || c->writes > 0) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->shut = 1;
  c->shutdown.data = c;
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
    conn_close(c);
}

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  conn *c = w->c;

  free(w);
  c->writes--;
  if (status < 0) conn_close(c);
  else if (c->done) conn_finish(c);
}

/* Writes len bytes, at once when the socket takes them, else queued; on
 * failure the connection is closed. */
static void conn_send(conn *c, const char *data, size_t len) {
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
  write_req *w = NULL;
  int n;

  if (c->closed) return;
  n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
  if (n == (int)len) return;
  if (n < 0 && n != UV_EAGAIN) goto cleanup;
  if (n < 0) n = 0;
  w = malloc(sizeof *w + len - (size_t)n);
  if (!w) goto cleanup;
  memcpy(w->data, data + n, len - (size_t)n);
  w->c = c;
  buf = uv_buf_init(w->data, (unsigned)(len - (size_t)n));
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0)
    goto cleanup;
  c->writes++;
  return; /* w is freed by on_written */
cleanup:
  free(w);
  conn_close(c);
}

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  default: return "Internal Server Error";
  }
}

/* Answers with a JSON body; with close, the connection ends after it. */
static void respond(conn *c, int status, const char *body, size_t len,
                    int close) {
  sbuf b = {0};

  if (sb_printf(&b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                "Content-Length: %zu\r\n%s\r\n", status, reason(status),
                len, close ? "Connection: close\r\n" : "") != 0 ||
      sb_add(&b, body, len) != 0) {
    conn_close(c); /* out of memory */
    goto cleanup;
  }
  conn_send(c, b.data, b.len);
  if (close) conn_finish(c);
cleanup:
  sb_free(&b);
}

static void respond_error(conn *c, int status, const char *message) {
  char body[160];
  int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", message);

  respond(c, status, body, (size_t)n, 1);
}

/* -- requests --------------------------------------------------------- */

static conn *conn_of(http_parser *p) { return p->data; }

/* Copies what fits of n bytes at `at` after *len bytes of dst (cap bytes);
 * *len counts every byte, so a value longer than cap is still told apart. */
static void add_cut(char *dst, size_t cap, size_t *len, const char *at,
                    size_t n) {
  if (*len < cap) memcpy(dst + *len, at, n < cap - *len ? n : cap - *len);
  *len += n;
}

static void header_end(conn *c) {
  if (c->field_len == 6 && strncasecmp(c->field, "expect", 6) == 0 &&
      c->value_len == 12 && strncasecmp(c->value, "100-continue", 12) == 0)
    c->expect_continue = 1;
  c->field_len = c->value_len = 0;
  c->in_value = 0;
}

static int on_message_begin(http_parser *p) {
  conn *c = conn_of(p);

  c->url_len = c->body.len = 0;
  c->field_len = c->value_len = 0;
  c->in_value = c->expect_continue = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  conn *c = conn_of(p);

  if (n > SINK_MAX_URL - c->url_len) {
    respond_error(c, 414, "request target too long");
    return -1;
  }
  memcpy(c->url + c->url_len, at, n);
  c->url_len += n;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  conn *c = conn_of(p);

  if (c->in_value) header_end(c);
  add_cut(c->field, sizeof c->field, &c->field_len, at, n);
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  conn *c = conn_of(p);

  c->in_value = 1;
  add_cut(c->value, sizeof c->value, &c->value_len, at, n);
  return 0;
}

static int on_headers_complete(http_parser *p) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  conn *c = conn_of(p);

  if (c->in_value) header_end(c);
  if (p->content_length != ULLONG_MAX && p->content_length > SINK_MAX_BODY) {
    respond_error(c, 413, "body too large");
    return -1;
  }
  if (c->expect_continue && p->http_major == 1 && p->http_minor >= 1)
    conn_send(c, cont, sizeof cont - 1);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  conn *c = conn_of(p);

  if (n > SINK_MAX_BODY - c->body.len) {
    respond_error(c, 413, "body too large");
    return -1;
  }
  if (sb_add(&c->body, at, n) != 0) {
    respond_error(c, 500, "out of memory");
    return -1;
  }
  return 0;
}

static void answer_stats(conn *c, int close) {
  sbuf b = {0};

  if (stats_json(&b) != 0) respond_error(c, 500, "out of memory");
  else respond(c, 200, b.data, b.len, close);
  sb_free(&b);
}

/* A batch: counted, then answered 200 {"ok":true}. path is the URL up to
 * its query. */
static void answer_batch(conn *c, size_t path_len, int close) {
  double t = monotonic_now(); /* the batch's arrival, before scanning */
  uint64_t n = count_messages(c->body.data, c->body.len);

  if (record_batch(c->url, path_len, n, t) != 0)
    respond_error(c, 500, "out of memory");
  else
    respond(c, 200, OK_BODY, sizeof OK_BODY - 1, close);
}

static int on_message_complete(http_parser *p) {
  static const char not_found[] = "{\"error\":\"not found\"}";
  conn *c = conn_of(p);
  const char *q = memchr(c->url, '?', c->url_len);
  size_t path_len = q ? (size_t)(q - c->url) : c->url_len;
  int close = !http_should_keep_alive(p);

  if (path_len >= 7 && memcmp(c->url, "/_sink/", 7) == 0) {
    if (p->method == HTTP_GET && path_len == 12 &&
        memcmp(c->url, "/_sink/stats", 12) == 0)
      answer_stats(c, close);
    else
      respond(c, 404, ONLY_COUNTS, sizeof ONLY_COUNTS - 1, close);
  } else if (p->method == HTTP_POST) {
    answer_batch(c, path_len, close);
  } else {
    respond(c, 404, not_found, sizeof not_found - 1, close);
  }
  if (c->body.cap > SINK_KEEP_BODY) sb_free(&c->body);
  return c->done ? -1 : 0; /* nothing more is read after a close */
}

/* -- the loop --------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn *c = (conn *)st;
  enum http_errno err;

  if (nread == UV_EOF) {
    conn_finish(c); /* after the answers already queued */
    return;
  }
  if (nread < 0) {
    conn_close(c);
    return;
  }
  if (nread == 0 || c->done) return;
  http_parser_execute(&c->parser, &settings, buf->base, (size_t)nread);
  if (c->done) return;
  err = HTTP_PARSER_ERRNO(&c->parser);
  if (err != HPE_OK) respond_error(c, 400, http_errno_name(err));
  else if (c->parser.upgrade) respond_error(c, 400, "no upgrades here");
}

static void on_connection(uv_stream_t *srv, int status) {
  conn *c;

  if (status < 0) {
    fprintf(stderr, "warn sink event=accept err=%s\n", uv_err_name(status));
    return;
  }
  c = calloc(1, sizeof *c);
  if (!c || uv_tcp_init(loop, &c->tcp) != 0) {
    fprintf(stderr, "error sink event=accept err=ENOMEM\n");
    free(c);
    return;
  }
  c->tcp.data = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1); /* answers must not wait for an ACK */
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  counts.connections++;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    conn_close(c);
}

/* Closes every handle (the listener, the signals, each connection); the
 * loop then ends. */
static void close_handle(uv_handle_t *h, void *arg) {
  if (h->data) conn_close(h->data);
  else if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_signal(uv_signal_t *sig, int signum) {
  uv_walk(loop, close_handle, NULL);
}

/* Listens on 127.0.0.1:port (0: any free port). Returns the port, or -1. */
static int listen_on(int port) {
  struct sockaddr_storage addr;
  int len = sizeof addr, rc;

  rc = uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)&addr);
  if (rc == 0) rc = uv_tcp_init(loop, &server);
  if (rc == 0) rc = uv_tcp_bind(&server, (struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&server, SINK_BACKLOG, on_connection);
  if (rc == 0)
    rc = uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &len);
  if (rc != 0) {
    fprintf(stderr, "error sink event=listen port=%d err=%s\n", port,
            uv_err_name(rc));
    return -1;
  }
  return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

/* Reads --port N; returns the port, or -1 after printing the usage. */
static int parse_port(int argc, char **argv) {
  char *end;
  long port = 0;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = strtol(argv[++i], &end, 10);
      if (*end == '\0' && port >= 0 && port <= 65535) continue;
    }
    fprintf(stderr, "usage: %s [--port N]   (N = 0: any free port)\n",
            argv[0]);
    return -1;
  }
  return (int)port;
}

static void init_settings(void) {
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
}

int main(int argc, char **argv) {
  int port = parse_port(argc, argv), status = 1;

  if (port < 0) return 2;
  signal(SIGPIPE, SIG_IGN);
  loop = uv_default_loop();
  init_settings();
  if ((port = listen_on(port)) < 0) goto cleanup;
  if (uv_signal_init(loop, &sig_term) != 0 ||
      uv_signal_start(&sig_term, on_signal, SIGTERM) != 0 ||
      uv_signal_init(loop, &sig_int) != 0 ||
      uv_signal_start(&sig_int, on_signal, SIGINT) != 0) {
    fprintf(stderr, "error sink event=signals\n");
    goto cleanup;
  }
  printf("READY %d\n", port);
  fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  status = 0;
cleanup:
  uv_walk(loop, close_handle, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  for (size_t i = 0; i < counts.n_paths; i++) free(counts.paths[i].path);
  free(counts.paths);
  return status;
}
