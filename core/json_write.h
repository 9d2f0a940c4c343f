/* Small helpers for writing JSON from C (API answers, errors). */
#ifndef HOOKD_JSON_WRITE_H
#define HOOKD_JSON_WRITE_H

#include <stddef.h>

#include "buf.h"

/* Appends s (len bytes of UTF-8) as a quoted JSON string. Invalid UTF-8
 * bytes are replaced by U+FFFD so the output is always valid JSON. */
void hk_json_write_string(hk_buf *out, const char *s, size_t len);
void hk_json_write_cstr(hk_buf *out, const char *s); /* NULL -> null */
/* Appends unix time t as an RFC 3339 UTC string, to the second or (millis)
 * the millisecond; null when t <= 0 (never set). */
void hk_json_write_time(hk_buf *out, double t, int millis);

#endif
