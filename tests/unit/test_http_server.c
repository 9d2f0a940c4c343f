/* Unit tests for core/http_server.c: a real server on 127.0.0.1:0 driven by
 * libcurl and raw-socket clients running on a second thread. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "http_server.h"
#include "test_util.h"

#define CHECK_STR(got, want)                                               \
  do {                                                                     \
    const char *g_ = (got), *w_ = (want);                                  \
    if (g_ == NULL || strcmp(g_, w_) != 0)                                 \
      FAILF("got \"%s\", want \"%s\"", g_ ? g_ : "(null)", w_);            \
  } while (0)

#define MAX_RESP 4
#define STALL_MS 300 /* how long the handler blocks the loop for /stall */
#define BIG_ANSWER (32 * 1024) /* body of the answer to /big/... */

/* ---- harness: server on the main thread, client on a second thread ---- */

enum answer_mode { ANSWER_NOW, ANSWER_TIMER, ANSWER_ON_KICK };

typedef struct harness harness;
typedef void (*client_fn)(harness *h);

/* Responses read by a raw-socket client. */
typedef struct reader {
  http_parser parser;
  int started;
  int n;
  int status[MAX_RESP];
  hk_buf body[MAX_RESP];
  hk_buf raw;
} reader;

struct harness {
  uv_loop_t loop;
  hk_http_server *srv;
  hk_http_server *srv2; /* optional second server in the same loop */
  hk_http_server_options opts;
  enum answer_mode mode;
  const char *addr;
  const char *host; /* for client URLs */
  uv_async_t done_async, kick_async, probe_async;
  uv_timer_t timer;
  uv_thread_t thread;
  client_fn client;
  const char *request; /* what request_client sends */
  int port, port2;
  atomic_int calls;
  atomic_int answered;
  atomic_int probe_seq, probe_done;
  hk_http_server_stats stats; /* filled by the loop thread on a probe */
  hk_http_request *held;
  /* the last request the handler saw (loop thread only) */
  int method;
  int heads;       /* requests seen with req->head set */
  int head_method; /* the method such a request showed */
  char *path, *query, *ctype, *auth, *body;
  size_t body_len;
  /* client results (client thread, read after join) */
  long status[MAX_RESP];
  hk_buf resp[MAX_RESP];
  long connects;
  int closed;
  reader rd, rd2;
  int codes[16];                  /* statuses a client recorded */
  hk_http_server_stats seen[2];   /* stats a client probed */
  int calls_seen;                 /* handler calls at seen[0] */
  double elapsed;                 /* seconds a client measured */
  int filled, fill_errno;         /* descriptors filled, why it stopped */
};

static char *dup_or_null(const char *s, size_t n) {
  char *p;

  if (s == NULL) return NULL;
  p = malloc(n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

static void capture_request(harness *h, const hk_http_request *req) {
  free(h->path);
  free(h->query);
  free(h->ctype);
  free(h->auth);
  free(h->body);
  h->method = req->method;
  h->path = dup_or_null(req->path, strlen(req->path));
  h->query = dup_or_null(req->query, strlen(req->query));
  h->ctype = req->content_type
                 ? dup_or_null(req->content_type, strlen(req->content_type))
                 : NULL;
  h->auth = req->authorization ? dup_or_null(req->authorization,
                                             strlen(req->authorization))
                               : NULL;
  h->body = dup_or_null(req->body, req->body_len);
  h->body_len = req->body_len;
  if (req->head) {
    h->heads++;
    h->head_method = req->method;
  }
}

/* A large answer, for clients that do not read them. */
static void answer_big(hk_http_request *req) {
  char *body = malloc(BIG_ANSWER);
  int n = snprintf(body, BIG_ANSWER, "answer:%s;", req->path);

  memset(body + n, 'x', BIG_ANSWER - (size_t)n);
  hk_http_respond(req, 200, "text/plain", NULL, body, BIG_ANSWER);
  free(body);
}

/* FNV-1a of the bytes, for answers that tell which body arrived. */
static uint32_t fnv1a(const char *p, size_t n) {
  uint32_t h = 2166136261u;

  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
  return h;
}

static void answer(hk_http_request *req) {
  char body[300];
  int n;

  if (strncmp(req->path, "/big/", 5) == 0) {
    answer_big(req);
    return;
  }
  if (strncmp(req->path, "/sum/", 5) == 0)
    n = snprintf(body, sizeof body, "answer:%s;len=%zu;sum=%08x", req->path,
                 req->body_len, fnv1a(req->body, req->body_len));
  else
    n = snprintf(body, sizeof body, "answer:%s", req->path);

  hk_http_respond(req, 200, "text/plain", "X-Test: yes\r\n", body,
                  (size_t)n);
}

static void answer_held(harness *h) {
  hk_http_request *req = h->held;

  h->held = NULL;
  if (req != NULL) answer(req);
  atomic_fetch_add(&h->answered, 1);
}

static void timer_cb(uv_timer_t *t) { answer_held(t->data); }

/* Answers the held request; later requests are answered at once. */
static void kick_cb(uv_async_t *a) {
  harness *h = a->data;

  h->mode = ANSWER_NOW;
  answer_held(h);
}

static void test_handler(hk_http_request *req, void *data) {
  harness *h = data;

  capture_request(h, req);
  atomic_fetch_add(&h->calls, 1);
  if (strcmp(req->path, "/drain") == 0) hk_http_server_drain(h->srv);
  if (strcmp(req->path, "/stall") == 0) {
    /* The loop sees nothing meanwhile: clients can line up events. */
    struct timespec ts = {0, STALL_MS * 1000000L};

    nanosleep(&ts, NULL);
  }
  if (h->mode == ANSWER_NOW) {
    answer(req);
    return;
  }
  h->held = req;
  if (h->mode == ANSWER_TIMER) uv_timer_start(&h->timer, timer_cb, 1, 0);
}

/* Copies the server's stats for a client waiting in probe(). */
static void probe_cb(uv_async_t *a) {
  harness *h = a->data;
  int seq = atomic_load(&h->probe_seq);

  hk_http_server_stats_get(h->srv, &h->stats);
  atomic_store(&h->probe_done, seq);
}

static void second_handler(hk_http_request *req, void *data) {
  (void)data;
  hk_http_respond(req, 200, "text/plain", NULL, "second", 6);
}

static void done_cb(uv_async_t *a) {
  harness *h = a->data;

  hk_http_server_close(h->srv);
  hk_http_server_close(h->srv2);
  uv_close((uv_handle_t *)&h->done_async, NULL);
  uv_close((uv_handle_t *)&h->kick_async, NULL);
  uv_close((uv_handle_t *)&h->probe_async, NULL);
  uv_close((uv_handle_t *)&h->timer, NULL);
}

static void client_main(void *arg) {
  harness *h = arg;

  h->client(h);
  uv_async_send(&h->done_async);
}

static void harness_init(harness *h) {
  memset(h, 0, sizeof *h);
  h->opts.max_body_bytes = 2 * 1024 * 1024;
  h->addr = "127.0.0.1:0";
  h->host = "127.0.0.1";
}

static void harness_free(harness *h) {
  free(h->path);
  free(h->query);
  free(h->ctype);
  free(h->auth);
  free(h->body);
  for (int i = 0; i < MAX_RESP; i++) {
    hk_buf_free(&h->resp[i]);
    hk_buf_free(&h->rd.body[i]);
    hk_buf_free(&h->rd2.body[i]);
  }
  hk_buf_free(&h->rd.raw);
  hk_buf_free(&h->rd2.raw);
}

static void harness_handles_init(harness *h) {
  uv_async_init(&h->loop, &h->done_async, done_cb);
  uv_async_init(&h->loop, &h->kick_async, kick_cb);
  uv_async_init(&h->loop, &h->probe_async, probe_cb);
  uv_timer_init(&h->loop, &h->timer);
  h->done_async.data = h->kick_async.data = h->timer.data = h;
  h->probe_async.data = h;
}

/* Starts the server(s), runs client on a second thread and the loop here
 * until the client is done and everything has closed. Returns 0, or -1
 * when the server did not start (err says why). */
static int harness_run(harness *h, client_fn client, char *err,
                       size_t errlen) {
  uv_loop_init(&h->loop);
  h->srv = hk_http_server_start(&h->loop, h->addr, &h->opts, test_handler,
                                h, err, errlen);
  if (h->srv == NULL) {
    uv_run(&h->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&h->loop) == 0);
    return -1;
  }
  h->port = hk_http_server_port(h->srv);
  harness_handles_init(h);
  h->client = client;
  uv_thread_create(&h->thread, client_main, h);
  uv_run(&h->loop, UV_RUN_DEFAULT);
  uv_thread_join(&h->thread);
  CHECK(uv_loop_close(&h->loop) == 0);
  return 0;
}

static void harness_must_run(harness *h, client_fn client) {
  char err[256];

  if (harness_run(h, client, err, sizeof err) != 0)
    FAILF("server did not start: %s", err);
}

/* Waits (bounded) until *counter reaches want; returns 0 or -1. */
static int wait_for(atomic_int *counter, int want) {
  struct timespec ts = {0, 1000000};

  for (int i = 0; i < 10000; i++) {
    if (atomic_load(counter) >= want) return 0;
    nanosleep(&ts, NULL);
  }
  return -1;
}

/* Gets the server's stats from the loop thread (client thread only).
 * Returns 0, or -1 when the loop did not answer in time. */
static int probe(harness *h, hk_http_server_stats *out) {
  int seq = atomic_fetch_add(&h->probe_seq, 1) + 1;

  uv_async_send(&h->probe_async);
  if (wait_for(&h->probe_done, seq) != 0) return -1;
  *out = h->stats;
  return 0;
}

/* Probes until ok(stats) holds (bounded); returns 0 or -1. */
static int wait_stats(harness *h, int (*ok)(const hk_http_server_stats *),
                      hk_http_server_stats *out) {
  struct timespec ts = {0, 1000000};

  for (int i = 0; i < 10000; i++) {
    if (probe(h, out) != 0) return -1;
    if (ok(out)) return 0;
    nanosleep(&ts, NULL);
  }
  return -1;
}

static double now_sec(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the server's log -------------------------------------------------- */

/* stderr, where the server logs, sent to a temporary file. */
typedef struct capture {
  FILE *f;
  int saved;
} capture;

static void capture_begin(capture *cp) {
  fflush(stderr);
  cp->f = tmpfile();
  cp->saved = dup(2);
  dup2(fileno(cp->f), 2);
}

/* Puts stderr back; returns what was logged (the caller frees it). */
static char *capture_end(capture *cp) {
  long n;
  char *text;

  fflush(stderr);
  dup2(cp->saved, 2);
  close(cp->saved);
  fseek(cp->f, 0, SEEK_END);
  n = ftell(cp->f);
  rewind(cp->f);
  text = calloc(1, (size_t)n + 1);
  if (fread(text, 1, (size_t)n, cp->f) != (size_t)n) text[0] = '\0';
  fclose(cp->f);
  fputs(text, stderr); /* still shown, as without the capture */
  return text;
}

/* Counts the lines of log that contain all of want (NULL-ended) and adds
 * up their suppressed= counts in *suppressed. */
static int log_lines(const char *log, const char *const *want,
                     unsigned long *suppressed) {
  int n = 0;

  *suppressed = 0;
  for (const char *p = log; *p;) {
    const char *end = strchr(p, '\n');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char *line = dup_or_null(p, len);
    const char *sup = strstr(line, " suppressed=");
    int all = 1;

    for (int i = 0; want[i] != NULL; i++) all &= strstr(line, want[i]) != 0;
    if (all) {
      n++;
      if (sup != NULL) *suppressed += strtoul(sup + 12, NULL, 10);
    }
    free(line);
    p += len + (end != NULL);
  }
  return n;
}

/* ---- clients: libcurl -------------------------------------------------- */

static size_t curl_write_cb(char *p, size_t size, size_t n, void *ud) {
  hk_buf_append(ud, p, size * n);
  return size * n;
}

/* Runs one request on e; returns the HTTP status, or -1. */
static long curl_run(CURL *e, const char *url, struct curl_slist *hdrs,
                     const char *body, size_t body_len, hk_buf *out) {
  long status = -1;

  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  curl_easy_setopt(e, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, curl_write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
  if (body != NULL) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  }
  if (curl_easy_perform(e) != CURLE_OK) return -1;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

static long curl_once(harness *h, const char *path, struct curl_slist *hdrs,
                      const char *body, size_t body_len, hk_buf *out) {
  char url[256];
  CURL *e = curl_easy_init();
  long status;

  snprintf(url, sizeof url, "http://%s:%d%s", h->host, h->port, path);
  status = curl_run(e, url, hdrs, body, body_len, out);
  curl_easy_cleanup(e);
  return status;
}

/* ---- clients: raw sockets ---------------------------------------------- */

/* Connects to the server; rcvbuf, when not 0, fixes the size of the
 * receive buffer (so that the kernel cannot take in much unread). */
static int tcp_connect_with(int port, int rcvbuf) {
  struct sockaddr_in sa;
  struct timeval tv = {10, 0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  if (fd < 0) return -1;
  if (rcvbuf != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int tcp_connect(int port) { return tcp_connect_with(port, 0); }

static int send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int send_str(int fd, const char *s) {
  return send_all(fd, s, strlen(s));
}

static int rd_body_cb(http_parser *p, const char *at, size_t len) {
  reader *r = p->data;

  if (r->n < MAX_RESP) hk_buf_append(&r->body[r->n], at, len);
  return 0;
}

static int rd_complete_cb(http_parser *p) {
  reader *r = p->data;

  if (r->n < MAX_RESP) r->status[r->n] = (int)p->status_code;
  r->n++;
  return 0;
}

/* Reads until want responses (counting 1xx) are complete; returns 0 or -1
 * when the connection ended or timed out first. */
static int read_responses(int fd, reader *r, int want) {
  http_parser_settings st;
  char buf[4096];

  http_parser_settings_init(&st);
  st.on_body = rd_body_cb;
  st.on_message_complete = rd_complete_cb;
  if (!r->started) {
    http_parser_init(&r->parser, HTTP_RESPONSE);
    r->parser.data = r;
    r->started = 1;
  }
  while (r->n < want) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);

    if (n <= 0) return -1;
    hk_buf_append(&r->raw, buf, (size_t)n);
    http_parser_execute(&r->parser, &st, buf, (size_t)n);
    if (HTTP_PARSER_ERRNO(&r->parser) != HPE_OK) return -1;
  }
  hk_buf_cstr(&r->raw);
  return 0;
}

/* Returns 1 when the server closed the connection cleanly (EOF). */
static int server_closed(int fd) {
  char buf[256];

  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);

    if (n == 0) return 1;
    if (n < 0) return 0;
  }
}

/* Sends req on a new connection and reads one response into h->rd. With
 * closing, also records whether the server then closed the connection. */
static void raw_send_read(harness *h, const char *req, size_t len,
                          int closing) {
  int fd = tcp_connect(h->port);

  if (fd < 0) return;
  if (send_all(fd, req, len) == 0 && read_responses(fd, &h->rd, 1) == 0 &&
      closing)
    h->closed = server_closed(fd);
  close(fd);
}

static void raw_exchange(harness *h, const char *req, size_t len) {
  raw_send_read(h, req, len, 0);
}

static void raw_exchange_closing(harness *h, const char *req, size_t len) {
  raw_send_read(h, req, len, 1);
}

/* Sends h->request (text without NUL) on a connection of its own, reads
 * one answer and notes whether the server then closed the connection. */
static void request_client(harness *h) {
  raw_exchange_closing(h, h->request, strlen(h->request));
}

/* Runs the server with request_client sending req. */
static void harness_must_exchange(harness *h, const char *req) {
  h->request = req;
  harness_must_run(h, request_client);
}

static const char *rd_body(harness *h, int i) {
  return hk_buf_cstr(&h->rd.body[i]);
}

static void reader_free(reader *r) {
  for (int i = 0; i < MAX_RESP; i++) hk_buf_free(&r->body[i]);
  hk_buf_free(&r->raw);
  memset(r, 0, sizeof *r);
}

/* Reads one answer on fd; returns its status, or -1. */
static int fd_read_status(int fd) {
  reader r;
  int status = -1;

  memset(&r, 0, sizeof r);
  if (read_responses(fd, &r, 1) == 0) status = r.status[0];
  reader_free(&r);
  return status;
}

/* Sends req on fd and reads one answer; returns its status, or -1. */
static int fd_exchange(int fd, const char *req) {
  if (send_str(fd, req) != 0) return -1;
  return fd_read_status(fd);
}

/* Returns 1 when the server closes fd within ms without having sent
 * anything first, 0 when it is still open then (or sent bytes). */
static int closed_within(int fd, int ms) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  char buf[64];

  if (poll(&pfd, 1, ms) != 1) return 0;
  return recv(fd, buf, sizeof buf, MSG_DONTWAIT) == 0;
}

/* Probes until the server has open connections of which idle have
 * nothing in progress (bounded); returns 0 or -1. */
static int wait_conns(harness *h, unsigned open, unsigned idle) {
  struct timespec ts = {0, 1000000};
  hk_http_server_stats st;

  for (int i = 0; i < 10000; i++) {
    if (probe(h, &st) != 0) return -1;
    if (st.open == open && st.idle == idle) return 0;
    nanosleep(&ts, NULL);
  }
  return -1;
}

/* Reads everything until the server closes into out. */
static void read_to_eof(int fd, hk_buf *out) {
  char buf[4096];
  ssize_t n;

  while ((n = recv(fd, buf, sizeof buf, 0)) > 0)
    hk_buf_append(out, buf, (size_t)n);
  hk_buf_cstr(out);
}

/* ---- tests: requests and answers --------------------------------------- */

static void get_with_query_client(harness *h) {
  struct curl_slist *hd = NULL;

  hd = curl_slist_append(hd, "Content-Type: text/x-test; charset=utf-8");
  hd = curl_slist_append(hd, "authorization: Bearer t0ken");
  hd = curl_slist_append(hd, "X-Other: ignored");
  h->status[0] = curl_once(h, "/hooks/a%20b/c?x=1&y=%20z", hd, NULL, 0,
                           &h->resp[0]);
  curl_slist_free_all(hd);
}

static void http_get_parses_path_query_and_headers(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, get_with_query_client);
  CHECK(h.status[0] == 200);
  CHECK_STR(hk_buf_cstr(&h.resp[0]), "answer:/hooks/a b/c");
  CHECK(h.method == HTTP_GET);
  CHECK_STR(h.path, "/hooks/a b/c");
  CHECK_STR(h.query, "x=1&y=%20z");
  CHECK_STR(h.ctype, "text/x-test; charset=utf-8");
  CHECK_STR(h.auth, "Bearer t0ken");
  harness_free(&h);
}

static void get_plain_client(harness *h) {
  h->status[0] = curl_once(h, "/", NULL, NULL, 0, &h->resp[0]);
}

static void http_missing_headers_are_null(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, get_plain_client);
  CHECK(h.status[0] == 200);
  CHECK_STR(h.query, "");
  CHECK(h.ctype == NULL);
  CHECK(h.auth == NULL);
  CHECK(h.body_len == 0);
  harness_free(&h);
}

static void raw_get_client(harness *h) {
  static const char req[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

  raw_exchange(h, req, sizeof req - 1);
}

static void http_respond_writes_status_and_headers(void) {
  harness h;
  const char *raw;

  harness_init(&h);
  harness_must_run(&h, raw_get_client);
  raw = hk_buf_cstr(&h.rd.raw);
  CHECK(strncmp(raw, "HTTP/1.1 200 OK\r\n", 17) == 0);
  CHECK(strstr(raw, "\r\nContent-Type: text/plain\r\n") != NULL);
  CHECK(strstr(raw, "\r\nContent-Length: 9\r\n") != NULL);
  CHECK(strstr(raw, "\r\nX-Test: yes\r\n") != NULL);
  CHECK(strstr(raw, "Connection:") == NULL);
  CHECK_STR(rd_body(&h, 0), "answer:/x");
  harness_free(&h);
}

static void post_small_client(harness *h) {
  h->status[0] = curl_once(h, "/in", NULL, "{\"a\":1}", 7, &h->resp[0]);
}

static void http_post_body_arrives(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, post_small_client);
  CHECK(h.status[0] == 200);
  CHECK(h.method == HTTP_POST);
  CHECK(h.body_len == 7);
  CHECK_STR(h.body, "{\"a\":1}");
  harness_free(&h);
}

#define BIG_LEN (1024 * 1024 + 4096)

static char *big_body(void) {
  char *p = malloc(BIG_LEN);

  for (size_t i = 0; i < BIG_LEN; i++)
    p[i] = (char)('a' + (i * 7 + i / 3) % 26);
  return p;
}

static void post_big_client(harness *h) {
  char *body = big_body();
  struct curl_slist *hd = curl_slist_append(NULL, "Expect:");

  h->status[0] = curl_once(h, "/big", hd, body, BIG_LEN, &h->resp[0]);
  curl_slist_free_all(hd);
  free(body);
}

static void http_post_1mib_body_arrives_intact(void) {
  harness h;
  char *want = big_body();

  harness_init(&h);
  harness_must_run(&h, post_big_client);
  CHECK(h.status[0] == 200);
  CHECK(h.body_len == BIG_LEN);
  CHECK(h.body != NULL && memcmp(h.body, want, BIG_LEN) == 0);
  free(want);
  harness_free(&h);
}

static void chunked_client(harness *h) {
  static const char req[] =
      "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
      "Content-Type: application/json\r\n\r\n"
      "5\r\nhello\r\n7\r\n, world\r\n1;ext=1\r\n!\r\n0\r\n\r\n";

  raw_exchange(h, req, sizeof req - 1);
}

static void http_chunked_body_is_joined(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, chunked_client);
  CHECK(h.rd.n == 1 && h.rd.status[0] == 200);
  CHECK(h.body_len == 13);
  CHECK_STR(h.body, "hello, world!");
  CHECK_STR(h.ctype, "application/json");
  harness_free(&h);
}

static void expect_continue_client(harness *h) {
  static const char head[] =
      "POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
      "Expect: 100-continue\r\n\r\n";
  int fd = tcp_connect(h->port);

  if (fd < 0) return;
  if (send_str(fd, head) == 0 && read_responses(fd, &h->rd, 1) == 0 &&
      send_str(fd, "ping") == 0)
    read_responses(fd, &h->rd, 2);
  close(fd);
}

static void http_expect_continue_gets_100_before_body(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, expect_continue_client);
  CHECK(h.rd.n == 2);
  CHECK(h.rd.status[0] == 100);
  CHECK(h.rd.status[1] == 200);
  CHECK_STR(h.body, "ping");
  harness_free(&h);
}

/* ---- tests: connections ------------------------------------------------ */

static void keepalive_client(harness *h) {
  char url[128];
  CURL *e = curl_easy_init();

  snprintf(url, sizeof url, "http://127.0.0.1:%d/one", h->port);
  h->status[0] = curl_run(e, url, NULL, NULL, 0, &h->resp[0]);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/two", h->port);
  h->status[1] = curl_run(e, url, NULL, NULL, 0, &h->resp[1]);
  curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &h->connects);
  curl_easy_cleanup(e);
}

static void http_keepalive_reuses_connection(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, keepalive_client);
  CHECK(h.status[0] == 200 && h.status[1] == 200);
  CHECK_STR(hk_buf_cstr(&h.resp[1]), "answer:/two");
  CHECK(h.connects == 0);
  CHECK(atomic_load(&h.calls) == 2);
  harness_free(&h);
}

static void pipelined_client(harness *h) {
  static const char reqs[] =
      "GET /first HTTP/1.1\r\nHost: t\r\n\r\n"
      "POST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
      "GET /third HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
  int fd = tcp_connect(h->port);

  if (fd < 0) return;
  if (send_str(fd, reqs) == 0 && read_responses(fd, &h->rd, 3) == 0)
    h->closed = server_closed(fd);
  close(fd);
}

static void http_pipelined_requests_answered_in_order(void) {
  harness h;

  harness_init(&h);
  h.mode = ANSWER_TIMER;
  harness_must_run(&h, pipelined_client);
  CHECK(h.rd.n == 3);
  CHECK_STR(rd_body(&h, 0), "answer:/first");
  CHECK_STR(rd_body(&h, 1), "answer:/second");
  CHECK_STR(rd_body(&h, 2), "answer:/third");
  CHECK(h.closed);
  harness_free(&h);
}

/* Two large bodies and a GET in one stream: each body is read partly
 * with its head and the rest in place, and the bytes after it still
 * reach the next request. */
#define PIPE_BODY 300000

static char *pattern_body(int seed) {
  char *p = malloc(PIPE_BODY);

  for (size_t i = 0; i < PIPE_BODY; i++)
    p[i] = (char)('a' + (i * (size_t)seed + i / 5) % 26);
  return p;
}

static void pipelined_bodies_client(harness *h) {
  char head[128];
  int fd = tcp_connect(h->port), ok = fd >= 0;

  for (int k = 1; ok && k <= 2; k++) {
    char *body = pattern_body(k + 2);

    snprintf(head, sizeof head, "POST /sum/%d HTTP/1.1\r\nHost: t\r\n"
             "Content-Length: %d\r\n\r\n", k, PIPE_BODY);
    ok = send_str(fd, head) == 0 && send_all(fd, body, PIPE_BODY) == 0;
    free(body);
  }
  if (ok && send_str(fd, "GET /third HTTP/1.1\r\nHost: t\r\n"
                         "Connection: close\r\n\r\n") == 0)
    read_responses(fd, &h->rd, 3);
  if (fd >= 0) close(fd);
}

static void http_pipelined_large_bodies_arrive_intact(void) {
  harness h;
  char want[2][128];

  for (int k = 1; k <= 2; k++) {
    char *body = pattern_body(k + 2);

    snprintf(want[k - 1], sizeof want[0], "answer:/sum/%d;len=%d;sum=%08x",
             k, PIPE_BODY, fnv1a(body, PIPE_BODY));
    free(body);
  }
  harness_init(&h);
  h.mode = ANSWER_TIMER;
  harness_must_run(&h, pipelined_bodies_client);
  CHECK(h.rd.n == 3);
  CHECK_STR(rd_body(&h, 0), want[0]);
  CHECK_STR(rd_body(&h, 1), want[1]);
  CHECK_STR(rd_body(&h, 2), "answer:/third");
  harness_free(&h);
}

static void http_pipelined_sync_answers_in_order(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, pipelined_client);
  CHECK(h.rd.n == 3);
  CHECK_STR(rd_body(&h, 0), "answer:/first");
  CHECK_STR(rd_body(&h, 1), "answer:/second");
  CHECK_STR(rd_body(&h, 2), "answer:/third");
  CHECK_STR(h.body, "");
  CHECK(h.closed);
  harness_free(&h);
}

static void http_connection_close_is_honoured(void) {
  harness h;

  harness_init(&h);
  harness_must_exchange(
      &h, "GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  CHECK(h.rd.n == 1 && h.rd.status[0] == 200);
  CHECK(strstr(hk_buf_cstr(&h.rd.raw), "\r\nConnection: close\r\n") != NULL);
  CHECK(h.closed);
  harness_free(&h);
}

static void odd_coding_client(harness *h) {
  char req[512];
  int n = snprintf(req, sizeof req, "POST /te HTTP/1.1\r\nHost: t\r\n"
                   "Transfer-Encoding: gz\xffip%0100d\r\n\r\n", 0);

  raw_exchange_closing(h, req, (size_t)n);
}

static void http_transfer_codings_but_chunked_get_501(void) {
  /* A body under another transfer coding than chunked (gzip, say)
   * cannot be read: 501, on one line or over two, and nothing is
   * dispatched. */
  static const char *const requests[] = {
      "POST /te HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked"
      "\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      "POST /te HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n"
      "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"};

  for (size_t i = 0; i < 2; i++) {
    harness h;

    harness_init(&h);
    harness_must_exchange(&h, requests[i]);
    CHECK(h.rd.n == 1 && h.rd.status[0] == 501);
    CHECK(strstr(hk_buf_cstr(&h.rd.raw), "gzip") != NULL);
    CHECK(atomic_load(&h.calls) == 0);
    harness_free(&h);
  }
  {
    /* A long value with a byte that is not UTF-8: shown cut and as '?',
     * the advice kept whole. */
    harness h;
    const char *raw;

    harness_init(&h);
    harness_must_run(&h, odd_coding_client);
    raw = hk_buf_cstr(&h.rd.raw);
    CHECK(h.rd.n == 1 && h.rd.status[0] == 501);
    CHECK(strstr(raw, "gz?ip000") != NULL);
    CHECK(strstr(raw, "send the body as it is, or chunked\"}") != NULL);
    CHECK(strchr(raw, '\xff') == NULL);
    harness_free(&h);
  }
  {
    harness h;

    harness_init(&h);
    harness_must_exchange(&h, "POST /te HTTP/1.1\r\nHost: t\r\n"
                              "Transfer-Encoding:  Chunked \r\n"
                              "Connection: close\r\n\r\n"
                              "5\r\nhello\r\n0\r\n\r\n");
    CHECK(h.rd.n == 1 && h.rd.status[0] == 200);
    CHECK(h.body_len == 5);
    harness_free(&h);
  }
}

/* Once the server drains (hookd stopping), an answer on a keep-alive
 * connection says "Connection: close" and the connection ends, so the
 * client does not send its next request into the server's close. */
static void http_answers_end_their_connection_once_draining(void) {
  harness h;

  harness_init(&h);
  harness_must_exchange(&h, "GET /drain HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(h.rd.n == 1 && h.rd.status[0] == 200);
  CHECK(strstr(hk_buf_cstr(&h.rd.raw), "\r\nConnection: close\r\n") != NULL);
  CHECK(h.closed);
  harness_free(&h);
}

static void http10_closes_after_answer(void) {
  harness h;

  harness_init(&h);
  harness_must_exchange(&h, "GET /old HTTP/1.0\r\n\r\n");
  CHECK(h.rd.n == 1 && h.rd.status[0] == 200);
  CHECK_STR(rd_body(&h, 0), "answer:/old");
  CHECK(h.closed);
  harness_free(&h);
}

/* ---- tests: limits and malformed input --------------------------------- */

/* Sends req to a server taking bodies of up to 1024 bytes (and whole
 * requests within 5 s, so that an answer that waits for bytes that never
 * come shows as a 408): the request is refused with 413, the connection
 * closed, and the handler never called. */
static void check_body_refused_413(const char *req) {
  harness h;

  harness_init(&h);
  h.opts.max_body_bytes = 1024;
  h.opts.request_timeout_ms = 5000;
  harness_must_exchange(&h, req);
  CHECK(h.rd.n == 1 && h.rd.status[0] == 413);
  CHECK_STR(rd_body(&h, 0),
            "{\"error\":\"request body exceeds 1024 bytes\"}");
  CHECK(h.closed);
  CHECK(atomic_load(&h.calls) == 0);
  harness_free(&h);
}

static void http_oversized_content_length_gets_413(void) {
  check_body_refused_413("POST /big HTTP/1.1\r\nHost: t\r\n"
                         "Content-Length: 1025\r\n\r\n");
}

/* A head that never ends: the request line and one header, no blank line. */
static void http_slow_request_head_gets_408(void) {
  harness h;

  harness_init(&h);
  h.opts.head_timeout_ms = 200;
  harness_must_exchange(&h, "GET /slow HTTP/1.1\r\nHost: t\r\n");
  CHECK(h.rd.n == 1 && h.rd.status[0] == 408);
  CHECK_STR(rd_body(&h, 0),
            "{\"error\":\"request headers did not arrive in time\"}");
  CHECK(h.closed);
  CHECK(atomic_load(&h.calls) == 0);
  harness_free(&h);
}

static void http_oversized_chunked_body_gets_413(void) {
  hk_buf req = HK_BUF_INIT;

  hk_buf_printf(&req, "POST /c HTTP/1.1\r\nHost: t\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 4; i++) {
    hk_buf_printf(&req, "200\r\n");
    for (int j = 0; j < 512; j++) hk_buf_putc(&req, 'x');
    hk_buf_printf(&req, "\r\n");
  }
  hk_buf_printf(&req, "0\r\n\r\n");
  check_body_refused_413(hk_buf_cstr(&req));
  hk_buf_free(&req);
}

/* A chunk announcing more than the limit, and only a few of its bytes:
 * answered at once, not after a timeout waiting for the rest. */
static void http_huge_chunk_gets_413_before_its_bytes(void) {
  check_body_refused_413("POST /c HTTP/1.1\r\nHost: t\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"
                         "ffffffffff\r\nabc");
}

/* A chunk size beyond 64 bits: named as such, not as a Content-Length
 * the request does not have. */
static void http_overflowing_chunk_size_gets_400_naming_it(void) {
  harness h;

  harness_init(&h);
  harness_must_exchange(&h, "POST /c HTTP/1.1\r\nHost: t\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n"
                            "ffffffffffffffffffff\r\nabc");
  CHECK(h.rd.n == 1 && h.rd.status[0] == 400);
  CHECK_STR(rd_body(&h, 0), "{\"error\":\"malformed HTTP request: "
                            "chunk size too large\"}");
  CHECK(atomic_load(&h.calls) == 0);
  harness_free(&h);
}

static void big_header_client(harness *h) {
  hk_buf req = HK_BUF_INIT;

  hk_buf_printf(&req, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ");
  for (int j = 0; j < 2000; j++) hk_buf_putc(&req, 'h');
  hk_buf_printf(&req, "\r\n\r\n");
  raw_exchange_closing(h, req.data, req.len);
  hk_buf_free(&req);
}

static void http_oversized_headers_get_431(void) {
  harness h;

  harness_init(&h);
  h.opts.max_header_bytes = 1024;
  harness_must_run(&h, big_header_client);
  CHECK(h.rd.n == 1 && h.rd.status[0] == 431);
  CHECK_STR(rd_body(&h, 0),
            "{\"error\":\"request headers exceed 1024 bytes\"}");
  CHECK(h.closed);
  CHECK(atomic_load(&h.calls) == 0);
  harness_free(&h);
}

static void http_malformed_request_gets_400(void) {
  harness h;

  harness_init(&h);
  harness_must_exchange(&h, "GET / HTTP/1.1\r\nBad Header\x01: x\r\n\r\n");
  CHECK(h.rd.n == 1 && h.rd.status[0] == 400);
  CHECK_STR(rd_body(&h, 0), "{\"error\":\"malformed HTTP request: "
                            "invalid character in header\"}");
  CHECK(h.closed);
  CHECK(atomic_load(&h.calls) == 0);
  harness_free(&h);
}

static void bad_escape_client(harness *h) {
  static const char req[] = "GET /a%zz HTTP/1.1\r\nHost: t\r\n\r\n";

  raw_exchange(h, req, sizeof req - 1);
}

static void http_bad_percent_escape_gets_400(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, bad_escape_client);
  CHECK(h.rd.n == 1 && h.rd.status[0] == 400);
  CHECK(atomic_load(&h.calls) == 0);
  harness_free(&h);
}

static void encoded_slash_client(harness *h) {
  static const char req[] = "POST /v1/hooks/crm%2fstop HTTP/1.1\r\n"
                            "Host: t\r\nContent-Length: 0\r\n\r\n";

  raw_exchange(h, req, sizeof req - 1);
}

/* An encoded '/' would split a segment in two behind a proxy's back: the
 * request is refused before the handler sees it. */
static void http_encoded_slash_gets_400(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, encoded_slash_client);
  CHECK(h.rd.n == 1 && h.rd.status[0] == 400);
  CHECK(strstr(rd_body(&h, 0), "encoded NUL or '/'") != NULL);
  CHECK(atomic_load(&h.calls) == 0);
  harness_free(&h);
}

/* ---- tests: asynchronous answers --------------------------------------- */

static void http_async_answer_from_timer(void) {
  harness h;

  harness_init(&h);
  h.mode = ANSWER_TIMER;
  harness_must_run(&h, get_plain_client);
  CHECK(h.status[0] == 200);
  CHECK_STR(hk_buf_cstr(&h.resp[0]), "answer:/");
  CHECK(atomic_load(&h.answered) == 1);
  harness_free(&h);
}

static void client_gone_client(harness *h) {
  static const char req[] = "POST /gone HTTP/1.1\r\nHost: t\r\n"
                            "Content-Length: 3\r\n\r\nabc";
  int fd = tcp_connect(h->port);

  if (fd < 0) return;
  send_str(fd, req);
  if (wait_for(&h->calls, 1) != 0) {
    close(fd);
    return;
  }
  close(fd);
  uv_async_send(&h->kick_async);
  if (wait_for(&h->answered, 1) != 0) return;
  h->status[0] = curl_once(h, "/after", NULL, NULL, 0, &h->resp[0]);
}

static void http_client_gone_before_async_answer(void) {
  harness h;

  harness_init(&h);
  h.mode = ANSWER_ON_KICK;
  harness_must_run(&h, client_gone_client);
  CHECK(atomic_load(&h.answered) == 1);
  CHECK(h.status[0] == 200);
  CHECK_STR(hk_buf_cstr(&h.resp[0]), "answer:/after");
  harness_free(&h);
}

static void held_request_client(harness *h) {
  static const char req[] = "GET /held HTTP/1.1\r\nHost: t\r\n\r\n";
  int fd = tcp_connect(h->port);

  if (fd < 0) return;
  send_str(fd, req);
  wait_for(&h->calls, 1);
  close(fd);
}

static void http_close_with_pending_request_orphans_it(void) {
  harness h;

  harness_init(&h);
  h.mode = ANSWER_ON_KICK;
  harness_must_run(&h, held_request_client);
  CHECK(atomic_load(&h.calls) == 1);
  CHECK(h.held != NULL);
  CHECK_STR(h.held ? h.held->path : NULL, "/held");
  /* The server is gone; answering must only free the request. */
  if (h.held != NULL) answer(h.held);
  harness_free(&h);
}

/* ---- tests: HEAD -------------------------------------------------------- */

static void head_client(harness *h) {
  static const char reqs[] =
      "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n"
      "GET /g HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
  int fd = tcp_connect(h->port);

  if (fd < 0) return;
  if (send_str(fd, reqs) == 0) read_to_eof(fd, &h->rd.raw);
  close(fd);
}

/* The HEAD answer is the GET answer's head: same length, no body, so the
 * next answer follows right after it. */
static const char head_then_get[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
    "X-Test: yes\r\n\r\n"
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
    "X-Test: yes\r\nConnection: close\r\n\r\nanswer:/g";

static void http_head_is_get_without_body_with_head_as_get(void) {
  harness h;

  harness_init(&h);
  h.opts.head_as_get = 1;
  harness_must_run(&h, head_client);
  CHECK_STR(hk_buf_cstr(&h.rd.raw), head_then_get);
  CHECK(h.heads == 1);
  CHECK(h.head_method == HTTP_GET);
  CHECK(atomic_load(&h.calls) == 2);
  harness_free(&h);
}

static void http_head_method_is_shown_by_default(void) {
  harness h;

  harness_init(&h);
  harness_must_run(&h, head_client);
  CHECK_STR(hk_buf_cstr(&h.rd.raw), head_then_get);
  CHECK(h.heads == 1);
  CHECK(h.head_method == HTTP_HEAD);
  harness_free(&h);
}

/* ---- tests: abuse ------------------------------------------------------- */

#define LIMIT_EXTRA 12 /* connections refused in the limit test */

static const char get_kept[] = "GET /kept HTTP/1.1\r\nHost: t\r\n\r\n";

static int one_open(const hk_http_server_stats *st) { return st->open == 1; }

/* Opens connections one over the limit after another; the first one's
 * answer is kept in h->rd. */
static void refused_burst(harness *h) {
  double t0 = now_sec();

  for (int i = 0; i < LIMIT_EXTRA; i++) {
    int fd = tcp_connect(h->port);
    reader r;

    memset(&r, 0, sizeof r);
    if (fd < 0) continue;
    if (read_responses(fd, i == 0 ? &h->rd : &r, 1) == 0 && i == 0)
      h->closed = server_closed(fd);
    h->codes[4] += (i == 0 ? h->rd.status[0] : r.status[0]) == 503;
    reader_free(&r);
    close(fd);
  }
  h->elapsed = now_sec() - t0;
}

/* A request whose body (4 bytes) is half sent: it keeps its connection
 * busy until the rest, "cd", comes. */
static const char post_half[] =
    "POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab";

/* Connects and begins post_half; returns the fd, or -1. */
static int open_busy(harness *h) {
  int fd = tcp_connect(h->port);

  if (fd >= 0 && send_str(fd, post_half) != 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

/* With max_connections 2, both busy: one with a body still arriving, one
 * with its request held by the handler. Neither may make way, so a burst
 * of new ones is refused; then both are answered and served again, and a
 * new one is served after one closed. */
static void limit_client(harness *h) {
  static const char get_held[] = "GET /held HTTP/1.1\r\nHost: t\r\n\r\n";
  int a = open_busy(h), b = tcp_connect(h->port), c;

  if (a < 0 || b < 0 || send_str(b, get_held) != 0) goto done;
  if (wait_for(&h->calls, 1) != 0 || wait_conns(h, 2, 0) != 0) goto done;
  refused_burst(h);
  uv_async_send(&h->kick_async);
  h->codes[1] = fd_read_status(b);
  h->codes[0] = fd_exchange(a, "cd");
  h->codes[2] = fd_exchange(a, get_kept);
  h->codes[3] = fd_exchange(b, get_kept);
  close(a);
  a = -1;
  if (wait_stats(h, one_open, &h->seen[0]) != 0) goto done;
  c = tcp_connect(h->port);
  if (c >= 0) h->codes[5] = fd_exchange(c, get_kept);
  probe(h, &h->seen[1]);
  if (c >= 0) close(c);
done:
  if (a >= 0) close(a);
  if (b >= 0) close(b);
}

static void check_limit_log(const char *log, double elapsed) {
  static const char *const want[] = {"warn http ", "refused=connection_limit",
                                     " limit=2 ", NULL};
  static const char *const first[] = {"refused=connection_limit open=2 "
                                      "limit=2 suppressed=0", NULL};
  unsigned long suppressed;
  int lines = log_lines(log, want, &suppressed);

  CHECK(log_lines(log, first, &suppressed) == 1);
  lines = log_lines(log, want, &suppressed);
  /* Every refusal has a line or is counted in one... */
  CHECK(lines + suppressed >= LIMIT_EXTRA);
  /* ...and there is at most one line a second (plus the last counts). */
  if (lines > (int)elapsed + 3)
    FAILF("%d refusal lines in %.2f s", lines, elapsed);
}

static void http_connection_limit_refuses_with_503(void) {
  harness h;
  capture cp;
  char *log;

  harness_init(&h);
  h.opts.max_connections = 2;
  h.mode = ANSWER_ON_KICK;
  capture_begin(&cp);
  harness_must_run(&h, limit_client);
  log = capture_end(&cp);
  CHECK(h.codes[0] == 200 && h.codes[1] == 200);
  CHECK(h.rd.n == 1 && h.rd.status[0] == 503);
  CHECK_STR(rd_body(&h, 0),
            "{\"error\":\"too many connections, try again later\"}");
  CHECK(strstr(hk_buf_cstr(&h.rd.raw), "\r\nConnection: close\r\n") != NULL);
  CHECK(h.closed);
  CHECK(h.codes[4] == LIMIT_EXTRA);
  CHECK(h.codes[2] == 200 && h.codes[3] == 200);
  CHECK(h.seen[0].open == 1);
  CHECK(h.codes[5] == 200);
  CHECK(h.seen[1].refused == LIMIT_EXTRA);
  CHECK(h.seen[1].evicted == 0);
  CHECK(strstr(log, "evicted=") == NULL);
  check_limit_log(log, h.elapsed);
  free(log);
  harness_free(&h);
}

#define SILENT_N 20 /* connections that never send, at a limit of as many */
#define REAL_N 2    /* clients served after them */

/* Fills the server with silent connections, each counted before the next
 * so that they are idle in the order opened. Returns 0 or -1. */
static int open_silent(harness *h, int *fds, int n) {
  for (int i = 0; i < n; i++) {
    fds[i] = tcp_connect(h->port);
    if (fds[i] < 0 || wait_conns(h, (unsigned)i + 1, (unsigned)i + 1) != 0)
      return -1;
  }
  return 0;
}

/* SILENT_N silent connections at a limit of SILENT_N, then real clients:
 * each is served at once, and the silent one idle longest made way. */
static void silent_flood_client(harness *h) {
  int silent[SILENT_N], real[REAL_N];
  double t0 = now_sec();

  for (int i = 0; i < SILENT_N; i++) silent[i] = -1;
  for (int i = 0; i < REAL_N; i++) real[i] = -1;
  if (open_silent(h, silent, SILENT_N) != 0) goto done;
  t0 = now_sec();
  for (int i = 0; i < REAL_N; i++) {
    real[i] = tcp_connect(h->port);
    if (real[i] >= 0) h->codes[i] = fd_exchange(real[i], get_kept);
    h->codes[REAL_N + i] = closed_within(silent[i], 2000);
  }
  h->elapsed = now_sec() - t0;
  for (int i = REAL_N; i < SILENT_N; i++)
    h->codes[2 * REAL_N] += closed_within(silent[i], 0);
  probe(h, &h->seen[0]);
done:
  for (int i = 0; i < SILENT_N; i++)
    if (silent[i] >= 0) close(silent[i]);
  for (int i = 0; i < REAL_N; i++)
    if (real[i] >= 0) close(real[i]);
}

static void check_evict_log(const char *log) {
  static const char *const want[] = {"info http ", "evicted=idle", NULL};
  static const char *const first[] = {"info http ", "evicted=idle open=20 "
                                      "limit=20 suppressed=0", NULL};
  unsigned long suppressed;
  int lines;

  CHECK(log_lines(log, first, &suppressed) == 1);
  lines = log_lines(log, want, &suppressed);
  /* Both evictions are logged, the second held back and counted. */
  CHECK(lines == 2 && suppressed == 1);
}

static void http_silent_connections_make_way_at_the_limit(void) {
  harness h;
  capture cp;
  char *log;

  harness_init(&h);
  h.opts.max_connections = SILENT_N;
  capture_begin(&cp);
  harness_must_run(&h, silent_flood_client);
  log = capture_end(&cp);
  CHECK(h.codes[0] == 200 && h.codes[1] == 200);
  /* The first two silent ones, in order; the others are still open. */
  CHECK(h.codes[2] == 1 && h.codes[3] == 1);
  CHECK(h.codes[4] == 0);
  /* Served at once, not after some timeout. */
  if (h.elapsed > 3.0) FAILF("real clients took %.2f s", h.elapsed);
  CHECK(h.seen[0].open == SILENT_N);
  CHECK(h.seen[0].evicted == REAL_N);
  CHECK(h.seen[0].refused == 0);
  check_evict_log(log);
  free(log);
  harness_free(&h);
}

/* A silent connection, one that sends only a blank line (which begins no
 * request), one that has been served, and one whose head has begun. The
 * first two are closed without an answer once the first-byte wait is
 * over; the other two are served after it. */
static void first_byte_client(harness *h) {
  int s = tcp_connect(h->port), q = tcp_connect(h->port);
  int k = tcp_connect(h->port), p = tcp_connect(h->port);
  double t0 = now_sec();

  if (s < 0 || q < 0 || k < 0 || p < 0) goto done;
  h->codes[0] = fd_exchange(k, get_kept);
  if (send_str(p, "GET /p HTTP/1.1\r\n") != 0) goto done;
  if (send_str(q, "\r\n") != 0) goto done;
  h->codes[1] = closed_within(s, 5000);
  h->elapsed = now_sec() - t0;
  h->codes[2] = closed_within(q, 1000);
  h->codes[3] = fd_exchange(k, get_kept);
  h->codes[4] = fd_exchange(p, "Host: t\r\n\r\n");
done:
  if (s >= 0) close(s);
  if (q >= 0) close(q);
  if (k >= 0) close(k);
  if (p >= 0) close(p);
}

static void http_silent_connection_closed_after_first_byte_wait(void) {
  harness h;

  harness_init(&h);
  h.opts.first_byte_timeout_ms = 300;
  h.opts.head_timeout_ms = 3000;
  harness_must_run(&h, first_byte_client);
  CHECK(h.codes[0] == 200);
  CHECK(h.codes[1] == 1 && h.codes[2] == 1);
  if (h.elapsed < 0.25 || h.elapsed > 2.0)
    FAILF("silent connection closed after %.2f s, want 0.3", h.elapsed);
  CHECK(h.codes[3] == 200 && h.codes[4] == 200);
  CHECK_STR(h.path, "/p");
  harness_free(&h);
}

static void silent_client(harness *h) {
  int s = tcp_connect(h->port);
  double t0 = now_sec();

  if (s < 0) return;
  h->codes[0] = closed_within(s, 5000);
  h->elapsed = now_sec() - t0;
  close(s);
}

/* Left at its default, the wait is no longer than the head's. */
static void http_first_byte_wait_capped_by_head_timeout(void) {
  harness h;

  harness_init(&h);
  h.opts.head_timeout_ms = 200;
  harness_must_run(&h, silent_client);
  CHECK(h.codes[0] == 1);
  if (h.elapsed > 2.0)
    FAILF("silent connection closed after %.2f s, want 0.2", h.elapsed);
  harness_free(&h);
}

/* max_connections 4: two connections busy with bodies still arriving,
 * opened first and quiet since, then two keep-alive ones between
 * requests, k1 served last. New busy clients take the keep-alive ones'
 * places, the one idle longest (k2) first, and never a busy one's; with
 * all four busy the next is refused, and the busy ones are all served in
 * the end. */
static void evict_order_client(harness *h) {
  int b1 = open_busy(h), b2 = open_busy(h), k1 = tcp_connect(h->port);
  int k2 = tcp_connect(h->port), n1 = -1, n2 = -1, n3 = -1;
  int *fds[] = {&b1, &b2, &k1, &k2, &n1, &n2, &n3};

  if (b1 < 0 || b2 < 0 || k1 < 0 || k2 < 0) goto done;
  h->codes[0] = fd_exchange(k1, get_kept);
  h->codes[1] = fd_exchange(k2, get_kept);
  /* k1 is idle again after k2 now, though it went idle first before. */
  h->codes[10] = fd_exchange(k1, get_kept);
  if (wait_conns(h, 4, 2) != 0 || (n1 = open_busy(h)) < 0) goto done;
  if (wait_conns(h, 4, 1) != 0) goto done;
  h->codes[2] = closed_within(k2, 2000);
  h->codes[3] = closed_within(k1, 0);
  if ((n2 = open_busy(h)) < 0 || wait_conns(h, 4, 0) != 0) goto done;
  h->codes[4] = closed_within(k1, 2000);
  if ((n3 = tcp_connect(h->port)) < 0) goto done;
  h->codes[5] = fd_read_status(n3);
  h->codes[6] = fd_exchange(b1, "cd");
  h->codes[7] = fd_exchange(b2, "cd");
  h->codes[8] = fd_exchange(n1, "cd");
  h->codes[9] = fd_exchange(n2, "cd");
  probe(h, &h->seen[0]);
done:
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    if (*fds[i] >= 0) close(*fds[i]);
}

static void http_keepalive_makes_way_before_busy(void) {
  harness h;

  harness_init(&h);
  h.opts.max_connections = 4;
  harness_must_run(&h, evict_order_client);
  CHECK(h.codes[0] == 200 && h.codes[1] == 200 && h.codes[10] == 200);
  CHECK(h.codes[2] == 1); /* k2 made way for n1 */
  CHECK(h.codes[3] == 0); /* while k1, idle for less time, stayed */
  CHECK(h.codes[4] == 1); /* k1 made way for n2 */
  CHECK(h.codes[5] == 503);
  for (int i = 6; i <= 9; i++)
    if (h.codes[i] != 200) FAILF("busy client %d got %d", i - 6, h.codes[i]);
  CHECK(h.seen[0].evicted == 2);
  CHECK(h.seen[0].refused == 1);
  harness_free(&h);
}

/* max_connections 2: k is between requests, t asks for /stall, which
 * blocks the loop. Meanwhile a new client n connects, then k sends its
 * next request: the loop finds n first, with k's request still unread in
 * the kernel. k, though idle longer, must not make way for n (its request
 * would be lost to a reset); t, idle once answered, does. */
static void unread_request_client(harness *h) {
  static const char get_stall[] = "GET /stall HTTP/1.1\r\nHost: t\r\n\r\n";
  struct timespec settle = {0, 20 * 1000000L};
  int k = tcp_connect(h->port), t = tcp_connect(h->port), n = -1;

  if (k < 0 || t < 0) goto done;
  h->codes[0] = fd_exchange(k, get_kept);
  if (wait_conns(h, 2, 2) != 0 || send_str(t, get_stall) != 0) goto done;
  if (wait_for(&h->calls, 2) != 0 || (n = tcp_connect(h->port)) < 0)
    goto done;
  nanosleep(&settle, NULL); /* so that n is queued before k's request */
  if (send_str(k, get_kept) != 0) goto done;
  h->codes[1] = fd_read_status(k);
  h->codes[2] = fd_read_status(t);
  h->codes[3] = closed_within(t, 2000);
  h->codes[4] = fd_exchange(n, get_kept);
  probe(h, &h->seen[0]);
done:
  if (k >= 0) close(k);
  if (t >= 0) close(t);
  if (n >= 0) close(n);
}

static void http_idle_with_unread_request_is_not_evicted(void) {
  harness h;

  harness_init(&h);
  h.opts.max_connections = 2;
  harness_must_run(&h, unread_request_client);
  CHECK(h.codes[0] == 200);
  CHECK(h.codes[1] == 200); /* k's request was read and answered */
  CHECK(h.codes[2] == 200 && h.codes[3] == 1); /* t made way */
  CHECK(h.codes[4] == 200);
  CHECK(h.seen[0].evicted == 1 && h.seen[0].refused == 0);
  harness_free(&h);
}

#define PIPE_N 400              /* requests sent at once, answers unread */
#define PIPE_MAX_UNSENT 65536   /* the server's limit in that test */

static int is_paused(const hk_http_server_stats *st) { return st->paused > 0; }

/* Sends PIPE_N requests for big answers and reads none until the server
 * stopped reading; then reads them all. */
static void unread_pipeline_client(harness *h) {
  hk_buf reqs = HK_BUF_INIT;
  int fd = tcp_connect_with(h->port, 16384);

  if (fd < 0) return;
  for (int i = 0; i < PIPE_N; i++)
    hk_buf_printf(&reqs, "GET /big/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
  if (send_all(fd, reqs.data, reqs.len) != 0) goto done;
  if (wait_stats(h, is_paused, &h->seen[0]) != 0) goto done;
  h->calls_seen = atomic_load(&h->calls);
  read_responses(fd, &h->rd, PIPE_N);
  probe(h, &h->seen[1]);
done:
  hk_buf_free(&reqs);
  close(fd);
}

static void http_unread_pipelined_answers_stay_bounded(void) {
  /* Output over the limit when the server stopped: at most one answer. */
  size_t bound = PIPE_MAX_UNSENT + BIG_ANSWER + 512;
  harness h;

  harness_init(&h);
  h.opts.max_unsent_bytes = PIPE_MAX_UNSENT;
  harness_must_run(&h, unread_pipeline_client);
  CHECK(h.seen[0].paused == 1);
  CHECK(h.seen[0].unsent > PIPE_MAX_UNSENT);
  CHECK(h.seen[0].unsent <= bound);
  CHECK(h.seen[0].buffered_in <= 65536);
  CHECK(h.calls_seen > 0 && h.calls_seen < PIPE_N);
  /* Once read, every answer came, in order, and the server reads again. */
  CHECK(h.rd.n == PIPE_N);
  CHECK(atomic_load(&h.calls) == PIPE_N);
  CHECK(strncmp(rd_body(&h, 3), "answer:/big/3;xxx", 17) == 0);
  CHECK(h.seen[1].paused == 0);
  if (h.seen[1].peak_unsent > bound)
    FAILF("peak unsent %zu > %zu", h.seen[1].peak_unsent, bound);
  harness_free(&h);
}

/* Sends a head at once, then the body a byte at a time until an answer
 * (or the close) shows up. */
static void trickle_client(harness *h) {
  static const char head[] =
      "POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n";
  int fd = tcp_connect(h->port);
  struct pollfd pfd;

  if (fd < 0) return;
  pfd.fd = fd;
  pfd.events = POLLIN;
  if (send_str(fd, head) != 0) goto done;
  for (int i = 0; i < 99; i++) {
    if (send_all(fd, "x", 1) != 0) break;
    h->codes[0]++;
    if (poll(&pfd, 1, 20) != 0) break;
  }
  if (read_responses(fd, &h->rd, 1) == 0) h->closed = server_closed(fd);
done:
  close(fd);
}

static void http_trickled_body_gets_408(void) {
  harness h;

  harness_init(&h);
  h.opts.request_timeout_ms = 300;
  harness_must_run(&h, trickle_client);
  CHECK(h.codes[0] >= 1);
  CHECK(h.rd.n == 1 && h.rd.status[0] == 408);
  CHECK_STR(rd_body(&h, 0),
            "{\"error\":\"request body did not arrive in time\"}");
  CHECK(h.closed);
  CHECK(atomic_load(&h.calls) == 0);
  harness_free(&h);
}

#define FILL_MAX 4096
#define FD_LIMIT 256 /* the soft RLIMIT_NOFILE during the test */

/* Uses up every descriptor but one, connects with that one, and expects
 * the server to shed the connection; then frees them and expects to be
 * served. */
static void fd_exhaustion_client(harness *h) {
  static int fill[FILL_MAX];
  int n = 0, fd;

  while (n < FILL_MAX && (fd = open("/dev/null", O_RDONLY)) >= 0)
    fill[n++] = fd;
  h->filled = n;
  h->fill_errno = errno;
  if (n == 0 || n == FILL_MAX) goto done;
  close(fill[--n]);
  fd = tcp_connect(h->port);
  if (fd >= 0) {
    if (read_responses(fd, &h->rd, 1) == 0) h->closed = server_closed(fd);
    close(fd);
  }
  probe(h, &h->seen[0]);
  while (n > 0) close(fill[--n]);
  fd = tcp_connect(h->port);
  if (fd >= 0) {
    h->codes[0] = fd_exchange(fd, get_kept);
    close(fd);
  }
  probe(h, &h->seen[1]);
done:
  while (n > 0) close(fill[--n]);
}

static int under_valgrind(void) {
  const char *pre = getenv("LD_PRELOAD");

  return pre != NULL && strstr(pre, "vgpreload") != NULL;
}

static void check_fd_log(const char *log) {
  static const char *const want[] = {"error http ", "refused=accept_failed",
                                     "reason=\"too many open files\"", NULL};
  unsigned long suppressed;

  CHECK(log_lines(log, want, &suppressed) == 1);
  CHECK(suppressed == 0);
}

static void http_out_of_descriptors_sheds_and_recovers(void) {
  struct rlimit saved, low;
  harness h;
  capture cp;
  char *log;

  harness_init(&h);
  capture_begin(&cp);
  getrlimit(RLIMIT_NOFILE, &saved);
  low = saved;
  low.rlim_cur = FD_LIMIT;
  CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
  harness_must_run(&h, fd_exhaustion_client);
  setrlimit(RLIMIT_NOFILE, &saved);
  log = capture_end(&cp);
  CHECK(h.filled > 0 && h.filled < FILL_MAX && h.fill_errno == EMFILE);
  /* One failed accept, dealt with at once: the loop did not spin on it. */
  CHECK(h.seen[0].accept_errors == 1 && h.seen[1].accept_errors == 1);
  CHECK(h.seen[0].open == 0);
  if (under_valgrind()) {
    /* Valgrind enforces the limit itself, after the kernel accepted: the
     * connection is closed before the server sees it, nothing to shed. */
    fprintf(stderr, "note: under valgrind, the 503 of a shed connection "
                    "is not checked\n");
  } else {
    CHECK(h.rd.n == 1 && h.rd.status[0] == 503);
    CHECK_STR(rd_body(&h, 0), "{\"error\":\"server out of file descriptors, "
                              "try again later\"}");
    CHECK(h.closed);
    CHECK(h.seen[0].shed == 1 && h.seen[1].shed == 1);
  }
  CHECK(h.codes[0] == 200);
  check_fd_log(log);
  free(log);
  harness_free(&h);
}

/* ---- tests: listening --------------------------------------------------- */

static void http_listen_port_in_use_is_reported(void) {
  uv_loop_t loop;
  hk_http_server *a, *b;
  char addr[64], err[256] = "", want[128];

  uv_loop_init(&loop);
  a = hk_http_server_start(&loop, "127.0.0.1:0", NULL, test_handler, NULL,
                           err, sizeof err);
  CHECK(a != NULL);
  if (a != NULL) {
    snprintf(addr, sizeof addr, "127.0.0.1:%d", hk_http_server_port(a));
    b = hk_http_server_start(&loop, addr, NULL, test_handler, NULL, err,
                             sizeof err);
    CHECK(b == NULL);
    snprintf(want, sizeof want, "listen %s: address already in use", addr);
    CHECK_STR(err, want);
    hk_http_server_close(a);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

static void http_listen_bad_address_is_reported(void) {
  static const char *const bad[] = {"nonsense", "1.2.3.4", "127.0.0.1:99999",
                                    "::1:80", "[::1]", "127.0.0.1:8x",
                                    "999.0.0.1:80"};
  uv_loop_t loop;
  char err[256], want[128];

  uv_loop_init(&loop);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CHECK(hk_http_server_start(&loop, bad[i], NULL, test_handler, NULL, err,
                               sizeof err) == NULL);
    snprintf(want, sizeof want, "listen %s: invalid address", bad[i]);
    if (strncmp(err, want, strlen(want)) != 0)
      FAILF("err \"%s\" for %s", err, bad[i]);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

static void http_listen_bare_port_means_loopback(void) {
  harness h;

  harness_init(&h);
  h.addr = ":0";
  harness_must_run(&h, get_plain_client);
  CHECK(h.port > 0);
  CHECK(h.status[0] == 200);
  harness_free(&h);
}

static void http_listen_ipv6_loopback(void) {
  harness h;
  char err[256];

  harness_init(&h);
  h.addr = "[::1]:0";
  h.host = "[::1]";
  if (harness_run(&h, get_plain_client, err, sizeof err) != 0) {
    fprintf(stderr, "note: IPv6 loopback unavailable, skipped (%s)\n", err);
  } else {
    CHECK(h.status[0] == 200);
    CHECK_STR(h.path, "/");
  }
  harness_free(&h);
}

static void two_servers_client(harness *h) {
  char url[128];
  CURL *e = curl_easy_init();

  snprintf(url, sizeof url, "http://127.0.0.1:%d/s1", h->port);
  h->status[0] = curl_run(e, url, NULL, NULL, 0, &h->resp[0]);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/s2", h->port2);
  h->status[1] = curl_run(e, url, NULL, NULL, 0, &h->resp[1]);
  curl_easy_cleanup(e);
}

static void start_second(harness *h) {
  char err[256];

  h->srv2 = hk_http_server_start(&h->loop, "127.0.0.1:0", NULL,
                                 second_handler, NULL, err, sizeof err);
  CHECK(h->srv2 != NULL);
  h->port2 = h->srv2 ? hk_http_server_port(h->srv2) : 0;
}

static void http_two_servers_share_a_loop(void) {
  harness h;
  char err[256];

  harness_init(&h);
  uv_loop_init(&h.loop);
  h.srv = hk_http_server_start(&h.loop, h.addr, &h.opts, test_handler, &h,
                               err, sizeof err);
  CHECK(h.srv != NULL);
  if (h.srv != NULL) {
    h.port = hk_http_server_port(h.srv);
    start_second(&h);
    harness_handles_init(&h);
    h.client = two_servers_client;
    uv_thread_create(&h.thread, client_main, &h);
    uv_run(&h.loop, UV_RUN_DEFAULT);
    uv_thread_join(&h.thread);
  }
  CHECK(uv_loop_close(&h.loop) == 0);
  CHECK(h.port != h.port2);
  CHECK_STR(hk_buf_cstr(&h.resp[0]), "answer:/s1");
  CHECK_STR(hk_buf_cstr(&h.resp[1]), "second");
  harness_free(&h);
}

int main(int argc, char **argv) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  RUN(http_get_parses_path_query_and_headers);
  RUN(http_missing_headers_are_null);
  RUN(http_respond_writes_status_and_headers);
  RUN(http_post_body_arrives);
  RUN(http_post_1mib_body_arrives_intact);
  RUN(http_chunked_body_is_joined);
  RUN(http_expect_continue_gets_100_before_body);
  RUN(http_keepalive_reuses_connection);
  RUN(http_pipelined_requests_answered_in_order);
  RUN(http_pipelined_sync_answers_in_order);
  RUN(http_pipelined_large_bodies_arrive_intact);
  RUN(http_connection_close_is_honoured);
  RUN(http_answers_end_their_connection_once_draining);
  RUN(http_transfer_codings_but_chunked_get_501);
  RUN(http10_closes_after_answer);
  RUN(http_oversized_content_length_gets_413);
  RUN(http_slow_request_head_gets_408);
  RUN(http_oversized_chunked_body_gets_413);
  RUN(http_huge_chunk_gets_413_before_its_bytes);
  RUN(http_overflowing_chunk_size_gets_400_naming_it);
  RUN(http_oversized_headers_get_431);
  RUN(http_malformed_request_gets_400);
  RUN(http_bad_percent_escape_gets_400);
  RUN(http_encoded_slash_gets_400);
  RUN(http_async_answer_from_timer);
  RUN(http_client_gone_before_async_answer);
  RUN(http_close_with_pending_request_orphans_it);
  RUN(http_head_is_get_without_body_with_head_as_get);
  RUN(http_head_method_is_shown_by_default);
  RUN(http_connection_limit_refuses_with_503);
  RUN(http_silent_connections_make_way_at_the_limit);
  RUN(http_silent_connection_closed_after_first_byte_wait);
  RUN(http_first_byte_wait_capped_by_head_timeout);
  RUN(http_keepalive_makes_way_before_busy);
  RUN(http_idle_with_unread_request_is_not_evicted);
  RUN(http_unread_pipelined_answers_stay_bounded);
  RUN(http_trickled_body_gets_408);
  RUN(http_out_of_descriptors_sheds_and_recovers);
  RUN(http_listen_port_in_use_is_reported);
  RUN(http_listen_bad_address_is_reported);
  RUN(http_listen_bare_port_means_loopback);
  RUN(http_listen_ipv6_loopback);
  RUN(http_two_servers_share_a_loop);
  curl_global_cleanup();
  return test_finish("test_http_server");
}
