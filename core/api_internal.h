/* Helpers shared by the files of the HTTP API (api.c, api_store.c). */
#ifndef HOOKD_API_INTERNAL_H
#define HOOKD_API_INTERNAL_H

#include "api.h"
#include "buf.h"

/* Answers {"error": msg} (with "index" when index >= 0). */
void hk_api_error(hk_http_request *req, int status, const char *msg,
                  long index);
/* Answers with b's bytes as JSON. */
void hk_api_json(hk_http_request *req, int status, hk_buf *b);
/* The percent-decoded value of query parameter name, into out: 0 when
 * present, -1 otherwise. */
int hk_api_query(const char *query, const char *name, char *out,
                 size_t outlen);
/* A non-negative decimal integer, or -1. */
long hk_api_parse_count(const char *s);

/* 401, asking for a bearer token. */
void hk_api_unauthorized(hk_http_request *req, const char *msg);
/* 405, with the methods the path allows ("GET, POST") in Allow. */
void hk_api_not_allowed(hk_http_request *req, const char *allow);

/* GET /metrics (metrics.c). */
void hk_api_metrics(hk_api *api, hk_http_request *req);

/* Everything under /v1/hooks (api_hooks.c). */
void hk_api_hooks(hk_api *api, hk_http_request *req);

/* The store endpoints: dead letters, content, profiles and the catalog. */
void hk_api_dead_letters(hk_api *api, hk_http_request *req);
void hk_api_content(hk_api *api, hk_http_request *req);
void hk_api_profiles(hk_api *api, hk_http_request *req);
void hk_api_catalog(hk_api *api, hk_http_request *req);

/* Why a store batch was refused, for a 503 answer. */
void hk_api_store_refused(hk_http_request *req, hk_store_batch *b,
                          const char *what);

#endif
