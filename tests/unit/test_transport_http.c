/* Tests the HTTP batch transport (core/transport/http.c) against the scripted
 * loopback sink tests/sink/sink.py, started here as a child process. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "test_util.h"
#include "transport/http.h"

/* ---- the sink child process ------------------------------------------ */

typedef struct sink {
  pid_t pid;
  int port;
} sink;

static sink main_sink;

/* Reads the "READY <port>" line within 10 s. Returns the port or -1. */
static int sink_read_ready(int fd) {
  char line[64];
  size_t len = 0;
  struct pollfd p = {fd, POLLIN, 0};
  int port = -1;

  while (len < sizeof line - 1 && poll(&p, 1, 10000) == 1) {
    ssize_t n = read(fd, line + len, 1);
    if (n <= 0 || line[len] == '\n') break;
    len++;
  }
  line[len] = '\0';
  if (sscanf(line, "READY %d", &port) != 1) return -1;
  return port;
}

/* Starts the sink with one optional extra option pair. Returns 0 or -1. */
static int sink_start(sink *s, const char *opt, const char *val) {
  char path[1100];
  int fds[2];

  test_path(path, sizeof path, "sink/sink.py");
  if (pipe(fds) != 0) return -1;
  s->pid = fork();
  if (s->pid < 0) return -1;
  if (s->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execlp("python3", "python3", path, "--quiet", opt, val, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  s->port = sink_read_ready(fds[0]);
  close(fds[0]);
  if (s->port > 0) return 0;
  fprintf(stderr, "cannot start the sink %s\n", path);
  return -1;
}

static void sink_stop(sink *s) {
  if (s->pid <= 0) return;
  kill(s->pid, SIGTERM);
  waitpid(s->pid, NULL, 0);
  s->pid = 0;
}

/* ---- blocking control calls to the sink --------------------------------- */

static size_t ctl_write_cb(char *p, size_t size, size_t n, void *ud) {
  return hk_buf_append(ud, p, size * n) == 0 ? size * n : 0;
}

/* GET (body NULL) or POST to the sink's control API. Returns the response
 * body (caller frees) or NULL. */
static char *ctl_call(int port, const char *path, const char *body) {
  CURL *e = curl_easy_init();
  hk_buf out = HK_BUF_INIT;
  char url[512];
  CURLcode rc;

  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ctl_write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
  if (body != NULL) curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
  rc = curl_easy_perform(e);
  curl_easy_cleanup(e);
  if (rc != CURLE_OK) {
    hk_buf_free(&out);
    return NULL;
  }
  hk_buf_cstr(&out);
  return hk_buf_steal(&out, NULL);
}

/* Appends scripted responses (a JSON array body) for path. */
static int sink_script(int port, const char *path, const char *responses) {
  char body[2048];
  char *r;

  snprintf(body, sizeof body, "{\"path\":\"%s\",\"responses\":%s}", path,
           responses);
  r = ctl_call(port, "/_sink/script", body);
  free(r);
  return r ? 0 : -1;
}

static char *sink_requests(int port, const char *path) {
  char q[256];

  snprintf(q, sizeof q, "/_sink/requests?path=%s", path);
  return ctl_call(port, q, NULL);
}

/* Collects the integers that follow key in json; returns how many. */
static int json_ints(const char *json, const char *key, long *out, int max) {
  int n = 0;

  while (json && n < max && (json = strstr(json, key)) != NULL) {
    json += strlen(key);
    out[n++] = strtol(json, NULL, 10);
  }
  return n;
}

/* ---- the loop fixture --------------------------------------------------- */

typedef struct outcome {
  int done;
  int seq; /* completion order across the test */
  hk_tx_result res;
} outcome;

typedef struct fixture {
  uv_loop_t loop;
  uv_timer_t tick; /* wakes the loop so deadlines are checked */
  hk_http_client *c;
  hk_http_target *t;
  int seq;
} fixture;

static fixture *current;

static void done_cb(void *ctx, const hk_tx_result *res) {
  outcome *o = ctx;

  o->done++;
  o->res = *res;
  o->seq = ++current->seq;
}

static void tick_cb(uv_timer_t *t) {}

static int fx_init(fixture *f) {
  memset(f, 0, sizeof *f);
  current = f;
  if (uv_loop_init(&f->loop) != 0) return -1;
  uv_timer_init(&f->loop, &f->tick);
  f->c = hk_http_client_create(&f->loop);
  return f->c ? 0 : -1;
}

/* Runs the loop until every outcome is done or max_sec passed. Returns 1
 * when all are done. */
static int fx_wait(fixture *f, outcome *o, int n, double max_sec) {
  uint64_t deadline;
  int all = 0;

  uv_update_time(&f->loop);
  deadline = uv_now(&f->loop) + (uint64_t)(max_sec * 1000);
  uv_timer_start(&f->tick, tick_cb, 20, 20);
  while (!all && uv_now(&f->loop) < deadline) {
    uv_run(&f->loop, UV_RUN_ONCE);
    all = 1;
    for (int i = 0; i < n; i++) all &= o[i].done > 0;
  }
  uv_timer_stop(&f->tick);
  return all;
}

/* Destroys the client and target; returns 0 when every handle closed. */
static int fx_close(fixture *f) {
  hk_http_target_destroy(f->t);
  hk_http_client_destroy(f->c);
  uv_close((uv_handle_t *)&f->tick, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  return uv_loop_close(&f->loop);
}

/* Creates f->t for the sink path with settings s (url filled here). */
static int fx_target(fixture *f, int port, const char *path,
                     hk_http_settings *s) {
  hk_http_settings dflt;
  char url[256], err[256];

  if (s == NULL) {
    memset(&dflt, 0, sizeof dflt);
    s = &dflt;
  }
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  s->url = url;
  f->t = hk_http_target_create(s, err, sizeof err);
  if (f->t == NULL) fprintf(stderr, "target: %s\n", err);
  return f->t ? 0 : -1;
}

/* Posts body and checks the callback did not run inside the call. */
static int fx_post(fixture *f, const char *body, outcome *o) {
  if (hk_http_post(f->c, f->t, body, strlen(body), done_cb, o) != 0)
    return -1;
  return o->done == 0 ? 0 : -1;
}

/* One request to path (after scripting responses, when not NULL). */
static int fx_roundtrip(fixture *f, const char *path,
                        const char *responses, hk_http_settings *s,
                        outcome *o) {
  if (fx_init(f) != 0) return -1;
  if (responses && sink_script(main_sink.port, path, responses) != 0)
    return -1;
  if (fx_target(f, main_sink.port, path, s) != 0) return -1;
  if (fx_post(f, "[{\"event_type\":\"click\"}]", o) != 0) return -1;
  return fx_wait(f, o, 1, 10) ? 0 : -1;
}

/* ---- classification ----------------------------------------------------- */

static void http_200_is_ok(void) {
  fixture f;
  outcome o = {0};

  REQUIRE(fx_roundtrip(&f, "/ok", NULL, NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_OK);
  REQUIRE(o.res.http_status == 200);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_regex_match_is_ok(void) {
  fixture f;
  outcome o = {0};
  hk_http_settings s = {0};

  s.success_regex = "\"accepted\": *[1-9]";
  REQUIRE(fx_roundtrip(&f, "/re-ok",
                       "[{\"body\":\"{\\\"accepted\\\": 3}\"}]", &s, &o) == 0);
  REQUIRE(o.res.status == HK_TX_OK);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_regex_mismatch_fails(void) {
  fixture f;
  outcome o = {0};
  hk_http_settings s = {0};

  s.success_regex = "\"accepted\": *[1-9]";
  REQUIRE(fx_roundtrip(&f, "/re-bad",
                       "[{\"body\":\"{\\\"accepted\\\": 0}\"}]", &s, &o) == 0);
  REQUIRE(o.res.status == HK_TX_FAIL);
  REQUIRE(o.res.http_status == 200);
  REQUIRE(strstr(o.res.reason, "status=200 body did not match success_regex "
                               "body=\"{\\\"accepted\\\": 0}\"") != NULL);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_503_retries_with_snippet(void) {
  fixture f;
  outcome o = {0};

  REQUIRE(fx_roundtrip(&f, "/503", "[{\"status\":503,\"body\":\"busy\\nnow\"}]",
                       NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_RETRY);
  REQUIRE(o.res.http_status == 503);
  REQUIRE(strcmp(o.res.reason, "status=503 body=\"busy now\"") == 0);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_429_reports_retry_after(void) {
  fixture f;
  outcome o = {0};

  REQUIRE(fx_roundtrip(&f, "/429",
                       "[{\"status\":429,\"headers\":{\"Retry-After\":\"7\"}}]",
                       NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_RETRY);
  REQUIRE(o.res.http_status == 429);
  REQUIRE(o.res.retry_after_sec == 7);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_retry_after_date_becomes_delay(void) {
  fixture f;
  outcome o = {0};
  char date[64], script[256];
  time_t when = time(NULL) + 60;
  struct tm tm;

  gmtime_r(&when, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  snprintf(script, sizeof script,
           "[{\"status\":503,\"headers\":{\"Retry-After\":\"%s\"}}]", date);
  REQUIRE(fx_roundtrip(&f, "/503-date", script, NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_RETRY);
  REQUIRE(o.res.retry_after_sec > 55 && o.res.retry_after_sec <= 60);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_408_retries(void) {
  fixture f;
  outcome o = {0};

  REQUIRE(fx_roundtrip(&f, "/408", "[{\"status\":408}]", NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_RETRY);
  REQUIRE(o.res.http_status == 408);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_400_fails(void) {
  fixture f;
  outcome o = {0};

  REQUIRE(fx_roundtrip(&f, "/400", "[{\"status\":400,\"body\":\"bad field\"}]",
                       NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_FAIL);
  REQUIRE(o.res.too_large == 0);
  REQUIRE(strstr(o.res.reason, "status=400") != NULL);
  REQUIRE(strstr(o.res.reason, "bad field") != NULL);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_204_fails_by_default(void) {
  fixture f;
  outcome o = {0};

  REQUIRE(fx_roundtrip(&f, "/204", "[{\"status\":204}]", NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_FAIL);
  REQUIRE(o.res.http_status == 204);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_204_ok_when_listed(void) {
  fixture f;
  outcome o = {0};
  static const long ok[] = {200, 204};
  hk_http_settings s = {0};

  s.success_statuses = ok;
  s.n_success_statuses = 2;
  REQUIRE(fx_roundtrip(&f, "/204-ok", "[{\"status\":204}]", &s, &o) == 0);
  REQUIRE(o.res.status == HK_TX_OK);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_302_fails_and_is_not_followed(void) {
  fixture f;
  outcome o = {0};
  char script[256], *reqs = NULL;

  snprintf(script, sizeof script,
           "[{\"status\":302,\"headers\":{\"Location\":"
           "\"http://127.0.0.1:%d/302-target\"}}]",
           main_sink.port);
  REQUIRE(fx_roundtrip(&f, "/302", script, NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_FAIL);
  REQUIRE(o.res.http_status == 302);
  reqs = sink_requests(main_sink.port, "/302-target");
  REQUIRE(reqs != NULL && strstr(reqs, "\"requests\": []") != NULL);
done:
  free(reqs);
  CHECK(fx_close(&f) == 0);
}

static void http_413_fails_too_large(void) {
  fixture f;
  outcome o = {0};

  REQUIRE(fx_roundtrip(&f, "/413", "[{\"status\":413}]", NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_FAIL);
  REQUIRE(o.res.too_large == 1);
done:
  CHECK(fx_close(&f) == 0);
}

/* ---- network failures ------------------------------------------------- */

/* A loopback port that was bound and released: nothing listens on it. */
static int closed_port(void) {
  struct sockaddr_in a = {0};
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

static void http_refused_retries(void) {
  fixture f;
  outcome o = {0};
  int port = closed_port();

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(port > 0);
  REQUIRE(fx_target(&f, port, "/x", NULL) == 0);
  REQUIRE(fx_post(&f, "[]", &o) == 0);
  REQUIRE(fx_wait(&f, &o, 1, 10));
  REQUIRE(o.res.status == HK_TX_RETRY);
  REQUIRE(o.res.http_status == 0);
  REQUIRE(strncmp(o.res.reason, "error=\"Couldn't connect to server", 33) == 0);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_timeout_retries(void) {
  fixture f;
  outcome o = {0};
  hk_http_settings s = {0};
  uint64_t t0;

  s.request_timeout_sec = 1;
  REQUIRE(fx_init(&f) == 0);
  REQUIRE(sink_script(main_sink.port, "/slow-timeout", "[{\"delay\":3}]") == 0);
  REQUIRE(fx_target(&f, main_sink.port, "/slow-timeout", &s) == 0);
  t0 = uv_hrtime();
  REQUIRE(fx_post(&f, "[]", &o) == 0);
  REQUIRE(fx_wait(&f, &o, 1, 10));
  REQUIRE(uv_hrtime() - t0 < 2500000000ULL);
  REQUIRE(o.res.status == HK_TX_RETRY);
  REQUIRE(strstr(o.res.reason, "Timeout") != NULL);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_dropped_connection_retries(void) {
  fixture f;
  outcome o = {0};

  REQUIRE(fx_roundtrip(&f, "/drop", "[{\"close\":true}]", NULL, &o) == 0);
  REQUIRE(o.res.status == HK_TX_RETRY);
  REQUIRE(o.res.http_status == 0);
  REQUIRE(strncmp(o.res.reason, "error=", 6) == 0);
done:
  CHECK(fx_close(&f) == 0);
}

/* ---- what arrives at the peer ------------------------------------------- */

#define BIG (2 * 1024 * 1024)

static char *big_body(void) {
  char *b = malloc(BIG + 1);

  if (b == NULL) return NULL;
  memset(b, 'x', BIG);
  memcpy(b, "[{\"pad\":\"", 9);
  memcpy(b + BIG - 3, "\"}]", 4);
  return b;
}

/* body as json.dumps writes it inside a string: quotes escaped. */
static char *json_escaped(const char *body) {
  hk_buf out = HK_BUF_INIT;

  for (; *body; body++) {
    if (*body == '"') hk_buf_putc(&out, '\\');
    hk_buf_putc(&out, *body);
  }
  hk_buf_cstr(&out);
  return hk_buf_steal(&out, NULL);
}

static void http_large_body_arrives_intact(void) {
  fixture f;
  outcome o = {0};
  char *body = big_body(), *esc = NULL, *reqs = NULL;
  long len = 0;

  REQUIRE(body != NULL && fx_init(&f) == 0);
  REQUIRE(fx_target(&f, main_sink.port, "/big", NULL) == 0);
  REQUIRE(fx_post(&f, body, &o) == 0);
  REQUIRE(fx_wait(&f, &o, 1, 20));
  REQUIRE(o.res.status == HK_TX_OK);
  reqs = sink_requests(main_sink.port, "/big");
  esc = json_escaped(body);
  REQUIRE(reqs != NULL && esc != NULL);
  REQUIRE(json_ints(reqs, "\"len\": ", &len, 1) == 1 && len == BIG);
  REQUIRE(strstr(reqs, esc) != NULL);
  REQUIRE(strstr(reqs, "\"Expect\"") == NULL);
  REQUIRE(strstr(reqs, "\"Content-Type\": \"application/json\"") != NULL);
done:
  free(body);
  free(esc);
  free(reqs);
  CHECK(fx_close(&f) == 0);
}

/* Sends one request with s and checks the recorded request holds want. */
static void check_header_arrives(const char *path, hk_http_settings *s,
                                 const char *want) {
  fixture f;
  outcome o = {0};
  char *reqs = NULL;

  REQUIRE(fx_roundtrip(&f, path, NULL, s, &o) == 0);
  REQUIRE(o.res.status == HK_TX_OK);
  reqs = sink_requests(main_sink.port, path);
  REQUIRE(reqs != NULL && strstr(reqs, want) != NULL);
done:
  free(reqs);
  CHECK(fx_close(&f) == 0);
}

static void http_bearer_token_is_sent(void) {
  hk_http_settings s = {0};

  s.bearer_token = "tok-123456";
  check_header_arrives("/bearer", &s,
                       "\"Authorization\": \"Bearer tok-123456\"");
}

static void http_basic_auth_is_sent(void) {
  hk_http_settings s = {0};

  s.basic_user = "alice";
  s.basic_password = "s3cret-pw";
  check_header_arrives("/basic", &s,
                       "\"Authorization\": \"Basic YWxpY2U6czNjcmV0LXB3\"");
}

static void http_custom_headers_are_sent(void) {
  static const char *const h[] = {"X-Hook: crm", "X-Tenant: 23"};
  hk_http_settings s = {0};

  s.headers = h;
  s.n_headers = 2;
  check_header_arrives("/custom", &s, "\"X-Tenant\": \"23\"");
  check_header_arrives("/custom2", &s, "\"X-Hook\": \"crm\"");
}

static void http_reason_hides_credentials(void) {
  fixture f;
  outcome o = {0};
  hk_http_settings s = {0};

  s.bearer_token = "tok-123456";
  s.basic_user = "alice";
  s.basic_password = "s3cret-pw";
  REQUIRE(fx_roundtrip(&f, "/echo-secrets",
                       "[{\"status\":500,\"body\":\"tok-123456 s3cret-pw "
                       "YWxpY2U6czNjcmV0LXB3\"}]",
                       &s, &o) == 0);
  REQUIRE(o.res.status == HK_TX_RETRY);
  REQUIRE(strstr(o.res.reason, "tok-123456") == NULL);
  REQUIRE(strstr(o.res.reason, "s3cret-pw") == NULL);
  REQUIRE(strstr(o.res.reason, "YWxpY2U6czNjcmV0LXB3") == NULL);
  REQUIRE(strcmp(o.res.reason, "status=500 body=\"*** *** ***\"") == 0);
done:
  CHECK(fx_close(&f) == 0);
}

/* ---- connections -------------------------------------------------------- */

/* Two sequential requests to path on f's client; conns gets their sink
 * connection ids. Returns 0 when both succeeded. */
static int two_requests(fixture *f, sink *sk, const char *path,
                        long conns[2], int (*between)(sink *)) {
  outcome o[2] = {{0}, {0}};
  char *reqs;
  int n;

  if (fx_target(f, sk->port, path, NULL) != 0) return -1;
  if (fx_post(f, "[1]", &o[0]) != 0 || !fx_wait(f, &o[0], 1, 10)) return -1;
  if (between && between(sk) != 0) return -1;
  if (fx_post(f, "[2]", &o[1]) != 0 || !fx_wait(f, &o[1], 1, 10)) return -1;
  if (o[0].res.status != HK_TX_OK || o[1].res.status != HK_TX_OK) return -1;
  reqs = sink_requests(sk->port, path);
  n = json_ints(reqs, "\"conn\": ", conns, 2);
  free(reqs);
  return n == 2 ? 0 : -1;
}

static void http_keepalive_reuses_connection(void) {
  fixture f;
  long conns[2];

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(two_requests(&f, &main_sink, "/keepalive", conns, NULL) == 0);
  REQUIRE(conns[0] == conns[1]);
done:
  CHECK(fx_close(&f) == 0);
}

/* Waits (bounded) until the sink closed an idle keep-alive connection. */
static int wait_idle_closed(sink *sk) {
  for (int i = 0; i < 100; i++) {
    char *st = ctl_call(sk->port, "/_sink/stats", NULL);
    long n = 0;
    struct timespec ts = {0, 50 * 1000 * 1000};

    json_ints(st, "\"idle_closed\": ", &n, 1);
    free(st);
    if (n >= 1) return 0;
    nanosleep(&ts, NULL);
  }
  return -1;
}

static void http_stale_connection_succeeds(void) {
  fixture f;
  sink idle = {0, 0};
  long conns[2];

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(sink_start(&idle, "--idle-close", "0.2") == 0);
  REQUIRE(two_requests(&f, &idle, "/stale", conns, wait_idle_closed) == 0);
  REQUIRE(conns[0] != conns[1]);
done:
  sink_stop(&idle);
  CHECK(fx_close(&f) == 0);
}

static int script_drop(sink *sk) {
  return sink_script(sk->port, "/reused-drop", "[{\"close\":true}]");
}

/* The peer drops a reused connection without answering: the request is
 * sent again on a fresh connection instead of failing. */
static void http_reused_connection_drop_is_retried(void) {
  fixture f;
  long conns[2];
  long n = 0;
  char *st = NULL;

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(two_requests(&f, &main_sink, "/reused-drop", conns, script_drop) ==
          0);
  st = ctl_call(main_sink.port, "/_sink/stats", NULL);
  REQUIRE(json_ints(st ? strstr(st, "\"/reused-drop\"") : NULL,
                    "\"requests\": ", &n, 1) == 1);
  REQUIRE(n == 3);
done:
  free(st);
  CHECK(fx_close(&f) == 0);
}

static void http_slow_does_not_block_fast(void) {
  fixture f;
  hk_http_target *slow = NULL;
  outcome o[2] = {{0}, {0}};

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(sink_script(main_sink.port, "/slow", "[{\"delay\":2}]") == 0);
  REQUIRE(fx_target(&f, main_sink.port, "/slow", NULL) == 0);
  slow = f.t;
  REQUIRE(fx_post(&f, "[1]", &o[0]) == 0);
  REQUIRE(fx_target(&f, main_sink.port, "/fast", NULL) == 0);
  REQUIRE(fx_post(&f, "[2]", &o[1]) == 0);
  REQUIRE(fx_wait(&f, &o[1], 1, 1.5));
  REQUIRE(o[0].done == 0);
  REQUIRE(fx_wait(&f, o, 2, 10));
  REQUIRE(o[1].seq < o[0].seq);
  REQUIRE(o[0].res.status == HK_TX_OK && o[1].res.status == HK_TX_OK);
done:
  hk_http_target_destroy(slow);
  CHECK(fx_close(&f) == 0);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void http_destroy_cancels_in_flight(void) {
  fixture f;
  outcome o = {0};

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(sink_script(main_sink.port, "/hang", "[{\"delay\":5}]") == 0);
  REQUIRE(fx_target(&f, main_sink.port, "/hang", NULL) == 0);
  REQUIRE(fx_post(&f, "[]", &o) == 0);
  uv_run(&f.loop, UV_RUN_NOWAIT);
  hk_http_client_destroy(f.c);
  f.c = NULL;
  REQUIRE(o.done == 1);
  REQUIRE(o.res.status == HK_TX_RETRY);
  REQUIRE(strcmp(o.res.reason, "shutting down") == 0);
done:
  CHECK(fx_close(&f) == 0);
}

static void destroy_in_cb(void *ctx, const hk_tx_result *res) {
  fixture *f = ctx;

  hk_http_client_destroy(f->c);
  f->c = NULL;
  f->seq = res->status == HK_TX_OK ? 1 : -1;
}

static void http_destroy_inside_callback_is_safe(void) {
  fixture f;

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(fx_target(&f, main_sink.port, "/destroy-in-cb", NULL) == 0);
  REQUIRE(hk_http_post(f.c, f.t, "[]", 2, destroy_in_cb, &f) == 0);
  uv_run(&f.loop, UV_RUN_DEFAULT); /* returns once the client closed */
  REQUIRE(f.seq == 1 && f.c == NULL);
done:
  CHECK(fx_close(&f) == 0);
}

static void http_target_rejects_bad_settings(void) {
  hk_http_settings s = {0};
  char err[256];
  static const char *const bad_header[] = {"X-Bad: a\r\nX-Evil: b"};

  s.url = "ftp://127.0.0.1/x";
  REQUIRE(hk_http_target_create(&s, err, sizeof err) == NULL);
  REQUIRE(strstr(err, "scheme") != NULL);
  s.url = "not a url";
  REQUIRE(hk_http_target_create(&s, err, sizeof err) == NULL);
  s.url = "http://127.0.0.1/x";
  s.success_regex = "(unclosed";
  REQUIRE(hk_http_target_create(&s, err, sizeof err) == NULL);
  REQUIRE(strstr(err, "success_regex") != NULL);
  s.success_regex = NULL;
  s.headers = bad_header;
  s.n_headers = 1;
  REQUIRE(hk_http_target_create(&s, err, sizeof err) == NULL);
done:
  return;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (sink_start(&main_sink, NULL, NULL) != 0) return 1;
  http_200_is_ok();
  http_regex_match_is_ok();
  http_regex_mismatch_fails();
  http_503_retries_with_snippet();
  http_429_reports_retry_after();
  http_retry_after_date_becomes_delay();
  http_408_retries();
  http_400_fails();
  http_204_fails_by_default();
  http_204_ok_when_listed();
  http_302_fails_and_is_not_followed();
  http_413_fails_too_large();
  http_refused_retries();
  http_timeout_retries();
  http_dropped_connection_retries();
  http_large_body_arrives_intact();
  http_bearer_token_is_sent();
  http_basic_auth_is_sent();
  http_custom_headers_are_sent();
  http_reason_hides_credentials();
  http_keepalive_reuses_connection();
  http_stale_connection_succeeds();
  http_reused_connection_drop_is_retried();
  http_slow_does_not_block_fast();
  http_destroy_cancels_in_flight();
  http_destroy_inside_callback_is_safe();
  http_target_rejects_bad_settings();
  sink_stop(&main_sink);
  curl_global_cleanup();
  return test_finish("test_transport_http");
}
