/* The dead-letter list, kept in memory in arrival order. */
#include "deadletters.h"

#include <stdlib.h>
#include <string.h>

#include "json_write.h"

static hk_dead_letter *letters;
static size_t n_letters, cap_letters;
static long next_id = 1;

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

long hk_deadletters_add(const char *hook, const char *destination,
                        const char *reason, int attempts, double first_at,
                        double last_at, size_t messages, const char *body,
                        size_t body_len) {
  hk_dead_letter *d;

  if (n_letters == cap_letters) {
    size_t cap = cap_letters ? cap_letters * 2 : 16;
    hk_dead_letter *p = realloc(letters, cap * sizeof *p);
    if (p == NULL) return -1;
    letters = p;
    cap_letters = cap;
  }
  d = &letters[n_letters++];
  d->id = next_id++;
  d->hook = dup_or_null(hook);
  d->destination = dup_or_null(destination);
  d->reason = dup_or_null(reason);
  d->attempts = attempts;
  d->first_attempt_at = first_at;
  d->last_attempt_at = last_at;
  d->messages = messages;
  d->body = malloc(body_len + 1);
  if (d->body) memcpy(d->body, body, body_len);
  d->body_len = d->body ? body_len : 0;
  return d->id;
}

static void render_one(hk_buf *out, const hk_dead_letter *d) {
  hk_buf_printf(out, "{\"id\":%ld,\"hook\":", d->id);
  hk_json_write_cstr(out, d->hook);
  hk_buf_append(out, ",\"destination\":", 15);
  hk_json_write_cstr(out, d->destination);
  hk_buf_append(out, ",\"reason\":", 10);
  hk_json_write_cstr(out, d->reason);
  hk_buf_printf(out,
                ",\"attempts\":%d,\"first_attempt_at\":%.3f,"
                "\"last_attempt_at\":%.3f,\"messages\":%zu,\"body\":",
                d->attempts, d->first_attempt_at, d->last_attempt_at,
                d->messages);
  /* The body is the JSON array that was sent: embed it as JSON. */
  if (d->body_len)
    hk_buf_append(out, d->body, d->body_len);
  else
    hk_buf_append(out, "null", 4);
  hk_buf_putc(out, '}');
}

void hk_deadletters_render(hk_buf *out, const char *hook, long after,
                           int limit) {
  int shown = 0;
  long last = 0;
  size_t i;

  hk_buf_append(out, "{\"items\":[", 10);
  for (i = 0; i < n_letters; i++) {
    const hk_dead_letter *d = &letters[i];

    if (d->id <= after || (hook && strcmp(hook, d->hook) != 0)) continue;
    if (shown == limit) break;
    if (shown++) hk_buf_putc(out, ',');
    render_one(out, d);
    last = d->id;
  }
  if (i < n_letters && shown == limit)
    hk_buf_printf(out, "],\"next\":\"%ld\"}", last);
  else
    hk_buf_append(out, "],\"next\":null}", 14);
}

size_t hk_deadletters_count(void) { return n_letters; }

void hk_deadletters_clear(void) {
  for (size_t i = 0; i < n_letters; i++) {
    free(letters[i].hook);
    free(letters[i].destination);
    free(letters[i].reason);
    free(letters[i].body);
  }
  free(letters);
  letters = NULL;
  n_letters = cap_letters = 0;
}
