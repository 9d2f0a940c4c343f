/* Hook files changed through the API: a clone written next to its
 * original, and a deleted hook's file moved into the trash folder. Each
 * write goes to a temporary name first and is renamed into place, so the
 * plugin watcher never loads half a file. */
#include "hook_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"

int hk_hook_id_valid(const char *id) {
  size_t n = strlen(id);

  if (n == 0 || n > HK_HOOK_ID_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

/* s as a Lua string literal: quotes and backslashes escaped, control
 * bytes as decimal escapes, so no name can end the literal or the line
 * early. */
static void lua_quote(hk_buf *out, const char *s) {
  hk_buf_putc(out, '"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      hk_buf_putc(out, '\\');
      hk_buf_putc(out, (char)c);
    } else if (c >= 0x20 && c != 0x7f) {
      hk_buf_putc(out, (char)c); /* UTF-8 bytes pass through */
    } else {
      hk_buf_printf(out, "\\%03u", c);
    }
  }
  hk_buf_putc(out, '"');
}

/* Makes a rename in path's folder durable. */
static void sync_dir(const char *path) {
  char dir[4200];
  char *slash;
  int fd;

  snprintf(dir, sizeof dir, "%s", path);
  slash = strrchr(dir, '/');
  if (slash == NULL) snprintf(dir, sizeof dir, ".");
  else if (slash == dir) dir[1] = '\0';
  else *slash = '\0';
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  fsync(fd);
  close(fd);
}

/* Writes len bytes to a new file path: through a temporary file of its
 * own, synced, then linked into place, which fails when path exists, so
 * two writers of one path cannot both win. Returns 0, 1 when path
 * exists, or -1 with err. */
static int write_new(const char *path, const char *data, size_t len,
                     char *err, size_t errlen) {
  char tmp[4200];
  int fd, ok, rc;

  snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
  fd = mkstemp(tmp);
  if (fd < 0) goto fail;
  ok = write(fd, data, len) == (ssize_t)len && fchmod(fd, 0644) == 0 &&
       fsync(fd) == 0;
  if (close(fd) != 0 || !ok) {
    unlink(tmp);
    goto fail;
  }
  rc = link(tmp, path);
  unlink(tmp);
  if (rc != 0 && errno == EEXIST) return 1;
  if (rc != 0) goto fail;
  sync_dir(path);
  return 0;
fail:
  snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
  return -1;
}

int hk_hook_file_clone(const char *src_path, const char *dst_path,
                       const char *name, char *err, size_t errlen) {
  hk_buf b = HK_BUF_INIT;
  size_t len;
  char *src = hk_read_file(src_path, &len);
  int rc;

  if (src == NULL) {
    snprintf(err, errlen, "cannot read %s: %s", src_path, strerror(errno));
    return -1;
  }
  /* The original runs unchanged inside a function; only its name is
   * replaced. The wrapper shares the first line so that errors keep
   * pointing at the original line numbers; a "#!" line, which Lua
   * skips only at the very start of a file, becomes a comment. */
  hk_buf_printf(&b, "local hook = (function(...) %s",
                len > 0 && src[0] == '#' ? "--" : "");
  hk_buf_append(&b, src, len);
  hk_buf_printf(&b, "\nend)(...)\nif type(hook) == \"table\" then "
                "hook.name = ");
  lua_quote(&b, name);
  hk_buf_printf(&b, " end\nreturn hook\n-- A clone of %s made by hookd: the "
                "code above is the original's, with the name replaced.\n",
                src_path);
  rc = write_new(dst_path, b.data, b.len, err, errlen);
  hk_buf_free(&b);
  free(src);
  return rc;
}

/* Copies src to dst (for a trash folder on another file system). */
static int copy_file(const char *src, const char *dst, char *err,
                     size_t errlen) {
  size_t len;
  char *data = hk_read_file(src, &len);
  int rc;

  if (data == NULL) {
    snprintf(err, errlen, "cannot read %s: %s", src, strerror(errno));
    return -1;
  }
  rc = write_new(dst, data, len, err, errlen);
  if (rc == 1) snprintf(err, errlen, "%s exists", dst);
  free(data);
  if (rc == 0 && unlink(src) != 0) {
    snprintf(err, errlen, "cannot remove %s: %s", src, strerror(errno));
    unlink(dst);
    rc = -1;
  }
  return rc;
}

int hk_hook_file_trash(const char *path, const char *data_dir,
                       const char *id, char *out, size_t outlen, char *err,
                       size_t errlen) {
  char dir[4096];
  time_t now = time(NULL);
  struct tm tm;

  snprintf(dir, sizeof dir, "%s/trash", data_dir);
  if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    return -1;
  }
  gmtime_r(&now, &tm);
  snprintf(out, outlen, "%s/%s.%04d%02d%02dT%02d%02d%02dZ.%ld.lua", dir, id,
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
           tm.tm_min, tm.tm_sec, (long)getpid());
  if (rename(path, out) == 0) {
    sync_dir(out);
    return 0;
  }
  if (errno == EXDEV) return copy_file(path, out, err, errlen);
  snprintf(err, errlen, "cannot move %s to %s: %s", path, out,
           strerror(errno));
  return -1;
}

int hk_hook_file_restore(const char *trashed, const char *path) {
  return rename(trashed, path);
}
