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

#include "history.h"
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

/* The first column of sql's first row as an integer. 0, or -1. */
static int query_int(sqlite3 *db, const char *sql, int64_t *n) {
  sqlite3_stmt *st = NULL;
  int rc;

  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 0 : -1;
}

/* Cuts the newest file a row names to the end of its last chunk: what is
 * past it was written by a request that a crash caught before its commit. */
static void trim_newest(hk_history_files *h, sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  uint64_t end = 0;
  int64_t file = 0;
  struct stat sb;
  char *path;

  if (sqlite3_prepare_v2(db, "SELECT file, file_offset, meta FROM history "
                         "WHERE file = (SELECT max(file) FROM history) "
                         "ORDER BY file_offset DESC LIMIT 1", -1, &st,
                         NULL) != SQLITE_OK)
    return;
  if (sqlite3_step(st) == SQLITE_ROW) {
    const void *meta = sqlite3_column_blob(st, 2);
    size_t entries = (size_t)sqlite3_column_bytes(st, 2) / HK_HISTORY_ENTRY;

    file = sqlite3_column_int64(st, 0);
    end = (uint64_t)sqlite3_column_int64(st, 1) +
          hk_history_text_bytes(meta, entries);
  }
  sqlite3_finalize(st);
  if (file <= 0 || (path = file_path(h, file)) == NULL) return;
  if (stat(path, &sb) == 0 && (uint64_t)sb.st_size > end &&
      truncate(path, (off_t)end) == 0)
    hk_info("store", "history_file=%s trimmed_bytes=%llu reason=\"written "
            "by requests not committed before a stop\"", path,
            (unsigned long long)((uint64_t)sb.st_size - end));
  free(path);
}

/* Goes through the folder: the highest number there, and (unless keep)
 * the files no row names deleted, else counted in *strays. */
static int scan_folder(hk_history_files *h, sqlite3 *db, int keep,
                       int64_t *newest, long *strays, char *err,
                       size_t errlen) {
  struct dirent *e;
  DIR *d = opendir(h->dir);

  if (d == NULL) {
    snprintf(err, errlen, "store: cannot read %s: %s", h->dir,
             strerror(errno));
    return -1;
  }
  while ((e = readdir(d)) != NULL) {
    int64_t n = file_number(e->d_name);

    if (n < 0) continue;
    if (n > *newest) *newest = n;
    if (!keep) drop_if_unnamed(h, db, n);
    else (*strays)++;
  }
  closedir(d);
  return 0;
}

int hk_history_files_open(hk_history_files *h, sqlite3 *db, int fresh,
                          char *err, size_t errlen) {
  int64_t newest = 0, next = 1;
  long strays = 0;

  if (mkdir(h->dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "store: cannot create %s: %s", h->dir,
             strerror(errno));
    return -1;
  }
  if (query_int(db, "SELECT coalesce(max(file), 0) FROM history",
                &newest) != 0 ||
      query_int(db, "SELECT next FROM history_files", &next) != 0) {
    snprintf(err, errlen, "store: history files: %s", sqlite3_errmsg(db));
    return -1;
  }
  if (next - 1 > newest) newest = next - 1;
  /* A new store did not write what the folder holds: it is left alone. */
  if (scan_folder(h, db, fresh, &newest, &strays, err, errlen) != 0)
    return -1;
  if (strays > 0)
    hk_warn("store", "history_dir=%s files=%ld left_alone=1 reason=\"the "
            "store is new: these files are not its history\"", h->dir,
            strays);
  trim_newest(h, db);
  h->file = newest + 1;
  h->recorded = next;
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
    if ((rc = hk_history_files_sync(h)) != 0) {
      h->lost = rc; /* chunks appended to it earlier must not commit */
      return rc;
    }
    close(h->fd);
    h->fd = -1;
    h->file++;
  }
  if ((path = file_path(h, h->file)) == NULL) return ENOMEM;
  h->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (h->fd < 0 && errno == ENOENT && mkdir(h->dir, 0750) == 0) {
    hk_warn("store", "history_dir=%s made_again=1 reason=\"it was gone\"",
            h->dir);
    h->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  }
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
  struct stat sb;
  int rc;

  if (h->lost) {
    rc = h->lost;
    h->lost = 0;
    return rc;
  }
  if (!h->unsynced || h->fd < 0) return 0;
  if (fdatasync(h->fd) != 0) {
    rc = errno;
  } else if (fstat(h->fd, &sb) == 0 && sb.st_nlink == 0) {
    rc = ENOENT; /* deleted by hand: what it holds is nowhere to read */
  } else {
    /* A history file is written once and read rarely (exports, `hookd
     * try`): its pages need not stay cached. Dropped now, the next
     * chunks reuse them, where new pages each cost a fault of their own
     * (in a virtual machine, the host's too): about a sixth of the store
     * thread's CPU over two million events. */
    posix_fadvise(h->fd, 0, 0, POSIX_FADV_DONTNEED);
    h->unsynced = 0;
    return 0;
  }
  close(h->fd);
  h->fd = -1;
  h->file++;
  h->unsynced = 0;
  return rc;
}

hk_history_mark hk_history_files_mark(const hk_history_files *h) {
  hk_history_mark m = {h->file, h->end};

  return m;
}

void hk_history_files_rewind(hk_history_files *h, hk_history_mark m) {
  uint64_t to = m.file == h->file ? m.end : 0;

  if (h->fd < 0 || h->end <= to) return;
  if (ftruncate(h->fd, (off_t)to) == 0) h->end = to;
}

int hk_history_files_record(hk_history_files *h, sqlite3 *db) {
  char sql[96];

  if (h->fd < 0 || h->file < h->recorded) return 1;
  snprintf(sql, sizeof sql, "UPDATE history_files SET next = %lld",
           (long long)h->file + 1);
  return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
}

void hk_history_files_recorded(hk_history_files *h) {
  if (h->fd >= 0 && h->file >= h->recorded) h->recorded = h->file + 1;
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

long long hk_history_files_bytes(const hk_history_files *h) {
  DIR *d = opendir(h->dir);
  struct dirent *e;
  struct stat sb;
  long long total = 0;

  if (d == NULL) return 0;
  while ((e = readdir(d)) != NULL)
    if (file_number(e->d_name) >= 0 &&
        fstatat(dirfd(d), e->d_name, &sb, 0) == 0)
      total += (long long)sb.st_size;
  closedir(d);
  return total;
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
