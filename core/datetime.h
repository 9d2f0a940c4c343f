/* RFC 3339 timestamps, parsed and formatted with UTC calendar arithmetic
 * only (never the host's time zone). */
#ifndef HOOKD_DATETIME_H
#define HOOKD_DATETIME_H

#include <stddef.h>
#include <stdint.h>

/* 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z in unix seconds. */
#define HK_DATETIME_MIN_SEC (-62167219200LL)
#define HK_DATETIME_MAX_SEC 253402300799LL

/* Parses "YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+hh:mm|-hh:mm)" ('t'/'z' and a
 * space for 'T' accepted). On success stores unix seconds (UTC, after the
 * offset is applied) and nanoseconds in [0, 1e9) and returns 0; returns -1
 * on any malformed or out-of-range value (month 13, Feb 30, hour 24,
 * second 60 is refused, more than 9 fraction digits) and on a time that
 * falls outside years 0000-9999 once converted to UTC. */
int hk_datetime_parse(const char *s, size_t len, int64_t *sec, int32_t *nsec);

/* Days since 1970-01-01 for a proleptic Gregorian date, and back. */
int64_t hk_days_from_civil(int64_t y, unsigned m, unsigned d);
void hk_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

/* "YYYY-MM-DD", a real day: stores the unix second it starts (UTC) and
 * returns 0; -1 for anything else. */
int hk_datetime_parse_day(const char *s, double *out);

#endif
