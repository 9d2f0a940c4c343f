/* Loading main.json: the file is validated by the Lua runtime (one place
 * for key names, types and defaults) and copied here into a C struct. */
#include "config.h"

#include <errno.h>
#include <libgen.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"
#include "http_server.h"

char *hk_read_stream(FILE *f, size_t *len) {
  hk_buf b = HK_BUF_INIT;
  char chunk[65536];
  size_t n;

  errno = 0;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (hk_buf_append(&b, chunk, n) != 0) goto fail;
  if (ferror(f)) goto fail;
  hk_buf_cstr(&b);
  return hk_buf_steal(&b, len);
fail:
  if (errno == 0) errno = EIO;
  hk_buf_free(&b);
  return NULL;
}

char *hk_read_file(const char *path, size_t *len) {
  struct stat st;
  FILE *f;
  char *data = NULL;
  long size;

  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    errno = EISDIR;
    return NULL;
  }
  f = fopen(path, "rb");
  if (f == NULL) return NULL;
  if (fstat(fileno(f), &st) == 0 && !S_ISREG(st.st_mode)) {
    data = hk_read_stream(f, len); /* a FIFO or a device: no size */
    goto done;
  }
  if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
      fseek(f, 0, SEEK_SET) != 0)
    goto done;
  data = malloc((size_t)size + 1);
  if (data == NULL) goto done;
  if (fread(data, 1, (size_t)size, f) != (size_t)size) {
    free(data);
    data = NULL;
    errno = EIO;
    goto done;
  }
  data[size] = '\0';
  if (len) *len = (size_t)size;
done:
  fclose(f);
  return data;
}

/* Copies table field name (a string) or NULL when absent.
 * Stack: [cfg] -> [cfg]. */
static char *get_string(lua_State *L, const char *name) {
  char *out = NULL;

  lua_getfield(L, -1, name);
  if (lua_type(L, -1) == LUA_TSTRING) out = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  return out;
}

static double get_number(lua_State *L, const char *name) {
  double v;

  lua_getfield(L, -1, name);
  v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static char *config_dir_of(const char *path) {
  char *copy = strdup(path);
  char *dir = strdup(dirname(copy));

  free(copy);
  return dir;
}

/* Copies the validated table at the top of L's stack into cfg. */
static void take_fields(lua_State *L, hk_config *cfg) {
  cfg->listen = get_string(L, "listen");
  cfg->data_dir = get_string(L, "data_dir");
  cfg->plugins_dir = get_string(L, "plugins_dir");
  cfg->catalog = get_string(L, "catalog");
  cfg->lua_dir = get_string(L, "lua_dir");
  cfg->log_level = get_string(L, "log_level");
  cfg->api_token = get_string(L, "api_token");
  cfg->ingest_token = get_string(L, "ingest_token");
  cfg->metrics_token = get_string(L, "metrics_token");
  cfg->max_body_bytes = (size_t)get_number(L, "max_body_bytes");
  cfg->max_nesting_depth = (int)get_number(L, "max_nesting_depth");
  cfg->retry_times = (int)get_number(L, "HOOK_RETRY_TIMES");
  cfg->retry_period_sec = get_number(L, "HOOK_RETRY_PERIOD_SEC");
  cfg->content_cleanup_hours = get_number(L, "HOOK_CONTENT_CLEANUP_HOURS");
  cfg->shutdown_grace_sec = get_number(L, "shutdown_grace_sec");
  cfg->history_days = get_number(L, "history_days");
  cfg->cleanup_interval_sec = get_number(L, "cleanup_interval_sec");
  cfg->max_pending_bytes = (size_t)get_number(L, "max_pending_bytes");
  cfg->max_connections = (int)get_number(L, "max_connections");
  cfg->request_timeout_sec = get_number(L, "request_timeout_sec");
  cfg->hook_cpu_limit_ms = (int)get_number(L, "hook_cpu_limit_ms");
  cfg->hook_memory_limit_mb = (int)get_number(L, "hook_memory_limit_mb");
  cfg->lua_memory_limit_mb = (int)get_number(L, "lua_memory_limit_mb");
  cfg->max_message_bytes = (size_t)get_number(L, "max_message_bytes");
}

/* The listen address must be one the server takes; one that other
 * machines can reach (anything but 127.x.x.x and ::1) needs api_token,
 * since the admin API changes hooks and reads profiles. Returns 0, or -1
 * with the reason. */
static int check_listen(const hk_config *cfg, char *why, size_t len) {
  int loopback = 0;

  if (!hk_http_listen_addr_valid(cfg->listen, &loopback)) {
    snprintf(why, len, "listen \"%s\": invalid address, want host:port "
             "(a port of 0-65535; an IPv6 host in [])",
             cfg->listen ? cfg->listen : "");
    return -1;
  }
  if (!loopback && cfg->api_token == NULL) {
    snprintf(why, len, "listen: %s can be reached from other machines, "
             "and api_token is not set: set api_token (and ingest_token) "
             "or listen on 127.0.0.1", cfg->listen);
    return -1;
  }
  return 0;
}

int hk_config_load(hk_bridge *b, const char *path, hk_config *cfg, char *err,
                   size_t errlen) {
  lua_State *L = hk_bridge_state(b);
  char reason[512];
  char *text = NULL;
  char *dir = NULL;
  size_t len = 0;
  int rc = -1;

  memset(cfg, 0, sizeof *cfg);
  if (path == NULL) { /* no file: every default */
    path = "(defaults)";
    text = strdup("{}");
    len = 2;
  } else {
    text = hk_read_file(path, &len);
  }
  if (text == NULL) {
    snprintf(err, errlen, "cannot read config %s: %s", path, strerror(errno));
    goto done;
  }
  dir = config_dir_of(path);
  if (hk_bridge_load_config(b, text, len, dir, reason, sizeof reason) != 0) {
    snprintf(err, errlen, "config %s: %s", path, reason);
    goto done;
  }
  cfg->path = strdup(path);
  take_fields(L, cfg);
  lua_pop(L, 1);
  if (check_listen(cfg, reason, sizeof reason) != 0) {
    snprintf(err, errlen, "config %s: %s", path, reason);
    goto done;
  }
  rc = 0;
done:
  free(text);
  free(dir);
  return rc;
}

char *hk_config_peek_lua_dir(const char *path) {
  /* The runtime parses the file properly later; here a missing or odd
   * value simply means the default folder. */
  size_t len;
  char *text = hk_read_file(path, &len);
  char *out = NULL;
  char *p, *q, *dir;

  if (text == NULL) return NULL;
  p = strstr(text, "\"lua_dir\"");
  if (p && (p = strchr(p + 9, '"')) && (q = strchr(p + 1, '"'))) {
    *q = '\0';
    if (p[1] == '/') {
      out = strdup(p + 1);
    } else {
      dir = config_dir_of(path);
      if (asprintf(&out, "%s/%s", dir, p + 1) < 0) out = NULL;
      free(dir);
    }
  }
  free(text);
  return out;
}

void hk_config_free(hk_config *cfg) {
  free(cfg->path);
  free(cfg->listen);
  free(cfg->data_dir);
  free(cfg->plugins_dir);
  free(cfg->catalog);
  free(cfg->lua_dir);
  free(cfg->log_level);
  free(cfg->api_token);
  free(cfg->ingest_token);
  free(cfg->metrics_token);
  memset(cfg, 0, sizeof *cfg);
}
