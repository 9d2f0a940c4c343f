/* Dead letters: batches whose retries ran out or that failed for good,
 * kept with their reason so an operator can see and resend them. */
#ifndef HOOKD_DEADLETTERS_H
#define HOOKD_DEADLETTERS_H

#include <stddef.h>

#include "buf.h"

typedef struct hk_dead_letter {
  long id;
  char *hook;
  char *destination;
  char *reason;
  int attempts;
  double first_attempt_at; /* unix seconds */
  double last_attempt_at;
  size_t messages;
  char *body; /* the batch as it was sent: a JSON array */
  size_t body_len;
} hk_dead_letter;

/* Copies everything given. Returns the new letter's id. */
long hk_deadletters_add(const char *hook, const char *destination,
                        const char *reason, int attempts, double first_at,
                        double last_at, size_t messages, const char *body,
                        size_t body_len);

/* Appends {"items": [...], "next": cursor|null} for letters of hook (NULL:
 * all) with id > after, at most limit of them. */
void hk_deadletters_render(hk_buf *out, const char *hook, long after,
                           int limit);

size_t hk_deadletters_count(void);
void hk_deadletters_clear(void);

#endif
