/* Ingest body validation and splitting: one JSON object, a JSON array of
 * objects, or NDJSON, in one pass over the bytes with full RFC 8259 and
 * UTF-8 checks, the event_type / event_date envelope of each event, and
 * its list_id when it has a usable one. */
#include "json_scan.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datetime.h"
#include "json_lex.h"
#include "utf8.h"

/* Depth is counted from the event object (depth 1); the array wrapping
 * several events does not count. Limits above DEPTH_CAP are clamped so a
 * hostile body cannot exhaust the C stack through recursion. */
enum { DEFAULT_MAX_DEPTH = 64, DEPTH_CAP = 1024 };
/* KEY_MAX_LEN: the longest envelope key (event_type, event_date). */
enum { TYPE_MAX_LEN = 128, DATE_ECHO_MAX = 40, KEY_MAX_LEN = 10 };

/* How an envelope field was seen at an event's top level. */
enum { ENV_MISSING = 0, ENV_STRING, ENV_ESCAPED, ENV_NOT_STRING };

typedef struct env_field {
  const char *s; /* raw string contents (between the quotes), or the raw
                    JSON text of a value that is not a string */
  size_t len;
  int kind;
} env_field;

/* The envelope of the event being scanned; a duplicate key overwrites the
 * earlier one, so the last occurrence wins (list_id included). list_id is
 * only recorded for the span, never required or checked. */
typedef struct envelope {
  env_field type;
  env_field date;
  env_field list_id;
} envelope;

typedef struct scanner {
  const char *base; /* the body as received: byte offsets count from here */
  const char *p;
  const char *end;  /* end of the current text: the body or an NDJSON line */
  int max_depth;
  size_t max_events;
  long index;       /* the event being scanned, for content errors */
  long array_event; /* element of a JSON array body a syntax error hit, or
                       -1 (not an array body, or outside the elements) */
  const char *syn_reason; /* first syntax error (static text) and where */
  const char *syn_at;
  bool content_failed;    /* first error that did not stop the parse */
  hk_scan_error content;
  hk_event_span *spans;   /* owned until handed to the caller */
  size_t count;
  size_t cap;
  /* The top-level containers of the events (their spans' skips.at are
   * indexes into it until the end), and the event being scanned. */
  hk_event_skip *skips;
  size_t n_skips, skips_cap;
  const char *event;
} scanner;

static int scan_value(scanner *sc, int depth);

/* ---- errors ----------------------------------------------------------- */

/* Records a syntax error (the first one wins) and returns -1: the parse of
 * the current text stops. */
static int syntax(scanner *sc, const char *at, const char *reason) {
  if (sc->syn_reason == NULL) {
    sc->syn_reason = reason;
    sc->syn_at = at;
  }
  return -1;
}

/* Records an error that lets the parse go on (so the body's shape can still
 * be decided): the first one wins. */
__attribute__((format(printf, 4, 5))) static void
content_error(scanner *sc, long index, int status, const char *fmt, ...) {
  va_list ap;

  if (sc->content_failed) return;
  sc->content_failed = true;
  sc->content.index = index;
  sc->content.http_status = status;
  va_start(ap, fmt);
  vsnprintf(sc->content.message, sizeof sc->content.message, fmt, ap);
  va_end(ap);
}

static size_t offset_of(const scanner *sc, const char *at) {
  return (size_t)(at - sc->base);
}

/* ---- lexical pieces ----------------------------------------------------- */

/* Reports an unexpected byte (or the end of the text) where `what` was
 * expected. Returns -1. */
static int unexpected(scanner *sc, const char *p, const char *what) {
  const unsigned char *u = (const unsigned char *)p;

  if (p >= sc->end) return syntax(sc, p, "unexpected end of input");
  if (hk_utf8_seq_len(u, (size_t)(sc->end - p)) == 0)
    return syntax(sc, p, "invalid UTF-8");
  return syntax(sc, p, what);
}

/* Validates the escape at p (a backslash); returns the byte after it, or
 * NULL after recording a syntax error. Surrogates must come in pairs. */
static const char *scan_escape(scanner *sc, const char *p) {
  unsigned u, lo;

  if (p + 1 >= sc->end) return syntax(sc, p, "unterminated string"), NULL;
  switch (p[1]) {
  case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r':
  case 't':
    return p + 2;
  case 'u':
    break;
  default:
    return syntax(sc, p, "invalid escape in string"), NULL;
  }
  if (hk_json_hex4(p + 2, sc->end, &u) != 0)
    return syntax(sc, p, "invalid \\u escape"), NULL;
  if (u < 0xD800 || u > 0xDFFF) return p + 6;
  if (u >= 0xDC00 || sc->end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
      hk_json_hex4(p + 8, sc->end, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
    return syntax(sc, p, "lone surrogate in \\u escape"), NULL;
  return p + 12;
}

/* sc->p is at an opening quote. On success sc->p is past the closing quote
 * and *escaped tells whether a backslash escape occurred. Invalid UTF-8 is
 * recorded as a content error and scanning goes on. */
static int scan_string(scanner *sc, bool *escaped) {
  const unsigned char *p = (const unsigned char *)sc->p + 1;
  const unsigned char *end = (const unsigned char *)sc->end;
  const unsigned char *q;
  bool esc = false;
  size_t n;

  for (;;) {
    p = hk_json_plain_run(p, end);
    if (p >= end) return syntax(sc, sc->p, "unterminated string");
    switch (hk_json_str_class[*p]) {
    case HK_STR_QUOTE:
      sc->p = (const char *)p + 1;
      *escaped = esc;
      return 0;
    case HK_STR_BSLASH:
      esc = true;
      q = (const unsigned char *)scan_escape(sc, (const char *)p);
      if (q == NULL) return -1;
      p = q;
      break;
    case HK_STR_CTRL:
      return syntax(sc, (const char *)p, "control character in string");
    default:
      n = hk_utf8_seq_len(p, (size_t)(end - p));
      if (n == 0) {
        content_error(sc, sc->index, 400, "invalid UTF-8 at byte %zu",
                      offset_of(sc, (const char *)p));
        n = 1;
      }
      p += n;
    }
  }
}

static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* RFC 8259 number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int scan_number(scanner *sc) {
  const char *p = sc->p, *end = sc->end;

  if (*p == '-') p++;
  if (p >= end || !is_digit(*p)) return unexpected(sc, p, "invalid number");
  if (*p == '0') {
    p++;
    if (p < end && is_digit(*p))
      return syntax(sc, p - 1, "leading zero in number");
  } else {
    while (p < end && is_digit(*p)) p++;
  }
  if (p < end && *p == '.') {
    if (++p >= end || !is_digit(*p)) return unexpected(sc, p, "invalid number");
    while (p < end && is_digit(*p)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    if (++p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || !is_digit(*p)) return unexpected(sc, p, "invalid number");
    while (p < end && is_digit(*p)) p++;
  }
  sc->p = p;
  return 0;
}

static int scan_literal(scanner *sc, const char *word, size_t n) {
  if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, word, n) != 0)
    return syntax(sc, sc->p, "invalid literal");
  sc->p += n;
  return 0;
}

/* ---- containers --------------------------------------------------------- */

/* Past the limit: records the error once, then skips the container at sc->p
 * by bracket counting (no recursion, strings respected) so the body's shape
 * can still be decided. */
static int skip_too_deep(scanner *sc) {
  const char *p = sc->p, *end = sc->end;
  size_t open = 0;

  content_error(sc, sc->index, 400, "nesting deeper than %d levels",
                sc->max_depth);
  for (; p < end; p++) {
    if (*p == '{' || *p == '[') {
      open++;
    } else if (*p == '}' || *p == ']') {
      if (--open == 0) {
        sc->p = p + 1;
        return 0;
      }
    } else if (*p == '"') {
      for (p++; p < end && *p != '"'; p++)
        if (*p == '\\') p++;
      if (p >= end) break;
    }
  }
  return syntax(sc, end, "unexpected end of input");
}

/* Decodes an escaped key of at most cap bytes into out for comparison with
 * the envelope names; non-ASCII code points become 0xFF (they never match).
 * Returns the decoded length, or -1 when it does not fit. */
static int unescape_short_key(const char *s, size_t len, char *out,
                              size_t cap) {
  static const char k_simple[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
  size_t n = 0;
  unsigned u = 0;

  for (size_t i = 0; i < len; i++, n++) {
    if (n == cap) return -1;
    if (s[i] != '\\') {
      out[n] = s[i];
      continue;
    }
    if (s[i + 1] == 'u') {
      hk_json_hex4(s + i + 2, s + len, &u); /* validated by scan_escape */
      out[n] = u < 0x80 ? (char)u : (char)0xFF;
      i += (u >= 0xD800 && u <= 0xDBFF) ? 11 : 5;
      continue;
    }
    for (const char *e = k_simple; *e; e += 2)
      if (*e == s[i + 1]) out[n] = e[1];
    i++;
  }
  return (int)n;
}

/* The envelope slot a top-level key names, or NULL. Every top-level key
 * of every event comes here, so a plain key that is neither 10 nor 7
 * bytes long costs only two length compares. */
static env_field *envelope_slot(envelope *env, const char *key, size_t len,
                                bool escaped) {
  char buf[KEY_MAX_LEN + 1];
  int n;

  if (escaped) {
    n = unescape_short_key(key, len, buf, sizeof buf);
    if (n < 0) return NULL;
    key = buf;
    len = (size_t)n;
  }
  if (len == KEY_MAX_LEN) {
    if (memcmp(key, "event_type", KEY_MAX_LEN) == 0) return &env->type;
    if (memcmp(key, "event_date", KEY_MAX_LEN) == 0) return &env->date;
  } else if (len == sizeof "list_id" - 1 && memcmp(key, "list_id", len) == 0) {
    return &env->list_id;
  }
  return NULL;
}

/* Scans the value of an envelope key, remembering it in *f. A value that
 * is not a string keeps its raw text, from which list_id takes a number. */
static int scan_envelope_value(scanner *sc, int depth, env_field *f) {
  bool esc;
  int rc;

  if (*sc->p != '"') {
    f->kind = ENV_NOT_STRING;
    f->s = sc->p;
    rc = scan_value(sc, depth);
    f->len = (size_t)(sc->p - f->s);
    return rc;
  }
  f->s = sc->p + 1;
  if (scan_string(sc, &esc) != 0) return -1;
  f->len = (size_t)(sc->p - 1 - f->s);
  f->kind = esc ? ENV_ESCAPED : ENV_STRING;
  return 0;
}

/* One "key": value pair; sc->p is at the key's quote. env is non-NULL only
 * for an event's top-level object. */
/* Notes that a top-level container of the event being scanned starts at
 * value and ends at sc->p. Only a note: without room, or beyond 4 GiB,
 * it is left out, and a reader steps over that value on its own. */
static void note_skip(scanner *sc, const char *value) {
  size_t start = (size_t)(value - sc->event);
  size_t end = (size_t)(sc->p - sc->event);

  if (end > UINT32_MAX) return;
  if (sc->n_skips == sc->skips_cap) {
    size_t cap = sc->skips_cap ? sc->skips_cap * 2 : 64;
    hk_event_skip *grown = realloc(sc->skips, cap * sizeof *grown);

    if (grown == NULL) return;
    sc->skips = grown;
    sc->skips_cap = cap;
  }
  sc->skips[sc->n_skips].start = (uint32_t)start;
  sc->skips[sc->n_skips++].end = (uint32_t)end;
}

static int scan_member(scanner *sc, int depth, envelope *env) {
  const char *key = sc->p + 1, *p;
  env_field *slot;
  size_t key_len;
  bool esc;

  if (scan_string(sc, &esc) != 0) return -1;
  key_len = (size_t)(sc->p - 1 - key);
  p = hk_json_skip_ws(sc->p, sc->end);
  if (p >= sc->end || *p != ':') return unexpected(sc, p, "expected ':'");
  p = hk_json_skip_ws(p + 1, sc->end);
  if (p >= sc->end) return unexpected(sc, p, "expected a value");
  sc->p = p;
  if (env != NULL &&
      (slot = envelope_slot(env, key, key_len, esc)) != NULL)
    return scan_envelope_value(sc, depth, slot);
  if (scan_value(sc, depth) != 0) return -1;
  if (env != NULL && (*p == '{' || *p == '[')) note_skip(sc, p);
  return 0;
}

/* sc->p is at '{'; depth is this object's depth. */
static int scan_object(scanner *sc, int depth, envelope *env) {
  const char *p, *end = sc->end;

  if (depth > sc->max_depth) return skip_too_deep(sc);
  p = hk_json_skip_ws(sc->p + 1, end);
  if (p < end && *p == '}') {
    sc->p = p + 1;
    return 0;
  }
  for (;;) {
    if (p >= end || *p != '"') return unexpected(sc, p, "expected a key");
    sc->p = p;
    if (scan_member(sc, depth, env) != 0) return -1;
    p = hk_json_skip_ws(sc->p, end);
    if (p < end && *p == ',') {
      p = hk_json_skip_ws(p + 1, end);
      if (p < end && *p == '}') return syntax(sc, p, "trailing comma");
    } else if (p < end && *p == '}') {
      sc->p = p + 1;
      return 0;
    } else {
      return unexpected(sc, p, "expected ',' or '}'");
    }
  }
}

/* sc->p is at '['; depth is this array's depth. */
static int scan_array(scanner *sc, int depth) {
  const char *p, *end = sc->end;

  if (depth > sc->max_depth) return skip_too_deep(sc);
  p = hk_json_skip_ws(sc->p + 1, end);
  if (p < end && *p == ']') {
    sc->p = p + 1;
    return 0;
  }
  for (;;) {
    if (p >= end) return unexpected(sc, p, "expected a value");
    sc->p = p;
    if (scan_value(sc, depth) != 0) return -1;
    p = hk_json_skip_ws(sc->p, end);
    if (p < end && *p == ',') {
      p = hk_json_skip_ws(p + 1, end);
      if (p < end && *p == ']') return syntax(sc, p, "trailing comma");
    } else if (p < end && *p == ']') {
      sc->p = p + 1;
      return 0;
    } else {
      return unexpected(sc, p, "expected ',' or ']'");
    }
  }
}

/* Any value at sc->p (which is before end); depth is the enclosing
 * container's depth. */
static int scan_value(scanner *sc, int depth) {
  bool esc;

  switch (*sc->p) {
  case '{': return scan_object(sc, depth + 1, NULL);
  case '[': return scan_array(sc, depth + 1);
  case '"': return scan_string(sc, &esc);
  case 't': return scan_literal(sc, "true", 4);
  case 'f': return scan_literal(sc, "false", 5);
  case 'n': return scan_literal(sc, "null", 4);
  default:
    if (*sc->p == '-' || is_digit(*sc->p)) return scan_number(sc);
    return unexpected(sc, sc->p, "unexpected character");
  }
}

/* ---- events ------------------------------------------------------------- */

static bool type_is_valid(const char *s, size_t len) {
  if (len == 0 || len > TYPE_MAX_LEN) return false;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
          c == '_' || c == '-' || c == '.'))
      return false;
  }
  return true;
}

/* Checks the envelope; fills the span's type and date, or records the
 * content error and returns false. */
static bool envelope_check(scanner *sc, const envelope *env,
                           hk_event_span *span) {
  const env_field *t = &env->type, *d = &env->date;

  if (t->kind == ENV_MISSING) {
    content_error(sc, sc->index, 400, "event_type is missing");
  } else if (t->kind == ENV_NOT_STRING) {
    content_error(sc, sc->index, 400, "event_type must be a string");
  } else if (t->kind == ENV_ESCAPED) {
    content_error(sc, sc->index, 400, "event_type must be written without "
                  "escapes (\\): 1-128 characters of letters, digits, '_', "
                  "'-' and '.'");
  } else if (!type_is_valid(t->s, t->len)) {
    content_error(sc, sc->index, 400, "event_type must be 1-128 characters "
                  "of letters, digits, '_', '-' and '.'");
  } else if (d->kind == ENV_MISSING) {
    content_error(sc, sc->index, 400, "event_date is missing");
  } else if (d->kind == ENV_NOT_STRING) {
    content_error(sc, sc->index, 400, "event_date must be an RFC 3339 string");
  } else if (d->kind == ENV_ESCAPED) {
    content_error(sc, sc->index, 400, "event_date must be written without "
                  "escapes (\\): an RFC 3339 time");
  } else if (hk_datetime_parse(d->s, d->len, &span->date_sec,
                               &span->date_nsec) != 0) {
    content_error(sc, sc->index, 400,
                  "event_date is not a valid RFC 3339 time: %.*s",
                  (int)hk_utf8_prefix_len(d->s, d->len, DATE_ECHO_MAX), d->s);
  } else {
    span->type = t->s;
    span->type_len = t->len;
    return true;
  }
  return false;
}

/* The list_id character at s[*i] (of len) as a digit 0-9, or -1; *i moves
 * past it. An escape is a digit only as \u0030-\u0039, so a JSON string
 * is judged by what it decodes to (scan_escape has checked the escape). */
static int list_id_digit(const char *s, size_t len, size_t *i) {
  char c = s[*i];
  unsigned u;

  if (c != '\\') {
    (*i)++;
    return is_digit(c) ? c - '0' : -1;
  }
  if (s[*i + 1] != 'u' || hk_json_hex4(s + *i + 2, s + len, &u) != 0 ||
      u < '0' || u > '9')
    return -1;
  *i += 6;
  return (int)(u - '0');
}

/* list_id for the span: all digits and at most INT64_MAX, else -1. The
 * text is a string's contents or a number's JSON text, so a sign, a
 * fraction or an exponent, null, true, an object and so on all give -1.
 * A string may carry leading zeros (Lua's filters read "007" as 7 too). */
static int64_t list_id_value(const env_field *f) {
  int64_t v = 0;
  size_t i = 0;
  int d;

  if (f->kind == ENV_MISSING || f->len == 0) return -1;
  while (i < f->len) {
    d = list_id_digit(f->s, f->len, &i);
    if (d < 0 || v > (INT64_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  return v;
}

/* Appends an accepted event, or records the 413 once the limit is passed. */
static void add_span(scanner *sc, const hk_event_span *span) {
  hk_event_span *grown;
  size_t cap;

  if (sc->content_failed) return; /* the request is refused anyway */
  if (sc->max_events != 0 && sc->count >= sc->max_events) {
    content_error(sc, -1, 413, "too many events in one request (limit %zu)",
                  sc->max_events);
    return;
  }
  if (sc->count == sc->cap) {
    cap = sc->cap ? sc->cap * 2 : 16;
    grown = realloc(sc->spans, cap * sizeof *grown);
    if (grown == NULL) {
      content_error(sc, -1, 413, "out of memory for %zu events", cap);
      return;
    }
    sc->spans = grown;
    sc->cap = cap;
  }
  sc->spans[sc->count++] = *span;
}

/* An event at sc->p (any value): must be an object with a valid envelope. */
static int scan_event(scanner *sc) {
  envelope env = {{NULL, 0, ENV_MISSING}, {NULL, 0, ENV_MISSING},
                  {NULL, 0, ENV_MISSING}};
  hk_event_span span;
  const char *start = sc->p;
  size_t first_skip = sc->n_skips;

  if (*start != '{') {
    content_error(sc, sc->index, 400, "event must be a JSON object");
    return scan_value(sc, 0);
  }
  sc->event = start;
  if (scan_object(sc, 1, &env) != 0) return -1;
  span.json = start;
  span.json_len = (size_t)(sc->p - start);
  span.skips.at = (const hk_event_skip *)(uintptr_t)first_skip;
  span.skips.n = sc->n_skips - first_skip;
  if (!envelope_check(sc, &env, &span)) return 0;
  span.list_id = list_id_value(&env.list_id);
  add_span(sc, &span);
  return 0;
}

/* sc->p is at the '[' wrapping the events; element i is event i. */
static int scan_event_array(scanner *sc) {
  const char *p, *end = sc->end;

  p = hk_json_skip_ws(sc->p + 1, end);
  if (p < end && *p == ']') {
    sc->p = p + 1;
    return 0;
  }
  for (sc->index = 0;; sc->index++) {
    sc->array_event = sc->index;
    if (p >= end) return unexpected(sc, p, "expected a value");
    sc->p = p;
    if (scan_event(sc) != 0) return -1;
    p = hk_json_skip_ws(sc->p, end);
    if (p < end && *p == ',') {
      p = hk_json_skip_ws(p + 1, end);
      if (p < end && *p == ']') {
        sc->array_event = sc->index + 1; /* the element that is missing */
        return syntax(sc, p, "trailing comma");
      }
    } else if (p < end && *p == ']') {
      sc->p = p + 1;
      sc->array_event = -1;
      return 0;
    } else {
      return unexpected(sc, p, "expected ',' or ']'");
    }
  }
}

/* The whole text [sc->p, sc->end) as one JSON value: an event or an array
 * of events. */
static int scan_json_body(scanner *sc) {
  const char *p;
  int rc;

  sc->index = 0;
  sc->array_event = -1;
  rc = *sc->p == '[' ? scan_event_array(sc) : scan_event(sc);
  if (rc != 0) return -1;
  p = hk_json_skip_ws(sc->p, sc->end);
  if (p != sc->end)
    return syntax(sc, p, "unexpected content after the JSON value");
  return 0;
}

/* NDJSON from start to the body's end: one event per line, blank lines
 * skipped but counted. Stops at the first line with an error (*bad_line). */
static int scan_ndjson(scanner *sc, const char *start, long *bad_line) {
  const char *body_end = sc->end, *line = start, *nl, *p;
  long idx;

  for (idx = 0; line < body_end; idx++) {
    nl = memchr(line, '\n', (size_t)(body_end - line));
    sc->end = nl ? nl : body_end;
    p = hk_json_skip_ws(line, sc->end);
    if (p < sc->end) {
      sc->index = idx;
      sc->p = p;
      if (scan_event(sc) == 0 &&
          (p = hk_json_skip_ws(sc->p, sc->end)) != sc->end)
        syntax(sc, p, "unexpected content after the event");
      if (sc->syn_reason != NULL || sc->content_failed) {
        *bad_line = idx;
        sc->end = body_end;
        return -1;
      }
    }
    line = nl ? nl + 1 : body_end;
  }
  sc->end = body_end;
  return 0;
}

/* ---- the entry point ---------------------------------------------------- */

static void scanner_init(scanner *sc, const char *body, size_t len,
                         const hk_scan_options *opt) {
  memset(sc, 0, sizeof *sc);
  sc->base = body;
  sc->end = body + len;
  sc->max_depth = opt && opt->max_depth > 0 ? opt->max_depth
                                            : DEFAULT_MAX_DEPTH;
  if (sc->max_depth > DEPTH_CAP) sc->max_depth = DEPTH_CAP;
  sc->max_events = opt ? opt->max_events : 0;
}

/* Forgets the outcome of a previous attempt (spans stay allocated). */
static void scanner_reset(scanner *sc) {
  sc->count = 0;
  sc->n_skips = 0;
  sc->syn_reason = NULL;
  sc->syn_at = NULL;
  sc->content_failed = false;
}

__attribute__((format(printf, 4, 5))) static void
set_error(hk_scan_error *err, long index, int status, const char *fmt, ...) {
  va_list ap;

  err->index = index;
  err->http_status = status;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
}

/* Fills err from the scanner's outcome: the content error if there is one
 * and no syntax error, else the syntax error. prefix names the text kind. */
static void report(const scanner *sc, hk_scan_error *err, long index,
                   const char *prefix) {
  if (sc->syn_reason == NULL) {
    *err = sc->content;
    return;
  }
  set_error(err, index, 400, "%s: %s at byte %zu", prefix, sc->syn_reason,
            offset_of(sc, sc->syn_at));
}

/* True when the body has no newline except trailing whitespace. */
static bool is_single_line(const char *p, const char *end) {
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  return nl == NULL || hk_json_skip_ws(nl, end) == end;
}

/* Not one JSON value: the body is NDJSON, unless it is a single line or its
 * first value spans lines (pretty-printed JSON), where the JSON attempt's
 * syntax error explains more than "line 0 is incomplete". Such an error
 * inside an element of a JSON array body carries that element's index. */
static int fall_back_to_ndjson(scanner *sc, const char *start,
                               hk_scan_error *err) {
  const char *json_reason = sc->syn_reason, *json_at = sc->syn_at;
  long json_event = sc->array_event;
  const char *nl = memchr(start, '\n', (size_t)(sc->end - start));
  long bad_line = -1;

  if (is_single_line(start, sc->end)) {
    report(sc, err, json_event, "body is not valid JSON");
    return -1;
  }
  scanner_reset(sc);
  if (scan_ndjson(sc, start, &bad_line) == 0) return 0;
  if (bad_line == 0 && sc->syn_reason != NULL && json_at > nl) {
    sc->syn_reason = json_reason;
    sc->syn_at = json_at;
    report(sc, err, json_event, "body is not valid JSON");
    return -1;
  }
  report(sc, err, bad_line, "invalid JSON");
  return -1;
}

/* Moves the skips behind the spans, in their allocation, and points each
 * span at its own. Returns 0, or -1 with an error set. */
static int hand_over(scanner *sc) {
  size_t head = sc->count * sizeof *sc->spans;
  hk_event_span *all;
  hk_event_skip *skips;

  if (sc->count == 0) return 0;
  all = realloc(sc->spans, head + sc->n_skips * sizeof *skips);
  if (all == NULL) {
    content_error(sc, -1, 413, "out of memory for %zu events", sc->count);
    return -1;
  }
  sc->spans = all;
  skips = (hk_event_skip *)(void *)((char *)all + head);
  if (sc->n_skips > 0)
    memcpy(skips, sc->skips, sc->n_skips * sizeof *skips);
  for (size_t i = 0; i < sc->count; i++)
    all[i].skips.at = skips + (uintptr_t)all[i].skips.at;
  free(sc->skips);
  sc->skips = NULL;
  return 0;
}

int hk_scan_events(const char *body, size_t len, const hk_scan_options *opt,
                   hk_event_span **spans, size_t *count, hk_scan_error *err) {
  scanner sc;
  const char *start = body;
  long bad_line = -1;
  int rc;

  *spans = NULL;
  *count = 0;
  scanner_init(&sc, body, len, opt);
  if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0) start += 3;
  sc.p = hk_json_skip_ws(start, sc.end);
  if (sc.p == sc.end) {
    set_error(err, -1, 400, "body is empty");
    return -1;
  }
  if (opt && opt->ndjson) {
    rc = scan_ndjson(&sc, start, &bad_line);
    if (rc != 0) report(&sc, err, bad_line, "invalid JSON");
  } else if (scan_json_body(&sc) == 0) {
    rc = sc.content_failed ? -1 : 0;
    if (rc != 0) *err = sc.content;
  } else {
    rc = fall_back_to_ndjson(&sc, start, err);
  }
  if (rc == 0 && hand_over(&sc) != 0) {
    *err = sc.content;
    rc = -1;
  }
  if (rc != 0) goto fail;
  *spans = sc.spans;
  *count = sc.count;
  return 0;
fail:
  free(sc.spans);
  free(sc.skips);
  return -1;
}
