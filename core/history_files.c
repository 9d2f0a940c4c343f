/* Appending history chunks to files, putting them on disk before their
 * rows commit, deleting the files nothing names, and reading chunks back
 * (the layout is in history_files.h). */
#include "history_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define NAME_DIGITS 10

/* The path of file number n (caller frees), or NULL. */
static char *file_path(const hk_history_files *h, int64_t n) {
  char *p;

  if (asprintf(&p, "%s/%0*lld.ndjson", h->dir, NAME_DIGITS,
               (long long)n) < 0)
    return NULL;
  return p;
}

/* The number of a history file's name, or -1 for any other name. */
static int64_t file_number(const char *name) {
  int64_t n = 0;
  int k = 0;

  for (; name[k] >= '0' && name[k] <= '9'; k++) {
    if (n > (INT64_MAX - 9) / 10) return -1;
    n = n * 10 + (name[k] - '0');
  }
  return k >= NAME_DIGITS && strcmp(name + k, ".ndjson") == 0 ? n : -1;
}

int hk_history_files_init(hk_history_files *h, const char *data_dir) {
  memset(h, 0, sizeof *h);
  h->fd = -1;
  h->file_bytes = HK_HISTORY_FILE_BYTES;
  return asprintf(&h->dir, "%s/history", data_dir) < 0 ? -1 : 0;
}

/* 1 when a row of db's history names file n, 0 when none does, -1 on a
 * read error. */
static int named(sqlite3 *db, int64_t n) {
  sqlite3_stmt *st = NULL;
  int rc;

  if (sqlite3_prepare_v2(db, "SELECT 1 FROM history WHERE file = ?1 "
                         "LIMIT 1", -1, &st, NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_int64(st, 1, n);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Deletes file n unless a row names it (or that cannot be read). */
static void drop_if_unnamed(hk_history_files *h, sqlite3 *db, int64_t n) {
  char *path;

  if (named(db, n) != 0 || (path = file_path(h, n)) == NULL) return;
  if (unlink(path) == 0)
    hk_info("store", "history_file=%s deleted=1", path);
  else if (errno != ENOENT)
    hk_error("store", "history_file=%s delete_failed=1 error=\"%s\"", path,
             strerror(errno));
  free(path);
}

/* The highest file number db's history table names (0 for none). */
static int newest_named(sqlite3 *db, int64_t *n) {
  sqlite3_stmt *st = NULL;
  int rc;

  if (sqlite3_prepare_v2(db, "SELECT coalesce(max(file), 0) FROM history",
                         -1, &st, NULL) != SQLITE_OK)
    return -1;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 0 : -1;
}

int hk_history_files_open(hk_history_files *h, sqlite3 *db, char *err,
                          size_t errlen) {
  int64_t newest = 0;
  struct dirent *e;
  DIR *d;

  if (mkdir(h->dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "store: cannot create %s: %s", h->dir,
             strerror(errno));
    return -1;
  }
  if ((d = opendir(h->dir)) == NULL) {
    snprintf(err, errlen, "store: cannot read %s: %s", h->dir,
             strerror(errno));
    return -1;
  }
  if (newest_named(db, &newest) != 0) {
    closedir(d);
    snprintf(err, errlen, "store: history files: %s", sqlite3_errmsg(db));
    return -1;
  }
  while ((e = readdir(d)) != NULL) {
    int64_t n = file_number(e->d_name);

    if (n < 0) continue;
    if (n > newest) newest = n;
    drop_if_unnamed(h, db, n);
  }
  closedir(d);
  h->file = newest + 1;
  return 0;
}

/* Makes the folder's entries durable: a new file's name must be on disk
 * before a commit names the file. */
static int sync_dir(const hk_history_files *h) {
  int fd = open(h->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

  if (fd < 0) return errno;
  if (fsync(fd) != 0) rc = errno;
  close(fd);
  return rc;
}

/* Closes the current file (its bytes on disk first) and opens the next. */
static int start_file(hk_history_files *h) {
  char *path;
  int rc;

  if (h->fd >= 0) {
    if ((rc = hk_history_files_sync(h)) != 0) return rc;
    close(h->fd);
    h->fd = -1;
    h->file++;
  }
  if ((path = file_path(h, h->file)) == NULL) return ENOMEM;
  h->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  rc = h->fd < 0 ? errno : sync_dir(h);
  if (rc != 0)
    hk_error("store", "history_file=%s create_failed=1 error=\"%s\"", path,
             strerror(rc));
  free(path);
  h->end = 0;
  if (rc == 0) return 0;
  if (h->fd >= 0) close(h->fd);
  h->fd = -1;
  h->file++; /* the name may be taken now: the next try takes another */
  return rc;
}

int hk_history_files_append(hk_history_files *h, const void *p, size_t len,
                            int64_t *file, uint64_t *offset) {
  size_t done = 0;
  int rc;

  if ((h->fd < 0 || (h->end > 0 && h->end + len > h->file_bytes)) &&
      (rc = start_file(h)) != 0)
    return rc;
  while (done < len) {
    ssize_t w = pwrite(h->fd, (const char *)p + done, len - done,
                       (off_t)(h->end + done));

    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? errno : EIO;
    done += (size_t)w;
  }
  *file = h->file;
  *offset = h->end;
  h->end += len;
  h->unsynced = 1;
  return 0;
}

int hk_history_files_sync(hk_history_files *h) {
  int rc;

  if (!h->unsynced || h->fd < 0) return 0;
  if (fdatasync(h->fd) == 0) {
    h->unsynced = 0;
    return 0;
  }
  rc = errno;
  close(h->fd);
  h->fd = -1;
  h->file++;
  h->unsynced = 0;
  return rc;
}

void hk_history_files_freed(hk_history_files *h, int64_t file) {
  if (h->n_freed > 0 && h->freed[h->n_freed - 1] == file) return;
  if (h->n_freed == h->freed_cap) {
    size_t cap = h->freed_cap ? h->freed_cap * 2 : 16;
    int64_t *f = realloc(h->freed, cap * sizeof *f);

    if (f == NULL) return; /* the file goes when the store next opens */
    h->freed = f;
    h->freed_cap = cap;
  }
  h->freed[h->n_freed++] = file;
}

void hk_history_files_sweep(hk_history_files *h, sqlite3 *db) {
  size_t kept = 0;

  for (size_t i = 0; i < h->n_freed; i++) {
    int64_t n = h->freed[i];

    if (n == h->file && h->fd >= 0) h->freed[kept++] = n; /* later */
    else drop_if_unnamed(h, db, n);
  }
  h->n_freed = kept;
}

void hk_history_files_close(hk_history_files *h) {
  if (h->fd >= 0) close(h->fd);
  h->fd = -1;
  free(h->dir);
  free(h->freed);
  h->dir = NULL;
  h->freed = NULL;
  h->n_freed = h->freed_cap = 0;
}

int hk_history_files_read(const hk_history_files *h, int64_t file,
                          uint64_t offset, size_t len, hk_buf *out) {
  char *path = file_path(h, file);
  size_t done = 0;
  int fd, rc = 0;

  if (path == NULL) return ENOMEM;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  free(path);
  if (fd < 0) return errno;
  hk_buf_reset(out);
  if (hk_buf_reserve(out, len) != 0) rc = ENOMEM;
  while (rc == 0 && done < len) {
    ssize_t r = pread(fd, out->data + done, len - done,
                      (off_t)(offset + done));

    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) rc = r < 0 ? errno : EIO;
    else done += (size_t)r;
  }
  close(fd);
  out->len = done;
  return rc;
}
