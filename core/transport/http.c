/* HTTP JSON batch transport: one libcurl multi handle per client driven by
 * libuv (a uv_poll per socket curl watches, one uv_timer for curl's timeout),
 * request lifecycles, response capture and the OK/RETRY/FAIL contract. */
#include "transport/http.h"

#include <curl/curl.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "log.h"
#include "utf8.h"

#define HK_HTTP_BODY_CAP (64 * 1024) /* response bytes kept for the regex */
#define HK_HTTP_SNIPPET 200          /* response bytes quoted in reasons */
#define HK_HTTP_POOL_MAX 32          /* idle easy handles kept for reuse */
#define HK_HTTP_MAX_CONNECTS 128L    /* multi connection cache size */
#define HK_HTTP_CONNECT_MS 10000L
#define HK_HTTP_DEFAULT_TIMEOUT_MS 30000L
#define HK_HTTP_MAX_SECRETS 4
#define HK_HTTP_MIN_SECRET 4 /* shorter strings are not scrubbed */

struct hk_http_target {
  int refs;
  char *url;
  char *shown_url; /* url without its user information, for logs */
  struct curl_slist *headers; /* shared by all requests of the target */
  char *user;                 /* NULL: no basic auth */
  char *password;
  regex_t re;
  int has_re;
  long *statuses;
  size_t n_statuses;
  long timeout_ms;
  char *secrets[HK_HTTP_MAX_SECRETS]; /* scrubbed out of every reason */
  size_t n_secrets;
};

typedef struct hk_http_req hk_http_req;
struct hk_http_req {
  hk_http_client *c;
  hk_http_target *t; /* holds one reference */
  CURL *easy;
  const char *body; /* owned by the caller until cb runs */
  size_t len;
  hk_tx_done_cb cb;
  void *ctx;
  hk_buf resp;       /* first HK_HTTP_BODY_CAP bytes of the response */
  int fresh;         /* already retried once on a fresh connection */
  hk_tx_result res;  /* result of a deferred completion */
  hk_http_req *prev; /* in c->active, or next in c->deferred */
  hk_http_req *next;
  char errbuf[CURL_ERROR_SIZE];
};

/* One per socket curl asked to watch; freed only in its close callback. */
typedef struct hk_http_sock hk_http_sock;
struct hk_http_sock {
  uv_poll_t poll;
  hk_http_client *c;
  curl_socket_t fd;
  hk_http_sock *prev;
  hk_http_sock *next;
};

struct hk_http_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;  /* curl's timeout */
  uv_timer_t defer;  /* runs completions that must not run inside a call */
  hk_http_req *active;  /* transfers added to the multi handle */
  hk_http_req *deferred_head;
  hk_http_req *deferred_tail;
  hk_http_sock *socks;  /* open (not closing) poll handles */
  CURL *pool[HK_HTTP_POOL_MAX];
  size_t n_pool;
  int busy;      /* depth of loop callbacks working on this client */
  int closing;   /* destroy was called */
  int torn_down; /* transfers cancelled, handles closing */
  int n_handles; /* uv handles not yet through their close callback */
};

/* ---- small helpers ---------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *what,
                    const char *detail) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s%s%s", what, detail ? ": " : "",
             detail ? detail : "");
}

/* Copies up to HK_HTTP_SNIPPET bytes of p into out (NUL-terminated),
 * control characters replaced by spaces, no trailing partial UTF-8. */
static void snippet_make(const char *p, size_t n, char *out, size_t outlen) {
  size_t max = HK_HTTP_SNIPPET < outlen ? HK_HTTP_SNIPPET : outlen - 1;
  size_t i, k = hk_utf8_prefix_len(p, n, max);

  for (i = 0; i < k; i++) {
    unsigned char ch = (unsigned char)p[i];
    out[i] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
  }
  out[k] = '\0';
}

/* Replaces every occurrence of each target secret in s by "***". */
static void reason_scrub(char *s, const hk_http_target *t) {
  for (size_t i = 0; i < t->n_secrets; i++) {
    size_t n = strlen(t->secrets[i]);
    char *hit;

    while ((hit = strstr(s, t->secrets[i])) != NULL) {
      memcpy(hit, "***", 3);
      memmove(hit + 3, hit + n, strlen(hit + n) + 1);
    }
  }
}

static void result_set(hk_tx_result *res, hk_tx_status st, const char *fmt,
                       ...) __attribute__((format(printf, 3, 4)));

static void result_set(hk_tx_result *res, hk_tx_status st, const char *fmt,
                       ...) {
  va_list ap;

  res->status = st;
  va_start(ap, fmt);
  vsnprintf(res->reason, sizeof res->reason, fmt, ap);
  va_end(ap);
}

/* ---- targets ---------------------------------------------------------- */

static void target_unref(hk_http_target *t) {
  if (t == NULL || --t->refs > 0) return;
  free(t->url);
  free(t->shown_url);
  curl_slist_free_all(t->headers);
  free(t->user);
  free(t->password);
  if (t->has_re) regfree(&t->re);
  free(t->statuses);
  for (size_t i = 0; i < t->n_secrets; i++) free(t->secrets[i]);
  free(t);
}

/* Takes ownership of s (may be NULL). Returns 0, or -1 on OOM. */
static int target_add_secret(hk_http_target *t, char *s) {
  if (s == NULL) return 0;
  if (strlen(s) < HK_HTTP_MIN_SECRET || t->n_secrets == HK_HTTP_MAX_SECRETS) {
    free(s);
    return 0;
  }
  t->secrets[t->n_secrets++] = s;
  return 0;
}

static char *base64_encode(const char *in) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t n = strlen(in), o = 0;
  char *out = malloc((n + 2) / 3 * 4 + 1);

  if (out == NULL) return NULL;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)(unsigned char)in[i + 1] << 8;
    if (i + 2 < n) v |= (uint32_t)(unsigned char)in[i + 2];
    out[o++] = tab[(v >> 18) & 63];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? tab[v & 63] : '=';
  }
  out[o] = '\0';
  return out;
}

/* Accepts absolute http(s) URLs with a host. On success *password is the
 * URL's password (malloc'd) or NULL. Returns 0, or -1 with err set. */
static int url_check(const char *url, char **password, char *err,
                     size_t errlen) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL;
  CURLUcode uc;
  int rc = -1;

  *password = NULL;
  if (u == NULL) goto out;
  uc = curl_url_set(u, CURLUPART_URL, url, 0);
  if (uc != CURLUE_OK) {
    set_err(err, errlen, "bad url", curl_url_strerror(uc));
    goto out;
  }
  if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
    set_err(err, errlen, "bad url", "scheme must be http or https");
    goto out;
  }
  if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
    set_err(err, errlen, "bad url", "no host");
    goto out;
  }
  if (curl_url_get(u, CURLUPART_PASSWORD, password, 0) != CURLUE_OK)
    *password = NULL;
  rc = 0;
out:
  curl_free(scheme);
  curl_free(host);
  curl_url_cleanup(u);
  return rc;
}

static int header_append(struct curl_slist **list, const char *h) {
  struct curl_slist *n = curl_slist_append(*list, h);

  if (n == NULL) return -1;
  *list = n;
  return 0;
}

/* Builds the header list shared by the target's requests. Returns 0, or -1
 * with err set (a header without ':' or with CR/LF, or OOM). */
static int target_headers(hk_http_target *t, const hk_http_settings *s,
                          char *err, size_t errlen) {
  int has_ctype = 0;
  hk_buf auth = HK_BUF_INIT;
  int rc = -1;

  for (size_t i = 0; i < s->n_headers; i++) {
    const char *h = s->headers[i];
    if (h == NULL || strchr(h, ':') == NULL || strpbrk(h, "\r\n") != NULL) {
      set_err(err, errlen, "bad header", "want \"Name: value\" on one line");
      goto out;
    }
    if (strncasecmp(h, "content-type:", 13) == 0) has_ctype = 1;
    if (header_append(&t->headers, h) != 0) goto oom;
  }
  if (!has_ctype &&
      header_append(&t->headers, "Content-Type: application/json") != 0)
    goto oom;
  if (header_append(&t->headers, "Expect:") != 0) goto oom;
  if (s->bearer_token != NULL && s->bearer_token[0] != '\0') {
    if (strpbrk(s->bearer_token, "\r\n") != NULL) {
      set_err(err, errlen, "bad bearer_token", "contains CR/LF");
      goto out;
    }
    if (hk_buf_printf(&auth, "Authorization: Bearer %s", s->bearer_token) ||
        header_append(&t->headers, hk_buf_cstr(&auth)) != 0)
      goto oom;
  }
  rc = 0;
  goto out;
oom:
  set_err(err, errlen, "out of memory", NULL);
out:
  hk_buf_free(&auth);
  return rc;
}

/* Basic auth credentials and the strings to scrub from reasons. */
static int target_auth(hk_http_target *t, const hk_http_settings *s,
                       char *url_password) {
  char *pair = NULL;
  int rc = -1;

  if (target_add_secret(t, url_password) != 0) goto out;
  if (s->bearer_token != NULL && s->bearer_token[0] != '\0' &&
      target_add_secret(t, strdup(s->bearer_token)) != 0)
    goto out;
  if (s->basic_user != NULL) {
    const char *pw = s->basic_password ? s->basic_password : "";
    size_t n = strlen(s->basic_user) + strlen(pw) + 2;
    t->user = strdup(s->basic_user);
    t->password = strdup(pw);
    pair = malloc(n);
    if (t->user == NULL || t->password == NULL || pair == NULL) goto out;
    snprintf(pair, n, "%s:%s", s->basic_user, pw);
    if (target_add_secret(t, strdup(pw)) != 0 ||
        target_add_secret(t, base64_encode(pair)) != 0)
      goto out;
  }
  rc = 0;
out:
  free(pair);
  return rc;
}

static int target_match_rules(hk_http_target *t, const hk_http_settings *s,
                              char *err, size_t errlen) {
  static const long dflt = 200;
  const long *st = s->n_success_statuses ? s->success_statuses : &dflt;
  size_t n = s->n_success_statuses ? s->n_success_statuses : 1;

  if (st == NULL) {
    set_err(err, errlen, "bad success_statuses", "NULL with a count");
    return -1;
  }
  t->statuses = malloc(n * sizeof *st);
  if (t->statuses == NULL) return -1;
  memcpy(t->statuses, st, n * sizeof *st);
  t->n_statuses = n;
  if (s->success_regex != NULL) {
    int rc = regcomp(&t->re, s->success_regex, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
      char msg[160];
      regerror(rc, &t->re, msg, sizeof msg);
      set_err(err, errlen, "bad success_regex", msg);
      return -1;
    }
    t->has_re = 1;
  }
  return 0;
}

hk_http_target *hk_http_target_create(const hk_http_settings *s, char *err,
                                      size_t errlen) {
  hk_http_target *t = NULL;
  char *url_password = NULL;

  set_err(err, errlen, "out of memory", NULL);
  if (s == NULL || s->url == NULL) {
    set_err(err, errlen, "bad url", "missing");
    return NULL;
  }
  if (url_check(s->url, &url_password, err, errlen) != 0) return NULL;
  t = calloc(1, sizeof *t);
  if (t == NULL) goto fail;
  t->refs = 1;
  t->url = strdup(s->url);
  t->shown_url = hk_http_url_shown(s->url);
  if (t->url == NULL || t->shown_url == NULL) goto fail;
  if (target_auth(t, s, url_password) != 0) goto fail;
  url_password = NULL; /* owned by t now */
  if (target_headers(t, s, err, errlen) != 0) goto fail;
  if (target_match_rules(t, s, err, errlen) != 0) goto fail;
  t->timeout_ms = s->request_timeout_sec > 0
                      ? (long)(s->request_timeout_sec * 1000.0 + 0.5)
                      : HK_HTTP_DEFAULT_TIMEOUT_MS;
  if (t->timeout_ms < 1) t->timeout_ms = 1;
  if (err != NULL && errlen > 0) err[0] = '\0';
  return t;
fail:
  free(url_password);
  target_unref(t);
  return NULL;
}

void hk_http_target_destroy(hk_http_target *t) { target_unref(t); }

const char *hk_http_target_url(const hk_http_target *t) {
  return t->shown_url;
}

char *hk_http_url_shown(const char *url) {
  const char *host = strstr(url, "://"), *at, *end;
  char *out;

  if (host == NULL) return strdup(url);
  host += 3;
  end = host + strcspn(host, "/?#");
  at = memchr(host, '@', (size_t)(end - host));
  if (at == NULL) return strdup(url);
  /* The user information becomes "***": neither user nor password shows. */
  if (asprintf(&out, "%.*s***%s", (int)(host - url), url, at) < 0)
    return NULL;
  return out;
}

/* ---- client lifecycle ------------------------------------------------- */

static void client_free(hk_http_client *c) {
  free(c);
  curl_global_cleanup();
}

static void handle_closed_cb(uv_handle_t *h) {
  hk_http_client *c = h->data;

  if (--c->n_handles == 0 && c->torn_down) client_free(c);
}

static void sock_closed_cb(uv_handle_t *h) {
  hk_http_sock *sk = h->data;
  hk_http_client *c = sk->c;

  free(sk);
  if (--c->n_handles == 0 && c->torn_down) client_free(c);
}

static void sock_close(hk_http_sock *sk) {
  hk_http_client *c = sk->c;

  if (sk->prev) sk->prev->next = sk->next;
  else c->socks = sk->next;
  if (sk->next) sk->next->prev = sk->prev;
  uv_close((uv_handle_t *)&sk->poll, sock_closed_cb);
}

static void teardown(hk_http_client *c);

/* Every loop callback brackets its work with busy++ / client_leave so a
 * destroy requested from a user callback runs once the work unwinds. */
static void client_leave(hk_http_client *c) {
  if (--c->busy == 0 && c->closing && !c->torn_down) teardown(c);
}

/* ---- request completion ----------------------------------------------- */

static void active_link(hk_http_client *c, hk_http_req *r) {
  r->prev = NULL;
  r->next = c->active;
  if (c->active) c->active->prev = r;
  c->active = r;
}

static void active_unlink(hk_http_client *c, hk_http_req *r) {
  if (r->prev) r->prev->next = r->next;
  else c->active = r->next;
  if (r->next) r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

static void easy_release(hk_http_client *c, CURL *e) {
  if (e == NULL) return;
  if (c->n_pool < HK_HTTP_POOL_MAX && !c->closing) {
    curl_easy_reset(e);
    c->pool[c->n_pool++] = e;
  } else {
    curl_easy_cleanup(e);
  }
}

/* Frees r (already out of the multi handle) and then runs its callback. */
static void req_complete(hk_http_req *r, const hk_tx_result *res) {
  hk_tx_done_cb cb = r->cb;
  void *ctx = r->ctx;
  hk_tx_result copy = *res;

  reason_scrub(copy.reason, r->t);
  easy_release(r->c, r->easy);
  target_unref(r->t);
  hk_buf_free(&r->resp);
  free(r);
  cb(ctx, &copy);
}

static void deferred_flush(hk_http_client *c) {
  while (c->deferred_head != NULL) {
    hk_http_req *r = c->deferred_head;
    c->deferred_head = r->next;
    if (c->deferred_head == NULL) c->deferred_tail = NULL;
    req_complete(r, &r->res);
  }
}

static void defer_cb(uv_timer_t *timer) {
  hk_http_client *c = timer->data;

  c->busy++;
  deferred_flush(c);
  client_leave(c);
}

/* Queues r (not in the multi handle) to complete on a later loop turn. */
static void req_defer(hk_http_req *r) {
  hk_http_client *c = r->c;

  r->next = NULL;
  if (c->deferred_tail) c->deferred_tail->next = r;
  else c->deferred_head = r;
  c->deferred_tail = r;
  uv_timer_start(&c->defer, defer_cb, 0, 0);
}

/* Retry-After as a delay in seconds (delta-seconds or an HTTP-date);
 * 0 when absent, unparsable or already past. */
static double retry_after_get(CURL *e) {
  struct curl_header *h = NULL;
  const char *v;
  char *end;
  double d;

  if (curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &h) !=
      CURLHE_OK)
    return 0;
  v = h->value;
  while (*v == ' ' || *v == '\t') v++;
  d = strtod(v, &end);
  if (end != v) {
    while (*end == ' ' || *end == '\t') end++;
    if (*end == '\0') return d > 0 ? d : 0;
  }
  {
    time_t when = curl_getdate(v, NULL);
    time_t now = time(NULL);
    return when > now ? (double)(when - now) : 0;
  }
}

static int status_is_success(const hk_http_target *t, long code) {
  for (size_t i = 0; i < t->n_statuses; i++)
    if (t->statuses[i] == code) return 1;
  return 0;
}

static int curl_error_is_permanent(CURLcode rc) {
  return rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT ||
         rc == CURLE_NOT_BUILT_IN || rc == CURLE_BAD_FUNCTION_ARGUMENT ||
         rc == CURLE_UNKNOWN_OPTION;
}

/* The response body in a reason is quoted and escaped, so a destination
 * cannot add key=value fields of its own to the log line. */
static void classify_status(hk_http_req *r, long code, hk_tx_result *res) {
  char raw[HK_HTTP_SNIPPET + 1], snip[2 * HK_HTTP_SNIPPET + 3];

  snippet_make(r->resp.data ? r->resp.data : "", r->resp.len, raw,
               sizeof raw);
  hk_log_escape(snip, sizeof snip, raw);
  if (status_is_success(r->t, code)) {
    if (!r->t->has_re ||
        regexec(&r->t->re, hk_buf_cstr(&r->resp), 0, NULL, 0) == 0)
      result_set(res, HK_TX_OK, "status=%ld body=\"%s\"", code, snip);
    else
      result_set(res, HK_TX_FAIL,
                 "status=%ld body did not match success_regex body=\"%s\"",
                 code,
                 snip);
  } else if (code == 408 || code == 429 || code >= 500) {
    result_set(res, HK_TX_RETRY, "status=%ld body=\"%s\"", code, snip);
  } else if (code == 413) {
    res->too_large = 1;
    result_set(res, HK_TX_FAIL, "status=413 payload too large body=\"%s\"",
               snip);
  } else {
    result_set(res, HK_TX_FAIL, "status=%ld body=\"%s\"", code, snip);
  }
}

static void classify(hk_http_req *r, CURLcode rc, hk_tx_result *res) {
  char raw[CURL_ERROR_SIZE + 128], quoted[2 * sizeof raw];
  long code = 0;

  memset(res, 0, sizeof *res);
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
  res->http_status = code;
  if (code > 0) res->retry_after_sec = retry_after_get(r->easy);
  if (rc == CURLE_OK) {
    classify_status(r, code, res);
    return;
  }
  snprintf(raw, sizeof raw, "%s%s%s", curl_easy_strerror(rc),
           r->errbuf[0] ? ": " : "", r->errbuf);
  result_set(res,
             curl_error_is_permanent(rc) ? HK_TX_FAIL : HK_TX_RETRY,
             "error=\"%s\"", hk_log_escape(quoted, sizeof quoted, raw));
}

/* A reused keep-alive connection that died before any response byte and
 * that libcurl did not replace itself: worth one more try on a fresh one. */
static int req_wants_fresh_retry(hk_http_req *r, CURLcode rc) {
  long conns = 1, code = 0;

  if (r->fresh || r->c->closing) return 0;
  if (rc != CURLE_SEND_ERROR && rc != CURLE_RECV_ERROR &&
      rc != CURLE_GOT_NOTHING)
    return 0;
  curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &conns);
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
  return conns == 0 && code == 0;
}

static int req_restart_fresh(hk_http_req *r) {
  r->fresh = 1;
  r->errbuf[0] = '\0';
  hk_buf_reset(&r->resp);
  if (curl_easy_setopt(r->easy, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK ||
      curl_multi_add_handle(r->c->multi, r->easy) != CURLM_OK)
    return -1;
  active_link(r->c, r);
  hk_debug("http", "msg=\"retrying on a fresh connection\" url=%s",
           r->t->shown_url);
  return 0;
}

/* r has left the multi handle with rc: restart it or complete it. */
static void req_finish(hk_http_req *r, CURLcode rc) {
  hk_tx_result res;

  if (req_wants_fresh_retry(r, rc) && req_restart_fresh(r) == 0) return;
  classify(r, rc, &res);
  req_complete(r, &res);
}

static void drain_done(hk_http_client *c) {
  CURLMsg *m;
  int left;

  while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
    CURL *e = m->easy_handle;
    CURLcode rc = m->data.result;
    char *priv = NULL;
    hk_http_req *r;

    if (m->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
    r = (hk_http_req *)priv;
    curl_multi_remove_handle(c->multi, e);
    active_unlink(c, r);
    req_finish(r, rc);
  }
}

/* ---- curl <-> libuv glue ---------------------------------------------- */

static void poll_cb(uv_poll_t *h, int status, int events) {
  hk_http_sock *sk = h->data;
  hk_http_client *c = sk->c;
  int flags = 0, running = 0;

  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  c->busy++;
  /* sk may be closed from inside this call; do not touch it after. */
  curl_multi_socket_action(c->multi, sk->fd, flags, &running);
  drain_done(c);
  client_leave(c);
}

static void timer_fire_cb(uv_timer_t *timer) {
  hk_http_client *c = timer->data;
  int running = 0;

  c->busy++;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain_done(c);
  client_leave(c);
}

static int timer_set_cb(CURLM *multi, long timeout_ms, void *userp) {
  hk_http_client *c = userp;

  if (timeout_ms < 0) uv_timer_stop(&c->timer);
  else uv_timer_start(&c->timer, timer_fire_cb, (uint64_t)timeout_ms, 0);
  return 0;
}

static hk_http_sock *sock_open(hk_http_client *c, curl_socket_t s) {
  hk_http_sock *sk = calloc(1, sizeof *sk);
  int rc;

  if (sk == NULL) return NULL;
  rc = uv_poll_init_socket(c->loop, &sk->poll, s);
  if (rc != 0) {
    hk_error("http", "msg=\"cannot watch socket\" fd=%d error=%s", (int)s,
             uv_strerror(rc));
    free(sk);
    return NULL;
  }
  sk->poll.data = sk;
  sk->c = c;
  sk->fd = s;
  sk->next = c->socks;
  if (c->socks) c->socks->prev = sk;
  c->socks = sk;
  c->n_handles++;
  return sk;
}

/* curl's socket callback. A removed socket's poll handle is closed (curl
 * closes the fd right after) and a later socket with the same fd number
 * gets a new handle, so a closing handle is never restarted or reused. */
static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp,
                     void *socketp) {
  hk_http_client *c = userp;
  hk_http_sock *sk = socketp;
  int events = 0, rc;

  if (what == CURL_POLL_REMOVE) {
    if (sk != NULL) sock_close(sk);
    return 0;
  }
  if (sk == NULL) {
    sk = sock_open(c, s);
    if (sk == NULL) return -1;
    curl_multi_assign(c->multi, s, sk);
  }
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  rc = uv_poll_start(&sk->poll, events, poll_cb);
  if (rc != 0)
    hk_error("http", "msg=\"cannot watch socket\" fd=%d error=%s", (int)s,
             uv_strerror(rc));
  return rc == 0 ? 0 : -1;
}

hk_http_client *hk_http_client_create(uv_loop_t *loop) {
  hk_http_client *c = calloc(1, sizeof *c);

  if (c == NULL) return NULL;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    free(c);
    return NULL;
  }
  c->loop = loop;
  c->multi = curl_multi_init();
  if (c->multi == NULL) {
    client_free(c);
    return NULL;
  }
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_set_cb);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, HK_HTTP_MAX_CONNECTS);
  uv_timer_init(loop, &c->timer);
  uv_timer_init(loop, &c->defer);
  c->timer.data = c;
  c->defer.data = c;
  c->n_handles = 2;
  return c;
}

/* Cancels every transfer and queued completion, then closes the handles;
 * the last close callback frees c. */
static void teardown(hk_http_client *c) {
  hk_tx_result res;

  c->busy++;
  memset(&res, 0, sizeof res);
  result_set(&res, HK_TX_RETRY, "shutting down");
  while (c->active != NULL) {
    hk_http_req *r = c->active;
    curl_multi_remove_handle(c->multi, r->easy);
    active_unlink(c, r);
    req_complete(r, &res);
  }
  uv_timer_stop(&c->defer);
  deferred_flush(c);
  curl_multi_cleanup(c->multi);
  c->multi = NULL;
  while (c->socks != NULL) sock_close(c->socks);
  while (c->n_pool > 0) curl_easy_cleanup(c->pool[--c->n_pool]);
  c->torn_down = 1;
  uv_close((uv_handle_t *)&c->timer, handle_closed_cb);
  uv_close((uv_handle_t *)&c->defer, handle_closed_cb);
}

void hk_http_client_destroy(hk_http_client *c) {
  if (c == NULL || c->closing) return;
  c->closing = 1;
  if (c->busy == 0) teardown(c);
}

/* ---- posting ---------------------------------------------------------- */

static size_t body_write_cb(char *p, size_t size, size_t n, void *ud) {
  hk_http_req *r = ud;
  size_t len = size * n;
  size_t room = HK_HTTP_BODY_CAP - r->resp.len;

  if (room > 0) hk_buf_append(&r->resp, p, len < room ? len : room);
  return len;
}

static CURL *easy_acquire(hk_http_client *c) {
  if (c->n_pool > 0) return c->pool[--c->n_pool];
  return curl_easy_init();
}

/* Only http and https, also for redirects (which are not followed). */
static int req_restrict_protocols(CURL *e) {
#if LIBCURL_VERSION_NUM >= 0x075500
  return curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") !=
             CURLE_OK ||
         curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") !=
             CURLE_OK;
#else
  long p = CURLPROTO_HTTP | CURLPROTO_HTTPS;
  return curl_easy_setopt(e, CURLOPT_PROTOCOLS, p) != CURLE_OK ||
         curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, p) != CURLE_OK;
#endif
}

/* Sets every option of r's easy handle. Returns 0, or -1 on failure. */
static int req_configure(hk_http_req *r) {
  CURL *e = r->easy;
  const hk_http_target *t = r->t;
  int bad = 0;

  bad |= curl_easy_setopt(e, CURLOPT_URL, t->url) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                          (curl_off_t)r->len) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t->timeout_ms) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, HK_HTTP_CONNECT_MS) !=
         CURLE_OK;
  bad |= req_restrict_protocols(e);
  bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_write_cb) !=
         CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r) != CURLE_OK;
  if (t->user != NULL) {
    bad |= curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC) !=
           CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERNAME, t->user) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PASSWORD, t->password) != CURLE_OK;
  }
  return bad ? -1 : 0;
}

/* A request holding a reference on t and an easy handle; NULL on OOM. */
static hk_http_req *req_new(hk_http_client *c, hk_http_target *t,
                            const char *body, size_t len, hk_tx_done_cb cb,
                            void *ctx) {
  hk_http_req *r = calloc(1, sizeof *r);

  if (r == NULL) return NULL;
  r->easy = easy_acquire(c);
  if (r->easy == NULL) {
    free(r);
    return NULL;
  }
  r->c = c;
  r->t = t;
  t->refs++;
  r->body = body ? body : "";
  r->len = body ? len : 0;
  r->cb = cb;
  r->ctx = ctx;
  return r;
}

/* The callback runs later in every case: failures to start the transfer
 * are reported through the loop. Returns -1 (and never calls cb) only when
 * the client is shutting down or memory runs out. */
int hk_http_post(hk_http_client *c, hk_http_target *t, const char *body,
                 size_t len, hk_tx_done_cb cb, void *ctx) {
  hk_http_req *r;
  CURLMcode mc;

  if (c == NULL || t == NULL || cb == NULL || c->closing) return -1;
  r = req_new(c, t, body, len, cb, ctx);
  if (r == NULL) return -1;
  if (req_configure(r) != 0) {
    result_set(&r->res, HK_TX_FAIL, "error=cannot configure the request");
    req_defer(r);
    return 0;
  }
  mc = curl_multi_add_handle(c->multi, r->easy);
  if (mc != CURLM_OK) {
    result_set(&r->res, HK_TX_RETRY, "error=%s", curl_multi_strerror(mc));
    req_defer(r);
    return 0;
  }
  active_link(c, r);
  return 0;
}
