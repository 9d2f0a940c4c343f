/* A small HTTP/1.1 server on the libuv loop, built on http-parser. It owns
 * connections and parsing; what a request means is up to the handler. */
#ifndef HOOKD_HTTP_SERVER_H
#define HOOKD_HTTP_SERVER_H

#include <stddef.h>
#include <uv.h>

typedef struct hk_http_server hk_http_server;

/* One request. The server owns it; the handler must answer it exactly once
 * with hk_http_respond, at once or later from the loop thread. Until then
 * every pointer below stays valid, even if the client has gone away (the
 * answer is then dropped). Header values are NUL-terminated; missing
 * headers are NULL. */
typedef struct hk_http_request {
  int method;               /* enum http_method from http_parser.h; HEAD
                               shows as GET when head_as_get is set */
  int head;                 /* the client sent HEAD: whatever body the
                               answer has, only its length is sent */
  const char *path;         /* decoded path, NUL-terminated, no query */
  const char *query;        /* raw query string without '?', or "" */
  const char *body;         /* NUL-terminated for convenience */
  size_t body_len;
  const char *content_type; /* as sent */
  const char *authorization;
  const char *content_encoding; /* as sent */
  void *user;               /* free for the handler */
} hk_http_request;

typedef void (*hk_http_handler_cb)(hk_http_request *req, void *data);

typedef struct hk_http_server_options {
  size_t max_body_bytes;   /* larger bodies get 413 before the handler */
  size_t max_header_bytes; /* 0 = 64 KiB */
  unsigned head_timeout_ms; /* a request's line and headers must arrive
                               within this after its first byte, else 408
                               and close; 0 = 30 s (or request_timeout_ms
                               when that is shorter) */
  unsigned request_timeout_ms; /* the same for the whole request, head and
                                  body; 0 = 60 s */
  unsigned first_byte_timeout_ms; /* a new connection must begin its
                                     first request within this, else it
                                     is closed without an answer; 0 = 10 s
                                     (or head_timeout_ms when shorter) */
  unsigned max_connections; /* connections served at once; 0 = 1024. A
                               client above it makes the connection idle
                               longest close (one with no request in
                               progress and nothing to write); when every
                               one is busy it gets 503 and a close */
  size_t max_unsent_bytes;  /* a connection is not read while more than
                               this of its output waits to be sent, so a
                               client that never reads cannot make the
                               server queue answers without end; 0 = 1 MiB */
  int head_as_get;          /* hand HEAD requests to the handler as GET
                               (req->head tells them apart) */
} hk_http_server_options;

/* Whether addr is an address hk_http_server_start takes, so that a
 * configuration can be refused before anything else is started; when it
 * is, *loopback tells whether only this machine can reach it. */
int hk_http_listen_addr_valid(const char *addr, int *loopback);

/* Binds and listens on addr ("127.0.0.1:8765", "[::1]:8765", ":0" etc.).
 * Returns NULL and fills err on failure. */
hk_http_server *hk_http_server_start(uv_loop_t *loop, const char *addr,
                                     const hk_http_server_options *opts,
                                     hk_http_handler_cb handler, void *data,
                                     char *err, size_t errlen);

/* The port actually bound (useful with port 0). */
int hk_http_server_port(const hk_http_server *s);

/* What the server holds now, and totals since it started: for tests and
 * metrics. Read on the loop thread. */
typedef struct hk_http_server_stats {
  unsigned open;        /* connections being served */
  unsigned refusing;    /* connections over the limit still getting 503 */
  unsigned paused;      /* connections not read while output backs up */
  unsigned idle;        /* open ones with nothing in progress: the ones
                           closed to make room at the limit */
  size_t buffered_in;   /* bytes read ahead of the requests being parsed */
  size_t unsent;        /* answers' bytes the kernel has not taken yet */
  size_t peak_unsent;   /* the most one connection had unsent at a time */
  unsigned long refused;       /* connections answered 503 at the limit */
  unsigned long shed;          /* closed at once as descriptors ran out */
  unsigned long accept_errors; /* failed accepts (EMFILE, ENFILE, ...) */
  unsigned long evicted;       /* idle connections closed at the limit */
} hk_http_server_stats;

void hk_http_server_stats_get(const hk_http_server *s,
                              hk_http_server_stats *out);

/* Answers a request. body is copied; content_type NULL means
 * application/json. extra_headers is NULL or "Name: value\r\n" lines. */
void hk_http_respond(hk_http_request *req, int status,
                     const char *content_type, const char *extra_headers,
                     const char *body, size_t body_len);

/* The server is about to close: each answer from now on says
 * "Connection: close" and ends its connection, so that a client does not
 * send its next request on a connection the server is about to close. */
void hk_http_server_drain(hk_http_server *s);

/* Stops listening and closes all connections, logging refusals still
 * only counted. Requests still waiting for an answer are answered by
 * nobody: their hk_http_respond calls become no-ops that only free. The
 * server is freed once every handle closed. */
void hk_http_server_close(hk_http_server *s);

#endif
