/* Making a hook's message from the event's JSON text (see splice.h). The
 * text was validated at ingest, so skipping a value only has to find where
 * it ends. */
#include "splice.h"

#include <string.h>

#include "json_lex.h"

/* Whether the key (with its quotes) is the plain text name. */
static int key_is(const char *key, size_t len, const char *name) {
  size_t n = strlen(name);

  return len == n + 2 && memcmp(key + 1, name, n) == 0;
}

static int is_filled_object(const char *v, const char *end) {
  return *v == '{' && *hk_json_skip_ws(v + 1, end) != '}';
}

/* One top-level member: whether it goes into the message. Sets *kept_cd
 * when it is a custom_data the message keeps. */
static int keep_member(const char *key, size_t klen, const char *v,
                       const char *end, const hk_splice *how, int *kept_cd,
                       int *had_content) {
  if (key_is(key, klen, "profile")) return 0;
  if (key_is(key, klen, "content")) {
    *had_content = 1;
    return how->keep_content;
  }
  if (key_is(key, klen, "custom_data")) {
    *kept_cd = is_filled_object(v, end);
    return *kept_cd;
  }
  return 1;
}

static int append_extras(hk_buf *out, int first, int kept_cd,
                         int had_content, const hk_splice *how) {
  int rc = 0;

  if (!kept_cd) {
    rc |= hk_buf_append(out, first ? "\"custom_data\":" : ",\"custom_data\":",
                        first ? 14 : 15);
    rc |= hk_buf_append(out, how->custom_data, how->custom_data_len);
  }
  if (how->keep_content && !had_content && how->content) {
    rc |= hk_buf_append(out, ",\"content\":", 11);
    rc |= hk_buf_append(out, how->content, how->content_len);
  }
  rc |= hk_buf_putc(out, '}');
  return rc != 0 ? -1 : 0;
}

/* One member of the object being walked: its key (with quotes) and value,
 * and where the next member starts. */
typedef struct member {
  const char *key, *value, *next;
  size_t key_len, value_len;
} member;

/* Reads the member at p (a key's opening quote); false at the object's
 * end. */
/* The event being walked, and where its top-level containers end when
 * that is known (json_lex.h). */
typedef struct walk {
  const char *ev, *end;
  hk_event_skips skips;
  size_t next_skip;
} walk;

static walk walk_of(const char *ev, size_t len, const hk_event_skips *skips) {
  walk w = {ev, ev + len, {NULL, 0}, 0};

  if (skips != NULL) w.skips = *skips;
  return w;
}


static int next_member(walk *w, const char *p, member *m) {
  const char *end = w->end;

  if (p >= end || *p != '"') return 0;
  m->key = p;
  p = hk_json_skip_string(p, end);
  m->key_len = (size_t)(p - m->key);
  m->value = hk_json_skip_ws(hk_json_skip_ws(p, end) + 1, end);
  p = hk_event_value_end(&w->skips, &w->next_skip, w->ev, m->value, end);
  m->value_len = (size_t)(p - m->value);
  p = hk_json_skip_ws(p, end);
  if (p < end && *p == ',') p = hk_json_skip_ws(p + 1, end);
  m->next = p;
  return 1;
}

/* The first member of the object text ev, or end when ev is no object. */
static const char *first_member(const char *ev, const char *end) {
  const char *p = hk_json_skip_ws(ev, end);

  return p < end && *p == '{' ? hk_json_skip_ws(p + 1, end) : end;
}

/* More top-level members than this and the message is built in Lua. */
#define MAX_MEMBERS 64

/* Whether key (klen bytes with its quotes) is among the n keys before
 * it, or there are too many to tell. */
static int repeated(const char **keys, size_t *lens, size_t n,
                    const char *key, size_t klen) {
  if (n >= MAX_MEMBERS) return 1;
  for (size_t i = 0; i < n; i++)
    if (lens[i] == klen && memcmp(keys[i], key, klen) == 0) return 1;
  keys[n] = key;
  lens[n] = klen;
  return 0;
}

int hk_splice_message(hk_buf *out, const char *ev, size_t len,
                      const hk_splice *how) {
  const char *end = ev + len, *p = first_member(ev, end);
  const char *keys[MAX_MEMBERS];
  size_t start = out->len, lens[MAX_MEMBERS], n = 0;
  int first = 1, kept_cd = 0, had_content = 0, rc = 0;
  walk w = walk_of(ev, len, how->skips);
  member m;

  if (p >= end) return 1;
  rc |= hk_buf_putc(out, '{');
  for (; next_member(&w, p, &m); p = m.next, n++) {
    if (memchr(m.key, '\\', m.key_len) != NULL ||
        repeated(keys, lens, n, m.key, m.key_len))
      goto unspliceable;
    if (keep_member(m.key, m.key_len, m.value, end, how, &kept_cd,
                    &had_content)) {
      if (!first) rc |= hk_buf_putc(out, ',');
      rc |= hk_buf_append(out, m.key,
                          (size_t)(m.value + m.value_len - m.key));
      first = 0;
    }
  }
  /* No custom_data built, yet none of the event's own to keep: the caller
   * judged by an event its hook changed. */
  if (!kept_cd && how->custom_data == NULL) goto unspliceable;
  rc |= append_extras(out, first, kept_cd, had_content, how);
  return rc != 0 ? -1 : 0;
unspliceable:
  out->len = start;
  return 1;
}

int hk_splice_member(const char *ev, size_t len, const char *name,
                     const char **value, size_t *value_len) {
  return hk_splice_member_skips(ev, len, NULL, name, value, value_len);
}

int hk_splice_member_skips(const char *ev, size_t len,
                           const hk_event_skips *skips, const char *name,
                           const char **value, size_t *value_len) {
  const char *end = ev + len, *p = first_member(ev, end);
  walk w = walk_of(ev, len, skips);
  int found = 0;
  member m;

  for (; next_member(&w, p, &m); p = m.next) {
    if (memchr(m.key, '\\', m.key_len) != NULL) return -1;
    if (!key_is(m.key, m.key_len, name)) continue;
    if (found) return -1;
    found = 1;
    *value = m.value;
    *value_len = m.value_len;
  }
  return found;
}
