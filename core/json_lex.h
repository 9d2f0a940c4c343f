/* Lexical pieces shared by the ingest scanner (json_scan.c), the Lua
 * JSON codec (lua_json.c) and the splice (splice.c): byte classes inside
 * strings, white space, \u hex digits, skipping a value of text that was
 * already validated, and the skips the scanner notes for the others. */
#ifndef HOOKD_JSON_LEX_H
#define HOOKD_JSON_LEX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Where one of an event's top-level object or array values starts and
 * ends (after its closing bracket), as byte offsets in the event's text.
 * The ingest scanner notes them while it checks a request, so that the
 * loop, which reads the same text again to make Lua tables and messages,
 * can step over those values instead of reading them a second time. */
typedef struct hk_event_skip {
  uint32_t start, end;
} hk_event_skip;

/* An event's skips, in the order of its text. */
typedef struct hk_event_skips {
  const hk_event_skip *at;
  size_t n;
} hk_event_skips;


/* Byte classes inside a JSON string: QUOTE, BSLASH and CTRL end a plain run
 * (and need escaping when encoding), HIGH starts a UTF-8 sequence. */
enum { HK_STR_PLAIN = 0, HK_STR_QUOTE, HK_STR_BSLASH, HK_STR_CTRL,
       HK_STR_HIGH };

#define HK_C4(a) a, a, a, a
#define HK_C16(a) HK_C4(a), HK_C4(a), HK_C4(a), HK_C4(a)
#define HK_C64(a) HK_C16(a), HK_C16(a), HK_C16(a), HK_C16(a)
static const unsigned char hk_json_str_class[256] = {
    HK_C16(HK_STR_CTRL), HK_C16(HK_STR_CTRL),                   /* 00-1f */
    0, 0, HK_STR_QUOTE, 0, HK_C4(0), HK_C4(0), HK_C4(0),        /* 20-2f */
    HK_C16(0), HK_C16(0),                                       /* 30-4f */
    HK_C4(0), HK_C4(0), HK_C4(0), HK_STR_BSLASH, 0, 0, 0,       /* 50-5f */
    HK_C16(0), HK_C16(0),                                       /* 60-7f */
    HK_C64(HK_STR_HIGH), HK_C64(HK_STR_HIGH),                   /* 80-ff */
};
#undef HK_C64
#undef HK_C16
#undef HK_C4

/* The first byte at or after p (up to end) that ends a run of plain
 * string bytes: a quote, a backslash, a control character or a byte of a
 * UTF-8 sequence; end when there is none. Eight bytes are tested at a
 * time: the word has such a byte when a byte is below 0x20, equals '"' or
 * '\\', or has its high bit set. */
static inline const unsigned char *hk_json_plain_run(const unsigned char *p,
                                                     const unsigned char *end) {
  const uint64_t ones = 0x0101010101010101ULL, highs = ones * 0x80;

  while (end - p >= 8) {
    uint64_t x, quote, bslash;
    memcpy(&x, p, 8);
    quote = x ^ (ones * '"');
    bslash = x ^ (ones * '\\');
    /* Exact as a whole: a subtraction only borrows across bytes from a
     * byte that is itself a hit, and bytes from 0x80 up are hits. */
    if (((x - ones * 0x20) | (quote - ones) | (bslash - ones) | x) & highs)
      break;
    p += 8;
  }
  while (p < end && hk_json_str_class[*p] == HK_STR_PLAIN) p++;
  return p;
}

/* The first byte at or after p (up to end) that is not JSON white space. */
static inline const char *hk_json_skip_ws(const char *p, const char *end) {
  while (p < end && (unsigned char)*p <= ' ' &&
         (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
    p++;
  return p;
}

/* Reads the 4 hex digits at p (before end) into *out. Returns 0, or -1
 * when there are fewer than 4 or one is not a hex digit. */
static inline int hk_json_hex4(const char *p, const char *end, unsigned *out) {
  unsigned v = 0;

  if (end - p < 4) return -1;
  for (int i = 0; i < 4; i++) {
    unsigned c = (unsigned char)p[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') d = (c | 0x20) - 'a' + 10;
    else return -1;
    v = v << 4 | d;
  }
  *out = v;
  return 0;
}

/* In text already validated: the end of the string whose opening quote is
 * at p, the next quote not escaped, found with memchr since strings are
 * most of an event. */
static inline const char *hk_json_skip_string(const char *p,
                                              const char *end) {
  const char *q, *b;

  for (p++; (q = memchr(p, '"', (size_t)(end - p))) != NULL; p = q + 1) {
    for (b = q; b > p && b[-1] == '\\';) b--;
    if (((q - b) & 1) == 0) return q + 1;
  }
  return end;
}

/* In text already validated: the end of the value starting at p. */
static inline const char *hk_json_skip_value(const char *p, const char *end) {
  /* Bytes that matter when skipping a container. */
  static const unsigned char structural[256] = {
      ['"'] = 1, ['{'] = 1, ['['] = 1, ['}'] = 1, [']'] = 1};
  int depth = 0;

  if (*p == '"') return hk_json_skip_string(p, end);
  if (*p != '{' && *p != '[') {
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' &&
           *p != '\t' && *p != '\r' && *p != '\n')
      p++;
    return p;
  }
  while (p < end) {
    while (p < end && !structural[(unsigned char)*p]) p++;
    if (p >= end) break;
    if (*p == '"') {
      p = hk_json_skip_string(p, end);
      continue;
    }
    if (*p == '{' || *p == '[') depth++;
    else if (--depth == 0) return p + 1;
    p++;
  }
  return end;
}

/* The end of the top-level value at v of the event text (which ends at
 * end): from skips for an object or array they know (their next entry to
 * look at is *next, moved on), else read from the text. A skip is taken
 * only when it ends right after the value's closing bracket and before
 * the ',' or '}' that must follow a member. */
static inline const char *hk_event_value_end(const hk_event_skips *skips,
                                             size_t *next, const char *text,
                                             const char *v,
                                             const char *end) {
  size_t at = (size_t)(v - text);

  if (skips != NULL && (*v == '{' || *v == '[')) {
    while (*next < skips->n && skips->at[*next].start < at) (*next)++;
    if (*next < skips->n && skips->at[*next].start == at) {
      const char *to = text + skips->at[(*next)++].end, *after;

      if (to > v && to <= end && to[-1] == (*v == '{' ? '}' : ']') &&
          (after = hk_json_skip_ws(to, end)) < end &&
          (*after == ',' || *after == '}'))
        return to;
    }
  }
  return hk_json_skip_value(v, end);
}

#endif
