/* Delivery of one hook's messages from its durable outbox: a window of
 * them in memory, batching by size, bytes and time, one request in flight
 * (a broker hook: up to four rounds), retries on a timer, and dead letters
 * when the retries run out. Every outcome is written back to the store.
 * Runs on the loop thread. */
#ifndef HOOKD_DISPATCH_H
#define HOOKD_DISPATCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "histogram.h"
#include "store.h"
#include "transport/http.h"

typedef struct hk_dispatch hk_dispatch;

/* Counters shown by the admin API, in messages. The hook owns them; the
 * dispatcher updates sent, retried, dead, failed and queued. */
typedef struct hk_counters {
  long matched; /* passed the hook's match and filter */
  long sent;    /* acknowledged by the destination */
  long failed;  /* failed in the script, in encoding, or in a delivery
                   attempt (each failed attempt counts its messages) */
  long retried; /* messages sent again after a failed attempt */
  long dead;    /* set aside as dead letters */
  long queued;  /* accepted for the hook, not yet acknowledged or dead */
  long test_sent;   /* test sends the destination acknowledged */
  long test_failed; /* test sends that failed */
  hk_histogram latency; /* acceptance to acknowledgement, seconds */
  hk_histogram batches; /* messages per delivery attempt */
} hk_counters;

typedef struct hk_retry_policy {
  int times;         /* repeats after the first attempt */
  double period_sec; /* wait between attempts */
} hk_retry_policy;

typedef struct hk_delivery_settings {
  size_t batch_size;
  double timeout_sec;    /* a partial batch leaves this long after its
                            first message arrived */
  size_t max_body_bytes; /* 0 = no limit (HTTP only) */
  hk_http_settings http; /* when tx is NULL */
  hk_tx_target *tx;      /* a broker connection; the dispatcher owns it
                            once configure succeeds */
} hk_delivery_settings;

/* hook_id and counters must outlive the dispatcher (the hook owns both).
 * Messages already in the hook's outbox are sent once it is configured. */
hk_dispatch *hk_dispatch_create(uv_loop_t *loop, hk_http_client *client,
                                hk_store *store, const char *hook_id,
                                const hk_retry_policy *policy,
                                hk_counters *counters);

/* Applies new settings; messages already queued or in flight are kept.
 * Returns 0, or -1 with the reason in err (the old settings then stay). */
int hk_dispatch_configure(hk_dispatch *d, const hk_delivery_settings *s,
                          char *err, size_t errlen);

/* A message was committed to the outbox under id. It is copied into
 * memory when the window has room; otherwise it is read from the store
 * when its turn comes. Returns 0 or -1 (memory). */
int hk_dispatch_enqueue(hk_dispatch *d, int64_t id, const char *json,
                        size_t len, const char *route, const char *key,
                        size_t key_len, long version);

/* Messages were added to the outbox behind the dispatcher's back (dead
 * letters sent again): look in the store. */
void hk_dispatch_outbox_changed(hk_dispatch *d);

/* Shutting down: sends in flight finish, nothing new starts (no batch,
 * no retry); what is left stays in the outbox for the next start. */
void hk_dispatch_quiet(hk_dispatch *d);

/* Nonzero when no request is in flight: what is left is in the store. */
int hk_dispatch_settled(const hk_dispatch *d);

/* Stops (held 1) or resumes delivery. A held hook keeps its queue and
 * any retry wait; the request in flight, if any, is still answered. */
void hk_dispatch_hold(hk_dispatch *d, int held);

/* The hook is deleted and its outbox emptied in the store: forgets the
 * window. Call only when hk_dispatch_settled. */
void hk_dispatch_drop(hk_dispatch *d);

/* Sends one message at once, outside batching and retries: an HTTP hook
 * posts [message], a broker publishes it (after the rounds in flight, if
 * any). cb runs once on the loop thread with the outcome. Returns 0, or
 * -1 with err when the hook has no destination or a test is in flight. */
int hk_dispatch_test(hk_dispatch *d, const hk_tx_msg *msg, hk_tx_done_cb cb,
                     void *ctx, char *err, size_t errlen);

/* A dispatcher lives as long as its hook slot, that is as long as the
 * process; there is no destroy. */

#endif
