/* The HTTP API: ingest (POST /v1/events), health, the admin views of
 * hooks and dead letters, and the stores of content, profiles and names. */
#ifndef HOOKD_API_H
#define HOOKD_API_H

#include <uv.h>

#include "config.h"
#include "export.h"
#include "http_server.h"
#include "router.h"
#include "log.h"
#include "store.h"

typedef struct hk_api {
  uv_loop_t *loop;
  const hk_config *config;
  hk_router *router;
  hk_bridge *bridge;
  hk_store *store;
  struct hk_plugins *plugins; /* the watcher, for files the API writes */
  hk_exports *exports;
  int keep_history; /* store accepted events in the history table */
  int closing;      /* shutting down: new events are refused */
  size_t pending_bytes; /* held by requests waiting for the store */
  size_t scanning;      /* requests being checked on a worker thread, or
                           checked and waiting to be routed */
  struct ingest_scan *ready_head, *ready_tail; /* checked, to be routed */
  uv_check_t route_check; /* routes one of them per turn of the loop */
  uv_idle_t route_idle;   /* keeps the loop turning while some wait */
  int route_handles;      /* the two handles are initialized */
  long events_accepted;
  long requests_refused;
  hk_log_limit malformed_log; /* lines about malformed requests */
} hk_api;

/* Logs how many malformed requests went unlogged since the last line
 * about one (the count otherwise waits for the next refusal). */
void hk_api_log_flush(hk_api *api);

/* The server's handler; data is an hk_api. */
void hk_api_handle_cb(hk_http_request *req, void *data);

#endif
