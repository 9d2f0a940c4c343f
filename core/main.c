/* hookd's command line: run the router, check hooks, try a hook on
 * events, print the version. */
#include <dirent.h>
#include <errno.h>
#include <lua.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "api.h"
#include "bridge.h"
#include "config.h"
#include "guard.h"
#include "hook_cli.h"
#include "http_server.h"
#include "log.h"
#include "plugins.h"
#include "router.h"
#include "store.h"

static const char usage[] =
    "usage: hookd run --config FILE       start the router\n"
    "       hookd check [--config FILE] [HOOK.lua...]\n"
    "                  print the problems of the hook files (default: every\n"
    "                  hook of plugins_dir) as file:line: message: the first\n"
    "                  syntax or settings problem, else each failing example\n"
    "       hookd try [--config FILE] HOOK.lua [EVENTS.ndjson | -]\n"
    "                  print what the hook makes of each event: its message,\n"
    "                  dropped: why, or error: why (default: standard input)\n"
    "       hookd try [--config FILE] HOOK.lua --from-store --since DAY\n"
    "                 [--until DAY]\n"
    "                  the same over the router's stored events of those UTC\n"
    "                  days (YYYY-MM-DD; read-only, safe while it runs)\n"
    "       hookd --version | --help\n"
    "exit status: 0 fine; 1 check found problems, or try failed on an event\n"
    "             or could not load the hook; 2 usage or configuration error\n";

typedef struct app {
  uv_loop_t *loop;
  hk_config cfg;
  hk_bridge *bridge;
  hk_http_client *http;
  hk_router *router;
  hk_plugins *plugins;
  hk_http_server *server;
  hk_store *store; /* NULL for check and try */
  hk_api api;
  uv_signal_t sigterm, sigint, sighup;
  uv_timer_t drain, cleanup;
  uint64_t drain_started;
  int stopping;
  int server_closed;
} app;

/* Starts the runtime with the right lua_dir and loads the configuration
 * and catalog. Returns 0, or -1 after printing the reason. */
static int app_configure(app *a, const char *config_path) {
  char err[1024];
  char *lua_dir = config_path ? hk_config_peek_lua_dir(config_path) : NULL;
  size_t len;
  char *text;

  a->bridge = hk_bridge_create(lua_dir ? lua_dir : HOOKD_DEFAULT_LUA_DIR, err,
                               sizeof err);
  free(lua_dir);
  if (a->bridge == NULL) goto fail;
  if (hk_config_load(a->bridge, config_path, &a->cfg, err, sizeof err) != 0)
    goto fail;
  hk_log_min_level = hk_log_level_parse(a->cfg.log_level);
  hk_bridge_set_max_message(a->bridge, a->cfg.max_message_bytes);
  hk_guard_set_limits(a->cfg.hook_cpu_limit_ms,
                      (size_t)a->cfg.hook_memory_limit_mb << 20,
                      (size_t)a->cfg.lua_memory_limit_mb << 20);
  if (a->cfg.catalog == NULL) return 0;
  text = hk_read_file(a->cfg.catalog, &len);
  if (text == NULL) {
    snprintf(err, sizeof err, "config %s: catalog: cannot read %s",
             a->cfg.path, a->cfg.catalog);
    goto fail;
  }
  if (hk_bridge_set_catalog(a->bridge, text, len, err, sizeof err) != 0) {
    free(text);
    goto fail;
  }
  free(text);
  return 0;
fail:
  fprintf(stderr, "hookd: %s\n", err);
  return -1;
}

/* Writes the catalog file's entries into the store (an entry set through
 * the API wins over the file) and loads the merged catalog into the
 * runtime. Returns 0, or -1 with err. */
static int app_sync_catalog(app *a, char *err, size_t errlen) {
  hk_store_batch *b = hk_store_batch_new();
  hk_buf merged = HK_BUF_INIT;
  hk_strlist entries = {0};
  const char *args[1];
  size_t lens[1], len;
  char *text = a->cfg.catalog ? hk_read_file(a->cfg.catalog, &len) : NULL;
  int rc = -1;

  if (text) {
    args[0] = text;
    lens[0] = len;
    if (hk_bridge_call_strings(a->bridge, "catalog_entries", 1, args, lens,
                               &entries, err, errlen) != 0)
      goto done;
  }
  hk_store_add_catalog_reset(b);
  for (size_t i = 0; i + 2 < entries.n; i += 3)
    hk_store_add_catalog(b, entries.s[i], entries.s[i + 1], entries.s[i + 2],
                         entries.len[i + 2], 1);
  /* A full disk must not keep the router from delivering what it has
   * stored: the names of the store, or else of the file, are used. */
  if (hk_store_submit_wait(a->store, b, err, errlen) != 0)
    hk_warn("store", "catalog_file_saved=0 reason=\"%s\"", err);
  b = NULL;
  rc = 0;
  if (hk_store_catalog_render(a->store, &merged) != 0) rc = -1;
  if (rc == 0 && merged.len <= 2) goto done; /* nothing stored: the file */
  if (rc == 0)
    rc = hk_bridge_set_catalog(a->bridge, merged.data, merged.len, err,
                               errlen);
done:
  hk_store_batch_free(b);
  hk_strlist_free(&entries);
  hk_buf_free(&merged);
  free(text);
  return rc;
}

/* Whether dir can be listed: checked before the store is created, so
 * that a mistyped plugins_dir leaves no new store behind. */
static int plugins_dir_readable(const char *dir, char *err, size_t errlen) {
  DIR *d = opendir(dir);

  if (d == NULL) {
    snprintf(err, errlen, "cannot read plugins_dir %s: %s", dir,
             strerror(errno));
    return 0;
  }
  closedir(d);
  return 1;
}

/* Configures the app and creates its loop, HTTP client, store (when
 * with_store) and router. Returns 0, or -1 after printing the reason. */
static int app_open(app *a, const char *config_path, int with_store) {
  hk_retry_policy policy;
  char err[1024];

  memset(a, 0, sizeof *a);
  if (app_configure(a, config_path) != 0) return -1;
  policy.times = a->cfg.retry_times;
  policy.period_sec = a->cfg.retry_period_sec;
  a->loop = uv_default_loop();
  if (with_store) {
    if (!plugins_dir_readable(a->cfg.plugins_dir, err, sizeof err)) {
      fprintf(stderr, "hookd: %s\n", err);
      return -1;
    }
    a->store = hk_store_open(a->loop, a->cfg.data_dir, err, sizeof err);
    if (a->store == NULL || app_sync_catalog(a, err, sizeof err) != 0) {
      fprintf(stderr, "hookd: %s\n", err);
      return -1;
    }
  }
  a->http = hk_http_client_create(a->loop);
  a->router = hk_router_create(a->loop, a->bridge, a->http, a->store,
                               &policy, a->cfg.content_cleanup_hours);
  return a->http && a->router ? 0 : -1;
}

static void cleanup_cb(uv_timer_t *t);

/* The store deletes history in chunks so one cleanup never holds the
 * writer for long; a full chunk means there is more, at once. */
static void cleanup_done(hk_store_batch *b, int ok, void *ctx) {
  app *a = ctx;
  long long deleted = (long long)hk_store_batch_result(b, 0);

  if (!ok) {
    hk_warn("store", "cleanup_failed=1 reason=\"%s\"", hk_store_batch_error(b));
    return;
  }
  if (deleted > 0) hk_debug("store", "cleanup_deleted=%lld", deleted);
  if (deleted >= HK_STORE_CLEANUP_CHUNK && !a->stopping)
    cleanup_cb(&a->cleanup);
}

/* Deletes content older than HOOK_CONTENT_CLEANUP_HOURS and events older
 * than history_days. */
static void cleanup_cb(uv_timer_t *t) {
  app *a = t->data;
  double now = hk_store_now();
  hk_store_batch *b = hk_store_batch_new();
  double events_before = a->cfg.history_days > 0
                             ? now - a->cfg.history_days * 86400.0
                             : 0;

  hk_store_add_cleanup(b, now - a->cfg.content_cleanup_hours * 3600.0,
                       events_before);
  hk_store_submit(a->store, b, cleanup_done, a);
}

static void stop_loop(app *a) {
  long kept = hk_router_log_undelivered(a->router);

  hk_info("main", "shutdown=1 kept_in_outbox=%ld", kept);
  if (!a->server_closed) hk_http_server_close(a->server);
  a->server_closed = 1;
  uv_stop(a->loop);
}

/* Shutting down: requests already taken in are checked, routed and wait
 * for their commit, and get their answer; then the server closes. No new
 * delivery starts (nor a retry, which could turn a message into a dead
 * letter just because the router was stopping); the loop stops once the
 * deliveries in flight are done or the grace period is over. What is
 * left stays in the outbox. */
static void drain_cb(uv_timer_t *t) {
  app *a = t->data;
  uint64_t waited = uv_now(a->loop) - a->drain_started;
  int late = (double)waited >= a->cfg.shutdown_grace_sec * 1000.0;

  if (!a->server_closed &&
      ((hk_store_pending(a->store) == 0 && a->api.scanning == 0) || late)) {
    hk_http_server_close(a->server);
    a->server_closed = 1;
  }
  if (a->server_closed &&
      ((hk_router_settled(a->router) && hk_store_pending(a->store) == 0) ||
       late))
    stop_loop(a);
}

/* SIGTERM or SIGINT: stop accepting events, finish what is in flight and
 * exit (see drain_cb). A second signal exits now. */
static void signal_cb(uv_signal_t *s, int signum) {
  app *a = s->data;

  if (a->stopping) {
    hk_warn("main", "signal=%d exiting_now=1 reason=\"second signal: "
            "requests waiting for their commit are committed but not "
            "answered\"", signum);
    stop_loop(a);
    return;
  }
  a->stopping = 1;
  a->api.closing = 1;
  hk_http_server_drain(a->server);
  hk_api_log_flush(&a->api);
  hk_bridge_flush_logs(a->bridge);
  hk_info("main", "signal=%d shutting_down=1", signum);
  hk_plugins_stop(a->plugins);
  hk_exports_quiet(a->api.exports);
  hk_router_quiet(a->router);
  a->drain_started = uv_now(a->loop);
  uv_timer_init(a->loop, &a->drain);
  a->drain.data = a;
  uv_timer_start(&a->drain, drain_cb, 0, 50);
}

/* SIGHUP would end the process by default. Logs go to stderr and hooks
 * reload by themselves, so there is nothing to reopen or reread: it is
 * logged and ignored rather than dropping requests in flight. */
static void sighup_cb(uv_signal_t *s, int signum) {
  (void)s;
  hk_info("main", "signal=%d ignored=1 reason=\"hooks reload on change; use "
          "SIGTERM to stop\"", signum);
}

/* The API's view of the router, and its server. Returns 0 or -1 with
 * err. */
static int start_api(app *a, char *err, size_t errlen) {
  hk_http_server_options sopt = {0};

  a->api.loop = a->loop;
  a->api.config = &a->cfg;
  a->api.router = a->router;
  a->api.bridge = a->bridge;
  a->api.store = a->store;
  a->api.keep_history = a->cfg.history_days > 0;
  a->api.plugins = a->plugins;
  a->api.exports = hk_exports_create(a->loop, a->router, a->store);
  if (a->api.exports == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  sopt.max_body_bytes = a->cfg.max_body_bytes;
  sopt.max_connections = (unsigned)a->cfg.max_connections;
  sopt.request_timeout_ms = (unsigned)(a->cfg.request_timeout_sec * 1000.0);
  /* HEAD is answered as GET would be, without the body. */
  sopt.head_as_get = 1;
  a->server = hk_http_server_start(a->loop, a->cfg.listen, &sopt,
                                   hk_api_handle_cb, &a->api, err, errlen);
  return a->server ? 0 : -1;
}

static int cmd_run(const char *config_path) {
  char err[1024];
  app a;

  if (app_open(&a, config_path, 1) != 0) return 2;
  a.plugins = hk_plugins_start(a.loop, a.router, a.cfg.plugins_dir, err,
                               sizeof err);
  if (a.plugins == NULL) goto fail;
  hk_router_log_orphans(a.router);
  if (start_api(&a, err, sizeof err) != 0) goto fail;
  hk_info("main", "version=%s listen=%s port=%d plugins_dir=%s", HOOKD_VERSION,
          a.cfg.listen, hk_http_server_port(a.server), a.cfg.plugins_dir);
  uv_signal_init(a.loop, &a.sigterm);
  uv_signal_init(a.loop, &a.sigint);
  a.sigterm.data = a.sigint.data = &a;
  uv_signal_start(&a.sigterm, signal_cb, SIGTERM);
  uv_signal_start(&a.sigint, signal_cb, SIGINT);
  uv_signal_init(a.loop, &a.sighup);
  uv_signal_start(&a.sighup, sighup_cb, SIGHUP);
  uv_unref((uv_handle_t *)&a.sighup);
  uv_timer_init(a.loop, &a.cleanup);
  a.cleanup.data = &a;
  uv_timer_start(&a.cleanup, cleanup_cb, 0,
                 (uint64_t)(a.cfg.cleanup_interval_sec * 1000.0));
  uv_run(a.loop, UV_RUN_DEFAULT);
  hk_store_close(a.store);
  hk_info("main", "stopped=1");
  return 0;
fail:
  fprintf(stderr, "hookd: %s\n", err);
  hk_store_close(a.store);
  return 2;
}

/* Checks the given hook files, or every hook of plugins_dir, and prints
 * each problem; see hk_cli_check. */
static int cmd_check(const char *config_path, const char *const *files,
                     size_t n_files) {
  app a;

  if (app_open(&a, config_path, 0) != 0) return 2;
  /* Every problem is printed on stdout; the router's log lines about the
   * loads would only repeat them. */
  hk_log_min_level = HK_LOG_ERROR + 1;
  return hk_cli_check(a.bridge, a.router, a.cfg.plugins_dir, files, n_files);
}

/* Runs one hook file over events and prints, per event, the message it
 * would send or why it sends nothing; see hk_cli_try. Sends nothing. */
static int cmd_try(const char *config_path, hk_try_options *opt) {
  app a;

  memset(&a, 0, sizeof a);
  if (app_configure(&a, config_path) != 0) return 2;
  opt->data_dir = a.cfg.data_dir;
  opt->content_hours = a.cfg.content_cleanup_hours;
  return hk_cli_try(a.bridge, opt);
}

/* The command line: options anywhere, the rest in pos. */
typedef struct cli_args {
  const char *config;
  const char **pos;
  int npos;
  hk_try_options try_opt; /* --from-store, --since, --until */
} cli_args;

/* The value of option argv[*i], or NULL (reported) when it is missing. */
static const char *option_value(int argc, char **argv, int *i,
                                const char *what) {
  if (*i + 1 == argc) {
    fprintf(stderr, "hookd: %s needs %s\n", argv[*i], what);
    return NULL;
  }
  return argv[++*i];
}

/* Fills a from argv. Returns -1 to go on, or the exit status (--help,
 * --version, a mistake). */
static int parse_args(int argc, char **argv, cli_args *a) {
  hk_try_options *t = &a->try_opt;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char **value = NULL;
    const char *what = "a day (YYYY-MM-DD)";

    if (strcmp(arg, "--version") == 0) {
      printf("hookd %s\n", HOOKD_VERSION);
      return 0;
    } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      fputs(usage, stdout);
      return 0;
    } else if (strcmp(arg, "--from-store") == 0) {
      t->from_store = 1;
    } else if (strcmp(arg, "--config") == 0) {
      value = &a->config;
      what = "a file name";
    } else if (strcmp(arg, "--since") == 0) {
      value = &t->since;
    } else if (strcmp(arg, "--until") == 0) {
      value = &t->until;
    } else if (arg[0] == '-' && arg[1] != '\0') {
      fprintf(stderr, "hookd: unknown option %s\n%s", arg, usage);
      return 2;
    } else {
      a->pos[a->npos++] = arg;
    }
    if (value && (*value = option_value(argc, argv, &i, what)) == NULL)
      return 2;
  }
  return -1;
}

/* try's arguments: HOOK.lua and EVENTS, or HOOK.lua and --from-store. */
static int try_args(cli_args *a) {
  hk_try_options *t = &a->try_opt;

  if (a->npos < 2 || a->npos > 3) goto usage;
  t->hook_path = a->pos[1];
  t->events_path = a->npos == 3 ? a->pos[2] : NULL;
  if (t->from_store && t->events_path) {
    fprintf(stderr, "hookd: try reads EVENTS or --from-store, not both\n");
    return 2;
  }
  if (!t->from_store && (t->since || t->until)) {
    fprintf(stderr, "hookd: --since and --until go with --from-store\n");
    return 2;
  }
  if (t->from_store && t->since == NULL) {
    fprintf(stderr, "hookd: --from-store needs --since YYYY-MM-DD\n");
    return 2;
  }
  return -1;
usage:
  fputs(usage, stderr);
  return 2;
}

int main(int argc, char **argv) {
  cli_args a;
  const char *cmd;
  int rc;

  signal(SIGPIPE, SIG_IGN);
  memset(&a, 0, sizeof a);
  /* Freed with the process. */
  a.pos = calloc(argc > 0 ? (size_t)argc : 1, sizeof *a.pos);
  if (a.pos == NULL) return 2;
  if ((rc = parse_args(argc, argv, &a)) >= 0) return rc;
  cmd = a.npos > 0 ? a.pos[0] : "";
  if (strcmp(cmd, "try") != 0 &&
      (a.try_opt.from_store || a.try_opt.since || a.try_opt.until)) {
    fprintf(stderr, "hookd: --from-store, --since and --until are for "
            "try\n%s", usage);
    return 2;
  }
  /* run needs a configuration; check and try fall back to main.json in
   * the working directory, then to the defaults. */
  if (a.npos == 1 && strcmp(cmd, "run") == 0) {
    if (a.config == NULL) {
      fprintf(stderr, "hookd: run needs --config FILE\n");
      return 2;
    }
    return cmd_run(a.config);
  }
  if (a.config == NULL && access("main.json", R_OK) == 0)
    a.config = "main.json";
  if (strcmp(cmd, "check") == 0)
    return cmd_check(a.config, a.pos + 1, (size_t)a.npos - 1);
  if (strcmp(cmd, "try") == 0) {
    if ((rc = try_args(&a)) >= 0) return rc;
    return cmd_try(a.config, &a.try_opt);
  }
  fputs(usage, stderr);
  return 2;
}
