/* The "hookd.json" Lua module: JSON <-> Lua values without losing what
 * came in ([] vs {}, null inside arrays, 19-digit integers, unescaped '/'),
 * plus the C entry points the router uses to decode events and encode
 * messages straight into batch buffers. */
#include "lua_json.h"

#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_lex.h"
#include "lua_event.h"
#include "utf8.h"

/* Nesting limit for decode and encode; encode also uses it to stop on a
 * cycle. PATH_LEVELS and SEG_MAX bound the key path in encode errors. */
enum { MAX_DEPTH = 512, PATH_LEVELS = 16, SEG_MAX = 40 };
enum { STACK_BUF = 256, NUM_BUF = 64 };
/* Initial table sizes: an event has a dozen top-level keys, nested objects
 * a handful; measured on the sample, this spares most rehashes. An event
 * that keeps its containers and most strings as text has only its
 * numbers, literals and three strings in the table, and the key of the
 * texts: eight places hold that, and half the memory of sixteen made and
 * swept for every event routed is worth a rehash for the few events whose
 * kept members are all read. */
enum { HINT_TOP_OBJECT = 16, HINT_EVENT = 8, HINT_OBJECT = 8, HINT_ARRAY = 2 };
#define MAX_EXACT_INT 9007199254740992.0 /* 2^53 */

/* Registry keys: the addresses are unique per process, the tables stored
 * under them belong to each lua_State. */
static const char k_array_mt_key = 'a';
static const char k_object_mt_key = 'o';
static const char k_number_mt_key = 'n';

/* A number literal JSON cannot round-trip through a double (an integer
 * beyond 2^53, or a value out of double range), kept as its text. */
typedef struct json_numlit {
  size_t len;
  char text[];
} json_numlit;

/* ---- shared lexical helpers ---------------------------------------------- */

static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Length of the RFC 8259 number at p, or 0 if there is none (leading zeros
 * refused). *is_int tells whether it has no fraction and no exponent. */
static size_t number_len(const char *s, const char *end, bool *is_int) {
  const char *p = s;

  *is_int = true;
  if (p < end && *p == '-') p++;
  if (p >= end || !is_digit(*p)) return 0;
  if (*p == '0') {
    if (++p < end && is_digit(*p)) return 0;
  } else {
    while (p < end && is_digit(*p)) p++;
  }
  if (p < end && *p == '.') {
    *is_int = false;
    if (++p >= end || !is_digit(*p)) return 0;
    while (p < end && is_digit(*p)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    *is_int = false;
    if (++p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || !is_digit(*p)) return 0;
    while (p < end && is_digit(*p)) p++;
  }
  return (size_t)(p - s);
}

/* ---- per-state metatables ------------------------------------------------ */

static bool is_numlit_text(const char *s, size_t len) {
  bool is_int;
  return len > 0 && number_len(s, s + len, &is_int) == len;
}

/* Pushes the text of v: a number literal's digits or what lua_tolstring
 * gives; NULL when v has no string form. */
static const char *text_of(lua_State *L, int idx, size_t *len) {
  json_numlit *n;

  if (lua_type(L, idx) == LUA_TUSERDATA && lua_getmetatable(L, idx)) {
    lua_pushlightuserdata(L, (void *)&k_number_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_rawequal(L, -1, -2)) {
      lua_pop(L, 2);
      n = lua_touserdata(L, idx);
      *len = n->len;
      return n->text;
    }
    lua_pop(L, 2);
  }
  return lua_tolstring(L, idx, len);
}

static int numlit_tostring(lua_State *L) {
  json_numlit *n = lua_touserdata(L, 1);
  lua_pushlstring(L, n->text, n->len);
  return 1;
}

/* Lua calls __eq only when both operands are number literals. */
static int numlit_eq(lua_State *L) {
  json_numlit *a = lua_touserdata(L, 1), *b = lua_touserdata(L, 2);
  lua_pushboolean(L, a->len == b->len && memcmp(a->text, b->text, a->len) == 0);
  return 1;
}

static int numlit_concat(lua_State *L) {
  size_t la, lb;
  const char *a = text_of(L, 1, &la), *b = text_of(L, 2, &lb);

  if (a == NULL || b == NULL)
    return luaL_error(L, "attempt to concatenate a json number with a %s",
                      luaL_typename(L, a == NULL ? 1 : 2));
  lua_pushlstring(L, a, la);
  lua_pushlstring(L, b, lb);
  lua_concat(L, 2);
  return 1;
}

/* Pushes the metatable stored under key, creating it on first use. */
static void push_mt(lua_State *L, const char *key) {
  lua_pushlightuserdata(L, (void *)key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (!lua_isnil(L, -1)) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, key == &k_array_mt_key    ? "array"
                    : key == &k_object_mt_key ? "object"
                                              : "number");
  lua_setfield(L, -2, "__json");
  if (key == &k_number_mt_key) {
    lua_pushcfunction(L, numlit_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, numlit_eq);
    lua_setfield(L, -2, "__eq");
    lua_pushcfunction(L, numlit_concat);
    lua_setfield(L, -2, "__concat");
  }
  lua_pushlightuserdata(L, (void *)key);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

/* Pushes a number literal with the given text; mt is the stack slot of the
 * number metatable. */
static void push_numlit(lua_State *L, const char *s, size_t len, int mt) {
  json_numlit *n = lua_newuserdata(L, sizeof *n + len + 1);

  n->len = len;
  memcpy(n->text, s, len);
  n->text[len] = '\0';
  lua_pushvalue(L, mt);
  lua_setmetatable(L, -2);
}

/* ---- decode -------------------------------------------------------------- */

/* How many keys of the members decoded into an event's table are kept to
 * tell repeats without asking the table; events have fewer. */
#define HK_EVENT_EAGER_MAX 32

typedef struct decoder {
  lua_State *L;
  const char *base; /* start of the text, for byte offsets */
  const char *p;
  const char *end;
  int depth;
  int mt_array, mt_object, mt_number; /* stack slots of the metatables */
  const char *err;                    /* static reason, set on failure */
  const char *err_at;
  hk_event_lazy *lazy; /* an event's top-level containers kept as text */
  bool whole;          /* set when lazy must be given up: decode whole */
  hk_event_skips skips; /* where those containers end, when known */
  size_t next_skip;
  /* The keys of an event's members decoded into its table so far (as
   * written, without quotes), to tell a kept member that repeats one;
   * when one had escapes or they were too many, the table is asked. */
  struct {
    const char *key;
    size_t len;
  } eager[HK_EVENT_EAGER_MAX];
  int n_eager;
  bool eager_unsure;
  struct key_cache *keys; /* an event's keys made Lua strings before, */
  int key_strings;        /* and the stack slot of their table; or NULL */
} decoder;

/* The top-level keys of events repeat from one event to the next. Each
 * made a Lua string anew costs a lookup in LuaJIT's table of strings,
 * which is as large as the strings alive (most of them garbage waiting
 * for the collector) and misses the cache. Keys met before are kept here
 * instead, by a hash of their text, and their strings in a Lua table at
 * the same index (plus one), read back without any lookup by text. */
#define KEY_CACHE_SLOTS 128
#define KEY_CACHE_LEN 32

typedef struct key_cache {
  unsigned char len[KEY_CACHE_SLOTS]; /* 0: the slot is empty */
  char text[KEY_CACHE_SLOTS][KEY_CACHE_LEN];
} key_cache;

static int dec_value(decoder *d);

static int dec_fail(decoder *d, const char *at, const char *reason) {
  d->err = reason;
  d->err_at = at;
  return -1;
}

static int dec_expected(decoder *d, const char *at, const char *what) {
  return dec_fail(d, at, at >= d->end ? "unexpected end of input" : what);
}

/* Writes code point u as UTF-8 at o; returns the byte after it. */
static char *put_utf8(char *o, unsigned u) {
  if (u < 0x80) {
    *o++ = (char)u;
  } else if (u < 0x800) {
    *o++ = (char)(0xC0 | u >> 6);
    *o++ = (char)(0x80 | (u & 0x3F));
  } else if (u < 0x10000) {
    *o++ = (char)(0xE0 | u >> 12);
    *o++ = (char)(0x80 | (u >> 6 & 0x3F));
    *o++ = (char)(0x80 | (u & 0x3F));
  } else {
    *o++ = (char)(0xF0 | u >> 18);
    *o++ = (char)(0x80 | (u >> 12 & 0x3F));
    *o++ = (char)(0x80 | (u >> 6 & 0x3F));
    *o++ = (char)(0x80 | (u & 0x3F));
  }
  return o;
}

/* Decodes the escapes of raw (already checked for UTF-8 and control
 * characters) into out, which has room for len bytes: escapes never grow.
 * Returns the decoded length, or -1 after recording the bad escape. */
static ptrdiff_t unescape(decoder *d, const char *raw, size_t len, char *out) {
  const char *p = raw, *end = raw + len, *bs;
  char *o = out;
  unsigned u, lo;

  while ((bs = memchr(p, '\\', (size_t)(end - p))) != NULL) {
    memcpy(o, p, (size_t)(bs - p));
    o += bs - p;
    p = bs + 2;
    switch (bs[1]) {
    case '"': case '\\': case '/': *o++ = bs[1]; continue;
    case 'b': *o++ = '\b'; continue;
    case 'f': *o++ = '\f'; continue;
    case 'n': *o++ = '\n'; continue;
    case 'r': *o++ = '\r'; continue;
    case 't': *o++ = '\t'; continue;
    case 'u': break;
    default: return dec_fail(d, bs, "invalid escape in string");
    }
    if (hk_json_hex4(bs + 2, end, &u) != 0)
      return dec_fail(d, bs, "invalid \\u escape");
    p = bs + 6;
    if (u >= 0xD800 && u <= 0xDFFF) {
      if (u >= 0xDC00 || end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
          hk_json_hex4(p + 2, end, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
        return dec_fail(d, bs, "lone surrogate in \\u escape");
      u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
      p += 6;
    }
    o = put_utf8(o, u);
  }
  memcpy(o, p, (size_t)(end - p));
  return (o - out) + (end - p);
}

/* Pushes the string with escapes; kept out of line so its buffer is not on
 * the stack of every nesting level. */
static __attribute__((noinline)) int dec_push_escaped(decoder *d,
                                                      const char *raw,
                                                      size_t len) {
  char local[STACK_BUF];
  char *buf = local;
  ptrdiff_t n;

  if (len > sizeof local) buf = lua_newuserdata(d->L, len);
  n = unescape(d, raw, len, buf);
  if (n < 0) return -1;
  lua_pushlstring(d->L, buf, (size_t)n);
  if (buf != local) lua_remove(d->L, -2);
  return 0;
}

/* d->p is at the opening quote; pushes the string. */
/* Checks the string at d->p and steps over it; pushes it unless only
 * checked (push false). */
static int dec_string_as(decoder *d, bool push) {
  const unsigned char *start = (const unsigned char *)d->p + 1;
  const unsigned char *p = start, *end = (const unsigned char *)d->end;
  bool escaped = false;
  size_t n;

  for (;;) {
    p = hk_json_plain_run(p, end);
    if (p >= end) return dec_fail(d, d->p, "unterminated string");
    switch (hk_json_str_class[*p]) {
    case HK_STR_QUOTE:
      d->p = (const char *)p + 1;
      if (!push) return 0;
      if (escaped)
        return dec_push_escaped(d, (const char *)start, (size_t)(p - start));
      lua_pushlstring(d->L, (const char *)start, (size_t)(p - start));
      return 0;
    case HK_STR_BSLASH:
      escaped = true;
      if (end - p < 2) return dec_fail(d, d->p, "unterminated string");
      p += 2; /* the escape itself is checked by unescape */
      break;
    case HK_STR_CTRL:
      return dec_fail(d, (const char *)p, "control character in string");
    default:
      if ((n = hk_utf8_seq_len(p, (size_t)(end - p))) == 0)
        return dec_fail(d, (const char *)p, "invalid UTF-8");
      p += n;
    }
  }
}

static int dec_string(decoder *d) { return dec_string_as(d, true); }

/* Pushes a double parsed from the validated literal s (not NUL-terminated);
 * a value beyond double range stays a literal. */
static void dec_push_double(decoder *d, const char *s, size_t len) {
  char local[NUM_BUF];
  double v;

  if (len < sizeof local) {
    memcpy(local, s, len);
    local[len] = '\0';
    v = strtod(local, NULL);
  } else {
    lua_pushlstring(d->L, s, len); /* NUL-terminated copy */
    v = strtod(lua_tostring(d->L, -1), NULL);
    lua_pop(d->L, 1);
  }
  if (isfinite(v)) lua_pushnumber(d->L, v);
  else push_numlit(d->L, s, len, d->mt_number);
}

/* Integers up to 2^53 in magnitude become numbers, longer ones literals. */
static int dec_number(decoder *d) {
  const char *s = d->p, *p = s;
  bool is_int;
  size_t len = number_len(s, d->end, &is_int), digits;
  uint64_t v = 0;

  if (len == 0) return dec_fail(d, s, "invalid number");
  d->p = s + len;
  if (!is_int) {
    dec_push_double(d, s, len);
    return 0;
  }
  if (*p == '-') p++;
  digits = (size_t)(d->p - p);
  if (digits > 16) {
    push_numlit(d->L, s, len, d->mt_number);
    return 0;
  }
  for (; p < d->p; p++) v = v * 10 + (uint64_t)(*p - '0');
  if (v > (uint64_t)MAX_EXACT_INT) push_numlit(d->L, s, len, d->mt_number);
  else lua_pushnumber(d->L, *s == '-' ? -(double)v : (double)v);
  return 0;
}

static int dec_literal(decoder *d, const char *word, size_t n) {
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
    return dec_fail(d, d->p, "invalid literal");
  d->p += n;
  return 0;
}

/* Enters a container: depth and Lua stack checks, then pushes a new table
 * with the given metatable. */
static int dec_open(decoder *d, int mt, int narr, int nrec) {
  if (++d->depth > MAX_DEPTH)
    return dec_fail(d, d->p, "nesting deeper than 512 levels");
  if (!lua_checkstack(d->L, 4)) return dec_fail(d, d->p, "Lua stack full");
  lua_createtable(d->L, narr, nrec);
  lua_pushvalue(d->L, mt);
  lua_setmetatable(d->L, -2);
  return 0;
}

/* Whether key (as written, without its quotes) is one of the members
 * kept as text so far. */
static bool noted(const hk_event_lazy *lazy, const char *key, size_t len) {
  for (int i = 0; i < lazy->n; i++)
    if (lazy->m[i].key_len == len && memcmp(lazy->m[i].key, key, len) == 0)
      return true;
  return false;
}

/* The top-level strings decoded with the table (key as written, with its
 * quotes): the fields routing and most hooks read of every event. Other
 * top-level strings (hashes, secondary ids) are kept as text: each would
 * otherwise be a new Lua string to make and collect for every event. */
static bool eager_string(const char *key, size_t key_len) {
  /* All three are 12 bytes with their quotes. */
  return key_len == 12 && (memcmp(key, "\"event_type\"", 12) == 0 ||
                           memcmp(key, "\"event_date\"", 12) == 0 ||
                           memcmp(key, "\"profile_id\"", 12) == 0);
}

/* Notes the member at key (with its quotes) whose value is value..d->p as
 * kept as text, if there is room; returns whether it did. */
static bool note(hk_event_lazy *lazy, const char *key, size_t key_len,
                 const char *value, const char *value_end) {
  size_t len = (size_t)(value_end - value);

  if (lazy->n >= HK_EVENT_LAZY_MAX ||
      lazy->bytes + key_len - 2 + len > HK_EVENT_LAZY_BYTES)
    return false;
  lazy->m[lazy->n].key = key + 1;
  lazy->m[lazy->n].key_len = key_len - 2;
  lazy->m[lazy->n].value = value;
  lazy->m[lazy->n].value_len = len;
  lazy->bytes += key_len - 2 + len;
  lazy->n++;
  return true;
}

/* Whether the key (as written, with its quotes) names a member already
 * decoded into the event's table, at the top of the stack. */
static bool decoded_before(decoder *d, const char *key, size_t key_len) {
  const char *value = d->p;
  bool found = false;

  if (!d->eager_unsure) {
    for (int i = 0; i < d->n_eager; i++)
      if (d->eager[i].len == key_len - 2 &&
          memcmp(d->eager[i].key, key + 1, key_len - 2) == 0)
        return true;
    return false;
  }
  d->p = key;
  if (dec_string(d) == 0) {
    lua_rawget(d->L, -2);
    found = !lua_isnil(d->L, -1);
    lua_pop(d->L, 1);
  }
  d->p = value;
  return found;
}

/* Notes that the member whose key is at key is decoded into the table. */
static void note_decoded(decoder *d, const char *key, size_t key_len) {
  if (d->n_eager == HK_EVENT_EAGER_MAX || memchr(key, '\\', key_len)) {
    d->eager_unsure = true;
    return;
  }
  d->eager[d->n_eager].key = key + 1;
  d->eager[d->n_eager].len = key_len - 2;
  d->n_eager++;
}

/* Pushes an event's top-level key, len bytes without escapes, from the
 * key cache when the decoder has one. */
static void push_key(decoder *d, const char *key, size_t len) {
  key_cache *c = d->keys;
  unsigned h = 2166136261u, slot;

  if (c == NULL || len == 0 || len > KEY_CACHE_LEN) {
    lua_pushlstring(d->L, key, len);
    return;
  }
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char)key[i]) * 16777619u;
  slot = h % KEY_CACHE_SLOTS;
  if (c->len[slot] == len && memcmp(c->text[slot], key, len) == 0) {
    lua_rawgeti(d->L, d->key_strings, (int)slot + 1);
    return;
  }
  lua_pushlstring(d->L, key, len);
  lua_pushvalue(d->L, -1);
  lua_rawseti(d->L, d->key_strings, (int)slot + 1);
  memcpy(c->text[slot], key, len);
  c->len[slot] = (unsigned char)len;
}

/* An event's top-level member, its key (as written, key_len bytes with
 * its quotes) checked but not decoded, and d->p at its value: a
 * container, or a string other than the eager ones, is noted and skipped
 * (returns 1); anything else is for the caller to decode (0), a string
 * too when there is no room left to keep it. Keeping a member makes no
 * Lua string of its key. When a key may repeat one kept (the same text,
 * or any key written with escapes once a member was kept), or a
 * container finds no room, the event is decoded whole: d->whole is set
 * and -1 returned. */
static int keep_as_text(decoder *d, const char *key, size_t key_len) {
  hk_event_lazy *lazy = d->lazy;
  const char *value = d->p;
  bool escaped = memchr(key, '\\', key_len) != NULL;
  bool repeat = noted(lazy, key + 1, key_len - 2);
  bool container = *value == '{' || *value == '[';
  bool text = *value == '"' && !escaped && lazy->n < HK_EVENT_LAZY_STRINGS &&
              !eager_string(key, key_len);

  if (!repeat && !container && !text && (lazy->n == 0 || !escaped))
    return 0;
  if (!repeat && !escaped && (container || text)) {
    repeat = decoded_before(d, key, key_len);
    if (!repeat) {
      const char *value_end =
          text ? hk_json_skip_string(value, d->end)
               : hk_event_value_end(&d->skips, &d->next_skip, d->base,
                                    value, d->end);
      if (note(lazy, key, key_len, value, value_end)) {
        d->p = value_end;
        return 1;
      }
      if (text) return 0;
    }
  }
  d->whole = true;
  return -1;
}

static int dec_object(decoder *d) {
  const char *p, *end = d->end, *key, *key_end;
  bool top = d->lazy != NULL && d->depth == 0; /* an event's own members */

  if (dec_open(d, d->mt_object, 0,
               d->depth > 0 ? HINT_OBJECT
               : d->lazy    ? HINT_EVENT
                            : HINT_TOP_OBJECT) != 0)
    return -1;
  p = hk_json_skip_ws(d->p + 1, end);
  if (p < end && *p == '}') goto done;
  for (;;) {
    if (p >= end || *p != '"') return dec_expected(d, p, "expected a key");
    d->p = key = p;
    /* An event's keys are made Lua strings only for the members decoded
     * now, not for those kept as text. */
    if (dec_string_as(d, !top) != 0) return -1;
    key_end = d->p;
    p = hk_json_skip_ws(d->p, end);
    if (p >= end || *p != ':') return dec_expected(d, p, "expected ':'");
    d->p = p = hk_json_skip_ws(p + 1, end);
    if (p >= end) return dec_expected(d, p, "expected a value");
    if (top) {
      int kept = keep_as_text(d, key, (size_t)(key_end - key));
      if (kept < 0) return -1;
      if (kept) goto next;
      /* The key is checked already: pushed as written unless it needs
       * its escapes decoded. */
      if (memchr(key, '\\', (size_t)(key_end - key)) == NULL) {
        push_key(d, key + 1, (size_t)(key_end - key) - 2);
      } else {
        d->p = key;
        if (dec_string(d) != 0) return -1;
        d->p = p;
      }
      note_decoded(d, key, (size_t)(key_end - key));
    }
    if (dec_value(d) != 0) return -1;
    lua_rawset(d->L, -3);
  next:
    p = hk_json_skip_ws(d->p, end);
    if (p < end && *p == ',') {
      p = hk_json_skip_ws(p + 1, end);
      if (p < end && *p == '}') return dec_fail(d, p, "trailing comma");
    } else if (p < end && *p == '}') {
      goto done;
    } else {
      return dec_expected(d, p, "expected ',' or '}'");
    }
  }
done:
  d->p = p + 1;
  d->depth--;
  return 0;
}

static int dec_array(decoder *d) {
  const char *p, *end = d->end;
  int i = 1;

  if (dec_open(d, d->mt_array, HINT_ARRAY, 0) != 0) return -1;
  p = hk_json_skip_ws(d->p + 1, end);
  if (p < end && *p == ']') goto done;
  for (;; i++) {
    d->p = p;
    if (p >= end) return dec_expected(d, p, "expected a value");
    if (dec_value(d) != 0) return -1;
    lua_rawseti(d->L, -2, i);
    p = hk_json_skip_ws(d->p, end);
    if (p < end && *p == ',') {
      p = hk_json_skip_ws(p + 1, end);
      if (p < end && *p == ']') return dec_fail(d, p, "trailing comma");
    } else if (p < end && *p == ']') {
      goto done;
    } else {
      return dec_expected(d, p, "expected ',' or ']'");
    }
  }
done:
  d->p = p + 1;
  d->depth--;
  return 0;
}

/* Pushes the value at d->p (which is before end). */
static int dec_value(decoder *d) {
  switch (*d->p) {
  case '{': return dec_object(d);
  case '[': return dec_array(d);
  case '"': return dec_string(d);
  case 't':
    lua_pushboolean(d->L, 1);
    return dec_literal(d, "true", 4);
  case 'f':
    lua_pushboolean(d->L, 0);
    return dec_literal(d, "false", 5);
  case 'n':
    lua_pushlightuserdata(d->L, NULL);
    return dec_literal(d, "null", 4);
  default:
    if (*d->p == '-' || is_digit(*d->p)) return dec_number(d);
    if (hk_utf8_seq_len((const unsigned char *)d->p,
                        (size_t)(d->end - d->p)) == 0)
      return dec_fail(d, d->p, "invalid UTF-8");
    return dec_fail(d, d->p, "unexpected character");
  }
}

/* Decodes s and pushes the value; lazy, when given, notes the top-level
 * containers of an object to keep as text. mts is the stack slot of the
 * array, object and number metatables, one after another, or 0 to fetch
 * them from the registry. Returns 0, or -1 with the reason in err (and
 * d.whole set when only laziness was given up). */
static int decode_push(lua_State *L, int mts, const char *s, size_t len,
                       hk_event_lazy *lazy, const hk_event_skips *skips,
                       char *err, size_t errlen, bool *whole) {
  int top = lua_gettop(L);
  decoder d = {.L = L, .base = s, .p = s, .end = s + len, .lazy = lazy};

  if (skips != NULL) d.skips = *skips;

  if (!lua_checkstack(L, 8)) {
    snprintf(err, errlen, "Lua stack full");
    return -1;
  }
  if (lazy != NULL && mts != 0) { /* an event's context is given */
    d.key_strings = mts + 4;
    d.keys = lua_touserdata(L, mts + 5);
  }
  if (mts == 0) {
    push_mt(L, &k_array_mt_key);
    push_mt(L, &k_object_mt_key);
    push_mt(L, &k_number_mt_key);
    mts = top + 1;
  }
  d.mt_array = mts;
  d.mt_object = mts + 1;
  d.mt_number = mts + 2;
  d.p = hk_json_skip_ws(s, d.end);
  if (d.p >= d.end) {
    dec_fail(&d, d.p, "expected a value");
  } else if (dec_value(&d) == 0) {
    d.p = hk_json_skip_ws(d.p, d.end);
    if (d.p == d.end) {
      if (mts == top + 1) { /* the metatables were pushed here */
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
      }
      return 0;
    }
    dec_fail(&d, d.p, "unexpected content after the value");
  }
  lua_settop(L, top);
  *whole = d.whole;
  if (!d.whole)
    snprintf(err, errlen, "%s at byte %zu", d.err, (size_t)(d.err_at - s));
  return -1;
}

int hk_json_decode_push(lua_State *L, const char *s, size_t len, char *err,
                        size_t errlen) {
  bool whole;

  return decode_push(L, 0, s, len, NULL, NULL, err, errlen, &whole);
}

int hk_json_decode_event_push(lua_State *L, const char *s, size_t len,
                              char *err, size_t errlen) {
  return hk_json_decode_event_skips(L, s, len, NULL, err, errlen);
}

/* An event, with the context of hk_json_push_event_ctx at mts (or 0:
 * the metatables from the registry, and no key cache). */
static int decode_event(lua_State *L, int mts, const char *s, size_t len,
                        const hk_event_skips *skips, char *err,
                        size_t errlen) {
  hk_event_lazy lazy;
  bool whole = false;

  lazy.n = 0;
  lazy.bytes = 0;
  if (decode_push(L, mts, s, len, &lazy, skips, err, errlen, &whole) == 0) {
    if (lazy.n > 0) hk_event_attach(L, lua_gettop(L), mts ? mts + 3 : 0,
                                    &lazy);
    return 0;
  }
  return whole ? hk_json_decode_push(L, s, len, err, errlen) : -1;
}

int hk_json_decode_event_skips(lua_State *L, const char *s, size_t len,
                               const hk_event_skips *skips, char *err,
                               size_t errlen) {
  return decode_event(L, 0, s, len, skips, err, errlen);
}

/* In this order, which decode_push and decode_event rely on: the array,
 * object, number and event metatables, then the key cache's strings and
 * the key cache itself. */
void hk_json_push_event_ctx(lua_State *L) {
  key_cache *c;

  push_mt(L, &k_array_mt_key);
  push_mt(L, &k_object_mt_key);
  push_mt(L, &k_number_mt_key);
  hk_event_push_mt(L);
  lua_createtable(L, KEY_CACHE_SLOTS, 0);
  c = lua_newuserdata(L, sizeof *c);
  memset(c->len, 0, sizeof c->len);
}

int hk_json_decode_event_with(lua_State *L, int mts, const char *s,
                              size_t len, const hk_event_skips *skips,
                              char *err, size_t errlen) {
  return decode_event(L, mts, s, len, skips, err, errlen);
}

void hk_json_push_object_mt(lua_State *L) { push_mt(L, &k_object_mt_key); }

/* ---- encode -------------------------------------------------------------- */

/* The most one encoding may write. Encoding runs in C, where nothing can
 * stop it: a value built to be huge (a table that holds itself twice at
 * every level doubles with each level) must fail rather than run for
 * minutes outside every limit. */
#define ENCODE_MAX ((size_t)64 << 20)
#define ENCODE_MAX_VALUES 250000 /* tiny values cost more than bytes */

typedef struct encoder {
  lua_State *L;
  hk_buf *out;
  size_t limit; /* out->len may not pass this */
  long values;  /* encoded so far */
  int mt_array, mt_object, mt_number; /* stack slots of the metatables */
  bool failed;
  char reason[96];
  int path_levels; /* containers between the root and the failing value */
  char seg[PATH_LEVELS][SEG_MAX + 8];
} encoder;

static int enc_value(encoder *e, int idx, int depth);

/* Records why encoding stops (the innermost reason wins) and returns -1. */
__attribute__((format(printf, 2, 3))) static int
enc_fail(encoder *e, const char *fmt, ...) {
  va_list ap;

  if (!e->failed) {
    e->failed = true;
    va_start(ap, fmt);
    vsnprintf(e->reason, sizeof e->reason, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static inline int enc_reserve(encoder *e, size_t n) {
  hk_buf *b = e->out;
  if (b->len + n < b->cap) return 0;
  /* Checked only when the buffer grows: it ends below twice the limit. */
  if (b->len + n > e->limit)
    return enc_fail(e, "the JSON text would be larger than %zu MiB",
                    ENCODE_MAX >> 20);
  return hk_buf_reserve(b, n) == 0 ? 0 : enc_fail(e, "out of memory");
}

static inline int enc_mem(encoder *e, const void *p, size_t n) {
  if (enc_reserve(e, n) != 0) return -1;
  memcpy(e->out->data + e->out->len, p, n);
  e->out->len += n;
  return 0;
}

static inline int enc_char(encoder *e, char c) {
  if (enc_reserve(e, 1) != 0) return -1;
  e->out->data[e->out->len++] = c;
  return 0;
}

/* ---- error paths: the key path is built only while unwinding ------------- */

/* Copies a key for a message: printable ASCII and valid UTF-8 as they are,
 * anything else as '?', at most SEG_MAX bytes. */
static size_t sanitize_key(const char *s, size_t len, char *out) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  size_t n = 0, k;

  while (p < end && n < SEG_MAX) {
    k = *p < 0x20 || *p == 0x7f ? 0 : hk_utf8_seq_len(p, (size_t)(end - p));
    if (k == 0 || n + k > SEG_MAX) {
      if (k != 0) break;
      out[n++] = '?';
      p++;
      continue;
    }
    memcpy(out + n, p, k);
    n += k;
    p += k;
  }
  return n;
}

static bool is_identifier(const char *s, size_t len) {
  if (len == 0 || len > SEG_MAX || is_digit(s[0])) return false;
  for (size_t i = 0; i < len; i++)
    if (!(s[i] == '_' || is_digit(s[i]) || ((s[i] | 0x20) >= 'a' &&
                                             (s[i] | 0x20) <= 'z')))
      return false;
  return true;
}

/* The container at depth failed in its member whose key is at key_idx (or
 * index when key_idx is 0). */
static void path_note(encoder *e, int depth, int key_idx, double index) {
  char *seg;
  const char *k;
  size_t len;

  if (e->path_levels == 0) e->path_levels = depth + 1;
  if (depth >= PATH_LEVELS) return;
  seg = e->seg[depth];
  if (key_idx != 0 && lua_type(e->L, key_idx) == LUA_TSTRING) {
    k = lua_tolstring(e->L, key_idx, &len);
    if (is_identifier(k, len)) {
      seg[0] = '.';
      memcpy(seg + 1, k, len);
      seg[len + 1] = '\0';
    } else {
      len = sanitize_key(k, len, seg + 2);
      memcpy(seg, "[\"", 2);
      memcpy(seg + 2 + len, "\"]", 3);
    }
    return;
  }
  if (key_idx != 0) index = lua_tonumber(e->L, key_idx);
  snprintf(seg, sizeof e->seg[0], "[%.17g]", index);
}

static void enc_format_error(const encoder *e, char *err, size_t errlen) {
  char path[PATH_LEVELS * (SEG_MAX + 8) + 4];
  size_t n = 0;
  int levels = e->path_levels < PATH_LEVELS ? e->path_levels : PATH_LEVELS;

  path[0] = '\0';
  for (int i = 0; i < levels; i++)
    n += (size_t)snprintf(path + n, sizeof path - n, "%s", e->seg[i]);
  if (e->path_levels > PATH_LEVELS) snprintf(path + n, sizeof path - n, "...");
  if (path[0] == '\0')
    snprintf(err, errlen, "%s", e->reason);
  else
    snprintf(err, errlen, "%s at %s", e->reason,
             path[0] == '.' ? path + 1 : path);
}

/* ---- scalars ------------------------------------------------------------- */

static int enc_integer(encoder *e, double v) {
  char buf[24], *p = buf + sizeof buf;
  uint64_t u = (uint64_t)fabs(v);

  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (signbit(v)) *--p = '-'; /* keeps -0 */
  return enc_mem(e, p, (size_t)(buf + sizeof buf - p));
}

/* Integral values below 2^53 as integers; others with the shortest of
 * %.15g/%.16g/%.17g that reads back to the same double. Assumes the "C"
 * LC_NUMERIC locale (hookd never changes it). */
static int enc_number(encoder *e, double v) {
  char buf[32];
  int n = 0;

  if (!isfinite(v)) return enc_fail(e, "cannot encode NaN/infinity");
  if (fabs(v) < MAX_EXACT_INT && v == floor(v)) return enc_integer(e, v);
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  return enc_mem(e, buf, (size_t)n);
}

static int enc_escape(encoder *e, unsigned char c) {
  static const char hex[] = "0123456789abcdef";
  char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

  switch (c) {
  case '"': return enc_mem(e, "\\\"", 2);
  case '\\': return enc_mem(e, "\\\\", 2);
  case '\n': return enc_mem(e, "\\n", 2);
  case '\t': return enc_mem(e, "\\t", 2);
  case '\r': return enc_mem(e, "\\r", 2);
  case '\b': return enc_mem(e, "\\b", 2);
  case '\f': return enc_mem(e, "\\f", 2);
  default: return enc_mem(e, esc, 6);
  }
}

/* Quotes s: escapes only '"', '\' and control characters; refuses invalid
 * UTF-8. Plain runs are copied at once. */
static int enc_string(encoder *e, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  const unsigned char *run = p;
  size_t n;

  if (enc_reserve(e, len + 2) != 0) return -1;
  e->out->data[e->out->len++] = '"';
  while (p < end) {
    p = hk_json_plain_run(p, end);
    if (p >= end) break;
    if (hk_json_str_class[*p] == HK_STR_HIGH) {
      if ((n = hk_utf8_seq_len(p, (size_t)(end - p))) == 0)
        return enc_fail(e, "cannot encode invalid UTF-8 string");
      p += n;
      continue;
    }
    if (enc_mem(e, run, (size_t)(p - run)) != 0 || enc_escape(e, *p) != 0)
      return -1;
    run = ++p;
  }
  if (enc_mem(e, run, (size_t)(p - run)) != 0) return -1;
  return enc_char(e, '"');
}

/* ---- tables -------------------------------------------------------------- */

/* Elements 1..n of the table at idx as a JSON array; a nil among them
 * makes the table sparse. */
static int enc_array(encoder *e, int idx, int depth, size_t n) {
  int top = lua_gettop(e->L);

  if (enc_char(e, '[') != 0) return -1;
  for (size_t i = 1; i <= n; i++) {
    if (i > 1 && enc_char(e, ',') != 0) return -1;
    lua_rawgeti(e->L, idx, (int)i);
    if (lua_isnil(e->L, -1)) return enc_fail(e, "cannot encode sparse array");
    if (enc_value(e, top + 1, depth + 1) != 0) {
      path_note(e, depth, 0, (double)i);
      return -1;
    }
    lua_settop(e->L, top);
  }
  return enc_char(e, ']');
}

static int key_type_error(encoder *e, int key_idx) {
  int t = lua_type(e->L, key_idx);

  if (t == LUA_TSTRING || t == LUA_TNUMBER)
    return enc_fail(e, "cannot encode table with mixed keys");
  return enc_fail(e, "cannot encode table with %s keys",
                  lua_typename(e->L, t));
}

/* The members of the table at idx as a JSON object; lua_next has already
 * pushed the first key and value. Every key must be a string. */
static int enc_members(encoder *e, int idx, int depth) {
  int key = lua_gettop(e->L) - 1;
  size_t len;
  const char *k;

  if (enc_char(e, '{') != 0) return -1;
  for (bool first = true;; first = false) {
    if (lua_type(e->L, key) != LUA_TSTRING) return key_type_error(e, key);
    k = lua_tolstring(e->L, key, &len);
    if ((!first && enc_char(e, ',') != 0) || enc_string(e, k, len) != 0 ||
        enc_char(e, ':') != 0 || enc_value(e, key + 1, depth + 1) != 0) {
      path_note(e, depth, key, 0);
      return -1;
    }
    lua_settop(e->L, key);
    if (!lua_next(e->L, idx)) break;
  }
  return enc_char(e, '}');
}

/* A table tagged as array, or an untagged one whose first key (pushed by
 * lua_next with its value) is a number: an array if its keys are exactly
 * 1..n, so a hole is an error even where #t would hide it. Elements are
 * written while lua_next yields them in order (the usual case); keys out of
 * order make it start over with enc_array. */
static int enc_guess_array(encoder *e, int idx, int depth) {
  int key = lua_gettop(e->L) - 1;
  size_t start = e->out->len, count = 0;
  double k, max = 0;
  bool in_order = true;

  if (enc_char(e, '[') != 0) return -1;
  do {
    if (lua_type(e->L, key) != LUA_TNUMBER) return key_type_error(e, key);
    k = lua_tonumber(e->L, key);
    if (k < 1 || k != floor(k) || k > MAX_EXACT_INT)
      return enc_fail(e, "cannot encode sparse array");
    count++;
    max = k > max ? k : max;
    in_order = in_order && k == (double)count;
    if (in_order && ((count > 1 && enc_char(e, ',') != 0) ||
                     enc_value(e, key + 1, depth + 1) != 0)) {
      path_note(e, depth, key, 0);
      return -1;
    }
    lua_settop(e->L, key);
  } while (lua_next(e->L, idx));
  if ((double)count != max) return enc_fail(e, "cannot encode sparse array");
  if (in_order) return enc_char(e, ']');
  e->out->len = start;
  return enc_array(e, idx, depth, count);
}

static int enc_table(encoder *e, int idx, int depth) {
  int kind = 0; /* 1 array, 2 object, 0 untagged */

  if (depth >= MAX_DEPTH)
    return enc_fail(e, "cannot encode table nested deeper than 512 levels "
                    "(cycle?)");
  if (!lua_checkstack(e->L, 6)) return enc_fail(e, "Lua stack full");
  if (lua_getmetatable(e->L, idx)) {
    kind = lua_rawequal(e->L, -1, e->mt_array)    ? 1
           : lua_rawequal(e->L, -1, e->mt_object) ? 2
                                                  : 0;
    lua_pop(e->L, 1);
  }
  if (kind == 0 && hk_event_is_lazy(e->L, idx)) {
    hk_event_materialize(e->L, idx);
    kind = 2;
  }
  lua_pushnil(e->L);
  if (!lua_next(e->L, idx)) return enc_mem(e, kind == 1 ? "[]" : "{}", 2);
  if (kind == 1) return enc_guess_array(e, idx, depth);
  if (kind == 2 || lua_type(e->L, -2) == LUA_TSTRING)
    return enc_members(e, idx, depth);
  if (lua_type(e->L, -2) == LUA_TNUMBER) return enc_guess_array(e, idx, depth);
  return key_type_error(e, lua_gettop(e->L) - 1);
}

static int enc_userdata(encoder *e, int idx) {
  json_numlit *n;
  bool is_numlit = false;

  if (lua_getmetatable(e->L, idx)) {
    is_numlit = lua_rawequal(e->L, -1, e->mt_number);
    lua_pop(e->L, 1);
  }
  if (!is_numlit) return enc_fail(e, "cannot encode userdata");
  n = lua_touserdata(e->L, idx);
  return enc_mem(e, n->text, n->len);
}

/* idx is an absolute stack index. */
static int enc_value(encoder *e, int idx, int depth) {
  const char *s;
  size_t len;
  int t = lua_type(e->L, idx);

  if (++e->values > ENCODE_MAX_VALUES)
    return enc_fail(e, "more than %d values to encode", ENCODE_MAX_VALUES);
  switch (t) {
  case LUA_TSTRING:
    s = lua_tolstring(e->L, idx, &len);
    return enc_string(e, s, len);
  case LUA_TNUMBER: return enc_number(e, lua_tonumber(e->L, idx));
  case LUA_TTABLE: return enc_table(e, idx, depth);
  case LUA_TBOOLEAN:
    return lua_toboolean(e->L, idx) ? enc_mem(e, "true", 4)
                                    : enc_mem(e, "false", 5);
  case LUA_TNIL: return enc_mem(e, "null", 4);
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(e->L, idx) == NULL) return enc_mem(e, "null", 4);
    return enc_fail(e, "cannot encode lightuserdata");
  case LUA_TUSERDATA: return enc_userdata(e, idx);
  default: /* function, thread, and LuaJIT's cdata */
    return enc_fail(e, "cannot encode %s", lua_typename(e->L, t));
  }
}

int hk_json_encode_append(lua_State *L, int idx, hk_buf *out, char *err,
                          size_t errlen) {
  int top = lua_gettop(L), rc;
  size_t start = out->len;
  encoder e;

  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = top + idx + 1;
  e.L = L;
  e.out = out;
  e.limit = start + ENCODE_MAX;
  e.values = 0;
  e.failed = false;
  e.path_levels = 0;
  e.mt_array = top + 1;
  e.mt_object = top + 2;
  e.mt_number = top + 3;
  if (!lua_checkstack(L, 8)) {
    snprintf(err, errlen, "Lua stack full");
    return -1;
  }
  push_mt(L, &k_array_mt_key);
  push_mt(L, &k_object_mt_key);
  push_mt(L, &k_number_mt_key);
  rc = enc_value(&e, idx, 0);
  lua_settop(L, top);
  if (rc == 0) return 0;
  out->len = start;
  enc_format_error(&e, err, errlen);
  return -1;
}

/* ---- the Lua module ------------------------------------------------------ */

/* json.decode(text) and json.decode_event(text) -> value | nil, error;
 * the second leaves the top-level containers of an object to be decoded
 * when first read (see lua_event.h). */
static int decode_with(lua_State *L,
                       int (*decode)(lua_State *, const char *, size_t,
                                     char *, size_t)) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char err[160];

  if (decode(L, s, len, err, sizeof err) == 0) return 1;
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

static int l_decode(lua_State *L) {
  return decode_with(L, hk_json_decode_push);
}

static int l_decode_event(lua_State *L) {
  return decode_with(L, hk_json_decode_event_push);
}

static int l_encode(lua_State *L) {
  hk_buf b = HK_BUF_INIT;
  char err[256];

  luaL_checkany(L, 1);
  if (hk_buf_reserve(&b, 1024) != 0)
    return luaL_error(L, "out of memory");
  if (hk_json_encode_append(L, 1, &b, err, sizeof err) != 0) {
    hk_buf_free(&b);
    return luaL_error(L, "%s", err);
  }
  lua_pushlstring(L, b.data, b.len);
  hk_buf_free(&b);
  return 1;
}

/* json.array(t) / json.object(t): tags t (or a new table) and returns it. */
static int set_kind(lua_State *L, const char *key) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  hk_event_materialize(L, 1); /* its own metatable goes */
  push_mt(L, key);
  lua_setmetatable(L, 1);
  return 1;
}

static int l_array(lua_State *L) { return set_kind(L, &k_array_mt_key); }
static int l_object(lua_State *L) { return set_kind(L, &k_object_mt_key); }

/* Replaces the value at the top of the stack with a copy: tables key by
 * key, keeping their metatable (array or object); other values are
 * immutable (number literals, null) and shared. */
static void copy_top(lua_State *L, int depth) {
  int src;

  if (!lua_istable(L, -1)) return;
  if (depth > MAX_DEPTH)
    luaL_error(L, "copy: tables nested more than %d deep", MAX_DEPTH);
  luaL_checkstack(L, 4, "copy");
  src = lua_gettop(L);
  hk_event_materialize(L, src);
  lua_createtable(L, (int)lua_objlen(L, src), 4);
  for (lua_pushnil(L); lua_next(L, src);) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    copy_top(L, depth + 1);
    lua_rawset(L, src + 1);
  }
  if (lua_getmetatable(L, src)) lua_setmetatable(L, src + 1);
  lua_replace(L, src);
}

/* json.copy(v): a copy of a decoded value that can be changed without
 * changing the original. */
static int l_copy(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  copy_top(L, 0);
  return 1;
}

/* json.materialize(v): v, with every member an event kept as text
 * decoded (see lua_event.h), so that pairs and next see them all. */
static int l_materialize(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  hk_event_materialize(L, 1);
  return 1;
}

/* True when the table at index 1 has keys exactly 1..n, n > 0. */
static bool has_array_keys(lua_State *L) {
  size_t count = 0;
  double k, max = 0;

  for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TNUMBER) return false;
    k = lua_tonumber(L, -2);
    if (k < 1 || k != floor(k)) return false;
    count++;
    max = k > max ? k : max;
  }
  return count > 0 && (double)count == max;
}

/* True for a table tagged as array, or an untagged one with keys 1..n
 * (what encode would write as an array). */
static int l_is_array(lua_State *L) {
  int kind = 0; /* 1 array, 2 object */

  lua_settop(L, 1);
  if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
    push_mt(L, &k_array_mt_key);
    push_mt(L, &k_object_mt_key);
    kind = lua_rawequal(L, 2, 3) ? 1 : lua_rawequal(L, 2, 4) ? 2 : 0;
    lua_settop(L, 1);
  }
  lua_pushboolean(L, kind == 1 || (kind == 0 && lua_istable(L, 1) &&
                                   has_array_keys(L)));
  return 1;
}

/* json.number(text): a number literal that encode writes verbatim. */
static int l_number(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);

  if (!is_numlit_text(s, len))
    return luaL_argerror(L, 1, "not a JSON number literal");
  lua_settop(L, 1);
  push_mt(L, &k_number_mt_key);
  push_numlit(L, s, len, 2);
  return 1;
}

static int l_is_number_literal(lua_State *L) {
  bool yes = false;

  if (lua_type(L, 1) == LUA_TUSERDATA && lua_getmetatable(L, 1)) {
    push_mt(L, &k_number_mt_key);
    yes = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, yes);
  return 1;
}

int luaopen_hookd_json(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"decode", l_decode},   {"encode", l_encode},
      {"array", l_array},     {"object", l_object},
      {"is_array", l_is_array}, {"number", l_number},
      {"is_number_literal", l_is_number_literal}, {"copy", l_copy},
      {"materialize", l_materialize}, {"decode_event", l_decode_event},
      {"peek", hk_event_peek},
      {NULL, NULL}};

  lua_createtable(L, 0, 12);
  for (const luaL_Reg *f = funcs; f->name != NULL; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  push_mt(L, &k_array_mt_key);
  lua_setfield(L, -2, "array_mt");
  push_mt(L, &k_object_mt_key);
  lua_setfield(L, -2, "object_mt");
  push_mt(L, &k_number_mt_key);
  lua_setfield(L, -2, "number_mt");
  hk_event_push_mt(L);
  lua_setfield(L, -2, "event_mt");
  return 1;
}
