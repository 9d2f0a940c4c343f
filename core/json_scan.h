/* Validation and splitting of ingest bodies: one JSON object, a JSON array
 * of objects, or NDJSON. Nothing is allocated per value; the result points
 * into the caller's body. */
#ifndef HOOKD_JSON_SCAN_H
#define HOOKD_JSON_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "json_lex.h"

/* One accepted event: its JSON text inside the body, the two envelope
 * fields every event must have, already checked, and its list_id. */
typedef struct hk_event_span {
  const char *json;
  size_t json_len;
  const char *type; /* event_type value, without quotes */
  size_t type_len;
  int64_t date_sec; /* event_date as UTC unix seconds and nanoseconds */
  int32_t date_nsec;
  /* The top-level list_id (the database id) when it is a JSON integer or a
   * string of decimal digits, in 0..2^63-1; else -1: absent, null,
   * negative (-0 too), a fraction, an exponent, too big, or any other
   * type. Only recorded: an odd list_id never makes an event invalid. */
  int64_t list_id;
  /* Where its top-level objects and arrays end (json_lex.h); kept in the
   * same allocation as the spans. */
  hk_event_skips skips;
} hk_event_span;

typedef struct hk_scan_error {
  long index;        /* the bad event's position, or -1 when none applies */
  int http_status;   /* 400 or 413 */
  char message[256]; /* for the client, e.g. "event_date is not RFC 3339" */
} hk_scan_error;

typedef struct hk_scan_options {
  int ndjson;            /* 1: the content type said NDJSON */
  int max_depth;         /* nesting limit, 0 = 64 */
  size_t max_events;     /* 0 = no limit */
} hk_scan_options;

/* Validates the whole body and fills *spans (malloc'd, caller frees) with
 * *count events. A leading UTF-8 BOM is skipped. Returns 0, or -1 with err
 * filled; on failure *spans is NULL: a request is refused whole. */
int hk_scan_events(const char *body, size_t len, const hk_scan_options *opt,
                   hk_event_span **spans, size_t *count, hk_scan_error *err);

#endif
