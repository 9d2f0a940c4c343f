/* The commands a hook author runs: `hookd check` lists every problem of
 * hook files as file:line: message, and `hookd try` prints what a hook
 * makes of events from a file, standard input or the store's history.
 * main.c sets up the runtime and calls these; both return the exit
 * status. */
#ifndef HOOKD_HOOK_CLI_H
#define HOOKD_HOOK_CLI_H

#include <stddef.h>

#include "bridge.h"
#include "router.h"

/* Loads each file (every <id>.lua of plugins_dir when n_files is 0)
 * through the router, as the reloader would, and prints each problem to
 * stdout, then a summary. Returns 0 when there is none, 1 when there are
 * problems, 2 when plugins_dir cannot be read. */
int hk_cli_check(hk_bridge *b, hk_router *r, const char *plugins_dir,
                 const char *const *files, size_t n_files);

typedef struct hk_try_options {
  const char *hook_path;
  const char *events_path; /* NULL or "-": standard input */
  int from_store;          /* read the store's history instead */
  const char *since;       /* first UTC day, YYYY-MM-DD (from_store) */
  const char *until;       /* last UTC day, or NULL: up to now */
  const char *data_dir;
  double content_hours; /* how old stored content may be */
} hk_try_options;

/* Runs the hook over the events and prints one line per event. Returns
 * 0 when every event made a message or was dropped, 1 when the hook does
 * not load or failed on an event, 2 when the events cannot be read. */
int hk_cli_try(hk_bridge *b, const hk_try_options *opt);

#endif
