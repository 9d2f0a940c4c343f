/* Logging for operators: one line per fact, level first, then the
 * component, then key=value pairs, e.g.
 *   warn http hook=crm dest=https://crm.example/hook status=503 attempt=2
 * The level check happens before any argument is formatted. */
#ifndef HOOKD_LOG_H
#define HOOKD_LOG_H

#include <stddef.h>

enum hk_log_level {
  HK_LOG_DEBUG = 0,
  HK_LOG_INFO = 1,
  HK_LOG_WARN = 2,
  HK_LOG_ERROR = 3
};

extern int hk_log_min_level;

/* Returns the level for a name ("debug", "info", "warn", "error") or -1. */
int hk_log_level_parse(const char *name);

/* Writes one line to stderr. Use the macros below, not this directly. */
void hk_log_write(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies s into buf (size n) with '"' and '\\' escaped, so it can be
 * logged as key="value". Truncates to fit; returns buf. */
const char *hk_log_escape(char *buf, size_t n, const char *s);

/* One kind of line written at most once a second, so that a fault that
 * repeats cannot flood the log: the lines in between are only counted,
 * and the count goes out with the next line. Zero-initialised. */
typedef struct hk_log_limit {
  double at; /* when the last line was written, in seconds */
  long held; /* lines held back since */
} hk_log_limit;

/* Whether a line may be written at now (seconds). When it may, *held
 * gets how many were held back before it; when not, this one is
 * counted. */
int hk_log_limit_pass(hk_log_limit *l, double now, long *held);
/* The count of lines held back, for a line of its own, once a second has
 * passed since the last line (at any time with force), and restarts it;
 * 0 when there is nothing to write yet. */
long hk_log_limit_due(hk_log_limit *l, double now, int force);

#define hk_log(level, component, ...)                                        \
  do {                                                                       \
    if ((level) >= hk_log_min_level)                                         \
      hk_log_write((level), (component), __VA_ARGS__);                       \
  } while (0)

#define hk_debug(component, ...) hk_log(HK_LOG_DEBUG, component, __VA_ARGS__)
#define hk_info(component, ...) hk_log(HK_LOG_INFO, component, __VA_ARGS__)
#define hk_warn(component, ...) hk_log(HK_LOG_WARN, component, __VA_ARGS__)
#define hk_error(component, ...) hk_log(HK_LOG_ERROR, component, __VA_ARGS__)

#endif
