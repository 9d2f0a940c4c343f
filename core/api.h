/* The HTTP API: ingest (POST /v1/events), health, and the admin views of
 * hooks and dead letters. */
#ifndef HOOKD_API_H
#define HOOKD_API_H

#include "config.h"
#include "http_server.h"
#include "router.h"

typedef struct hk_api {
  const hk_config *config;
  hk_router *router;
  long events_accepted;
  long requests_refused;
} hk_api;

/* The server's handler; data is an hk_api. */
void hk_api_handle_cb(hk_http_request *req, void *data);

#endif
