/* main.json: the settings the C core needs, read from the configuration
 * table that lua/hookd/config.lua validated. */
#ifndef HOOKD_CONFIG_H
#define HOOKD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "bridge.h"

typedef struct hk_config {
  char *path;          /* the file it came from */
  char *listen;
  char *data_dir;
  char *plugins_dir;
  char *catalog;       /* NULL when none */
  char *lua_dir;       /* NULL: the compiled-in default */
  char *log_level;
  char *api_token;     /* NULL when the admin API is open */
  char *ingest_token;
  char *metrics_token;
  size_t max_body_bytes;
  int max_nesting_depth;
  int retry_times;
  double retry_period_sec;
  double content_cleanup_hours;
  double shutdown_grace_sec; /* how long SIGTERM waits for queues */
  double history_days;       /* accepted events kept; 0 = none kept */
  double cleanup_interval_sec; /* how often expired rows are deleted */
  size_t max_pending_bytes;    /* events and messages of ingest requests
                                  waiting for the store, at most */
  int max_connections;         /* HTTP connections served at once */
  double request_timeout_sec;  /* for a whole HTTP request to arrive */
  int hook_cpu_limit_ms;      /* CPU per call of hook code */
  int hook_memory_limit_mb;   /* memory one call of hook code may add */
  int lua_memory_limit_mb;    /* memory hook code may take the state to */
  size_t max_message_bytes;   /* one message a hook makes, at most */
} hk_config;

/* Reads and validates path with the runtime of b (path NULL: defaults). Returns 0, or -1 with
 * err naming the file and the offending key. */
int hk_config_load(hk_bridge *b, const char *path, hk_config *cfg, char *err,
                   size_t errlen);

/* Reads a whole file into a malloc'd NUL-terminated buffer: a regular
 * file by its size, anything else (a FIFO, a device) to its end. Returns
 * NULL with errno set on failure. */
char *hk_read_file(const char *path, size_t *len);

/* Reads what is left of f to its end (standard input, a pipe) the same
 * way. */
char *hk_read_stream(FILE *f, size_t *len);

/* Returns lua_dir from the file without the runtime (a light scan), so the
 * runtime can be started from the right folder; NULL when unset. */
char *hk_config_peek_lua_dir(const char *path);

void hk_config_free(hk_config *cfg);

#endif
