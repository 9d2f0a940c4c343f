/* Unit tests for core/datetime.c: RFC 3339 parsing to UTC seconds and
 * nanoseconds, calendar arithmetic, and independence from the host zone. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "datetime.h"
#include "test_util.h"

/* Parses s and checks the result; reports the caller's line on failure. */
#define CHECK_PARSE(s, want_sec, want_nsec)                                \
  do {                                                                     \
    int64_t sec_ = 0;                                                      \
    int32_t nsec_ = -1;                                                    \
    int rc_ = hk_datetime_parse((s), strlen(s), &sec_, &nsec_);            \
    if (rc_ != 0 || sec_ != (want_sec) || nsec_ != (want_nsec))            \
      FAILF("parse(\"%s\") rc=%d sec=%lld nsec=%ld, want %lld %ld", (s),   \
            rc_, (long long)sec_, (long)nsec_, (long long)(want_sec),      \
            (long)(want_nsec));                                            \
  } while (0)

#define CHECK_REFUSED(s)                                                   \
  do {                                                                     \
    int64_t sec_;                                                          \
    int32_t nsec_;                                                         \
    if (hk_datetime_parse((s), strlen(s), &sec_, &nsec_) != -1)            \
      FAILF("parse(\"%s\") accepted, want -1", (s));                       \
  } while (0)

static void datetime_spec_example(void) {
  CHECK_PARSE("2018-03-04T13:13:19.034315796Z", 1520169199, 34315796);
}

static void datetime_epoch_and_no_fraction(void) {
  CHECK_PARSE("1970-01-01T00:00:00Z", 0, 0);
  CHECK_PARSE("2018-03-04T13:13:19Z", 1520169199, 0);
}

static void datetime_fraction_padded_right(void) {
  CHECK_PARSE("2018-03-04T13:13:19.5Z", 1520169199, 500000000);
  CHECK_PARSE("2018-03-04T13:13:19.034Z", 1520169199, 34000000);
  CHECK_PARSE("2018-03-04T13:13:19.000000001Z", 1520169199, 1);
}

static void datetime_lowercase_and_space_separators(void) {
  CHECK_PARSE("2018-03-04t13:13:19z", 1520169199, 0);
  CHECK_PARSE("2018-03-04 13:13:19Z", 1520169199, 0);
}

static void datetime_positive_offset_crosses_midnight(void) {
  /* 01:30 at +03:00 is 22:30 UTC the day before. */
  CHECK_PARSE("2018-03-05T01:30:00+03:00", 1520202600, 0);
  CHECK_PARSE("2018-03-04T22:30:00Z", 1520202600, 0);
}

static void datetime_negative_offset_crosses_year(void) {
  /* 2023-12-31 20:00 at -05:00 is 2024-01-01 01:00 UTC. */
  CHECK_PARSE("2023-12-31T20:00:00.25-05:00", 1704070800, 250000000);
  CHECK_PARSE("2024-01-01T01:00:00.25Z", 1704070800, 250000000);
}

static void datetime_positive_offset_crosses_year_backwards(void) {
  /* 2024-01-01 00:15 at +05:30 is 2023-12-31 18:45 UTC. */
  CHECK_PARSE("2024-01-01T00:15:00+05:30", 1704048300, 0);
}

static void datetime_leap_day_accepted(void) {
  CHECK_PARSE("2024-02-29T12:00:00Z", 1709208000, 0);
  CHECK_PARSE("2000-02-29T00:00:00Z", 951782400, 0);
}

static void datetime_non_leap_day_refused(void) {
  CHECK_REFUSED("2023-02-29T12:00:00Z");
  CHECK_REFUSED("1900-02-29T00:00:00Z");
  CHECK_REFUSED("2024-02-30T00:00:00Z");
}

static void datetime_before_1970_negative_seconds(void) {
  CHECK_PARSE("1969-12-31T23:59:59Z", -1, 0);
  /* nsec stays in [0, 1e9): -0.5 s is -1 s + 500000000 ns. */
  CHECK_PARSE("1969-12-31T23:59:59.5Z", -1, 500000000);
  CHECK_PARSE("1969-07-20T20:17:40Z", -14182940, 0);
}

static void datetime_year_range_edges(void) {
  CHECK_PARSE("0000-01-01T00:00:00Z", -62167219200LL, 0);
  CHECK_PARSE("9999-12-31T23:59:59.999999999Z", 253402300799LL, 999999999);
}

static void datetime_offset_leaving_year_range_refused(void) {
  CHECK_REFUSED("0000-01-01T00:00:00.5+00:01");
  CHECK_REFUSED("9999-12-31T23:59:59-00:01");
  CHECK_PARSE("0000-01-01T00:01:00+00:01", -62167219200LL, 0);
}

static void datetime_out_of_range_fields_refused(void) {
  CHECK_REFUSED("2018-13-01T00:00:00Z");
  CHECK_REFUSED("2018-00-01T00:00:00Z");
  CHECK_REFUSED("2018-01-00T00:00:00Z");
  CHECK_REFUSED("2018-04-31T00:00:00Z");
  CHECK_REFUSED("2018-01-01T24:00:00Z");
  CHECK_REFUSED("2018-01-01T00:60:00Z");
  CHECK_REFUSED("2018-01-01T00:00:60Z");
  CHECK_REFUSED("2018-01-01T00:00:00+24:00");
  CHECK_REFUSED("2018-01-01T00:00:00+01:60");
}

static void datetime_ten_fraction_digits_refused(void) {
  CHECK_REFUSED("2018-03-04T13:13:19.0343157961Z");
  CHECK_REFUSED("2018-03-04T13:13:19.Z");
}

static void datetime_missing_zone_refused(void) {
  CHECK_REFUSED("2018-03-04T13:13:19");
  CHECK_REFUSED("2018-03-04T13:13:19.034315796");
  CHECK_REFUSED("2018-03-04T13:13:19+0300");
  CHECK_REFUSED("2018-03-04T13:13:19+03");
}

static void datetime_garbage_refused(void) {
  CHECK_REFUSED("");
  CHECK_REFUSED("1520169199");
  CHECK_REFUSED("15201691990000000000");
  CHECK_REFUSED("2018-03-04X13:13:19Z");
  CHECK_REFUSED("2018-3-4T13:13:19Z");
  CHECK_REFUSED("+018-03-04T13:13:19Z");
  CHECK_REFUSED("2018-03-04T13:13:19Zjunk");
  CHECK_REFUSED("2018-03-04T13:13:19 Z");
}

static void datetime_length_bounds_respected(void) {
  int64_t sec = 0;
  int32_t nsec = 0;
  const char *s = "2018-03-04T13:13:19Zxyz";

  /* Only the first 20 bytes are the value; the rest must not be read. */
  CHECK(hk_datetime_parse(s, 20, &sec, &nsec) == 0);
  CHECK(sec == 1520169199);
  CHECK(hk_datetime_parse(s, 19, &sec, &nsec) == -1);
}

static void datetime_civil_round_trip(void) {
  int64_t y;
  unsigned m, d;

  CHECK(hk_days_from_civil(1970, 1, 1) == 0);
  CHECK(hk_days_from_civil(1969, 12, 31) == -1);
  CHECK(hk_days_from_civil(2000, 3, 1) == 11017);
  for (int64_t days = -800000; days <= 3000000; days += 7) {
    hk_civil_from_days(days, &y, &m, &d);
    if (hk_days_from_civil(y, m, d) != days) {
      FAILF("civil round trip broke at day %lld", (long long)days);
      return;
    }
  }
  hk_civil_from_days(19782, &y, &m, &d);
  CHECK(y == 2024 && m == 2 && d == 29);
}

static void datetime_host_zone_ignored(void) {
  static const char *zones[] = {"America/New_York", "Asia/Kolkata",
                                "Pacific/Chatham", "UTC"};

  for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
    setenv("TZ", zones[i], 1);
    tzset();
    CHECK_PARSE("2018-03-04T13:13:19.034315796Z", 1520169199, 34315796);
    CHECK_PARSE("2024-07-01T02:00:00+02:00", 1719792000, 0);
  }
}

int main(void) {
  datetime_spec_example();
  datetime_epoch_and_no_fraction();
  datetime_fraction_padded_right();
  datetime_lowercase_and_space_separators();
  datetime_positive_offset_crosses_midnight();
  datetime_negative_offset_crosses_year();
  datetime_positive_offset_crosses_year_backwards();
  datetime_leap_day_accepted();
  datetime_non_leap_day_refused();
  datetime_before_1970_negative_seconds();
  datetime_year_range_edges();
  datetime_offset_leaving_year_range_refused();
  datetime_out_of_range_fields_refused();
  datetime_ten_fraction_digits_refused();
  datetime_missing_zone_refused();
  datetime_garbage_refused();
  datetime_length_bounds_respected();
  datetime_civil_round_trip();
  datetime_host_zone_ignored();
  return test_finish("test_datetime");
}
