/* Kafka transport: one librdkafka idempotent producer per target. A send
 * produces a copy of every message; librdkafka's delivery reports decide
 * each message's outcome. Several sends may be in flight; each is answered
 * once all its reports are in and every earlier send was answered, so the
 * caller hears of them in order. The reports are served on the loop thread:
 * librdkafka writes to a pipe when its empty main queue gets an entry, a
 * uv_poll watches the pipe, and a slow timer polls as a safety net while
 * a send is in flight. Closing a producer (destroy, or replacing one that
 * hit a fatal error) waits a bounded time for its reports on a thread of
 * its own, so the loop never blocks. */
#include "transport/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

#define HK_KAFKA_FLUSH_MS 5000  /* closing: wait this long for reports */
#define HK_KAFKA_PURGE_MS 1000  /* then this long for the purge's reports */
#define HK_KAFKA_TICK_MS 50     /* safety poll while a send is in flight */
#define HK_KAFKA_SERVE_ROUNDS 8 /* rd_kafka_poll rounds per wake-up */
#define HK_KAFKA_MIN_SECRET 4   /* shorter values are not scrubbed */
#define HK_KAFKA_PROP "properties."

/* One send in flight: its callback and a result per message. */
typedef struct kafka_send {
  struct kafka_send *next; /* the next send made */
  hk_tx_batch_cb cb;
  void *ctx;
  size_t n;
  size_t pending;     /* produced and still without a delivery report */
  hk_tx_result res[]; /* RETRY until the message's report says otherwise */
} kafka_send;

/* One librdkafka producer and the loop handles that serve it. It outlives
 * its target while it closes. */
typedef struct kafka_prod {
  uv_loop_t *loop;
  rd_kafka_t *rk;
  char *desc;         /* the target's description, for logs */
  int wake[2];        /* librdkafka writes to [1]; uv_poll reads [0] */
  uv_poll_t poll;
  uv_timer_t tick;
  uv_async_t retired; /* the closing thread is done */
  uv_thread_t thread;
  int threaded;       /* thread was started (else closed inline) */
  int handles;        /* uv handles initialised and not yet closed */
  size_t unfinished;  /* messages left when the bounded wait ran out */
  kafka_send *sends;  /* in flight, oldest first; owned by the closing
                         thread while it runs */
  kafka_send *last;   /* the newest of them */
  size_t n_sends;
  int retiring;       /* handed to the closing thread */
} kafka_prod;

typedef struct kafka_target {
  hk_tx_target base;
  uv_loop_t *loop;
  rd_kafka_conf_t *conf; /* template: each producer gets a copy */
  kafka_prod *kp;
  char *topic;           /* "" when every route names its topic */
  char *desc;
} kafka_target;

/* Properties whose change would break the contract with the dispatcher:
 * every message needs its own report, on the main queue, outside a
 * transaction. */
static const char *const reserved_props[] = {
    "delivery.report.only.error", "enabled_events", "log.queue",
    "transactional.id"};

/* ---- results ----------------------------------------------------------- */


/* Errors that no retry can fix for this message: its size, its topic, its
 * content, or the permission to write it. Everything else (timeouts,
 * brokers away, leaders moving, too few replicas, purges) is retried. */
static int error_is_permanent(rd_kafka_resp_err_t err) {
  switch (err) {
  case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
  case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
  case RD_KAFKA_RESP_ERR_INVALID_MSG:
  case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
  case RD_KAFKA_RESP_ERR_INVALID_RECORD:
  case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
  case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
  case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
  case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
  case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
  case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
  case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
  case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
  case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
  case RD_KAFKA_RESP_ERR__BAD_MSG:
  case RD_KAFKA_RESP_ERR__INVALID_ARG:
    return 1;
  default:
    return 0;
  }
}

/* The reason names the error code and the topic, nothing from the
 * configuration, so it cannot carry credentials. */
static void result_error(hk_tx_result *res, rd_kafka_resp_err_t err,
                         const char *topic) {
  memset(res, 0, sizeof *res);
  res->status = error_is_permanent(err) ? HK_TX_FAIL : HK_TX_RETRY;
  res->too_large = err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
                   err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
  snprintf(res->reason, sizeof res->reason, "kafka error=%s: %s topic=%s",
           rd_kafka_err2name(err), rd_kafka_err2str(err), topic);
}

static void result_report(hk_tx_result *res, const rd_kafka_message_t *m) {
  const char *topic = rd_kafka_topic_name(m->rkt);

  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    result_error(res, m->err, topic);
    return;
  }
  memset(res, 0, sizeof *res);
  res->status = HK_TX_OK;
  snprintf(res->reason, sizeof res->reason,
           "kafka topic=%s partition=%d offset=%lld", topic,
           (int)m->partition, (long long)m->offset);
}

/* Every result starts as RETRY without a reason: each one gets its
 * report, or the reason of a close (see send_closed). */
static kafka_send *send_new(size_t n, hk_tx_batch_cb cb, void *ctx) {
  kafka_send *s = calloc(1, sizeof *s + n * sizeof s->res[0]);

  if (s == NULL) return NULL;
  s->cb = cb;
  s->ctx = ctx;
  s->n = n;
  for (size_t i = 0; i < n; i++) s->res[i].status = HK_TX_RETRY;
  return s;
}

/* The producer closed: the messages that never got a report say so. */
static void send_closed(kafka_send *s) {
  for (size_t i = 0; i < s->n; i++)
    if (s->res[i].reason[0] == '\0')
      snprintf(s->res[i].reason, sizeof s->res[i].reason,
               "kafka error=closed: the producer closed before the broker "
               "answered");
}

/* ---- librdkafka callbacks (loop thread, or the closing thread) -------- */

/* The send whose results hold res, or NULL. Few sends are in flight. */
static kafka_send *send_of(const kafka_prod *kp, const hk_tx_result *res) {
  for (kafka_send *s = kp->sends; s != NULL; s = s->next)
    if (res >= s->res && res < s->res + s->n) return s;
  return NULL;
}

/* Each message's opaque is its result slot. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque) {
  kafka_prod *kp = opaque;
  hk_tx_result *res = m->_private;
  kafka_send *s = send_of(kp, res);

  if (s == NULL || s->pending == 0) {
    hk_error("kafka", "dest=%s msg=\"delivery report without a send\"",
             kp->desc);
    return;
  }
  result_report(res, m);
  s->pending--;
}

static void on_error(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque) {
  kafka_prod *kp = opaque;
  char why[512], esc[600];

  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    rd_kafka_fatal_error(rk, why, sizeof why);
    hk_error("kafka", "dest=%s fatal=1 msg=\"the producer will be replaced\" "
             "reason=\"%s\"", kp->desc, hk_log_escape(esc, sizeof esc, why));
    return;
  }
  /* A lost connection is already a warning from librdkafka's log. */
  hk_log(err == RD_KAFKA_RESP_ERR__TRANSPORT ? HK_LOG_DEBUG : HK_LOG_WARN,
         "kafka", "dest=%s error=%s reason=\"%s\"", kp->desc,
         rd_kafka_err2name((rd_kafka_resp_err_t)err),
         hk_log_escape(esc, sizeof esc, reason));
}

/* librdkafka logs from its own threads; hk_log_write is one fwrite. Its
 * warnings and errors are ours; the rest is for debugging. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf) {
  kafka_prod *kp = rd_kafka_opaque(rk);
  const char *dest = kp != NULL ? kp->desc : "-";
  char esc[1024];

  if (level <= LOG_WARNING)
    hk_warn("kafka", "dest=%s facility=%s msg=\"%s\"", dest, fac,
            hk_log_escape(esc, sizeof esc, buf));
  else
    hk_debug("kafka", "dest=%s facility=%s msg=\"%s\"", dest, fac,
             hk_log_escape(esc, sizeof esc, buf));
}

/* ---- settings ---------------------------------------------------------- */

/* librdkafka may quote a refused value, which could be a secret: it is
 * replaced by "***" (values too short to be one are left alone). */
static void scrub(char *s, const char *value) {
  size_t n = strlen(value);
  char *hit;

  if (n < HK_KAFKA_MIN_SECRET) return;
  while ((hit = strstr(s, value)) != NULL) {
    memcpy(hit, "***", 3);
    memmove(hit + 3, hit + n, strlen(hit + n) + 1);
  }
}

static int conf_put(rd_kafka_conf_t *conf, const char *name,
                    const char *value, char *err, size_t errlen) {
  char why[512];

  if (rd_kafka_conf_set(conf, name, value, why, sizeof why) ==
      RD_KAFKA_CONF_OK)
    return 0;
  scrub(why, value);
  hk_tx_errorf(err, errlen, "kafka property \"%s\" refused: %s", name, why);
  return -1;
}

static int conf_property(rd_kafka_conf_t *conf, const char *name,
                         const char *value, char *err, size_t errlen) {
  size_t n = sizeof reserved_props / sizeof reserved_props[0];

  for (size_t i = 0; i < n; i++)
    if (strcmp(name, reserved_props[i]) == 0) {
      hk_tx_errorf(err, errlen, "kafka property \"%s\" refused: hookd needs "
              "its own value", name);
      return -1;
    }
  /* A report from a producer that does not wait for the broker is not a
   * confirmation: only acks=all (or -1) counts a message as delivered. */
  if (strcmp(name, "acks") == 0 && strcmp(value, "all") != 0 &&
      strcmp(value, "-1") != 0) {
    hk_tx_errorf(err, errlen, "kafka property \"acks\" must be \"all\": "
                 "a message counts as delivered only when every in-sync "
                 "replica has it");
    return -1;
  }
  return conf_put(conf, name, value, err, errlen);
}

/* Finds the settings the transport reads itself; others are ignored. */
static void settings_read(const hk_kv *kv, size_t n, const char **brokers,
                          const char **topic) {
  *brokers = NULL;
  *topic = "";
  for (size_t i = 0; i < n; i++) {
    if (kv[i].key == NULL || kv[i].value == NULL) continue;
    if (strcmp(kv[i].key, "brokers") == 0) *brokers = kv[i].value;
    else if (strcmp(kv[i].key, "topic") == 0) *topic = kv[i].value;
  }
}

/* Our defaults first, so that properties override them. A send hands
 * librdkafka a whole round at once, so lingering for more messages only
 * delays its reports: 1 ms instead of librdkafka's 5 doubles what rounds
 * of 100 carry. */
static int conf_defaults(rd_kafka_conf_t *conf, const char *brokers,
                         char *err, size_t errlen) {
  static const char *const defaults[][2] = {
      {"acks", "all"},
      {"enable.idempotence", "true"},
      {"message.timeout.ms", "30000"},
      {"linger.ms", "1"},
      {"client.id", "hookd"},
  };
  size_t n = sizeof defaults / sizeof defaults[0];

  for (size_t i = 0; i < n; i++)
    if (conf_put(conf, defaults[i][0], defaults[i][1], err, errlen) != 0)
      return -1;
  return conf_put(conf, "bootstrap.servers", brokers, err, errlen);
}

static rd_kafka_conf_t *conf_build(const hk_kv *kv, size_t n,
                                   const char *brokers, char *err,
                                   size_t errlen) {
  size_t plen = strlen(HK_KAFKA_PROP);
  rd_kafka_conf_t *conf = rd_kafka_conf_new();

  if (conf == NULL) {
    hk_tx_errorf(err, errlen, "kafka: out of memory");
    return NULL;
  }
  if (conf_defaults(conf, brokers, err, errlen) != 0) goto fail;
  for (size_t i = 0; i < n; i++) {
    if (kv[i].key == NULL || kv[i].value == NULL ||
        strncmp(kv[i].key, HK_KAFKA_PROP, plen) != 0)
      continue;
    if (conf_property(conf, kv[i].key + plen, kv[i].value, err, errlen) != 0)
      goto fail;
  }
  /* After the properties, so that none of them can replace these. */
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_conf_set_error_cb(conf, on_error);
  rd_kafka_conf_set_log_cb(conf, on_log);
  return conf;
fail:
  rd_kafka_conf_destroy(conf);
  return NULL;
}

/* ---- producers --------------------------------------------------------- */

static void prod_free(kafka_prod *kp) {
  if (kp->wake[0] >= 0) close(kp->wake[0]);
  if (kp->wake[1] >= 0) close(kp->wake[1]);
  free(kp->desc);
  free(kp);
}

static void on_closed(uv_handle_t *h) {
  kafka_prod *kp = h->data;

  if (--kp->handles == 0) prod_free(kp);
}

static kafka_send *sends_pop(kafka_prod *kp) {
  kafka_send *s = kp->sends;

  kp->sends = s->next;
  if (kp->sends == NULL) kp->last = NULL;
  kp->n_sends--;
  return s;
}

/* Answers the oldest sends whose every message has its report, in order.
 * A callback may send again, or destroy the target (which retires the
 * producer: the sends left are then the closing thread's). */
static void sends_finish(kafka_prod *kp) {
  while (!kp->retiring && kp->sends != NULL && kp->sends->pending == 0) {
    kafka_send *s = sends_pop(kp);

    if (kp->sends == NULL) uv_timer_stop(&kp->tick);
    s->cb(s->ctx, s->res, s->n);
    free(s);
  }
}

/* Serves what librdkafka queued for us (delivery reports, errors); ends
 * the sends whose every message has its report. */
static void prod_serve(kafka_prod *kp) {
  for (int i = 0; i < HK_KAFKA_SERVE_ROUNDS; i++)
    if (rd_kafka_poll(kp->rk, 0) == 0) break;
  sends_finish(kp);
}

static void on_wake(uv_poll_t *h, int status, int events) {
  kafka_prod *kp = h->data;
  char buf[64];

  /* Drained before serving: librdkafka writes again only once its queue
   * went empty, which serving does. */
  while (read(kp->wake[0], buf, sizeof buf) > 0) continue;
  prod_serve(kp);
}

static void on_tick(uv_timer_t *h) { prod_serve(h->data); }

static void on_retired(uv_async_t *h) {
  kafka_prod *kp = h->data;

  if (kp->threaded) uv_thread_join(&kp->thread);
  if (kp->unfinished > 0)
    hk_warn("kafka", "dest=%s msg=\"closed before every report\" "
            "unfinished=%zu wait_ms=%d", kp->desc, kp->unfinished,
            HK_KAFKA_FLUSH_MS);
  else
    hk_debug("kafka", "dest=%s msg=\"producer closed\"", kp->desc);
  uv_close((uv_handle_t *)h, on_closed);
  while (kp->sends != NULL) { /* in order, whatever their reports said */
    kafka_send *s = sends_pop(kp);

    send_closed(s);
    s->cb(s->ctx, s->res, s->n);
    free(s);
  }
}

/* Runs off the loop: waits a bounded time for the reports of what is in
 * flight, purges the rest (their reports say RETRY), then closes. */
static void retire_main(void *arg) {
  kafka_prod *kp = arg;

  if (rd_kafka_flush(kp->rk, HK_KAFKA_FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    kp->unfinished = (size_t)rd_kafka_outq_len(kp->rk);
    rd_kafka_purge(kp->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(kp->rk, HK_KAFKA_PURGE_MS);
  }
  rd_kafka_destroy(kp->rk);
  kp->rk = NULL;
  uv_async_send(&kp->retired);
}

/* Hands the producer (and its sends, if any) to a closing thread. From
 * here on the loop thread touches neither until on_retired. */
static void prod_retire(kafka_prod *kp) {
  kp->retiring = 1;
  uv_close((uv_handle_t *)&kp->poll, on_closed);
  uv_close((uv_handle_t *)&kp->tick, on_closed);
  uv_ref((uv_handle_t *)&kp->retired); /* the loop waits for the thread */
  if (uv_thread_create(&kp->thread, retire_main, kp) == 0) {
    kp->threaded = 1;
    return;
  }
  hk_error("kafka", "dest=%s msg=\"no thread to close the producer, "
           "closing on the loop\"", kp->desc);
  retire_main(kp);
}

/* The loop handles; each one initialised counts in kp->handles. */
static int prod_watch(kafka_prod *kp) {
  rd_kafka_queue_t *q;

  kp->poll.data = kp->tick.data = kp->retired.data = kp;
  if (uv_timer_init(kp->loop, &kp->tick) != 0) return -1;
  kp->handles++;
  if (uv_async_init(kp->loop, &kp->retired, on_retired) != 0) return -1;
  kp->handles++;
  uv_unref((uv_handle_t *)&kp->retired);
  if (uv_poll_init(kp->loop, &kp->poll, kp->wake[0]) != 0) return -1;
  kp->handles++;
  /* An idle producer must not keep the loop running. */
  uv_unref((uv_handle_t *)&kp->poll);
  if (uv_poll_start(&kp->poll, UV_READABLE, on_wake) != 0) return -1;
  q = rd_kafka_queue_get_main(kp->rk);
  rd_kafka_queue_io_event_enable(q, kp->wake[1], "1", 1);
  rd_kafka_queue_destroy(q);
  return 0;
}

/* Undoes a producer that never served a message. prod_watch initialises
 * tick, retired and poll in that order, so the count says which exist. */
static void prod_abandon(kafka_prod *kp) {
  int n = kp->handles;

  if (kp->rk != NULL) rd_kafka_destroy(kp->rk);
  kp->rk = NULL;
  if (n == 0) {
    prod_free(kp);
    return;
  }
  uv_close((uv_handle_t *)&kp->tick, on_closed);
  if (n >= 2) uv_close((uv_handle_t *)&kp->retired, on_closed);
  if (n >= 3) uv_close((uv_handle_t *)&kp->poll, on_closed);
}

static kafka_prod *prod_new(uv_loop_t *loop, const rd_kafka_conf_t *tmpl,
                            const char *desc, char *err, size_t errlen) {
  kafka_prod *kp = calloc(1, sizeof *kp);
  rd_kafka_conf_t *conf;
  char why[512];

  if (kp == NULL) goto oom;
  kp->wake[0] = kp->wake[1] = -1;
  kp->loop = loop;
  if ((kp->desc = strdup(desc)) == NULL) goto oom;
  if (pipe2(kp->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
    hk_tx_errorf(err, errlen, "kafka: no pipe: %s", strerror(errno));
    goto fail;
  }
  if ((conf = rd_kafka_conf_dup(tmpl)) == NULL) goto oom;
  rd_kafka_conf_set_opaque(conf, kp);
  kp->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
  if (kp->rk == NULL) {
    rd_kafka_conf_destroy(conf);
    hk_tx_errorf(err, errlen, "kafka producer refused its settings: %s", why);
    goto fail;
  }
  if (prod_watch(kp) != 0) {
    hk_tx_errorf(err, errlen, "kafka: cannot watch the producer's queue");
    goto fail;
  }
  return kp;
oom:
  hk_tx_errorf(err, errlen, "kafka: out of memory");
fail:
  if (kp != NULL) prod_abandon(kp);
  return NULL;
}

/* A producer with a fatal error (possible with idempotence) refuses every
 * message for good: the next send gets a fresh one. Not while sends are
 * in flight: the new producer could answer before the old one, out of
 * order; those sends fail and are retried, and the retry renews. */
static int prod_renew_if_fatal(kafka_target *t) {
  char why[512], err[512];
  kafka_prod *kp;

  if (t->kp->sends != NULL ||
      rd_kafka_fatal_error(t->kp->rk, why, sizeof why) ==
      RD_KAFKA_RESP_ERR_NO_ERROR)
    return 0;
  kp = prod_new(t->loop, t->conf, t->desc, err, sizeof err);
  if (kp == NULL) {
    hk_error("kafka", "dest=%s msg=\"cannot replace the producer\" "
             "reason=\"%s\"", t->desc, err);
    return -1;
  }
  hk_warn("kafka", "dest=%s msg=\"producer replaced after a fatal error\"",
          t->desc);
  prod_retire(t->kp);
  t->kp = kp;
  return 0;
}

/* ---- the transport ----------------------------------------------------- */

static rd_kafka_resp_err_t produce_one(kafka_prod *kp, const hk_tx_msg *m,
                                       const char *topic, hk_tx_result *res) {
  size_t key_len = m->key != NULL ? m->key_len : 0;

  /* librdkafka's macros do not parenthesise their arguments. */
  return rd_kafka_producev(
      kp->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(m->key, key_len),
      RD_KAFKA_V_VALUE((void *)m->data, m->len),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_OPAQUE(res), RD_KAFKA_V_END);
}

/* Produces message i, polling once when the local queue is full. */
static rd_kafka_resp_err_t produce_at(kafka_prod *kp, const hk_tx_msg *m,
                                      const char *topic, hk_tx_result *res) {
  rd_kafka_resp_err_t err = produce_one(kp, m, topic, res);

  if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return err;
  /* Reports served here only record results: the send is not finished
   * inside the send call. */
  rd_kafka_poll(kp->rk, 0);
  return produce_one(kp, m, topic, res);
}

/* Produces in order. A message refused for good is skipped; one refused
 * for now stops the send there, so that the later messages (maybe with
 * the same key) do not overtake it: they are all retried. */
static void produce_all(kafka_prod *kp, kafka_send *s, const hk_tx_msg *msgs,
                        const char *dflt) {
  for (size_t i = 0; i < s->n; i++) {
    const char *topic = msgs[i].route != NULL && *msgs[i].route
                            ? msgs[i].route : dflt;
    rd_kafka_resp_err_t err;

    if (*topic == '\0') {
      result_error(&s->res[i], RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC, "\"\"");
      continue;
    }
    err = produce_at(kp, &msgs[i], topic, &s->res[i]);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      s->pending++;
      continue;
    }
    result_error(&s->res[i], err, topic);
    if (s->res[i].status == HK_TX_RETRY) {
      for (size_t j = i + 1; j < s->n; j++) s->res[j] = s->res[i];
      return;
    }
  }
}

static int kafka_send_msgs(hk_tx_target *base, const hk_tx_msg *msgs,
                           size_t n, hk_tx_batch_cb cb, void *ctx) {
  kafka_target *t = (kafka_target *)base;
  kafka_send *s;

  if (t->kp == NULL || t->kp->n_sends >= HK_TX_SENDS_MAX || cb == NULL)
    return -1;
  if (prod_renew_if_fatal(t) != 0) return -1;
  if ((s = send_new(n, cb, ctx)) == NULL) return -1;
  /* Listed before producing: a report served while the local queue is
   * full must find its send. */
  if (t->kp->last != NULL) t->kp->last->next = s;
  else t->kp->sends = s;
  t->kp->last = s;
  t->kp->n_sends++;
  produce_all(t->kp, s, msgs, t->topic);
  /* The first tick also ends a send whose messages all failed at once. */
  uv_timer_start(&t->kp->tick, on_tick, 0, HK_KAFKA_TICK_MS);
  return 0;
}

static void kafka_destroy(hk_tx_target *base) {
  kafka_target *t = (kafka_target *)base;

  if (t == NULL) return;
  if (t->kp != NULL) prod_retire(t->kp);
  rd_kafka_conf_destroy(t->conf);
  free(t->topic);
  free(t->desc);
  free(t);
}

static const char *kafka_describe(const hk_tx_target *base) {
  return ((const kafka_target *)base)->desc;
}

static const hk_tx_ops kafka_ops = {
    .send = kafka_send_msgs,
    .destroy = kafka_destroy,
    .describe = kafka_describe,
};

static int target_names(kafka_target *t, const char *brokers,
                        const char *topic) {
  t->topic = strdup(topic);
  if (asprintf(&t->desc, "kafka://%s topic=%s", brokers,
               *topic ? topic : "<event type>") < 0)
    t->desc = NULL;
  return t->topic != NULL && t->desc != NULL ? 0 : -1;
}

hk_tx_target *hk_kafka_target_create(uv_loop_t *loop, const hk_kv *kv,
                                     size_t n, char *err, size_t errlen) {
  kafka_target *t = calloc(1, sizeof *t);
  const char *brokers, *topic;

  if (t == NULL) goto oom;
  t->base.ops = &kafka_ops;
  t->loop = loop;
  settings_read(kv, n, &brokers, &topic);
  if (brokers == NULL || *brokers == '\0') {
    hk_tx_errorf(err, errlen, "kafka: brokers is missing");
    goto fail;
  }
  if (target_names(t, brokers, topic) != 0) goto oom;
  if ((t->conf = conf_build(kv, n, brokers, err, errlen)) == NULL) goto fail;
  if ((t->kp = prod_new(loop, t->conf, t->desc, err, errlen)) == NULL)
    goto fail;
  hk_info("kafka", "dest=%s msg=\"producer started\"", t->desc);
  return &t->base;
oom:
  hk_tx_errorf(err, errlen, "kafka: out of memory");
fail:
  if (t != NULL) {
    if (t->conf != NULL) rd_kafka_conf_destroy(t->conf);
    free(t->topic);
    free(t->desc);
    free(t);
  }
  return NULL;
}
