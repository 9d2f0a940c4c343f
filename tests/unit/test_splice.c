/* Unit tests for core/splice.c: a hook's message made from the event's own
 * text keeps every other member byte for byte, drops the inline profile,
 * keeps or drops content, and keeps or replaces custom_data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_scan.h"
#include "splice.h"
#include "test_util.h"

/* Splices ev with how and compares the message with want (NULL: the event
 * must be refused as unspliceable). */
static void check_splice(int line, const char *ev, const hk_splice *how,
                         const char *want) {
  hk_buf out = HK_BUF_INIT;
  int rc;

  hk_buf_append(&out, "prefix", 6);
  rc = hk_splice_message(&out, ev, strlen(ev), how);
  if (want == NULL) {
    if (rc != 1 || out.len != 6)
      test_failf(__FILE__, line, "splice(%s) rc=%d len=%zu, want refused",
                 ev, rc, out.len);
  } else if (rc != 0 || out.len != 6 + strlen(want) ||
             memcmp(out.data + 6, want, strlen(want)) != 0) {
    test_failf(__FILE__, line, "splice(%s) rc=%d gave %.*s, want %s", ev,
               rc, (int)out.len - 6, out.data + 6, want);
  }
  hk_buf_free(&out);
}

#define CHECK_SPLICE(ev, how, want) check_splice(__LINE__, ev, how, want)

static const hk_splice built = {0, "{\"a\":\"x\"}", 9, NULL, 0, NULL};

static void splice_drops_profile_and_adds_custom_data(void) {
  CHECK_SPLICE("{\"event_type\":\"click\",\"profile\":{\"n\":1},\"list_id\":1}",
               &built,
               "{\"event_type\":\"click\",\"list_id\":1,"
               "\"custom_data\":{\"a\":\"x\"}}");
}

static void splice_keeps_untouched_bytes(void) {
  CHECK_SPLICE("{ \"n\" : 12345678901234567890123 , \"s\":\"a\\\"b}\","
               "\"d\":[1,{\"x\":\"]\"}],\"u\":\"\\u00e9\"}",
               &built,
               "{\"n\" : 12345678901234567890123,\"s\":\"a\\\"b}\","
               "\"d\":[1,{\"x\":\"]\"}],\"u\":\"\\u00e9\","
               "\"custom_data\":{\"a\":\"x\"}}");
}

/* A string ending in an escaped backslash ends at the next quote; one
 * with an escaped quote does not. */
static void splice_finds_string_ends_after_backslashes(void) {
  CHECK_SPLICE("{\"a\":\"x\\\\\",\"profile\":{\"q\":\"\\\"}\"},"
               "\"b\":[\"]\\\\\"]}",
               &built,
               "{\"a\":\"x\\\\\",\"b\":[\"]\\\\\"],"
               "\"custom_data\":{\"a\":\"x\"}}");
}

static void splice_keeps_filled_custom_data(void) {
  CHECK_SPLICE("{\"custom_data\":{\"own\":1},\"e\":2}", &built,
               "{\"custom_data\":{\"own\":1},\"e\":2}");
}

static void splice_replaces_empty_null_or_array_custom_data(void) {
  CHECK_SPLICE("{\"custom_data\":{ },\"e\":2}", &built,
               "{\"e\":2,\"custom_data\":{\"a\":\"x\"}}");
  CHECK_SPLICE("{\"custom_data\":null}", &built,
               "{\"custom_data\":{\"a\":\"x\"}}");
  CHECK_SPLICE("{\"e\":1,\"custom_data\":[1]}", &built,
               "{\"e\":1,\"custom_data\":{\"a\":\"x\"}}");
}

/* Without custom_data to add, the event must bring its own: the caller
 * judged by an event its hook changed, and builds the message itself. */
static void splice_without_custom_data_needs_the_events_own(void) {
  hk_splice none = {0, NULL, 0, NULL, 0, NULL};

  CHECK_SPLICE("{\"custom_data\":{\"a\":1}}", &none,
               "{\"custom_data\":{\"a\":1}}");
  CHECK_SPLICE("{}", &none, NULL);
  CHECK_SPLICE("{\"custom_data\":{}}", &none, NULL);
}

/* Decoding keeps the last of repeated keys; a copy would send both. */
static void splice_refuses_repeated_keys(void) {
  CHECK_SPLICE("{\"e\":1,\"f\":2,\"e\":3}", &built, NULL);
  CHECK_SPLICE("{\"custom_data\":{\"x\":1},\"custom_data\":{}}", &built,
               NULL);
}

static void splice_drops_content_unless_kept(void) {
  hk_splice keep = {1, "{}", 2, NULL, 0, NULL};

  CHECK_SPLICE("{\"content\":{\"email\":{}},\"e\":1}", &built,
               "{\"e\":1,\"custom_data\":{\"a\":\"x\"}}");
  CHECK_SPLICE("{\"content\":{\"email\":{}},\"e\":1}", &keep,
               "{\"content\":{\"email\":{}},\"e\":1,\"custom_data\":{}}");
}

static void splice_adds_looked_up_content_only_when_missing(void) {
  hk_splice add = {1, "{}", 2, "{\"sms\":1}", 9, NULL};

  CHECK_SPLICE("{\"e\":1}", &add,
               "{\"e\":1,\"custom_data\":{},\"content\":{\"sms\":1}}");
  CHECK_SPLICE("{\"content\":null}", &add,
               "{\"content\":null,\"custom_data\":{}}");
}

static void splice_refuses_escaped_keys(void) {
  CHECK_SPLICE("{\"e\":1,\"\\u0070rofile\":{}}", &built, NULL);
}

/* Looks up name in ev: want_rc as hk_splice_member returns it, and the
 * value's text when found. */
static void check_member(int line, const char *ev, const char *name,
                         int want_rc, const char *want) {
  const char *v = NULL;
  size_t vlen = 0;
  int rc = hk_splice_member(ev, strlen(ev), name, &v, &vlen);

  if (rc != want_rc)
    test_failf(__FILE__, line, "member(%s, %s) rc=%d, want %d", ev, name, rc,
               want_rc);
  else if (rc == 1 && (vlen != strlen(want) || memcmp(v, want, vlen) != 0))
    test_failf(__FILE__, line, "member(%s, %s) gave %.*s, want %s", ev, name,
               (int)vlen, v, want);
}

#define CHECK_MEMBER(ev, name, rc, want) \
  check_member(__LINE__, ev, name, rc, want)

static void member_gives_the_value_as_written(void) {
  CHECK_MEMBER("{\"a\":1, \"content\" : {\"s\": \"x\\\"}\"} ,\"b\":[]}",
               "content", 1, "{\"s\": \"x\\\"}\"}");
  CHECK_MEMBER("{\"content\":null}", "content", 1, "null");
  CHECK_MEMBER("{\"n\":-1.5e3}", "n", 1, "-1.5e3");
}

static void member_is_only_looked_for_at_the_top(void) {
  CHECK_MEMBER("{\"a\":{\"content\":1},\"b\":\"content\"}", "content", 0,
               NULL);
  CHECK_MEMBER("{}", "content", 0, NULL);
  CHECK_MEMBER("[1]", "content", 0, NULL);
}

static void member_leaves_escaped_or_repeated_keys_to_a_decoder(void) {
  CHECK_MEMBER("{\"content\":1,\"content\":2}", "content", -1, NULL);
  CHECK_MEMBER("{\"\\u0063ontent\":1}", "content", -1, NULL);
  CHECK_MEMBER("{\"content\":1,\"k\\n\":2}", "content", -1, NULL);
}

/* With the skips the ingest scanner noted, the message is the same; a
 * skip that does not fit the text is not followed. */
static void splice_steps_over_noted_containers(void) {
  const char *ev = "{\"event_type\":\"click\",\"event_date\":"
                   "\"2018-03-04T13:13:19Z\",\"d\":{\"x\":[1,\"]}\"]},"
                   "\"profile\":{\"p\":[{}]},\"l\":[2]}";
  hk_event_span *spans = NULL;
  hk_scan_error err;
  hk_splice how = built;
  hk_event_skip bad[3];
  hk_event_skips wrong = {bad, 3};
  const char *want = "{\"event_type\":\"click\",\"event_date\":"
                     "\"2018-03-04T13:13:19Z\",\"d\":{\"x\":[1,\"]}\"]},"
                     "\"l\":[2],\"custom_data\":{\"a\":\"x\"}}";
  const char *value;
  size_t n = 0, value_len;

  if (hk_scan_events(ev, strlen(ev), NULL, &spans, &n, &err) != 0 ||
      n != 1 || spans[0].skips.n != 3) {
    test_failf(__FILE__, __LINE__, "scan: %s", err.message);
    free(spans);
    return;
  }
  how.skips = &spans[0].skips;
  CHECK_SPLICE(ev, &how, want);
  if (hk_splice_member_skips(ev, strlen(ev), &spans[0].skips, "l", &value,
                             &value_len) != 1 ||
      value_len != 3 || memcmp(value, "[2]", 3) != 0)
    test_failf(__FILE__, __LINE__, "member l with skips");
  for (int k = 0; k < 3; k++) {
    bad[k] = spans[0].skips.at[k];
    bad[k].end -= 2; /* inside the value: not after its bracket */
  }
  how.skips = &wrong;
  CHECK_SPLICE(ev, &how, want);
  free(spans);
}

int main(void) {
  splice_drops_profile_and_adds_custom_data();
  splice_keeps_untouched_bytes();
  splice_finds_string_ends_after_backslashes();
  splice_keeps_filled_custom_data();
  splice_replaces_empty_null_or_array_custom_data();
  splice_without_custom_data_needs_the_events_own();
  splice_refuses_repeated_keys();
  splice_drops_content_unless_kept();
  splice_adds_looked_up_content_only_when_missing();
  splice_refuses_escaped_keys();
  member_gives_the_value_as_written();
  member_is_only_looked_for_at_the_top();
  member_leaves_escaped_or_repeated_keys_to_a_decoder();
  splice_steps_over_noted_containers();
  return test_finish("test_splice");
}
