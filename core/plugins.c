/* The plugins folder watcher. A change notification (inotify through
 * uv_fs_event) schedules a rescan; a slow timer rescans anyway in case a
 * notification is missed. A file is loaded only once it has stopped
 * changing for SETTLE_MS, so an editor that saves in two steps never has
 * its half-written file loaded, and a hook stops only when its file has
 * been gone for REMOVE_GRACE_MS, so an editor that saves by moving the old
 * file aside and writing a new one never stops it.
 *
 * Shared modules under lib/ (and its subfolders) are watched by a stat
 * scan every LIB_POLL_MS rather than by notifications: inotify does not
 * watch a tree, so it would take a watch per subfolder, added and dropped
 * as folders come and go, and still need a scan for what happens in
 * between. A lib/ of tens of files costs a few dozen stat calls a scan. A
 * module that settled after a change, appeared, or has been gone for
 * REMOVE_GRACE_MS reloads every hook that required it (the router knows
 * which), through the same validation as a hook file. */
#include "plugins.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "hook_files.h"
#include "log.h"

#define SETTLE_MS 150
#define REMOVE_GRACE_MS 500
#define RESCAN_DELAY_MS 50
#define POLL_MS 1000
#define MAX_FILES 1024
#define LIB_POLL_MS 250
#define LIB_MAX_DEPTH 8
#define LIB_MAX_MODULES 4096

typedef struct file_stamp {
  char id[256]; /* a hook id, or a module's path under lib/ */
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
  int seen;             /* found by the current scan */
  double missing_since; /* monotonic ms when first found gone, or 0 */
} file_stamp;

struct hk_plugins {
  uv_loop_t *loop;
  hk_router *router;
  char *dir;
  uv_fs_event_t watch;
  uv_timer_t rescan; /* debounced rescan after a notification */
  uv_timer_t poll;   /* periodic rescan */
  file_stamp files[MAX_FILES];
  size_t n_files;
  int watching;
  int open_handles; /* freed when the last handle has closed */
  char **ignored;   /* .lua names already reported as not a hook id */
  size_t n_ignored;
  char *lib_dir;       /* dir/lib */
  uv_timer_t lib_poll; /* the stat scan of lib/ */
  file_stamp *mods;    /* the modules of lib/ as last scanned */
  size_t n_mods, cap_mods;
  char **reload; /* hooks to reload once a lib/ scan is done */
  size_t n_reload;
  int lib_full_reported; /* warned that LIB_MAX_MODULES was reached */
};

/* A hook id is the file name without ".lua": letters, digits, '_' and '-'.
 * Editor leftovers (".#x.lua", "x.lua~", ".x.lua.swp") never match. */
static int hook_id_from_name(const char *name, char *id, size_t idlen) {
  size_t len = strlen(name);

  if (len < 5 || len - 4 >= idlen || strcmp(name + len - 4, ".lua") != 0)
    return -1;
  memcpy(id, name, len - 4);
  id[len - 4] = '\0';
  return hk_hook_id_valid(id) ? 0 : -1;
}

/* Says once per name that a visible .lua file is not loaded because its
 * name is not a hook id (hidden files and editor leftovers stay quiet). */
static void report_ignored(hk_plugins *p, const char *name,
                           const char *why) {
  size_t len = strlen(name);
  char **grown;

  if (name[0] == '.' || len < 4 || strcmp(name + len - 4, ".lua") != 0)
    return;
  for (size_t i = 0; i < p->n_ignored; i++)
    if (strcmp(p->ignored[i], name) == 0) return;
  grown = realloc(p->ignored, (p->n_ignored + 1) * sizeof *grown);
  if (grown == NULL) return;
  p->ignored = grown;
  p->ignored[p->n_ignored++] = strdup(name);
  hk_warn("plugins", "file=\"%s\" ignored=1 reason=\"%s\"", name, why);
}

#define BAD_NAME "a hook file is named <id>.lua, id of letters, digits, _ and -"
#define NOT_A_FILE "not a regular file (a directory, a FIFO, or a link to " \
  "nothing)"

static file_stamp *stamp_find(hk_plugins *p, const char *id) {
  for (size_t i = 0; i < p->n_files; i++)
    if (strcmp(p->files[i].id, id) == 0) return &p->files[i];
  return NULL;
}

static int stamp_same(const file_stamp *f, const struct stat *st) {
  return f->dev == st->st_dev && f->ino == st->st_ino &&
         f->size == st->st_size && f->mtime.tv_sec == st->st_mtim.tv_sec &&
         f->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static void stamp_set(file_stamp *f, const struct stat *st) {
  f->dev = st->st_dev;
  f->ino = st->st_ino;
  f->size = st->st_size;
  f->mtime = st->st_mtim;
}

static double monotonic_ms(void) {
  struct timespec now;

  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6;
}

static double ms_since(const struct timespec *t) {
  struct timespec now;

  clock_gettime(CLOCK_REALTIME, &now);
  return (double)(now.tv_sec - t->tv_sec) * 1e3 +
         (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

/* Looks at one directory entry. Returns 1 when it changed too recently to
 * load (the caller rescans soon), else 0. */
static int scan_entry(hk_plugins *p, const char *name, int settle) {
  char id[128], path[4096];
  struct stat st;
  file_stamp *f;

  if (hook_id_from_name(name, id, sizeof id) != 0) {
    report_ignored(p, name, BAD_NAME);
    return 0;
  }
  snprintf(path, sizeof path, "%s/%s", p->dir, name);
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (lstat(path, &st) == 0) report_ignored(p, name, NOT_A_FILE);
    return 0;
  }
  f = stamp_find(p, id);
  if (f) f->missing_since = 0;
  if (f && stamp_same(f, &st)) {
    f->seen = 1;
    return 0;
  }
  if (settle && ms_since(&st.st_mtim) < SETTLE_MS) {
    if (f) f->seen = 1; /* changing, not gone */
    return 1;
  }
  if (f == NULL) {
    if (p->n_files == MAX_FILES) return 0;
    f = &p->files[p->n_files++];
    snprintf(f->id, sizeof f->id, "%s", id);
  }
  stamp_set(f, &st);
  f->seen = 1;
  hk_router_load_file(p->router, id, path);
  return 0;
}

/* Stops the hooks whose files have been gone for REMOVE_GRACE_MS (at
 * once when grace is 0). Returns 1 when some file is gone but still within
 * its grace, so the caller rescans soon. */
static int drop_missing(hk_plugins *p, int grace) {
  double now = monotonic_ms();
  int waiting = 0;
  size_t i = 0;

  while (i < p->n_files) {
    file_stamp *f = &p->files[i];

    if (!f->seen && grace && f->missing_since == 0) f->missing_since = now;
    if (f->seen || (grace && now - f->missing_since < REMOVE_GRACE_MS)) {
      waiting |= !f->seen;
      i++;
      continue;
    }
    hk_router_remove(p->router, f->id);
    *f = p->files[--p->n_files];
  }
  return waiting;
}

/* Returns 1 when some file is still settling, 0 when done, -1 on error. */
static int scan(hk_plugins *p, int settle) {
  DIR *d = opendir(p->dir);
  struct dirent *e;
  int unsettled = 0;

  if (d == NULL) {
    hk_error("plugins", "dir=%s error=\"%s\"", p->dir, strerror(errno));
    return -1;
  }
  for (size_t i = 0; i < p->n_files; i++) p->files[i].seen = 0;
  while ((e = readdir(d)) != NULL) unsettled |= scan_entry(p, e->d_name, settle);
  closedir(d);
  unsettled |= drop_missing(p, settle);
  return unsettled;
}

/* ---- modules under lib/ ---- */

/* A module file or folder name part: letters, digits and '_', as the
 * names require accepts. Anything else (editor leftovers, hidden files)
 * can never be required and is not watched. */
static int module_word(const char *s, size_t len) {
  if (len == 0) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  return 1;
}

static int module_file_name(const char *name) {
  size_t len = strlen(name);

  return len > 4 && strcmp(name + len - 4, ".lua") == 0 &&
         module_word(name, len - 4);
}

static file_stamp *module_find(hk_plugins *p, const char *rel) {
  for (size_t i = 0; i < p->n_mods; i++)
    if (strcmp(p->mods[i].id, rel) == 0) return &p->mods[i];
  return NULL;
}

static file_stamp *module_add(hk_plugins *p, const char *rel) {
  file_stamp *m;

  if (p->n_mods == p->cap_mods) {
    size_t cap = p->cap_mods ? p->cap_mods * 2 : 32;
    file_stamp *grown;

    if (cap > LIB_MAX_MODULES) return NULL;
    grown = realloc(p->mods, cap * sizeof *grown);
    if (grown == NULL) return NULL;
    p->mods = grown;
    p->cap_mods = cap;
  }
  m = &p->mods[p->n_mods++];
  memset(m, 0, sizeof *m);
  snprintf(m->id, sizeof m->id, "%s", rel);
  return m;
}

/* Adds id to the hooks to reload, once. */
static void reload_add(hk_plugins *p, const char *id) {
  char **grown;

  for (size_t i = 0; i < p->n_reload; i++)
    if (strcmp(p->reload[i], id) == 0) return;
  grown = realloc(p->reload, (p->n_reload + 1) * sizeof *grown);
  if (grown == NULL) return;
  p->reload = grown;
  if ((p->reload[p->n_reload] = strdup(id)) != NULL) p->n_reload++;
}

/* Module rel changed (what: changed, added, removed): the hooks that use
 * it are reloaded once the scan is done. */
static void module_changed(hk_plugins *p, const char *rel, const char *what) {
  hk_strlist ids;

  if (hk_router_module_dependents(p->router, rel, &ids) != 0) return;
  hk_info("plugins", "module=lib/%s %s=1 dependents=%zu", rel, what, ids.n);
  for (size_t i = 0; i < ids.n; i++) reload_add(p, ids.s[i]);
  hk_strlist_free(&ids);
}

/* Looks at module file rel. The first scan (baseline) only records what
 * is there: the hooks loaded right after it read the same files. */
static void module_entry(hk_plugins *p, const char *rel,
                         const struct stat *st, int baseline) {
  file_stamp *m = module_find(p, rel);
  int known = m != NULL;

  if (m) m->missing_since = 0;
  if (m && stamp_same(m, st)) {
    m->seen = 1;
    return;
  }
  if (!baseline && ms_since(&st->st_mtim) < SETTLE_MS) {
    if (m) m->seen = 1; /* changing, not gone: a later scan takes it */
    return;
  }
  if (m == NULL && (m = module_add(p, rel)) == NULL) {
    if (!p->lib_full_reported)
      hk_warn("plugins", "module=lib/%s watched=0 reason=\"more than %d "
              "modules: the rest are not watched\"", rel, LIB_MAX_MODULES);
    p->lib_full_reported = 1;
    return;
  }
  stamp_set(m, st);
  m->seen = 1;
  if (!baseline) module_changed(p, rel, known ? "changed" : "added");
}

/* Walks lib/rel ("" for lib/ itself) down to LIB_MAX_DEPTH folders; the
 * depth also ends a loop of symbolic links. Returns -1 when a folder
 * could not be read for want of descriptors or memory: its modules are
 * not gone, and must not count as removed. */
static int lib_walk(hk_plugins *p, const char *rel, int depth,
                    int baseline) {
  char dir[4096], path[4096], child[sizeof p->mods->id];
  struct dirent *e;
  struct stat st;
  int rc = 0;
  DIR *d;

  snprintf(dir, sizeof dir, "%s%s%s", p->lib_dir, *rel ? "/" : "", rel);
  if ((d = opendir(dir)) == NULL)
    return errno == EMFILE || errno == ENFILE || errno == ENOMEM ? -1 : 0;
  while ((e = readdir(d)) != NULL) {
    int file = module_file_name(e->d_name);

    if (!file && !module_word(e->d_name, strlen(e->d_name))) continue;
    if (snprintf(child, sizeof child, "%s%s%s", rel, *rel ? "/" : "",
                 e->d_name) >= (int)sizeof child)
      continue;
    snprintf(path, sizeof path, "%s/%s", p->lib_dir, child);
    if (stat(path, &st) != 0) continue;
    if (file && S_ISREG(st.st_mode))
      module_entry(p, child, &st, baseline);
    else if (!file && S_ISDIR(st.st_mode) && depth < LIB_MAX_DEPTH)
      rc |= lib_walk(p, child, depth + 1, baseline);
  }
  closedir(d);
  return rc;
}

/* Modules gone for REMOVE_GRACE_MS count as removed (an editor that saves
 * by moving the old file aside comes back well within it). */
static void lib_drop_missing(hk_plugins *p) {
  double now = monotonic_ms();
  size_t i = 0;

  while (i < p->n_mods) {
    file_stamp *m = &p->mods[i];

    if (!m->seen && m->missing_since == 0) m->missing_since = now;
    if (m->seen || now - m->missing_since < REMOVE_GRACE_MS) {
      i++;
      continue;
    }
    module_changed(p, m->id, "removed");
    *m = p->mods[--p->n_mods];
  }
}

/* Reloads the hooks queued by the scan, each from its own file. */
static void reload_dependents(hk_plugins *p) {
  for (size_t i = 0; i < p->n_reload; i++) {
    const char *file = hk_router_hook_file(p->router, p->reload[i]);
    char path[4096];

    if (file != NULL) {
      /* load_file replaces the hook's file name: pass a copy. */
      snprintf(path, sizeof path, "%s", file);
      hk_info("plugins", "hook=%s reload=1 reason=\"a module it requires "
              "changed\"", p->reload[i]);
      hk_router_load_file(p->router, p->reload[i], path);
    }
    free(p->reload[i]);
  }
  free(p->reload);
  p->reload = NULL;
  p->n_reload = 0;
}

static void lib_scan(hk_plugins *p, int baseline) {
  int complete;

  for (size_t i = 0; i < p->n_mods; i++) p->mods[i].seen = 0;
  complete = lib_walk(p, "", 0, baseline) == 0;
  if (baseline) return;
  if (complete) lib_drop_missing(p);
  reload_dependents(p);
}

static void lib_poll_cb(uv_timer_t *t) { lib_scan(t->data, 0); }

static void rescan_cb(uv_timer_t *t) {
  hk_plugins *p = t->data;

  if (scan(p, 1) == 1) uv_timer_start(&p->rescan, rescan_cb, SETTLE_MS, 0);
}

static void poll_cb(uv_timer_t *t) { rescan_cb(&((hk_plugins *)t->data)->rescan); }

static void fs_event_cb(uv_fs_event_t *h, const char *name, int events,
                        int status) {
  hk_plugins *p = h->data;

  if (!uv_is_active((uv_handle_t *)&p->rescan))
    uv_timer_start(&p->rescan, rescan_cb, RESCAN_DELAY_MS, 0);
}

static hk_plugins *plugins_new(hk_router *router, const char *dir) {
  hk_plugins *p = calloc(1, sizeof *p);

  if (p == NULL) return NULL;
  p->router = router;
  p->dir = strdup(dir);
  if (p->dir == NULL || asprintf(&p->lib_dir, "%s/lib", dir) < 0) {
    free(p->dir);
    free(p);
    return NULL;
  }
  return p;
}

static void plugins_free(hk_plugins *p) {
  for (size_t i = 0; i < p->n_ignored; i++) free(p->ignored[i]);
  free(p->ignored);
  for (size_t i = 0; i < p->n_reload; i++) free(p->reload[i]);
  free(p->reload);
  free(p->mods);
  free(p->lib_dir);
  free(p->dir);
  free(p);
}

int hk_plugins_load_all(hk_router *router, const char *dir, char *err,
                        size_t errlen) {
  hk_plugins *p = plugins_new(router, dir);
  int n;

  if (p == NULL) return -1;
  if (scan(p, 0) < 0) {
    snprintf(err, errlen, "cannot read plugins_dir %s: %s", dir,
             strerror(errno));
    n = -1;
  } else {
    n = (int)p->n_files;
  }
  plugins_free(p);
  return n;
}

hk_plugins *hk_plugins_start(uv_loop_t *loop, hk_router *router,
                             const char *dir, char *err, size_t errlen) {
  hk_plugins *p = plugins_new(router, dir);
  int rc;

  if (p == NULL) return NULL;
  p->loop = loop;
  lib_scan(p, 1); /* before the hooks read their modules */
  if (scan(p, 0) < 0) {
    snprintf(err, errlen, "cannot read plugins_dir %s: %s", dir,
             strerror(errno));
    plugins_free(p);
    return NULL;
  }
  uv_timer_init(loop, &p->rescan);
  uv_timer_init(loop, &p->poll);
  p->rescan.data = p->poll.data = p;
  uv_timer_start(&p->poll, poll_cb, POLL_MS, POLL_MS);
  uv_timer_init(loop, &p->lib_poll);
  p->lib_poll.data = p;
  uv_timer_start(&p->lib_poll, lib_poll_cb, LIB_POLL_MS, LIB_POLL_MS);
  uv_fs_event_init(loop, &p->watch);
  p->watch.data = p;
  rc = uv_fs_event_start(&p->watch, fs_event_cb, dir, 0);
  if (rc != 0)
    hk_warn("plugins", "dir=%s watch=off reason=\"%s\" fallback=poll", dir,
            uv_strerror(rc));
  p->watching = rc == 0;
  hk_info("plugins", "dir=%s hooks=%zu watching=%d modules=%zu "
          "lib_poll_ms=%d", dir, p->n_files, p->watching, p->n_mods,
          LIB_POLL_MS);
  return p;
}

/* libuv runs close callbacks in no promised order: free on the last. */
static void handle_closed_cb(uv_handle_t *h) {
  hk_plugins *p = h->data;

  if (--p->open_handles > 0) return;
  plugins_free(p);
}

void hk_plugins_load_one(hk_plugins *p, const char *id) {
  char name[160];

  snprintf(name, sizeof name, "%s.lua", id);
  scan_entry(p, name, 0);
}

void hk_plugins_stop(hk_plugins *p) {
  if (p == NULL) return;
  p->open_handles = 4;
  uv_close((uv_handle_t *)&p->rescan, handle_closed_cb);
  uv_close((uv_handle_t *)&p->lib_poll, handle_closed_cb);
  uv_close((uv_handle_t *)&p->poll, handle_closed_cb);
  uv_close((uv_handle_t *)&p->watch, handle_closed_cb);
}
