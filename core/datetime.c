/* RFC 3339 times and plain days parsed into UTC unix seconds, and the proleptic
 * Gregorian day arithmetic behind it. Pure computation: no time zone, no
 * libc time functions, no global state. */
#include "datetime.h"

#include <stdbool.h>
#include <stdlib.h>

/* Shifted calendar used below: years start on March 1st so the leap day is
 * the last day of a "year", and 400-year eras repeat exactly (146097 days).
 * Day 0 of era 0 is 0000-03-01; 1970-01-01 is 719468 days later. */
enum { DAYS_PER_ERA = 146097, EPOCH_SHIFT = 719468 };

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int64_t hk_days_from_civil(int64_t y, unsigned m, unsigned d) {
  int64_t year = m <= 2 ? y - 1 : y;           /* Jan/Feb end the year */
  int64_t era = floor_div(year, 400);
  int64_t yoe = year - era * 400;               /* [0, 399] */
  unsigned mp = m > 2 ? m - 3 : m + 9;          /* March = 0 */
  int64_t doy = (153 * mp + 2) / 5 + d - 1;     /* [0, 365] */
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * DAYS_PER_ERA + doe - EPOCH_SHIFT;
}

void hk_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d) {
  int64_t z = days + EPOCH_SHIFT;
  int64_t era = floor_div(z, DAYS_PER_ERA);
  int64_t doe = z - era * DAYS_PER_ERA;         /* [0, 146096] */
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;             /* March = 0 */
  unsigned month = (unsigned)(mp < 10 ? mp + 3 : mp - 9);

  *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
  *m = month;
  *y = yoe + era * 400 + (month <= 2 ? 1 : 0);
}

static bool is_leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m) {
  static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30,
                                        31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Reads n decimal digits at s into *out; returns false on a non-digit. */
static bool read_digits(const char *s, int n, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < n; i++) {
    unsigned c = (unsigned char)s[i] - '0';
    if (c > 9) return false;
    v = v * 10 + c;
  }
  *out = v;
  return true;
}

/* Fixed-width part "YYYY-MM-DDTHH:MM:SS" (19 bytes, already bounds-checked)
 * into seconds since the epoch; false on a bad character or range. */
static bool parse_date_time(const char *s, int64_t *sec) {
  unsigned y, mo, d, h, mi, se;

  if (s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':') return false;
  if (s[10] != 'T' && s[10] != 't' && s[10] != ' ') return false;
  if (!read_digits(s, 4, &y) || !read_digits(s + 5, 2, &mo) ||
      !read_digits(s + 8, 2, &d) || !read_digits(s + 11, 2, &h) ||
      !read_digits(s + 14, 2, &mi) || !read_digits(s + 17, 2, &se))
    return false;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return false;
  if (h > 23 || mi > 59 || se > 59) return false;
  *sec = hk_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
  return true;
}

/* Optional ".f{1,9}" at *s; advances *s past it. Returns false when the dot
 * has no digits or more than 9 follow. */
static bool parse_fraction(const char **s, const char *end, int32_t *nsec) {
  const char *p = *s;
  int32_t v = 0;
  int n = 0;

  *nsec = 0;
  if (p == end || *p != '.') return true;
  for (p++; p < end && *p >= '0' && *p <= '9'; p++, n++) {
    if (n == 9) return false;
    v = v * 10 + (*p - '0');
  }
  if (n == 0) return false;
  for (int i = n; i < 9; i++) v *= 10;
  *nsec = v;
  *s = p;
  return true;
}

/* The zone "Z" / "z" / "+hh:mm" / "-hh:mm", which must end the string.
 * Stores the offset east of UTC in seconds. */
static bool parse_zone(const char *p, const char *end, int64_t *offset) {
  unsigned h, m;

  if (end - p == 1 && (*p == 'Z' || *p == 'z')) {
    *offset = 0;
    return true;
  }
  if (end - p != 6 || (*p != '+' && *p != '-') || p[3] != ':') return false;
  if (!read_digits(p + 1, 2, &h) || !read_digits(p + 4, 2, &m)) return false;
  if (h > 23 || m > 59) return false;
  *offset = (int64_t)(h * 3600 + m * 60) * (*p == '-' ? -1 : 1);
  return true;
}

int hk_datetime_parse(const char *s, size_t len, int64_t *sec,
                      int32_t *nsec) {
  const char *end = s + len;
  const char *p = s + 19;
  int64_t local, offset;
  int32_t frac;

  if (s == NULL || len < 20) return -1;
  if (!parse_date_time(s, &local)) return -1;
  if (!parse_fraction(&p, end, &frac)) return -1;
  if (!parse_zone(p, end, &offset)) return -1;
  /* In UTC the time must still be within years 0000-9999, so every
   * format of it (dates, unix nanoseconds) stays in range. */
  if (local - offset < HK_DATETIME_MIN_SEC || local - offset > HK_DATETIME_MAX_SEC)
    return -1;
  *sec = local - offset;
  *nsec = frac;
  return 0;
}

int hk_datetime_parse_day(const char *s, double *out) {
  int64_t y2, days;
  unsigned m2, d2;
  int y, m, d;

  for (int i = 0; i < 10; i++) {
    char c = s[i];

    if (c == '\0') return -1;
    if ((i == 4 || i == 7) ? c != '-' : (c < '0' || c > '9')) return -1;
  }
  if (s[10] != '\0') return -1;
  y = atoi(s);
  m = atoi(s + 5);
  d = atoi(s + 8);
  if (m < 1 || m > 12 || d < 1 || d > 31) return -1;
  days = hk_days_from_civil(y, (unsigned)m, (unsigned)d);
  hk_civil_from_days(days, &y2, &m2, &d2);
  if (y2 != y || m2 != (unsigned)m || d2 != (unsigned)d) return -1;
  *out = (double)days * 86400.0;
  return 0;
}
