/* Unit tests for core/json_scan.c: body shapes (object, array, NDJSON),
 * JSON and UTF-8 validation, the event envelope, the recorded list_id and
 * the error contract (index, HTTP status, message). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datetime.h"
#include "json_lex.h"
#include "json_scan.h"
#include "test_util.h"

/* A valid event; X adds members after the envelope. */
#define EV(x)                                                              \
  "{\"event_type\":\"click\",\"event_date\":\"2018-03-04T13:13:19Z\"" x "}"

static hk_event_span *spans;
static size_t count;
static hk_scan_error err;

static int scan_with(const char *body, size_t len, int ndjson, int depth,
                     size_t max_events) {
  hk_scan_options opt = {ndjson, depth, max_events};

  free(spans);
  spans = NULL;
  memset(&err, 0, sizeof err);
  err.index = -99;
  return hk_scan_events(body, len, &opt, &spans, &count, &err);
}

/* Scans a literal body (embedded NULs allowed) with default options. */
#define SCAN(lit) scan_with((lit), sizeof(lit) - 1, 0, 0, 0)
#define SCAN_ND(lit) scan_with((lit), sizeof(lit) - 1, 1, 0, 0)

static void expect_ok_at(int line, int rc, size_t want_count) {
  if (rc != 0 || count != want_count)
    test_failf(__FILE__, line, "want ok with %zu events, got rc=%d "
               "count=%zu err=[%ld %d %s]", want_count, rc, count, err.index,
               err.http_status, err.message);
}

static void expect_err_at(int line, int rc, long index, int status,
                          const char *substr) {
  if (rc != -1 || err.index != index || err.http_status != status ||
      strstr(err.message, substr) == NULL || spans != NULL)
    test_failf(__FILE__, line, "want error [%ld %d *%s*], got rc=%d "
               "[%ld %d %s]", index, status, substr, rc, err.index,
               err.http_status, err.message);
}

#define EXPECT_OK(rc, n) expect_ok_at(__LINE__, (rc), (n))
#define EXPECT_ERR(rc, idx, msg) expect_err_at(__LINE__, (rc), (idx), 400, msg)

static int span_type_is(size_t i, const char *type) {
  return i < count && spans[i].type_len == strlen(type) &&
         memcmp(spans[i].type, type, spans[i].type_len) == 0;
}

static int span_json_is(size_t i, const char *json) {
  return i < count && spans[i].json_len == strlen(json) &&
         memcmp(spans[i].json, json, spans[i].json_len) == 0;
}

/* ---- shapes ------------------------------------------------------------- */

static void json_scan_single_object(void) {
  EXPECT_OK(SCAN(EV(",\"n\":[1,{\"a\":null}]")), 1);
  CHECK(span_type_is(0, "click"));
  CHECK(span_json_is(0, EV(",\"n\":[1,{\"a\":null}]")));
  CHECK(count == 1 && spans[0].date_sec == 1520169199);
  CHECK(count == 1 && spans[0].date_nsec == 0);
}

static void json_scan_array_of_objects(void) {
  EXPECT_OK(SCAN("[" EV("") ", {\"event_type\":\"open\",\"event_date\":"
                 "\"2018-03-04T13:13:19.5+01:00\"}]"), 2);
  CHECK(span_json_is(0, EV("")));
  CHECK(span_type_is(1, "open"));
  CHECK(count == 2 && spans[1].date_sec == 1520169199 - 3600);
  CHECK(count == 2 && spans[1].date_nsec == 500000000);
}

static void json_scan_empty_array_is_valid(void) {
  EXPECT_OK(SCAN(" [ ] "), 0);
}

static void json_scan_array_element_must_be_object(void) {
  EXPECT_ERR(SCAN("[" EV("") ",[1]]"), 1, "event must be a JSON object");
  EXPECT_ERR(SCAN("[" EV("") "," EV("") ",\"x\"]"), 2,
             "event must be a JSON object");
}

static void json_scan_scalar_body_is_not_an_event(void) {
  EXPECT_ERR(SCAN("42"), 0, "event must be a JSON object");
}

static void json_scan_ndjson_by_option(void) {
  EXPECT_OK(SCAN_ND(EV("") "\n" EV(",\"x\":1") "\n"), 2);
  CHECK(span_json_is(1, EV(",\"x\":1")));
}

static void json_scan_ndjson_option_refuses_pretty_json(void) {
  EXPECT_ERR(SCAN_ND("{\n\"event_type\":\"a\"}"), 0, "invalid JSON");
}

static void json_scan_ndjson_by_fallback(void) {
  EXPECT_OK(SCAN(EV("") "\n" EV("") "\n" EV("")), 3);
  CHECK(span_json_is(2, EV("")));
}

static void json_scan_ndjson_blank_lines_count_for_index(void) {
  EXPECT_OK(SCAN("\n" EV("") "\r\n  \t\r\n\n" EV("") "\r\n"), 2);
  EXPECT_ERR(SCAN("\n" EV("") "\r\n  \r\n\n{\"event_type\":\"a\"}\n"), 4,
             "event_date is missing");
}

static void json_scan_ndjson_bad_line_index(void) {
  EXPECT_ERR(SCAN(EV("") "\n" EV("") "\n{\"event_type\":}\n" EV("")), 2,
             "invalid JSON: ");
  EXPECT_ERR(SCAN_ND(EV("") "\n\n" EV("") " x\n"), 2,
             "unexpected content after the event");
  EXPECT_ERR(SCAN(EV("") "\n[1]\n"), 1, "event must be a JSON object");
}

static void json_scan_ndjson_value_cannot_span_lines(void) {
  EXPECT_ERR(SCAN_ND(EV("") "\n{\"event_type\":\"a\",\n\"x\":1}"), 1,
             "unexpected end of input");
}

static void json_scan_bom_skipped(void) {
  EXPECT_OK(SCAN("\xEF\xBB\xBF" EV("")), 1);
  EXPECT_OK(SCAN_ND("\xEF\xBB\xBF" EV("") "\n" EV("")), 2);
  /* A BOM anywhere else is not whitespace. */
  EXPECT_ERR(SCAN(" \xEF\xBB\xBF" EV("")), -1, "body is not valid JSON");
}

static void json_scan_whitespace_around_values(void) {
  EXPECT_OK(SCAN(" \r\n\t[ \n{ \"event_type\" : \"click\" ,\r\n"
                 "\t\"event_date\"\n:\n\"2018-03-04T13:13:19Z\" } \n] \n"), 1);
}

static void json_scan_pretty_object_is_json(void) {
  EXPECT_OK(SCAN("{\n  \"event_type\": \"a\",\n"
                 "  \"event_date\": \"2018-03-04T13:13:19Z\"\n}\n"), 1);
}

static void json_scan_empty_body(void) {
  EXPECT_ERR(SCAN(""), -1, "body is empty");
  EXPECT_ERR(SCAN(" \r\n\t\n"), -1, "body is empty");
  EXPECT_ERR(SCAN("\xEF\xBB\xBF"), -1, "body is empty");
  EXPECT_ERR(SCAN_ND("\n\n"), -1, "body is empty");
}

static void json_scan_single_line_not_json_has_no_index(void) {
  EXPECT_ERR(SCAN("hello"), -1,
             "body is not valid JSON: unexpected character at byte 0");
  EXPECT_ERR(SCAN("{\"event_type\":\"a\""), -1,
             "body is not valid JSON: unexpected end of input at byte 17");
  EXPECT_ERR(SCAN(EV("") " " EV("") "\n"), -1,
             "body is not valid JSON: unexpected content after the JSON "
             "value");
}

static void json_scan_array_syntax_error_names_the_element(void) {
  EXPECT_ERR(SCAN("[\n" EV("") ",\n" EV(",") "\n]"), 1,
             "body is not valid JSON: trailing comma at byte 120");
  EXPECT_ERR(SCAN("[" EV("") "," EV(",\"a\":tru") "]"), 1,
             "body is not valid JSON: invalid literal");
  EXPECT_ERR(SCAN("[" EV("") "," EV(",\"a\":[[1]],\"b\":tru") "]"), 1,
             "body is not valid JSON: invalid literal");
}

/* ---- JSON grammar ------------------------------------------------------- */

static void json_scan_valid_values_accepted(void) {
  EXPECT_OK(SCAN(EV(",\"a\":[true,false,null,0,-0,1.5,-2e10,3E+2,4.0e-3,"
                    "123456789012345678901234567890,\"\",{},[],[[]],"
                    "{\"\":{}}]")),
            1);
}

static void json_scan_trailing_comma_refused(void) {
  EXPECT_ERR(SCAN(EV(",")), -1, "trailing comma at byte 58");
  EXPECT_ERR(SCAN(EV(",\"a\":[1,]")), -1, "trailing comma");
  EXPECT_ERR(SCAN("[" EV("") ",]"), 1, "trailing comma");
}

static void json_scan_bad_numbers_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":01")), -1, "leading zero in number at byte 62");
  EXPECT_ERR(SCAN(EV(",\"a\":+1")), -1, "unexpected character");
  EXPECT_ERR(SCAN(EV(",\"a\":NaN")), -1, "unexpected character");
  EXPECT_ERR(SCAN(EV(",\"a\":1.")), -1, "invalid number");
  EXPECT_ERR(SCAN(EV(",\"a\":.5")), -1, "unexpected character");
  EXPECT_ERR(SCAN(EV(",\"a\":1e")), -1, "invalid number");
  EXPECT_ERR(SCAN(EV(",\"a\":-")), -1, "invalid number");
  EXPECT_ERR(SCAN(EV(",\"a\":0x10")), -1, "expected ',' or '}'");
}

static void json_scan_bad_literals_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":tru")), -1, "invalid literal");
  EXPECT_ERR(SCAN(EV(",\"a\":nul}")), -1, "invalid literal");
  EXPECT_ERR(SCAN(EV(",\"a\":True")), -1, "unexpected character");
}

static void json_scan_comments_and_quotes_refused(void) {
  EXPECT_ERR(SCAN(EV(",/*c*/\"a\":1")), -1, "expected a key");
  EXPECT_ERR(SCAN(EV(",\"a\":1 // c")), -1, "expected ',' or '}'");
  EXPECT_ERR(SCAN(EV(",'a':1")), -1, "expected a key");
  EXPECT_ERR(SCAN(EV(",\"a\" 1")), -1, "expected ':'");
}

static void json_scan_string_escapes(void) {
  EXPECT_OK(SCAN(EV(",\"a\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 "
                    "\\uD83D\\uDE00\"")), 1);
  EXPECT_ERR(SCAN(EV(",\"a\":\"\\x\"")), -1, "invalid escape in string");
  EXPECT_ERR(SCAN(EV(",\"a\":\"\\u12G4\"")), -1, "invalid \\u escape");
  EXPECT_ERR(SCAN(EV(",\"a\":\"\\u12\"")), -1, "invalid \\u escape");
}

static void json_scan_lone_surrogates_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":\"\\ud83d\"")), -1, "lone surrogate");
  EXPECT_ERR(SCAN(EV(",\"a\":\"\\ude00x\"")), -1, "lone surrogate");
  EXPECT_ERR(SCAN(EV(",\"a\":\"\\ud83d\\u0041\"")), -1, "lone surrogate");
  EXPECT_ERR(SCAN(EV(",\"a\":\"\\ud83d\\n\"")), -1, "lone surrogate");
}

static void json_scan_control_character_in_string_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":\"x\ty\"")), -1,
             "control character in string at byte 64");
  EXPECT_ERR(SCAN(EV(",\"a\":\"x\x01y\"")), -1, "control character");
}

/* Strings are read eight bytes at a time: a byte that ends a plain run
 * is found at every place in and around such a word. */
static void json_scan_string_bytes_found_at_every_position(void) {
  static const char *bad[] = {"\x01", "\x1f", "\xff", "\xc0"};
  char body[160];
  int n;

  for (int at = 0; at < 20; at++) {
    for (size_t b = 0; b < sizeof bad / sizeof *bad; b++) {
      n = snprintf(body, sizeof body, EV(",\"a\":\"%.*s%s%.*s\""), at,
                   "abcdefghijklmnopqrstuvwxyz", bad[b], 20 - at,
                   "abcdefghijklmnopqrstuvwxyz");
      if (scan_with(body, (size_t)n, 0, 0, 0) != -1)
        FAILF("byte %02x at %d accepted", (unsigned char)bad[b][0], at);
    }
    n = snprintf(body, sizeof body, EV(",\"a\":\"%.*s\\\"%.*s\""), at,
                 "abcdefghijklmnopqrstuvwxyz", 20 - at,
                 "abcdefghijklmnopqrstuvwxyz");
    EXPECT_OK(scan_with(body, (size_t)n, 0, 0, 0), 1);
    n = snprintf(body, sizeof body, EV(",\"a\":\"%.*s\xc3\xa9%.*s\""),
                 at, "abcdefghijklmnopqrstuvwxyz", 20 - at,
                 "abcdefghijklmnopqrstuvwxyz");
    EXPECT_OK(scan_with(body, (size_t)n, 0, 0, 0), 1);
  }
}

/* Skipping a string of text already checked ends after its closing
 * quote wherever the quote, an escaped quote or an escaped backslash is
 * around the eight-byte words the search reads, and skipping a container
 * skips the strings inside it. */
static void json_lex_skip_string_at_every_position(void) {
  static const char *mid[] = {"", "\\\"", "\\\\", "\\\\\\\"", "\xc3\xa9"};
  char text[96], obj[128];
  const char *end;
  int n, m;

  for (int at = 0; at < 20; at++)
    for (size_t k = 0; k < sizeof mid / sizeof *mid; k++) {
      n = snprintf(text, sizeof text, "\"%.*s%s%.*s\",\"x\"", at,
                   "abcdefghijklmnopqrstuvwxyz", mid[k], 20 - at,
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
      end = hk_json_skip_string(text, text + n);
      if (end != text + n - 4)
        FAILF("at %d, middle %zu: ends at %d of %d", at, k,
              (int)(end - text), n - 4);
      m = snprintf(obj, sizeof obj, "{\"k\":[%.*s,{}]} ,", n - 4, text);
      end = hk_json_skip_value(obj, obj + m);
      if (end != obj + m - 2) FAILF("object at %d, middle %zu", at, k);
    }
}

/* Each event's span says where its top-level objects and arrays start
 * and end, in its own text; values nested deeper, strings holding
 * brackets and the envelope are not noted. The same for a JSON array
 * body and for NDJSON taken after the JSON attempt failed. */
static void check_skips(int line, const hk_event_span *s,
                        const char *const *want, size_t n) {
  if (s->skips.n != n) {
    test_failf(__FILE__, line, "%zu skips, want %zu", s->skips.n, n);
    return;
  }
  for (size_t k = 0; k < n; k++) {
    const hk_event_skip *sk = &s->skips.at[k];

    if (sk->end > s->json_len || sk->end - sk->start != strlen(want[k]) ||
        memcmp(s->json + sk->start, want[k], strlen(want[k])) != 0)
      test_failf(__FILE__, line, "skip %zu is \"%.*s\", want %s", k,
                 (int)(sk->end - sk->start), s->json + sk->start, want[k]);
  }
}

static void json_scan_notes_top_level_containers(void) {
  static const char *a[] = {"{\"x\":[1,{\"y\":\"}]\"}]}", "[ ]"};
  static const char *b[] = {"{}"};
  const char body[] = EV(",\"d\":{\"x\":[1,{\"y\":\"}]\"}]},\"s\":\"{\","
                         "\"l\":[ ]") "\n\n" EV(",\"n\":1,\"e\":{}") "\n";
  char arr[256];
  int n;

  EXPECT_OK(scan_with(body, strlen(body), 1, 0, 0), 2);
  check_skips(__LINE__, &spans[0], a, 2);
  check_skips(__LINE__, &spans[1], b, 1);
  EXPECT_OK(scan_with(body, strlen(body), 0, 0, 0), 2); /* after JSON */
  check_skips(__LINE__, &spans[0], a, 2);
  check_skips(__LINE__, &spans[1], b, 1);
  n = snprintf(arr, sizeof arr, "[%.*s, %s]", (int)(strchr(body, '\n') -
               body), body, EV(""));
  EXPECT_OK(scan_with(arr, (size_t)n, 0, 0, 0), 2);
  check_skips(__LINE__, &spans[0], a, 2);
  check_skips(__LINE__, &spans[1], NULL, 0);
}

static void json_scan_unterminated_string_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":\"xyz")), -1, "unterminated string at byte 62");
}

/* ---- UTF-8 -------------------------------------------------------------- */

static void json_scan_valid_utf8_accepted(void) {
  EXPECT_OK(SCAN(EV(",\"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\":\"\xe6\x97\xa5"
                    "\xe6\x9c\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf "
                    "\xef\xbf\xbf\"")), 1);
}

static void json_scan_invalid_utf8_refused_with_event_index(void) {
  /* Byte 63 is the first byte inside the string value. */
  EXPECT_ERR(SCAN(EV(",\"a\":\"\xc0\xaf\"")), 0, "invalid UTF-8 at byte 63");
  EXPECT_ERR(SCAN("[" EV("") "," EV(",\"a\":\"\xff\"") "]"), 1,
             "invalid UTF-8 at byte 123");
  EXPECT_ERR(SCAN(EV("") "\n" EV(",\"\x80\":1")), 1, "invalid UTF-8 at byte");
}

static void json_scan_overlong_utf8_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":\"\xe0\x80\xaf\"")), 0, "invalid UTF-8");
  EXPECT_ERR(SCAN(EV(",\"a\":\"\xf0\x80\x80\xaf\"")), 0, "invalid UTF-8");
  EXPECT_ERR(SCAN(EV(",\"a\":\"\xc1\xbf\"")), 0, "invalid UTF-8");
}

static void json_scan_utf8_surrogates_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":\"\xed\xa0\x80\"")), 0, "invalid UTF-8");
  EXPECT_ERR(SCAN(EV(",\"a\":\"\xed\xbf\xbf\"")), 0, "invalid UTF-8");
}

static void json_scan_utf8_beyond_u10ffff_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":\"\xf4\x90\x80\x80\"")), 0, "invalid UTF-8");
  EXPECT_ERR(SCAN(EV(",\"a\":\"\xf5\x80\x80\x80\"")), 0, "invalid UTF-8");
}

static void json_scan_truncated_utf8_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":\"\xe6\x97\"")), 0, "invalid UTF-8 at byte 63");
  EXPECT_ERR(SCAN(EV(",\"a\":\"x\xf0\x9f\x98\"")), 0,
             "invalid UTF-8 at byte 64");
}

static void json_scan_invalid_utf8_outside_strings_refused(void) {
  EXPECT_ERR(SCAN(EV(",\"a\":1\xff")), -1,
             "body is not valid JSON: invalid UTF-8 at byte 63");
}

/* ---- depth -------------------------------------------------------------- */

/* An event whose value nests `levels` containers in total (the event object
 * included), in buf. */
static size_t nested_event(char *buf, size_t cap, int levels) {
  size_t n = (size_t)snprintf(buf, cap, "%s", EV(",\"d\":"));
  n--; /* drop the closing brace */
  for (int i = 1; i < levels; i++) buf[n++] = '[';
  buf[n++] = '1';
  for (int i = 1; i < levels; i++) buf[n++] = ']';
  buf[n++] = '}';
  buf[n] = '\0';
  return n;
}

static void json_scan_depth_limit_default(void) {
  char buf[512], arr[1100];
  size_t n;

  n = nested_event(buf, sizeof buf, 64);
  EXPECT_OK(scan_with(buf, n, 0, 0, 0), 1);
  n = nested_event(buf, sizeof buf, 65);
  EXPECT_ERR(scan_with(buf, n, 0, 0, 0), 0, "nesting deeper than 64 levels");
  /* The array around events does not count; the index is the element's. */
  n = (size_t)snprintf(arr, sizeof arr, "[%s,", EV(""));
  n += nested_event(arr + n, sizeof arr - n, 65);
  arr[n++] = ']';
  EXPECT_ERR(scan_with(arr, n, 0, 0, 0), 1, "nesting deeper than 64 levels");
}

static void json_scan_depth_limit_option(void) {
  char buf[512];
  size_t n = nested_event(buf, sizeof buf, 5);

  EXPECT_OK(scan_with(buf, n, 0, 5, 0), 1);
  EXPECT_ERR(scan_with(buf, n, 0, 4, 0), 0, "nesting deeper than 4 levels");
  EXPECT_ERR(scan_with(buf, n, 1, 4, 0), 0, "nesting deeper than 4 levels");
}

static void json_scan_deep_garbage_does_not_crash(void) {
  size_t n = 1 << 20;
  char *buf = malloc(n);

  memset(buf, '[', n);
  EXPECT_ERR(scan_with(buf, n, 0, 0, 0), 0, "body is not valid JSON");
  free(buf);
}

/* ---- envelope ----------------------------------------------------------- */

#define DATE "\"event_date\":\"2018-03-04T13:13:19Z\""

static void json_scan_event_type_missing(void) {
  EXPECT_ERR(SCAN("{" DATE "}"), 0, "event_type is missing");
}

static void json_scan_event_type_not_string(void) {
  EXPECT_ERR(SCAN("{\"event_type\":7," DATE "}"), 0,
             "event_type must be a string");
  EXPECT_ERR(SCAN("{\"event_type\":null," DATE "}"), 0,
             "event_type must be a string");
}

static void json_scan_event_type_charset_and_length(void) {
  static const char *msg = "event_type must be 1-128 characters of letters, "
                           "digits, '_', '-' and '.'";
  char buf[400];
  int n;

  EXPECT_ERR(SCAN("{\"event_type\":\"\"," DATE "}"), 0, msg);
  EXPECT_ERR(SCAN("{\"event_type\":\"a b\"," DATE "}"), 0, msg);
  EXPECT_ERR(SCAN("{\"event_type\":\"\xc3\xa9\"," DATE "}"), 0, msg);
  /* An escape is refused as such: the value may read as a good one. */
  EXPECT_ERR(SCAN("{\"event_type\":\"a\\u0041\"," DATE "}"), 0,
             "event_type must be written without escapes");
  EXPECT_OK(SCAN("{\"event_type\":\"Az09_-.\"," DATE "}"), 1);
  n = snprintf(buf, sizeof buf, "{\"event_type\":\"%0128d\",%s}", 0, DATE);
  EXPECT_OK(scan_with(buf, (size_t)n, 0, 0, 0), 1);
  CHECK(count == 1 && spans[0].type_len == 128);
  n = snprintf(buf, sizeof buf, "{\"event_type\":\"%0129d\",%s}", 0, DATE);
  EXPECT_ERR(scan_with(buf, (size_t)n, 0, 0, 0), 0, msg);
}

static void json_scan_nested_envelope_keys_ignored(void) {
  EXPECT_ERR(SCAN("{\"x\":{\"event_type\":\"a\"}," DATE "}"), 0,
             "event_type is missing");
  EXPECT_ERR(SCAN("{\"event_type\":\"a\",\"x\":[{" DATE "}]}"), 0,
             "event_date is missing");
}

static void json_scan_duplicate_event_type_last_wins(void) {
  EXPECT_OK(SCAN("{\"event_type\":1,\"event_type\":\"b\"," DATE "}"), 1);
  CHECK(span_type_is(0, "b"));
  EXPECT_ERR(SCAN("{\"event_type\":\"b\"," DATE ",\"event_type\":\"\"}"), 0,
             "event_type must be 1-128");
}

static void json_scan_escaped_envelope_key_recognised(void) {
  EXPECT_OK(SCAN("{\"event\\u005ftype\":\"a\",\"event_\\u0064ate\":"
                 "\"2018-03-04T13:13:19Z\"}"), 1);
  CHECK(span_type_is(0, "a"));
  EXPECT_ERR(SCAN("{\"event_type\":\"a\"," DATE ",\"event\\u005ftype\":3}"),
             0, "event_type must be a string");
}

static void json_scan_event_date_missing(void) {
  EXPECT_ERR(SCAN("{\"event_type\":\"a\"}"), 0, "event_date is missing");
}

static void json_scan_event_date_not_string(void) {
  EXPECT_ERR(SCAN("{\"event_type\":\"a\",\"event_date\":1520169199}"), 0,
             "event_date must be an RFC 3339 string");
}

static void json_scan_event_date_invalid_echoes_value(void) {
  EXPECT_ERR(SCAN("{\"event_type\":\"a\",\"event_date\":"
                  "\"2023-02-29T00:00:00Z\"}"),
             0,
             "event_date is not a valid RFC 3339 time: 2023-02-29T00:00:00Z");
  EXPECT_ERR(SCAN("{\"event_type\":\"a\",\"event_date\":"
                  "\"2018-03-04T13:13:19\\u005a\"}"),
             0, "event_date must be written without escapes");
}

static void json_scan_event_date_echo_truncated_to_40(void) {
  SCAN("{\"event_type\":\"a\",\"event_date\":"
       "\"0123456789012345678901234567890123456789ABCDEF\"}");
  CHECK(strcmp(err.message, "event_date is not a valid RFC 3339 time: "
               "0123456789012345678901234567890123456789") == 0);
}

static void json_scan_event_date_offset_applied(void) {
  EXPECT_OK(SCAN("{\"event_type\":\"a\",\"event_date\":"
                 "\"2018-03-05T01:30:00.000000007+03:00\"}"), 1);
  CHECK(count == 1 && spans[0].date_sec == 1520202600);
  CHECK(count == 1 && spans[0].date_nsec == 7);
}

/* ---- list_id ------------------------------------------------------------ */

/* A valid event whose top-level members after the envelope are X. */
#define LID_EV(x) "{\"event_type\":\"a\"," DATE x "}"

/* Wants the body accepted as one event whose list_id is want. */
static void expect_list_id_at(int line, int rc, int64_t want) {
  expect_ok_at(line, rc, 1);
  if (count == 1 && spans[0].list_id != want)
    test_failf(__FILE__, line, "want list_id %lld, got %lld",
               (long long)want, (long long)spans[0].list_id);
}

#define EXPECT_LIST_ID(body, want) \
  expect_list_id_at(__LINE__, SCAN(body), (want))

static void json_scan_list_id_integer(void) {
  EXPECT_LIST_ID(LID_EV(",\"list_id\":111"), 111);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":0"), 0);
  EXPECT_LIST_ID(LID_EV(",\"list_id\" : 7 "), 7);
  EXPECT_LIST_ID("{\"list_id\":50," DATE ",\"event_type\":\"a\"}", 50);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":9223372036854775807"), INT64_MAX);
}

static void json_scan_list_id_string_of_digits(void) {
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"111\""), 111);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"007\""), 7);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"9223372036854775807\""), INT64_MAX);
  /* Judged by what the string decodes to. */
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"\\u0031\\u0032\""), 12);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"1\\u0041\""), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"1\\n\""), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"\""), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\" 1\""), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"-1\""), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"1.0\""), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"\xd9\xa1\""), -1); /* Arabic 1 */
}

static void json_scan_list_id_absent_or_null(void) {
  EXPECT_LIST_ID(LID_EV(""), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":null"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_ids\":1,\"list_i\":2,\"List_id\":3"), -1);
}

static void json_scan_list_id_other_types(void) {
  EXPECT_LIST_ID(LID_EV(",\"list_id\":true"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":false"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":[1]"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":{\"list_id\":1}"), -1);
}

static void json_scan_list_id_negative(void) {
  EXPECT_LIST_ID(LID_EV(",\"list_id\":-1"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":-111"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":-0"), -1);
}

static void json_scan_list_id_fraction_or_exponent(void) {
  EXPECT_LIST_ID(LID_EV(",\"list_id\":1.5"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":1.0"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":1e3"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":1E+3"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":5e-1"), -1);
}

static void json_scan_list_id_too_big(void) {
  EXPECT_LIST_ID(LID_EV(",\"list_id\":9223372036854775808"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"9223372036854775808\""), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":18446744073709551616"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":99999999999999999999999999"), -1);
}

static void json_scan_list_id_nested_ignored(void) {
  EXPECT_LIST_ID(LID_EV(",\"x\":{\"list_id\":5}"), -1);
  EXPECT_LIST_ID(LID_EV(",\"x\":[{\"list_id\":5}]"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":3,\"x\":{\"list_id\":5}"), 3);
  EXPECT_LIST_ID(LID_EV(",\"x\":{\"list_id\":5},\"list_id\":3"), 3);
}

/* Like a duplicate event_type, the last list_id wins, usable or not. */
static void json_scan_list_id_duplicate_last_wins(void) {
  EXPECT_LIST_ID(LID_EV(",\"list_id\":1,\"list_id\":2"), 2);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":1,\"list_id\":null"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":\"x\",\"list_id\":\"9\""), 9);
  EXPECT_LIST_ID(LID_EV(",\"list_id\":1,\"list\\u005fid\":2"), 2);
}

static void json_scan_list_id_escaped_key_recognised(void) {
  EXPECT_LIST_ID(LID_EV(",\"list\\u005fid\":42"), 42);
  EXPECT_LIST_ID(LID_EV(",\"\\u006cist_id\":\"43\""), 43);
  EXPECT_LIST_ID(LID_EV(",\"\\u006C\\u0069\\u0073\\u0074\\u005F\\u0069"
                        "\\u0064\":44"), 44);
  EXPECT_LIST_ID(LID_EV(",\"list\\u005fix\":45"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list\\u005fid\\u0020\":46"), -1);
  EXPECT_LIST_ID(LID_EV(",\"list\\u005fid_and_more\":47"), -1);
}

/* list_id is only recorded: validation of the event is unchanged. */
static void json_scan_list_id_does_not_change_validation(void) {
  EXPECT_ERR(SCAN("{\"list_id\":5," DATE "}"), 0, "event_type is missing");
  EXPECT_ERR(SCAN("{\"event_type\":1,\"list_id\":5," DATE "}"), 0,
             "event_type must be a string");
  EXPECT_ERR(SCAN(LID_EV(",\"list_id\":01")), -1, "leading zero in number");
  EXPECT_ERR(SCAN(LID_EV(",\"list_id\":\"\\x\"")), -1,
             "invalid escape in string");
  EXPECT_ERR(SCAN(LID_EV(",\"list_id\":\"\xff\"")), 0, "invalid UTF-8");
}

/* One accepted event per value: 111, "50", null, absent, -7, 1e3, 7. */
#define MIXED_A LID_EV(",\"list_id\":111")
#define MIXED_B LID_EV(",\"list_id\":\"50\"")
#define MIXED_C LID_EV(",\"list_id\":null")
#define MIXED_D LID_EV("")
#define MIXED_E LID_EV(",\"list_id\":-7")
#define MIXED_F LID_EV(",\"list_id\":1e3")
#define MIXED_G LID_EV(",\"x\":{\"list_id\":1},\"list\\u005fid\":7")

static int mixed_list_ids_are_right(void) {
  static const int64_t want[] = {111, 50, -1, -1, -1, -1, 7};

  if (count != 7) return 0;
  for (size_t i = 0; i < 7; i++)
    if (spans[i].list_id != want[i]) return 0;
  return 1;
}

static void json_scan_list_id_array_body(void) {
  EXPECT_OK(SCAN("[" MIXED_A "," MIXED_B ",\n" MIXED_C "," MIXED_D ","
                 MIXED_E "," MIXED_F "," MIXED_G "]"), 7);
  CHECK(mixed_list_ids_are_right());
}

static void json_scan_list_id_ndjson_body(void) {
  static const char nd[] = MIXED_A "\n" MIXED_B "\n\n" MIXED_C "\r\n" MIXED_D
                           "\n" MIXED_E "\n" MIXED_F "\n" MIXED_G "\n";

  EXPECT_OK(SCAN_ND(nd), 7);
  CHECK(mixed_list_ids_are_right());
  EXPECT_OK(SCAN(nd), 7); /* by fallback */
  CHECK(mixed_list_ids_are_right());
}

/* ---- limits ------------------------------------------------------------- */

static void json_scan_max_events(void) {
  static const char arr[] = "[" EV("") "," EV("") "," EV("") "]";
  static const char nd[] = EV("") "\n" EV("") "\n" EV("") "\n";

  EXPECT_OK(scan_with(arr, sizeof arr - 1, 0, 0, 3), 3);
  expect_err_at(__LINE__, scan_with(arr, sizeof arr - 1, 0, 0, 2), -1, 413,
                "too many events in one request (limit 2)");
  EXPECT_OK(scan_with(nd, sizeof nd - 1, 1, 0, 3), 3);
  expect_err_at(__LINE__, scan_with(nd, sizeof nd - 1, 1, 0, 2), -1, 413,
                "too many events in one request (limit 2)");
}

/* ---- the sample file ---------------------------------------------------- */

/* Checks span i against its line: same text, and type, date and list_id
 * (a plain integer on every line) equal to what a plain search of the line
 * finds. */
static int span_matches_line(size_t i, const char *line, size_t len) {
  const char *t = strstr(line, "\"event_type\":\"");
  const char *d = strstr(line, "\"event_date\":\"");
  const char *l = strstr(line, "\"list_id\":");
  int64_t sec;
  int32_t nsec;

  if (t == NULL || d == NULL || l == NULL || spans[i].json != line ||
      spans[i].json_len != len || spans[i].list_id != strtoll(l + 10, NULL, 10))
    return 0;
  t += 14;
  d += 14;
  if (strncmp(spans[i].type, t, spans[i].type_len) != 0 ||
      t[spans[i].type_len] != '"')
    return 0;
  if (hk_datetime_parse(d, (size_t)(strchr(d, '"') - d), &sec, &nsec) != 0)
    return 0;
  return spans[i].date_sec == sec && spans[i].date_nsec == nsec;
}

static void json_scan_sample_file(void) {
  size_t len = 0, i = 0;
  char *data = test_read_file("fixtures/sample-1k.ndjson", &len);
  const char *line;

  CHECK(data != NULL);
  if (data == NULL) return;
  EXPECT_OK(scan_with(data, len, 0, 0, 0), 1000);
  for (line = data; i < count && *line; i++) {
    const char *nl = strchr(line, '\n');
    size_t n = nl ? (size_t)(nl - line) : strlen(line);
    if (!span_matches_line(i, line, n)) {
      FAILF("span %zu does not match its line", i);
      break;
    }
    line += n + (nl != NULL);
  }
  CHECK(i == 1000);
  EXPECT_OK(scan_with(data, len, 1, 0, 0), 1000);
  free(data);
}

int main(void) {
  json_scan_single_object();
  json_scan_array_of_objects();
  json_scan_empty_array_is_valid();
  json_scan_array_element_must_be_object();
  json_scan_scalar_body_is_not_an_event();
  json_scan_ndjson_by_option();
  json_scan_ndjson_option_refuses_pretty_json();
  json_scan_ndjson_by_fallback();
  json_scan_ndjson_blank_lines_count_for_index();
  json_scan_ndjson_bad_line_index();
  json_scan_ndjson_value_cannot_span_lines();
  json_scan_bom_skipped();
  json_scan_whitespace_around_values();
  json_scan_pretty_object_is_json();
  json_scan_empty_body();
  json_scan_single_line_not_json_has_no_index();
  json_scan_array_syntax_error_names_the_element();
  json_scan_valid_values_accepted();
  json_scan_trailing_comma_refused();
  json_scan_bad_numbers_refused();
  json_scan_bad_literals_refused();
  json_scan_comments_and_quotes_refused();
  json_scan_string_escapes();
  json_scan_lone_surrogates_refused();
  json_scan_control_character_in_string_refused();
  json_scan_string_bytes_found_at_every_position();
  json_lex_skip_string_at_every_position();
  json_scan_notes_top_level_containers();
  json_scan_unterminated_string_refused();
  json_scan_valid_utf8_accepted();
  json_scan_invalid_utf8_refused_with_event_index();
  json_scan_overlong_utf8_refused();
  json_scan_utf8_surrogates_refused();
  json_scan_utf8_beyond_u10ffff_refused();
  json_scan_truncated_utf8_refused();
  json_scan_invalid_utf8_outside_strings_refused();
  json_scan_depth_limit_default();
  json_scan_depth_limit_option();
  json_scan_deep_garbage_does_not_crash();
  json_scan_event_type_missing();
  json_scan_event_type_not_string();
  json_scan_event_type_charset_and_length();
  json_scan_nested_envelope_keys_ignored();
  json_scan_duplicate_event_type_last_wins();
  json_scan_escaped_envelope_key_recognised();
  json_scan_event_date_missing();
  json_scan_event_date_not_string();
  json_scan_event_date_invalid_echoes_value();
  json_scan_event_date_echo_truncated_to_40();
  json_scan_event_date_offset_applied();
  json_scan_list_id_integer();
  json_scan_list_id_string_of_digits();
  json_scan_list_id_absent_or_null();
  json_scan_list_id_other_types();
  json_scan_list_id_negative();
  json_scan_list_id_fraction_or_exponent();
  json_scan_list_id_too_big();
  json_scan_list_id_nested_ignored();
  json_scan_list_id_duplicate_last_wins();
  json_scan_list_id_escaped_key_recognised();
  json_scan_list_id_does_not_change_validation();
  json_scan_list_id_array_body();
  json_scan_list_id_ndjson_body();
  json_scan_max_events();
  json_scan_sample_file();
  free(spans);
  return test_finish("test_json_scan");
}
