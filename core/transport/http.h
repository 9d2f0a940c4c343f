/* HTTP JSON batch transport: POSTs bodies with libcurl's multi interface,
 * driven by the libuv loop (socket and timer callbacks, no extra thread). */
#ifndef HOOKD_TRANSPORT_HTTP_H
#define HOOKD_TRANSPORT_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "transport.h"

typedef struct hk_http_client hk_http_client;
typedef struct hk_http_target hk_http_target;

typedef struct hk_http_settings {
  const char *url;
  const char *const *headers;  /* "Name: value" strings */
  size_t n_headers;
  const char *bearer_token;    /* NULL or "" for none */
  const char *basic_user;      /* NULL for none */
  const char *basic_password;
  const char *success_regex;   /* POSIX extended regex; NULL for none */
  const long *success_statuses; /* NULL/0 means {200} */
  size_t n_success_statuses;
  double request_timeout_sec;  /* 0 = 30 s */
} hk_http_settings;

hk_http_client *hk_http_client_create(uv_loop_t *loop);
/* Cancels transfers in flight (their callbacks run with HK_TX_RETRY and
 * reason "shutting down") and frees the client after its handles close. */
void hk_http_client_destroy(hk_http_client *c);

/* Validates and copies the settings (bad URL scheme, bad regex: NULL and a
 * reason in err). A target is reference counted: destroy drops the
 * caller's reference, requests in flight keep theirs. */
hk_http_target *hk_http_target_create(const hk_http_settings *s, char *err,
                                      size_t errlen);
void hk_http_target_destroy(hk_http_target *t);
/* The target's URL as logs and the API show it: without user
 * information (credentials). */
const char *hk_http_target_url(const hk_http_target *t);
/* url without its user information (malloc'd), or NULL without memory. */
char *hk_http_url_shown(const char *url);

/* POSTs body (application/json) to the target. body must stay valid until
 * cb runs; cb runs exactly once, on the loop thread, never inside this
 * call. Returns 0, or -1 when the request could not even be started. */
int hk_http_post(hk_http_client *c, hk_http_target *t, const char *body,
                 size_t len, hk_tx_done_cb cb, void *ctx);

#endif
