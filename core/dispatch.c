/* One hook's delivery. Every message is in the hook's outbox in the store
 * before the dispatcher sees it; the dispatcher keeps a window of the
 * oldest ones in memory and reads more from the store as it drains, so a
 * long backlog costs disk, not memory.
 *
 * Messages leave as JSON-array batches (at batch_size, at max_body_bytes,
 * or timeout_sec after the first one arrived), one request at a time so
 * order is kept. A broker hook sends rounds instead, several in flight on
 * its one connection (the transport answers them in order), so that the
 * wait for confirmations overlaps; a round that leaves messages to retry
 * stops new ones. A batch stays in the window until the transport answers:
 * delivered, its messages leave the outbox; failed, the attempt is
 * recorded in the store and the same messages are tried again after the
 * retry period; out of retries or refused for good, they become dead
 * letters. An endpoint that answers 413 gets the batch in halves. */
#include "dispatch.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "log.h"

typedef struct msg_node {
  struct msg_node *next;
  int64_t id;     /* outbox id */
  double arrived; /* loop time in seconds; 0 for messages read back */
  double created; /* wall time it was accepted, for the latency metric */
  long version;   /* of the hook's script that made it; 0: unknown */
  int attempts;   /* failed attempts so far (kept in the store) */
  double first_at, next_at;
  size_t len;
  const char *route; /* broker messages: in data, after the message */
  const char *key;   /* the Kafka key, in data too; NULL for none */
  size_t key_len;
  char data[];
} msg_node;

#define HK_RETRY_AFTER_MAX_SEC 3600.0
#define WINDOW_MIN 256
#define WINDOW_MAX 20000
#define WINDOW_BYTES (32u << 20)
#define STORE_RETRY_MS 1000
#define ROUNDS_MAX 4 /* broker rounds in flight per hook */

enum dispatch_state {
  STATE_IDLE,    /* no batch; the timer, if running, is the batch timeout */
  STATE_SENDING, /* a request is in flight */
  STATE_WAITING  /* a failed batch waits on the timer for its retry */
};

struct hk_dispatch {
  uv_loop_t *loop;
  hk_http_client *client;
  hk_http_target *target; /* an HTTP hook's endpoint, or NULL */
  hk_tx_target *tx;       /* a broker hook's connection, or NULL */
  hk_store *store;
  const char *hook_id;
  hk_retry_policy policy;
  hk_counters *counters;
  hk_delivery_settings settings; /* only the numbers are used */

  msg_node *head, *tail; /* the window: the oldest messages, in id order */
  size_t queue_len, queue_bytes;
  int64_t last_id;  /* the highest id taken into the window */
  int on_disk;      /* the outbox may hold messages beyond the window */

  enum dispatch_state state;
  hk_buf batch;        /* the body being sent or retried */
  size_t batch_count;  /* the first batch_count messages of the window */
  msg_node *taken_last; /* the last of them, or NULL */
  size_t split_cap;    /* after a 413: at most this many per batch */
  int64_t due_through; /* messages up to this id belong to a batch that was
                          due; a split leaves the rest due too */
  int attempts;        /* attempts made for this batch */
  double first_attempt_at, last_attempt_at;
  int quiet;           /* shutting down: nothing new is sent */
  int held;            /* the hook is stopped: nothing is sent */
  double retry_at;     /* wall time of a waiting batch's next attempt */

  /* A broker hook's rounds in flight, oldest first. They take the window's
   * messages in order, after the kept ones; batch_count counts both. */
  size_t round_len[ROUNDS_MAX];
  double round_at[ROUNDS_MAX]; /* wall time each round left */
  int rounds;
  unsigned round_gen, tx_gen; /* rounds in flight all go to one target */
  size_t kept;          /* messages a round left to retry, at the head */
  msg_node *kept_last;
  int failing;          /* a round left some: start no more rounds */
  hk_tx_result fail_res; /* the first result that asked for a retry */

  /* A test send: on a broker it waits for the rounds in flight, and no
   * round starts while it waits or is out. */
  hk_tx_done_cb test_cb;
  void *test_ctx;
  hk_buf test_body;      /* the message (broker) or [message] (HTTP) */
  char *test_route, *test_key;
  size_t test_key_len;
  int testing;           /* a test send is in flight */

  uv_timer_t timer;
};

static void send_next(hk_dispatch *d);
static void timer_cb(uv_timer_t *t);

static double wall_now(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double loop_now(hk_dispatch *d) {
  return (double)uv_now(d->loop) / 1000.0;
}

static const char *dest(const hk_dispatch *d) {
  if (d->tx) return d->tx->ops->describe(d->tx);
  return d->target ? hk_http_target_url(d->target) : "-";
}

/* A reason as the value of a quoted log field. One buffer: use once per
 * log line. */
static const char *quote(const char *reason) {
  static char buf[1100];

  return hk_log_escape(buf, sizeof buf, reason);
}

static int has_target(const hk_dispatch *d) {
  return d->target != NULL || d->tx != NULL;
}

/* Whether a batch may start or a retry go out now. A broker hook's test
 * send waits for the rounds in flight, and no new round overtakes it. */
static int may_send(const hk_dispatch *d) {
  return !d->quiet && !d->held && !(d->tx && d->test_cb);
}

/* Arms the timer at least 1 ms ahead: a 0 ms timer re-armed from its own
 * callback would run again in the same loop turn, forever. */
static void timer_start(hk_dispatch *d, double seconds) {
  double ms = seconds * 1000.0;

  if (!(ms >= 1.0)) ms = 1.0;
  if (ms > 1e12) ms = 1e12;
  uv_timer_start(&d->timer, timer_cb, (uint64_t)ms, 0);
}

static size_t window_size(const hk_dispatch *d) {
  /* A broker hook's rounds in flight stay in the window, with room for the
   * next round behind them. An HTTP hook's window holds the batch in
   * flight, the next one, and what a commit of several ingest requests
   * brings at once: at twice batch_size most messages of a busy hook
   * found it full, and were read back from the store. */
  size_t w = d->settings.batch_size * (d->tx ? ROUNDS_MAX + 2 : 8);

  if (w < WINDOW_MIN) w = WINDOW_MIN;
  return w > WINDOW_MAX ? WINDOW_MAX : w;
}

static int window_full(const hk_dispatch *d) {
  return d->queue_len >= window_size(d) || d->queue_bytes >= WINDOW_BYTES;
}

/* A message with its route and key (both may be NULL) in one block. */
static msg_node *node_new(int64_t id, const char *json, size_t len,
                          const char *route, const char *key,
                          size_t key_len) {
  size_t rlen = route ? strlen(route) + 1 : 0;
  msg_node *n = malloc(sizeof *n + len + rlen + key_len);
  char *p;

  if (n == NULL) return NULL;
  memset(n, 0, sizeof *n);
  n->id = id;
  n->len = len;
  memcpy(n->data, json, len);
  p = n->data + len;
  if (route) {
    memcpy(p, route, rlen);
    n->route = p;
    p += rlen;
  }
  if (key) {
    memcpy(p, key, key_len);
    n->key = p;
    n->key_len = key_len;
  }
  return n;
}

static void window_push(hk_dispatch *d, msg_node *n) {
  if (d->tail) d->tail->next = n;
  else d->head = n;
  d->tail = n;
  d->queue_len++;
  d->queue_bytes += n->len;
  d->last_id = n->id;
}

/* The k-th node from n (k >= 1), or NULL for k = 0. */
static msg_node *nth_node(msg_node *n, size_t k) {
  if (k == 0) return NULL;
  while (n && --k > 0) n = n->next;
  return n;
}

/* The first window message that no batch or round has taken. */
static msg_node *first_free(const hk_dispatch *d) {
  if (d->batch_count == 0) return d->head;
  return d->taken_last ? d->taken_last->next : NULL;
}

static msg_node *window_pop(hk_dispatch *d) {
  msg_node *n = d->head;

  d->head = n->next;
  if (d->head == NULL) d->tail = NULL;
  d->queue_len--;
  d->queue_bytes -= n->len;
  return n;
}

/* ---- reading the outbox back ---- */

static void refill_row(void *ctx, const hk_outbox_row *row) {
  hk_dispatch *d = ctx;
  msg_node *n = node_new(row->id, row->body, row->len, row->route, row->key,
                         row->key_len);

  if (n == NULL) return;
  n->attempts = row->attempts;
  n->first_at = row->first_at;
  n->next_at = row->next_at;
  n->created = row->created_at;
  n->version = row->version;
  window_push(d, n);
}

/* Tops the window up from the store when what no batch has taken yet has
 * run low. Returns 0, or -1 on a store error (the caller tries again
 * later). */
static int refill(hk_dispatch *d) {
  size_t want, w = window_size(d);
  long got;

  if (!d->on_disk || d->queue_len >= w ||
      d->queue_len - d->batch_count >= w / 2)
    return 0;
  want = w - d->queue_len;
  got = hk_store_outbox_read(d->store, d->hook_id, d->last_id, (long)want,
                             refill_row, d);
  if (got < 0) {
    hk_error("dispatch", "hook=%s dest=%s outbox_read_failed=1 retry_in=1s",
             d->hook_id, dest(d));
    return -1;
  }
  if ((size_t)got < want) d->on_disk = 0;
  return 0;
}

/* ---- writing outcomes back ---- */

/* A batch's outcome counts once it is in the store: queued is what the
 * outbox holds, and an operator who sees dead move finds the letters
 * listed. Persistent batches are retried until they commit; ok is 0 only
 * for the last try while the store closes. */
static void acked_committed(hk_store_batch *b, int ok, void *ctx) {
  hk_counters *counters = ctx;

  if (ok) counters->queued -= (long)hk_store_batch_size(b);
}

static void dead_committed(hk_store_batch *b, int ok, void *ctx) {
  hk_counters *counters = ctx;

  if (!ok) return;
  counters->queued -= (long)hk_store_batch_size(b);
  counters->dead += (long)hk_store_batch_size(b);
}

/* Takes the batch's messages out of the window, recording each outcome in
 * one store batch: acknowledged (reason NULL) or dead. */
static void observe_latency(hk_dispatch *d, const msg_node *n) {
  if (n->created > 0)
    hk_histogram_observe(&d->counters->latency, wall_now() - n->created);
}

static void settle_batch(hk_dispatch *d, const char *reason) {
  hk_store_batch *b = hk_store_batch_new();

  hk_store_batch_persistent(b);
  for (size_t i = 0; i < d->batch_count; i++) {
    msg_node *n = window_pop(d);

    if (reason) {
      hk_store_add_dead(b, n->id, reason, dest(d), d->attempts,
                        d->first_attempt_at, d->last_attempt_at);
    } else {
      hk_store_add_ack(b, n->id);
      observe_latency(d, n);
    }
    free(n);
  }
  hk_store_submit(d->store, b, reason ? dead_committed : acked_committed,
                  d->counters);
  d->batch_count = 0;
  d->taken_last = NULL;
  hk_buf_reset(&d->batch);
  d->state = STATE_IDLE;
}

static void record_retry(hk_dispatch *d, double next_at) {
  hk_store_batch *b = hk_store_batch_new();
  msg_node *n = d->head;

  hk_store_batch_persistent(b);
  for (size_t i = 0; i < d->batch_count; i++, n = n->next) {
    n->attempts = d->attempts;
    n->first_at = d->first_attempt_at;
    n->next_at = next_at;
    hk_store_add_retry_state(b, n->id, d->attempts, d->first_attempt_at,
                             next_at);
  }
  hk_store_submit(d->store, b, NULL, NULL);
}

/* The script versions of the batch's messages, for logs: "3", or "2-3"
 * when a reload happened while they were queued. */
static const char *batch_versions(const hk_dispatch *d, size_t count) {
  static char text[48];
  long lo = 0, hi = 0;
  const msg_node *n = d->head;

  for (size_t i = 0; i < count && n; i++, n = n->next) {
    if (lo == 0 || n->version < lo) lo = n->version;
    if (n->version > hi) hi = n->version;
  }
  if (lo == hi) snprintf(text, sizeof text, "%ld", hi);
  else snprintf(text, sizeof text, "%ld-%ld", lo, hi);
  return text;
}

static void make_dead(hk_dispatch *d, const char *reason) {
  size_t count = d->batch_count;

  hk_error("dispatch",
           "hook=%s version=%s dest=%s messages=%zu attempts=%d "
           "dead_letter=1 reason=\"%s\"", d->hook_id,
           batch_versions(d, count), dest(d), count, d->attempts,
           quote(reason));
  settle_batch(d, reason);
}

/* ---- batches ---- */

/* The number of window messages the next batch takes: up to batch_size
 * (and split_cap), and within max_body_bytes, though never fewer than
 * one. A message that is too large by itself is the whole batch. */
static size_t batch_take(const hk_dispatch *d, msg_node *from,
                         int retried_only) {
  size_t limit = d->settings.max_body_bytes, cap = d->settings.batch_size;
  size_t k = 0, bytes = 2;

  if (d->split_cap && d->split_cap < cap) cap = d->split_cap;
  for (msg_node *n = from; n && k < cap; n = n->next) {
    if (retried_only && n->attempts == 0) break;
    if (limit && k > 0 && bytes + n->len + 1 > limit) break;
    bytes += n->len + (k > 0);
    k++;
  }
  return k;
}

/* Writes the first batch_count messages of the window into d->batch. */
static void build_body(hk_dispatch *d) {
  msg_node *n = d->head;

  hk_buf_reset(&d->batch);
  hk_buf_putc(&d->batch, '[');
  for (size_t i = 0; i < d->batch_count; i++, n = n->next) {
    if (i) hk_buf_putc(&d->batch, ',');
    hk_buf_append(&d->batch, n->data, n->len);
  }
  hk_buf_putc(&d->batch, ']');
}

static void post_cb(void *ctx, const hk_tx_result *res);
static void tx_cb(void *ctx, const hk_tx_result *results, size_t n);
static void start_test(hk_dispatch *d);

/* Hands count messages from n on to the broker transport as one round.
 * Returns 0, or -1 when the send could not start. */
static int tx_send(hk_dispatch *d, msg_node *n, size_t count) {
  hk_tx_msg *msgs = calloc(count ? count : 1, sizeof *msgs);
  int rc;

  if (msgs == NULL) return -1;
  for (size_t i = 0; i < count; i++, n = n->next) {
    msgs[i].data = n->data;
    msgs[i].len = n->len;
    msgs[i].route = n->route ? n->route : "";
    msgs[i].key = n->key;
    msgs[i].key_len = n->key_len;
  }
  rc = d->tx->ops->send(d->tx, msgs, count, tx_cb, d);
  free(msgs);
  return rc;
}

/* Records a round that went out: it takes count messages from n on. */
static void round_push(hk_dispatch *d, msg_node *n, size_t count,
                       double at) {
  d->round_len[d->rounds] = count;
  d->round_at[d->rounds] = at;
  d->rounds++;
  d->batch_count += count;
  d->taken_last = nth_node(n, count);
}

/* Sends count messages from n on behind the rounds in flight. A send
 * that cannot start stops new rounds; the messages wait for the next
 * batch, which retries them once the rounds in flight are answered. */
static void post_round(hk_dispatch *d, msg_node *n, size_t count) {
  if (tx_send(d, n, count) != 0) {
    d->failing = 1;
    return;
  }
  hk_histogram_observe(&d->counters->batches, (double)count);
  d->last_attempt_at = wall_now();
  round_push(d, n, count, d->last_attempt_at);
}

static void post_batch(hk_dispatch *d) {
  size_t count = d->batch_count;
  hk_tx_result res;
  int rc;

  d->state = STATE_SENDING;
  d->attempts++;
  hk_histogram_observe(&d->counters->batches, (double)d->batch_count);
  d->last_attempt_at = wall_now();
  if (d->first_attempt_at == 0) d->first_attempt_at = d->last_attempt_at;
  if (d->tx) {
    rc = tx_send(d, d->head, count);
    if (rc == 0) {
      d->batch_count = 0;
      round_push(d, d->head, count, d->last_attempt_at);
      d->round_gen = d->tx_gen;
    }
  } else
    rc = hk_http_post(d->client, d->target, d->batch.data, d->batch.len,
                      post_cb, d);
  if (rc != 0) {
    memset(&res, 0, sizeof res);
    res.status = HK_TX_RETRY;
    snprintf(res.reason, sizeof res.reason, "error=\"cannot start request\"");
    post_cb(d, &res);
  }
}

/* Starts a new batch from the first message no batch has taken (the head
 * of the window unless rounds are in flight), or sets aside a message
 * that can never fit. */
static void start_batch(hk_dispatch *d, msg_node *from) {
  size_t limit = d->settings.max_body_bytes, whole = 1;
  msg_node *last = from;

  /* The batch as it would be without max_body_bytes or a 413 split: when
   * it leaves in parts, the later parts go at once, not a timeout later. */
  while (last->next && whole < d->settings.batch_size) {
    last = last->next;
    whole++;
  }
  if (last->id > d->due_through) d->due_through = last->id;
  if (d->state == STATE_SENDING) {
    post_round(d, from, batch_take(d, from, 0));
    return;
  }
  d->batch_count = batch_take(d, from, 0);
  d->taken_last = nth_node(from, d->batch_count);
  d->attempts = 0;
  d->first_attempt_at = d->last_attempt_at = 0;
  if (limit && !d->tx && d->batch_count == 1 && d->head->len + 2 > limit) {
    char reason[160];

    snprintf(reason, sizeof reason,
             "error=\"message of %zu bytes exceeds max_body_bytes %zu\"",
             d->head->len, limit);
    make_dead(d, reason);
    return;
  }
  if (!d->tx) build_body(d);
  post_batch(d);
}

/* A batch read back from the store with failed attempts resumes its retry
 * schedule: it waits for the stored time of its next attempt. */
static void resume_retry(hk_dispatch *d) {
  double wait = d->head->next_at - wall_now();

  d->batch_count = batch_take(d, d->head, 1);
  d->taken_last = nth_node(d->head, d->batch_count);
  d->attempts = d->head->attempts;
  d->first_attempt_at = d->head->first_at;
  d->last_attempt_at = 0;
  if (!d->tx) build_body(d);
  d->state = STATE_WAITING;
  d->retry_at = d->head->next_at;
  hk_info("dispatch", "hook=%s version=%s dest=%s messages=%zu "
          "attempts=%d retry_resumed=1 retry_in=%.3fs", d->hook_id,
          batch_versions(d, d->batch_count), dest(d), d->batch_count,
          d->attempts, wait > 0 ? wait : 0);
  timer_start(d, wait);
}

static void schedule_retry(hk_dispatch *d, const hk_tx_result *res) {
  double wait = d->policy.period_sec;

  /* Retry-After is honoured when it asks for longer, up to a cap, so a
   * destination cannot park a hook for days with one header. */
  if (res->retry_after_sec > wait)
    wait = res->retry_after_sec < HK_RETRY_AFTER_MAX_SEC
               ? res->retry_after_sec
               : HK_RETRY_AFTER_MAX_SEC;
  hk_warn("dispatch", "hook=%s version=%s dest=%s messages=%zu "
          "attempt=%d retry_in=%.3fs reason=\"%s\"",
          d->hook_id, batch_versions(d, d->batch_count), dest(d),
          d->batch_count, d->attempts, wait, quote(res->reason));
  d->retry_at = wall_now() + wait;
  record_retry(d, d->retry_at);
  d->state = STATE_WAITING;
  if (may_send(d)) timer_start(d, wait);
}

/* A 413 for a batch of several: the next batches carry half as many. */
static void split_after_413(hk_dispatch *d, const hk_tx_result *res) {
  d->split_cap = (d->batch_count + 1) / 2;
  hk_warn("dispatch", "hook=%s dest=%s messages=%zu too_large=1 "
          "next_batch_max=%zu reason=\"%s\"", d->hook_id, dest(d),
          d->batch_count, d->split_cap, quote(res->reason));
  d->batch_count = 0;
  d->taken_last = NULL;
  hk_buf_reset(&d->batch);
  d->state = STATE_IDLE;
}

static void post_cb(void *ctx, const hk_tx_result *res) {
  hk_dispatch *d = ctx;

  if (res->status == HK_TX_OK) {
    d->counters->sent += (long)d->batch_count;
    hk_debug("dispatch", "hook=%s messages=%zu attempt=%d delivered=1",
             d->hook_id, d->batch_count, d->attempts);
    settle_batch(d, NULL);
  } else {
    d->counters->failed += (long)d->batch_count;
    if (res->too_large && d->batch_count > 1)
      split_after_413(d, res);
    else if (res->status == HK_TX_RETRY && d->attempts <= d->policy.times) {
      schedule_retry(d, res);
      return;
    } else {
      make_dead(d, res->reason);
    }
  }
  send_next(d);
}

static void submit_or_free(hk_dispatch *d, hk_store_batch *b,
                           hk_store_done_cb cb) {
  if (hk_store_batch_size(b) == 0) hk_store_batch_free(b);
  else hk_store_submit(d->store, b, cb, d->counters);
}

/* Removes node from the window; prev is the node before it or NULL. */
static void window_unlink(hk_dispatch *d, msg_node *prev, msg_node *node) {
  if (prev) prev->next = node->next;
  else d->head = node->next;
  if (d->tail == node) d->tail = prev;
  d->queue_len--;
  d->queue_bytes -= node->len;
}

/* The first message of the oldest round in flight: right after the kept
 * ones. */
static msg_node *round_first(const hk_dispatch *d) {
  return d->kept_last ? d->kept_last->next : d->head;
}

/* The result for message i of a round: res[i], or *all when the whole
 * round gets one (res NULL). */
static const hk_tx_result *result_at(const hk_tx_result *res, size_t i,
                                     const hk_tx_result *all) {
  return res ? &res[i] : all;
}

/* Records the delivered and the refused messages of the oldest round in
 * the store and takes them out of the window. What is to be retried stays
 * in the window, in order, after what earlier rounds kept. Returns the
 * first result that asked for a retry, or NULL. */
static const hk_tx_result *settle_round(hk_dispatch *d,
                                        const hk_tx_result *res, size_t n,
                                        const hk_tx_result *all) {
  hk_store_batch *acked = hk_store_batch_new(), *dead = hk_store_batch_new();
  msg_node *prev = d->kept_last, *node = round_first(d), *next;
  const hk_tx_result *first_retry = NULL;

  hk_store_batch_persistent(acked);
  hk_store_batch_persistent(dead);
  for (size_t i = 0; i < n && node; i++, node = next) {
    const hk_tx_result *r = result_at(res, i, all);

    next = node->next;
    if (r->status == HK_TX_RETRY) {
      if (first_retry == NULL) first_retry = r;
      prev = d->kept_last = node;
      d->kept++;
      continue;
    }
    if (r->status == HK_TX_OK) {
      hk_store_add_ack(acked, node->id);
      observe_latency(d, node);
    } else
      hk_store_add_dead(dead, node->id, r->reason, dest(d), d->attempts,
                        d->first_attempt_at, d->last_attempt_at);
    if (node == d->taken_last) d->taken_last = prev;
    window_unlink(d, prev, node);
    d->batch_count--;
    free(node);
  }
  d->counters->sent += (long)hk_store_batch_size(acked);
  d->counters->failed += (long)hk_store_batch_size(dead);
  submit_or_free(d, acked, acked_committed);
  submit_or_free(d, dead, dead_committed);
  return first_retry;
}

static void log_refused(hk_dispatch *d, const hk_tx_result *res, size_t n) {
  const msg_node *node = round_first(d);

  for (size_t i = 0; res && i < n && node; i++, node = node->next)
    if (res[i].status == HK_TX_FAIL)
      hk_error("dispatch", "hook=%s version=%ld dest=%s messages=1 "
               "attempts=%d dead_letter=1 reason=\"%s\"", d->hook_id,
               node->version, dest(d), d->attempts, quote(res[i].reason));
}

/* Takes the oldest round off the list; returns when it left. */
static double round_pop(hk_dispatch *d, size_t *len) {
  double at = d->round_at[0];

  *len = d->round_len[0];
  d->rounds--;
  memmove(d->round_len, d->round_len + 1, d->rounds * sizeof d->round_len[0]);
  memmove(d->round_at, d->round_at + 1, d->rounds * sizeof d->round_at[0]);
  return at;
}

/* The last round is answered. What the rounds kept becomes the batch,
 * which is retried (or set aside) under the usual rules; otherwise the
 * next batch starts. */
static void rounds_done(hk_dispatch *d) {
  d->state = STATE_IDLE;
  if (d->test_cb && !d->testing) start_test(d); /* it waited for this */
  if (d->failing && d->kept > 0) {
    d->batch_count = d->kept;
    d->taken_last = d->kept_last;
    d->kept = 0;
    d->kept_last = NULL;
    d->failing = 0;
    post_cb(d, &d->fail_res);
    return;
  }
  d->failing = 0;
  send_next(d);
}

/* A broker answered for each message of the oldest round: the delivered
 * and the refused leave, the rest waits for the rounds still in flight
 * and is then retried as the next batch. */
static void tx_cb(void *ctx, const hk_tx_result *res, size_t n) {
  hk_dispatch *d = ctx;
  hk_tx_result wrong = {.status = HK_TX_RETRY};
  const hk_tx_result *retry;
  size_t len;
  double at;

  if (d->rounds == 0) { /* a transport bug: no round is out */
    hk_error("dispatch", "hook=%s dest=%s reason=\"an answer without a "
             "round in flight\"", d->hook_id, dest(d));
    return;
  }
  at = round_pop(d, &len);
  d->last_attempt_at = at;
  if (d->attempts == 1 && d->kept == 0) d->first_attempt_at = at;
  if (n != len) { /* a transport bug: the whole round again */
    snprintf(wrong.reason, sizeof wrong.reason, "error=\"transport answered "
             "for %zu of %zu messages\"", n, len);
    hk_error("dispatch", "hook=%s dest=%s reason=\"%s\"", d->hook_id,
             dest(d), quote(wrong.reason));
    res = NULL;
  }
  log_refused(d, res, len);
  retry = settle_round(d, res, len, &wrong);
  if (retry != NULL && !d->failing) {
    d->failing = 1;
    d->fail_res = *retry;
  }
  if (d->rounds == 0) rounds_done(d);
  else send_next(d); /* another round may go behind those in flight */
}

/* Whether a batch may start now: nothing is out, or a broker hook has room
 * for another round behind the fresh rounds in flight to the same target,
 * none of which asked for a retry. */
static int may_start(const hk_dispatch *d) {
  if (!has_target(d) || !may_send(d)) return 0;
  if (d->state == STATE_IDLE) return 1;
  return d->state == STATE_SENDING && d->tx != NULL && d->rounds > 0 &&
         d->rounds < ROUNDS_MAX && !d->failing && d->attempts == 1 &&
         d->round_gen == d->tx_gen;
}

/* Starts the next batches when they are due: a full batch at once, a
 * partial one when its first message has waited timeout_sec, messages
 * read back from the store at once; otherwise arms the timer for that
 * moment. */
static void send_next(hk_dispatch *d) {
  msg_node *from;
  double due;

  while (may_start(d)) {
    if (refill(d) != 0) {
      timer_start(d, STORE_RETRY_MS / 1000.0);
      return;
    }
    if ((from = first_free(d)) == NULL) {
      if (d->state == STATE_IDLE) d->split_cap = 0;
      uv_timer_stop(&d->timer);
      return;
    }
    if (from->attempts > 0) { /* a retry goes alone, at the head */
      if (d->state == STATE_IDLE) resume_retry(d);
      return;
    }
    due = from->arrived + d->settings.timeout_sec - loop_now(d);
    /* The loop clock has millisecond steps: within one step of the
     * deadline counts as due. */
    if (d->queue_len - d->batch_count < d->settings.batch_size &&
        !d->on_disk && from->id > d->due_through && due >= 0.001) {
      if (!uv_is_active((uv_handle_t *)&d->timer)) timer_start(d, due);
      return;
    }
    uv_timer_stop(&d->timer);
    start_batch(d, from);
  }
}

static void timer_cb(uv_timer_t *t) {
  hk_dispatch *d = t->data;

  if (!may_send(d)) return; /* hk_dispatch_hold or the test's end resumes */
  if (d->state == STATE_WAITING) {
    d->counters->retried += (long)d->batch_count;
    post_batch(d);
  } else {
    send_next(d); /* idle, or a partial round behind those in flight */
  }
}

hk_dispatch *hk_dispatch_create(uv_loop_t *loop, hk_http_client *client,
                                hk_store *store, const char *hook_id,
                                const hk_retry_policy *policy,
                                hk_counters *counters) {
  hk_dispatch *d = calloc(1, sizeof *d);

  if (d == NULL) return NULL;
  d->loop = loop;
  d->client = client;
  d->store = store;
  d->hook_id = hook_id;
  d->policy = *policy;
  d->counters = counters;
  hk_histogram_init(&counters->latency, hk_latency_bounds, hk_latency_n);
  hk_histogram_init(&counters->batches, hk_batch_bounds, hk_batch_n);
  d->settings.batch_size = 100;
  d->settings.timeout_sec = 5;
  d->on_disk = store != NULL; /* whatever an earlier run left */
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  return d;
}

int hk_dispatch_configure(hk_dispatch *d, const hk_delivery_settings *s,
                          char *err, size_t errlen) {
  hk_http_target *t = NULL;

  if (s->tx == NULL) {
    t = hk_http_target_create(&s->http, err, errlen);
    if (t == NULL) return -1;
  }
  if (d->target) hk_http_target_destroy(d->target);
  if (d->tx) d->tx->ops->destroy(d->tx);
  d->target = t;
  d->tx = s->tx;
  d->tx_gen++; /* rounds still out on the old target finish first */
  d->settings.batch_size = s->batch_size ? s->batch_size : 1;
  d->settings.timeout_sec = s->timeout_sec;
  d->settings.max_body_bytes = s->max_body_bytes;
  d->split_cap = 0;
  /* A shorter timeout or smaller batch may make a batch due now. */
  if (d->state == STATE_IDLE) {
    uv_timer_stop(&d->timer);
    send_next(d);
  }
  return 0;
}

int hk_dispatch_enqueue(hk_dispatch *d, int64_t id, const char *json,
                        size_t len, const char *route, const char *key,
                        size_t key_len, long version) {
  msg_node *n;

  if (id <= d->last_id) return 0; /* already read back from the store */
  if (d->on_disk || window_full(d)) {
    d->on_disk = 1;
    return 0;
  }
  n = node_new(id, json, len, route, key, key_len);
  if (n == NULL) {
    d->on_disk = 1; /* it is in the store; read it from there later */
    return -1;
  }
  n->arrived = loop_now(d);
  n->created = wall_now();
  n->version = version;
  window_push(d, n);
  if (d->queue_len - d->batch_count >= d->settings.batch_size ||
      !uv_is_active((uv_handle_t *)&d->timer))
    send_next(d);
  return 0;
}

void hk_dispatch_outbox_changed(hk_dispatch *d) {
  d->on_disk = 1;
  if (d->state == STATE_IDLE && !uv_is_active((uv_handle_t *)&d->timer))
    send_next(d);
}

void hk_dispatch_quiet(hk_dispatch *d) {
  d->quiet = 1;
  uv_timer_stop(&d->timer);
}

int hk_dispatch_settled(const hk_dispatch *d) {
  return d->state != STATE_SENDING;
}

/* ---- test sends ---- */

static void test_clear(hk_dispatch *d) {
  hk_buf_reset(&d->test_body);
  free(d->test_route);
  free(d->test_key);
  d->test_route = d->test_key = NULL;
  d->test_cb = NULL;
  d->testing = 0;
}

/* The test is answered; what it held back (a batch, a due retry) goes. */
static void test_finish(hk_dispatch *d, const hk_tx_result *res) {
  hk_tx_done_cb cb = d->test_cb;
  void *ctx = d->test_ctx;

  if (res->status == HK_TX_OK) {
    d->counters->test_sent++;
    hk_info("dispatch", "hook=%s dest=%s test_send=1 delivered=1 "
            "reason=\"%s\"", d->hook_id, dest(d), quote(res->reason));
  } else {
    /* A failed test is for the operator who sent it, like a failure of
     * the hook's code on the test event (router.c). */
    d->counters->test_failed++;
    hk_warn("dispatch", "hook=%s dest=%s test_send=1 delivered=0 "
            "reason=\"%s\"", d->hook_id, dest(d), quote(res->reason));
  }
  test_clear(d);
  cb(ctx, res);
  if (!may_send(d)) return;
  if (d->state == STATE_WAITING && !uv_is_active((uv_handle_t *)&d->timer))
    timer_start(d, d->retry_at - wall_now());
  else if (d->state == STATE_IDLE)
    send_next(d);
}

static void test_post_cb(void *ctx, const hk_tx_result *res) {
  test_finish(ctx, res);
}

static void test_tx_cb(void *ctx, const hk_tx_result *res, size_t n) {
  hk_tx_result none = {.status = HK_TX_FAIL};

  if (n == 1) {
    test_finish(ctx, res);
    return;
  }
  snprintf(none.reason, sizeof none.reason,
           "error=\"transport answered for %zu of 1 messages\"", n);
  test_finish(ctx, &none);
}

static void start_test(hk_dispatch *d) {
  hk_tx_msg m = {d->test_body.data, d->test_body.len, d->test_route,
                 d->test_key, d->test_key_len};
  hk_tx_result res = {.status = HK_TX_RETRY};
  int rc;

  d->testing = 1;
  if (d->tx)
    rc = d->tx->ops->send(d->tx, &m, 1, test_tx_cb, d);
  else
    rc = hk_http_post(d->client, d->target, d->test_body.data,
                      d->test_body.len, test_post_cb, d);
  if (rc != 0) {
    snprintf(res.reason, sizeof res.reason, "error=\"cannot start request\"");
    test_finish(d, &res);
  }
}

int hk_dispatch_test(hk_dispatch *d, const hk_tx_msg *msg, hk_tx_done_cb cb,
                     void *ctx, char *err, size_t errlen) {
  if (!has_target(d) || d->quiet) {
    snprintf(err, errlen, "the hook has no working destination");
    return -1;
  }
  if (d->test_cb) {
    snprintf(err, errlen, "a test send of this hook is still in progress");
    return -1;
  }
  hk_buf_reset(&d->test_body);
  if (!d->tx) hk_buf_putc(&d->test_body, '[');
  hk_buf_append(&d->test_body, msg->data, msg->len);
  if (!d->tx) hk_buf_putc(&d->test_body, ']');
  d->test_route = strdup(msg->route ? msg->route : "");
  d->test_key = msg->key ? malloc(msg->key_len ? msg->key_len : 1) : NULL;
  if (d->test_key) memcpy(d->test_key, msg->key, msg->key_len);
  d->test_key_len = msg->key_len;
  d->test_cb = cb;
  d->test_ctx = ctx;
  /* On a broker target the test goes once the rounds in flight are
   * answered (see rounds_done), so that none of them waits behind it. */
  if (!(d->tx && d->state == STATE_SENDING)) start_test(d);
  return 0;
}

/* ---- stopping and deleting the hook ---- */

void hk_dispatch_hold(hk_dispatch *d, int held) {
  if (d->held == held) return;
  d->held = held;
  if (held) {
    uv_timer_stop(&d->timer);
    return;
  }
  if (!may_send(d)) return;
  if (d->state == STATE_WAITING)
    timer_start(d, d->retry_at - wall_now());
  else if (d->state == STATE_IDLE)
    send_next(d);
}

void hk_dispatch_drop(hk_dispatch *d) {
  msg_node *n = d->head, *next;

  for (; n; n = next) {
    next = n->next;
    free(n);
  }
  d->head = d->tail = NULL;
  d->queue_len = d->queue_bytes = 0;
  d->batch_count = 0;
  d->taken_last = d->kept_last = NULL;
  d->kept = 0;
  d->failing = 0;
  d->split_cap = 0;
  hk_buf_reset(&d->batch);
  if (d->state != STATE_SENDING) d->state = STATE_IDLE;
  d->on_disk = 1;
  uv_timer_stop(&d->timer);
}
