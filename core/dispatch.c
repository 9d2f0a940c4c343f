/* One hook's delivery: messages wait in a queue, leave as JSON-array
 * batches (at batch_size, at max_body_bytes, or timeout_sec after the
 * first queued message), one request at a time so order is kept, and a
 * failed batch is retried with the same bytes until the retries run out. */
#include "dispatch.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "deadletters.h"
#include "log.h"

typedef struct msg_node {
  struct msg_node *next;
  double arrived; /* loop time in seconds */
  size_t len;
  char data[];
} msg_node;

#define HK_RETRY_AFTER_MAX_SEC 3600.0

enum dispatch_state {
  STATE_IDLE,    /* no batch; the timer, if running, is the batch timeout */
  STATE_SENDING, /* a request is in flight */
  STATE_WAITING  /* a failed batch waits on the timer for its retry */
};

struct hk_dispatch {
  uv_loop_t *loop;
  hk_http_client *client;
  hk_http_target *target;
  const char *hook_id;
  hk_retry_policy policy;
  hk_counters *counters;
  hk_delivery_settings settings; /* only the numbers are used */

  msg_node *head, *tail;
  size_t queue_len;

  enum dispatch_state state;
  hk_buf batch;        /* the body being sent or retried */
  size_t batch_count;  /* messages in it */
  int attempts;        /* attempts made for this batch */
  double first_attempt_at, last_attempt_at;

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

/* Arms the timer at least 1 ms ahead: a 0 ms timer re-armed from its own
 * callback would run again in the same loop turn, forever. */
static void timer_start(hk_dispatch *d, double seconds) {
  double ms = seconds * 1000.0;

  if (!(ms >= 1.0)) ms = 1.0;
  if (ms > 1e12) ms = 1e12;
  uv_timer_start(&d->timer, timer_cb, (uint64_t)ms, 0);
}

/* Moves up to batch_size messages (and max_body_bytes, though never fewer
 * than one message) from the queue into d->batch as a JSON array. */
static void build_batch(hk_dispatch *d) {
  size_t limit = d->settings.max_body_bytes;

  hk_buf_reset(&d->batch);
  hk_buf_putc(&d->batch, '[');
  d->batch_count = 0;
  while (d->head && d->batch_count < d->settings.batch_size) {
    msg_node *n = d->head;

    if (limit && d->batch_count > 0 && d->batch.len + n->len + 2 > limit)
      break;
    if (d->batch_count) hk_buf_putc(&d->batch, ',');
    hk_buf_append(&d->batch, n->data, n->len);
    d->head = n->next;
    if (d->head == NULL) d->tail = NULL;
    d->queue_len--;
    d->batch_count++;
    free(n);
  }
  hk_buf_putc(&d->batch, ']');
  d->attempts = 0;
  d->first_attempt_at = 0;
}

static void post_cb(void *ctx, const hk_tx_result *res);

static void post_batch(hk_dispatch *d) {
  hk_tx_result res;

  d->state = STATE_SENDING;
  d->attempts++;
  d->last_attempt_at = wall_now();
  if (d->first_attempt_at == 0) d->first_attempt_at = d->last_attempt_at;
  if (hk_http_post(d->client, d->target, d->batch.data, d->batch.len,
                   post_cb, d) != 0) {
    memset(&res, 0, sizeof res);
    res.status = HK_TX_RETRY;
    snprintf(res.reason, sizeof res.reason, "error=\"cannot start request\"");
    post_cb(d, &res);
  }
}

static void batch_done(hk_dispatch *d) {
  d->counters->queued -= (long)d->batch_count;
  d->batch_count = 0;
  hk_buf_reset(&d->batch);
  d->state = STATE_IDLE;
}

static void make_dead(hk_dispatch *d, const char *reason) {
  const char *url = hk_http_target_url(d->target);

  hk_deadletters_add(d->hook_id, url, reason, d->attempts,
                     d->first_attempt_at, d->last_attempt_at, d->batch_count,
                     d->batch.data, d->batch.len);
  d->counters->dead += (long)d->batch_count;
  hk_error("dispatch",
           "hook=%s dest=%s messages=%zu attempts=%d dead_letter=1 %s",
           d->hook_id, url, d->batch_count, d->attempts, reason);
  batch_done(d);
}

static void schedule_retry(hk_dispatch *d, const hk_tx_result *res) {
  double wait = d->policy.period_sec;

  /* Retry-After is honoured when it asks for longer, up to a cap, so a
   * destination cannot park a hook for days with one header. */
  if (res->retry_after_sec > wait)
    wait = res->retry_after_sec < HK_RETRY_AFTER_MAX_SEC
               ? res->retry_after_sec
               : HK_RETRY_AFTER_MAX_SEC;
  if (wait < d->policy.period_sec) wait = d->policy.period_sec;
  hk_warn("dispatch", "hook=%s dest=%s messages=%zu attempt=%d retry_in=%.3fs %s",
          d->hook_id, hk_http_target_url(d->target), d->batch_count,
          d->attempts, wait, res->reason);
  d->state = STATE_WAITING;
  timer_start(d, wait);
}

static void post_cb(void *ctx, const hk_tx_result *res) {
  hk_dispatch *d = ctx;

  if (res->status == HK_TX_OK) {
    d->counters->sent += (long)d->batch_count;
    hk_debug("dispatch", "hook=%s messages=%zu attempt=%d delivered=1",
             d->hook_id, d->batch_count, d->attempts);
    batch_done(d);
  } else {
    d->counters->failed += (long)d->batch_count;
    if (res->status == HK_TX_RETRY && d->attempts <= d->policy.times) {
      schedule_retry(d, res);
      return;
    }
    make_dead(d, res->reason);
  }
  send_next(d);
}

/* Starts the next batch when one is due: a full batch at once, a partial
 * one when its first message has waited timeout_sec; otherwise arms the
 * timer for that moment. Only called in STATE_IDLE. */
static void send_next(hk_dispatch *d) {
  double due;

  if (d->head == NULL) {
    uv_timer_stop(&d->timer);
    return;
  }
  due = d->head->arrived + d->settings.timeout_sec - loop_now(d);
  /* The loop clock has millisecond steps: within one step of the
   * deadline counts as due. */
  if (d->queue_len >= d->settings.batch_size || due < 0.001) {
    uv_timer_stop(&d->timer);
    build_batch(d);
    post_batch(d);
    return;
  }
  if (!uv_is_active((uv_handle_t *)&d->timer)) timer_start(d, due);
}

static void timer_cb(uv_timer_t *t) {
  hk_dispatch *d = t->data;

  if (d->state == STATE_WAITING) {
    d->counters->retried += (long)d->batch_count;
    post_batch(d);
  } else if (d->state == STATE_IDLE) {
    send_next(d);
  }
}

hk_dispatch *hk_dispatch_create(uv_loop_t *loop, hk_http_client *client,
                                const char *hook_id,
                                const hk_retry_policy *policy,
                                hk_counters *counters) {
  hk_dispatch *d = calloc(1, sizeof *d);

  if (d == NULL) return NULL;
  d->loop = loop;
  d->client = client;
  d->hook_id = hook_id;
  d->policy = *policy;
  d->counters = counters;
  d->settings.batch_size = 100;
  d->settings.timeout_sec = 5;
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  return d;
}

int hk_dispatch_configure(hk_dispatch *d, const hk_delivery_settings *s,
                          char *err, size_t errlen) {
  hk_http_target *t = hk_http_target_create(&s->http, err, errlen);

  if (t == NULL) return -1;
  if (d->target) hk_http_target_destroy(d->target);
  d->target = t;
  d->settings.batch_size = s->batch_size ? s->batch_size : 1;
  d->settings.timeout_sec = s->timeout_sec;
  d->settings.max_body_bytes = s->max_body_bytes;
  /* A shorter timeout or smaller batch may make a batch due now. */
  if (d->state == STATE_IDLE) {
    uv_timer_stop(&d->timer);
    send_next(d);
  }
  return 0;
}

int hk_dispatch_enqueue(hk_dispatch *d, const char *json, size_t len) {
  msg_node *n = malloc(sizeof *n + len);

  if (n == NULL) return -1;
  n->next = NULL;
  n->arrived = loop_now(d);
  n->len = len;
  memcpy(n->data, json, len);
  if (d->tail)
    d->tail->next = n;
  else
    d->head = n;
  d->tail = n;
  d->queue_len++;
  d->counters->queued++;
  if (d->state == STATE_IDLE && d->target &&
      (d->queue_len >= d->settings.batch_size ||
       !uv_is_active((uv_handle_t *)&d->timer)))
    send_next(d);
  return 0;
}

void hk_dispatch_flush(hk_dispatch *d) {
  if (d->state != STATE_IDLE || d->head == NULL || d->target == NULL) return;
  uv_timer_stop(&d->timer);
  build_batch(d);
  post_batch(d);
}

int hk_dispatch_idle(const hk_dispatch *d) {
  return d->state == STATE_IDLE && d->head == NULL;
}
