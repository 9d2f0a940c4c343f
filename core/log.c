/* Log line formatting and the global minimum level. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int hk_log_min_level = HK_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int hk_log_level_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0) return i;
  return -1;
}

void hk_log_write(int level, const char *component, const char *fmt, ...) {
  char line[2048];
  struct timespec now;
  struct tm tm;
  va_list ap;
  int n;

  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  n = snprintf(line, sizeof line,
               "%s %s ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ",
               level_names[level < 0 || level > 3 ? 3 : level], component,
               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
               tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
  va_start(ap, fmt);
  n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  /* One fact, one line: a multi-line reason must not split it. */
  for (int i = 0; i < n; i++)
    if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
  line[n++] = '\n';
  fwrite(line, 1, (size_t)n, stderr);
}

const char *hk_log_escape(char *buf, size_t n, const char *s) {
  size_t j = 0;

  for (; s && *s && j + 2 < n; s++) {
    if (*s == '"' || *s == '\\') buf[j++] = '\\';
    buf[j++] = *s;
  }
  buf[j] = '\0';
  return buf;
}

int hk_log_limit_pass(hk_log_limit *l, double now, long *held) {
  if (l->at > 0 && now - l->at < 1.0) {
    l->held++;
    return 0;
  }
  *held = l->held;
  l->at = now;
  l->held = 0;
  return 1;
}

long hk_log_limit_due(hk_log_limit *l, double now, int force) {
  long held = l->held;

  if (held == 0 || (!force && now - l->at < 1.0)) return 0;
  l->at = now;
  l->held = 0;
  return held;
}
