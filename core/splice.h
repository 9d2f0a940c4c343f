/* A hook's message made from the event's own JSON text: the top-level
 * members are copied as they came, minus the inline profile and (unless
 * the hook attaches content) the content, with custom_data kept or
 * replaced. Copying the text is much cheaper than building a Lua table
 * and encoding it again, and keeps every untouched byte as received. */
#ifndef HOOKD_SPLICE_H
#define HOOKD_SPLICE_H
#include <stddef.h>

#include "buf.h"
#include "json_lex.h"

/* What the message replaces or adds; a NULL text means none. */
typedef struct hk_splice {
  int keep_content;        /* keep the event's own "content" member */
  const char *custom_data; /* JSON for custom_data, used unless the event
                              brings a non-empty custom_data object; NULL
                              when the caller found one to keep */
  size_t custom_data_len;
  const char *content;     /* JSON content to add when the event has none
                              (and keep_content is set) */
  size_t content_len;
  const hk_event_skips *skips; /* where the event's top-level objects and
                                  arrays end, when known; or NULL */
} hk_splice;

/* Appends the message for the event text ev (one JSON object, already
 * validated) to out. Returns 0; 1 when the message must be built from the
 * decoded event instead, leaving out as it was: a top-level key written
 * with escapes (only a decoder can compare it), a key that appears twice
 * (decoding keeps the last), or no custom_data given while the event has
 * none to keep; -1 when out of memory. */
int hk_splice_message(hk_buf *out, const char *ev, size_t len,
                      const hk_splice *how);

/* Finds the value of the top-level member name (plain ASCII, no quotes)
 * of the event text ev (one validated JSON object). Returns 1 and sets
 * *value and *value_len when it is there once; 0 when it is not there;
 * -1 when only a decoder can tell: a key written with escapes, or the
 * name given twice (decoding keeps the last). */
int hk_splice_member(const char *ev, size_t len, const char *name,
                     const char **value, size_t *value_len);
/* The same, stepping over the containers skips says end where (or NULL). */
int hk_splice_member_skips(const char *ev, size_t len,
                           const hk_event_skips *skips, const char *name,
                           const char **value, size_t *value_len);

#endif
