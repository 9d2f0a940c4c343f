/* `hookd check` and `hookd try` (see hook_cli.h). The runtime does the
 * checking and the trying (M.check, M.try and M.try_events in
 * router.lua); this file finds the files and events and prints. */
#include "hook_cli.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"
#include "config.h"
#include "datetime.h"
#include "hook_files.h"
#include "json_scan.h"
#include "store.h"

/* ---- check ---- */

/* A hook's id is its file name without the folder and ".lua", as the
 * reloader names it. */
static void file_id(const char *path, char *id, size_t n) {
  const char *name = strrchr(path, '/');
  size_t len;

  name = name ? name + 1 : path;
  len = strlen(name);
  if (len > 4 && strcmp(name + len - 4, ".lua") == 0) len -= 4;
  snprintf(id, n, "%.*s", (int)len, name);
}

/* Loads one file through the router, as the reloader would, and prints
 * its problems. Returns how many it printed. */
static int check_file(hk_bridge *b, hk_router *r, const char *path) {
  hk_strlist problems = {0};
  hk_buf view = HK_BUF_INIT;
  char id[256], err[1024];
  size_t len;
  char *src = hk_read_file(path, &len);
  int n = 0;

  if (src == NULL) {
    printf("%s: cannot read: %s\n", path, strerror(errno));
    return 1;
  }
  file_id(path, id, sizeof id);
  if (hk_router_load_text(r, id, path, src, len, 0) == 0) goto done;
  /* The router keeps only the first problem, in one line; the runtime
   * finds them all again, with lines, and adds the router's own. */
  hk_router_render_hook(r, id, &view);
  if (hk_bridge_check_hook(b, id, path, src, len, view.data, view.len,
                           &problems, err, sizeof err) != 0) {
    printf("%s: cannot be checked: %s\n", path, err);
    n = 1;
    goto done;
  }
  for (size_t i = 0; i < problems.n; i++) printf("%s\n", problems.s[i]);
  n = (int)problems.n;
  if (n == 0) {
    printf("%s: does not load (the log says why)\n", path);
    n = 1;
  }
done:
  hk_strlist_free(&problems);
  hk_buf_free(&view);
  free(src);
  return n;
}

/* Whether the file name (the path's last part) is <id>.lua, the only
 * name the reloader loads. */
static int hook_id_name(const char *path) {
  char id[256];
  const char *name = strrchr(path, '/');
  size_t len;

  name = name ? name + 1 : path;
  len = strlen(name);
  if (len < 5 || strcmp(name + len - 4, ".lua") != 0) return 0;
  file_id(path, id, sizeof id);
  return hk_hook_id_valid(id);
}

/* Visible .lua files; hidden ones are editor leftovers, as for the
 * reloader. */
static int lua_name(const struct dirent *e) {
  size_t len = strlen(e->d_name);

  return e->d_name[0] != '.' && len > 4 &&
         strcmp(e->d_name + len - 4, ".lua") == 0;
}

/* The paths of the .lua files in dir (regular files, or links to them),
 * by name. Returns how many, or -1 with errno. */
static long list_hooks(const char *dir, char ***out) {
  struct dirent **names;
  struct stat st;
  int n = scandir(dir, &names, lua_name, alphasort);
  char **paths;
  long kept = 0;

  if (n < 0) return -1;
  paths = calloc(n ? (size_t)n : 1, sizeof *paths);
  for (int i = 0; i < n; i++) {
    char *p = NULL;

    if (paths && asprintf(&p, "%s/%s", dir, names[i]->d_name) >= 0) {
      if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) paths[kept++] = p;
      else free(p);
    }
    free(names[i]);
  }
  free(names);
  *out = paths;
  if (paths == NULL) errno = ENOMEM;
  return paths ? kept : -1;
}

static void print_summary(long files, int broken, int problems,
                          const char *dir) {
  if (files == 0 && dir) printf("no hook files in %s\n", dir);
  else if (problems == 0) printf("all hooks ok (%ld file%s)\n", files,
                                 files == 1 ? "" : "s");
  else printf("%d problem%s in %d of %ld hook file%s\n", problems,
              problems == 1 ? "" : "s", broken, files, files == 1 ? "" : "s");
}

int hk_cli_check(hk_bridge *b, hk_router *r, const char *plugins_dir,
                 const char *const *files, size_t n_files) {
  char **listed = NULL;
  long n = (long)n_files;
  int problems = 0, broken = 0;

  if (n_files == 0) {
    n = list_hooks(plugins_dir, &listed);
    if (n < 0) {
      fprintf(stderr, "hookd: cannot read plugins_dir %s: %s\n", plugins_dir,
              strerror(errno));
      return 2;
    }
    files = (const char *const *)listed;
  }
  for (long i = 0; i < n; i++) {
    int k = 1, loadable = hook_id_name(files[i]);

    /* Named files are checked whatever their name, with a note when the
     * reloader would pass over that name; in plugins_dir, such a name
     * is a problem of its own. */
    if (listed && !loadable) {
      printf("%s: not loaded: a hook file is named <id>.lua, the id of "
             "letters, digits, _ and -\n", files[i]);
    } else {
      if (!loadable)
        printf("%s: note: checked, but the router loads a hook only from "
               "a file named <id>.lua, the id of letters, digits, _ and "
               "-\n", files[i]);
      k = check_file(b, r, files[i]);
    }

    problems += k;
    broken += k > 0;
  }
  print_summary(n, broken, problems, n_files == 0 ? plugins_dir : NULL);
  for (long i = 0; listed && i < n; i++) free(listed[i]);
  free(listed);
  return problems ? 1 : 0;
}

/* ---- try: events from a file or standard input ---- */

/* Events per call into the runtime, so a long input never has all its
 * output lines built at once. */
#define TRY_CHUNK 1000

/* Runs the hook over the events. Returns the events it failed on, or -1
 * when the runtime itself failed (printed). */
static long try_texts(hk_bridge *b, const char *const *texts,
                      const size_t *lens, size_t n) {
  char err[1024];
  long errors = hk_bridge_try_events(b, texts, lens, n, stdout, err,
                                     sizeof err);

  if (errors < 0) fprintf(stderr, "hookd: %s\n", err);
  return errors;
}

static long try_spans(hk_bridge *b, const hk_event_span *spans, size_t n) {
  const char *texts[TRY_CHUNK];
  size_t lens[TRY_CHUNK];
  long errors = 0;

  for (size_t i = 0; i < n; i += TRY_CHUNK) {
    size_t k = n - i < TRY_CHUNK ? n - i : TRY_CHUNK;
    long e;

    for (size_t j = 0; j < k; j++) {
      texts[j] = spans[i + j].json;
      lens[j] = spans[i + j].json_len;
    }
    if ((e = try_texts(b, texts, lens, k)) < 0) return -1;
    errors += e;
  }
  return errors;
}

static int blank(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (!strchr(" \t\r\n", s[i])) return 0;
  return 1;
}

static int try_stream(hk_bridge *b, const hk_try_options *opt) {
  int from_stdin = opt->events_path == NULL ||
                   strcmp(opt->events_path, "-") == 0;
  const char *name = from_stdin ? "standard input" : opt->events_path;
  hk_scan_options sopt = {0, 0, 0}; /* a JSON value or NDJSON, as ingest */
  hk_event_span *spans = NULL;
  hk_scan_error serr;
  size_t len, n = 0;
  char *text = from_stdin ? hk_read_stream(stdin, &len)
                          : hk_read_file(opt->events_path, &len);
  long errors = 0;
  int rc = 2;

  if (text == NULL) {
    fprintf(stderr, "hookd: cannot read %s: %s\n", name, strerror(errno));
    return 2;
  }
  if (blank(text, len)) {
    /* Nothing to try is no failure, but a mistyped path in <(cat ...)
     * looks the same: say so. */
    fprintf(stderr, "hookd: %s: no events\n", name);
    rc = 0;
  } else if (hk_scan_events(text, len, &sopt, &spans, &n, &serr) != 0) {
    if (serr.index >= 0)
      fprintf(stderr, "hookd: %s: event %ld: %s\n", name, serr.index + 1,
              serr.message);
    else
      fprintf(stderr, "hookd: %s: %s\n", name, serr.message);
  } else {
    errors = try_spans(b, spans, n);
    rc = errors != 0 ? 1 : 0;
  }
  free(spans);
  free(text);
  return rc;
}

/* ---- try: events from the store's history ---- */

#define TRY_PAGE 500

/* Runs the hook over the stored events dated in [from, to), page by page
 * in the order they were received. Returns the events it failed on, or
 * -1. */
static long try_history(hk_bridge *b, hk_store *s, double from, double to,
                        long *seen) {
  hk_event_page p = {0};
  long errors = 0, got;

  do {
    long e = 0;

    got = hk_store_history_page(s, from, to, p.last_id, TRY_PAGE,
                                hk_event_page_add, &p);
    if (got > 0)
      e = try_texts(b, (const char *const *)p.texts, p.lens, p.n);
    hk_event_page_clear(&p);
    if (got < 0 || e < 0) errors = -1;
    if (errors >= 0) errors += e;
    *seen += got > 0 ? got : 0;
  } while (got == TRY_PAGE && errors >= 0);
  hk_event_page_free(&p);
  return errors;
}

/* [from, to) for --since and --until, both days included. Returns 0, or
 * -1 with err. */
static int day_range(const hk_try_options *opt, double *from, double *to,
                     char *err, size_t errlen) {
  double last;

  if (opt->since == NULL || hk_datetime_parse_day(opt->since, from) != 0) {
    snprintf(err, errlen, "--since needs a UTC day, YYYY-MM-DD (got %s)",
             opt->since ? opt->since : "nothing");
    return -1;
  }
  *to = (double)HK_DATETIME_MAX_SEC + 1.0;
  if (opt->until == NULL) return 0;
  if (hk_datetime_parse_day(opt->until, &last) != 0) {
    snprintf(err, errlen, "--until needs a UTC day, YYYY-MM-DD (got %s)",
             opt->until);
    return -1;
  }
  *to = last + 86400.0;
  if (*to <= *from) {
    snprintf(err, errlen, "--until %s is before --since %s", opt->until,
             opt->since);
    return -1;
  }
  return 0;
}

/* Profile fields and content come from the store, as they would in the
 * router (its current state, not the state at the event's time). */
typedef struct try_lookups {
  hk_store *store;
  double content_hours;
} try_lookups;

static char *store_get_cb(void *ctx, const char *kind, const char *key1,
                          const char *key2, size_t *len) {
  try_lookups *t = ctx;
  double not_before = hk_store_now() - t->content_hours * 3600.0;

  if (strcmp(kind, "profile") == 0 && key2)
    return hk_store_profile_get(t->store, key1, key2, len);
  if (strcmp(kind, "content") == 0)
    return hk_store_content_get(t->store, key1, not_before, len);
  return NULL;
}

/* The names the router uses: the catalog it keeps in the store (the
 * file's entries as of its last start, and those set through the API). */
static void use_store_catalog(hk_bridge *b, hk_store *s) {
  hk_buf merged = HK_BUF_INIT;
  char err[256];

  if (hk_store_catalog_render(s, &merged) == 0 && merged.len > 2 &&
      hk_bridge_set_catalog(b, merged.data, merged.len, err, sizeof err) != 0)
    fprintf(stderr, "hookd: the store's catalog is not used: %s\n", err);
  hk_buf_free(&merged);
}

static int try_store(hk_bridge *b, const hk_try_options *opt) {
  hk_bridge_callbacks cbs = {0}, none = {0};
  try_lookups lookups;
  char err[1024];
  double from, to;
  long seen = 0, errors;

  if (day_range(opt, &from, &to, err, sizeof err) != 0) goto fail;
  lookups.store = hk_store_open_readonly(opt->data_dir, err, sizeof err);
  if (lookups.store == NULL) goto fail;
  lookups.content_hours = opt->content_hours;
  use_store_catalog(b, lookups.store);
  cbs.store_get_cb = store_get_cb;
  cbs.ctx = &lookups;
  hk_bridge_set_callbacks(b, &cbs);
  errors = try_history(b, lookups.store, from, to, &seen);
  hk_bridge_set_callbacks(b, &none);
  hk_store_close(lookups.store);
  if (errors < 0) return 2;
  if (seen == 0)
    fprintf(stderr, "hookd: no stored events from %s to %s\n", opt->since,
            opt->until ? opt->until : "now");
  return errors ? 1 : 0;
fail:
  fprintf(stderr, "hookd: %s\n", err);
  return 2;
}

int hk_cli_try(hk_bridge *b, const hk_try_options *opt) {
  char err[1024];
  size_t len;
  char *src = hk_read_file(opt->hook_path, &len);
  int rc;

  if (src == NULL) {
    fprintf(stderr, "hookd: cannot read %s: %s\n", opt->hook_path,
            strerror(errno));
    return 2;
  }
  rc = hk_bridge_try_load(b, opt->hook_path, src, len, err, sizeof err);
  free(src);
  if (rc != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  return opt->from_store ? try_store(b, opt) : try_stream(b, opt);
}
