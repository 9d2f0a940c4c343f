/* What every transport reports for one send: delivered, worth retrying
 * (with an optional earliest time), or failed for good; and the interface
 * of the message transports (brokers), which send one message per event
 * and answer for each message on its own. */
#ifndef HOOKD_TRANSPORT_H
#define HOOKD_TRANSPORT_H

typedef enum hk_tx_status {
  HK_TX_OK = 0,
  HK_TX_RETRY = 1,
  HK_TX_FAIL = 2
} hk_tx_status;

typedef struct hk_tx_result {
  hk_tx_status status;
  long http_status;       /* 0 when there was no HTTP response */
  double retry_after_sec; /* > 0 when the peer asked for a wait */
  int too_large;          /* the peer refused the payload's size (413) */
  char reason[512];       /* for operators: status and a body snippet, or
                             the network error; never credentials */
} hk_tx_result;

typedef void (*hk_tx_done_cb)(void *ctx, const hk_tx_result *res);

#include <stddef.h>
#include <uv.h>

/* One setting of a transport, as text: numbers in decimal, booleans
 * "true"/"false", lists joined with ",", and map entries as
 * "name.key" (e.g. "properties.compression.type"). */
typedef struct hk_kv {
  const char *key;
  const char *value;
} hk_kv;

/* One message to publish. The transport copies what it keeps: the
 * pointers are valid only during the send call. */
typedef struct hk_tx_msg {
  const char *data; /* the message, a JSON object */
  size_t len;
  const char *route; /* queue name, routing key or topic for this message,
                        computed by the runtime; never NULL or "" */
  const char *key;   /* Kafka message key, or NULL for none */
  size_t key_len;
} hk_tx_msg;

/* The outcome of a send: results[i] is the outcome of message i. Runs
 * exactly once per send, on the loop thread, never inside the send call. */
typedef void (*hk_tx_batch_cb)(void *ctx, const hk_tx_result *results,
                               size_t n);

typedef struct hk_tx_target hk_tx_target;

/* The most sends a target takes in flight at once. */
#define HK_TX_SENDS_MAX 8

typedef struct hk_tx_ops {
  /* Publishes n messages in order, after those of earlier sends. Returns
   * 0, or -1 when the send could not even start (cb does not run then),
   * which includes HK_TX_SENDS_MAX sends already in flight. Sends are
   * answered in the order they were made. */
  int (*send)(hk_tx_target *t, const hk_tx_msg *msgs, size_t n,
              hk_tx_batch_cb cb, void *ctx);
  /* Drops the caller's reference. A send in flight still completes and
   * calls its callback (with its outcome, or HK_TX_RETRY and a reason if
   * the target was shut down first); the connection is closed after
   * pending work drains or a bounded wait, without blocking the loop. */
  void (*destroy)(hk_tx_target *t);
  /* Where messages go, for logs and dead letters, without credentials
   * (e.g. "amqp://127.0.0.1:5672/%2F exchange=events"). */
  const char *(*describe)(const hk_tx_target *t);
} hk_tx_ops;

/* Formats a message into err (when err is not NULL and errlen > 0). */
void hk_tx_errorf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Every concrete target starts with this. */
struct hk_tx_target {
  const hk_tx_ops *ops;
};

/* Creates a target for send type type ("rabbitmq_queue",
 * "rabbitmq_exchange" or "kafka") from its validated settings. The
 * connection is made in the background: a broker that is down is not an
 * error here; sends fail with HK_TX_RETRY until it is back. Returns NULL
 * with err only for settings the transport cannot use. */
hk_tx_target *hk_amqp_target_create(uv_loop_t *loop, const char *type,
                                    const hk_kv *kv, size_t n, char *err,
                                    size_t errlen);
hk_tx_target *hk_kafka_target_create(uv_loop_t *loop, const hk_kv *kv,
                                     size_t n, char *err, size_t errlen);

#endif
