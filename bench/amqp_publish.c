/* The RabbitMQ side of bench/brokers.py without hookd: publishes N
 * persistent JSON messages of SIZE bytes to a durable queue through the
 * default exchange, with publisher confirms and mandatory routing like
 * hookd's transport, keeping at most WINDOW unconfirmed, and prints
 * messages per second from the first publish to the last confirm. It
 * shows what the broker itself can take on this machine.
 *
 *   gcc -O2 -o /tmp/amqp_publish bench/amqp_publish.c -lrabbitmq
 *   tests/rabbitmq/broker.sh start /tmp/rmq 5679
 *   /tmp/amqp_publish 5679 200000 4000 330 bench
 *   tests/rabbitmq/broker.sh stop /tmp/rmq 5679
 *
 * Usage: amqp_publish PORT N WINDOW SIZE QUEUE [ARG=VALUE], where the
 * optional queue argument (e.g. x-queue-mode=lazy, x-queue-type=quorum)
 * is a string, or a number when VALUE is all digits. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static double now_sec(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One queue argument from "name=value". */
static amqp_table_t queue_args(char *spec, amqp_table_entry_t *e) {
  amqp_table_t t = amqp_empty_table;
  char *eq = spec ? strchr(spec, '=') : NULL;

  if (eq == NULL) return t;
  *eq = '\0';
  e->key = amqp_cstring_bytes(spec);
  if (strspn(eq + 1, "0123456789") == strlen(eq + 1)) {
    e->value.kind = AMQP_FIELD_KIND_I32;
    e->value.value.i32 = atoi(eq + 1);
  } else {
    e->value.kind = AMQP_FIELD_KIND_UTF8;
    e->value.value.bytes = amqp_cstring_bytes(eq + 1);
  }
  t.num_entries = 1;
  t.entries = e;
  return t;
}

static int open_channel(amqp_connection_state_t st, int port,
                        const char *queue, amqp_table_t args) {
  amqp_socket_t *s = amqp_tcp_socket_new(st);

  if (s == NULL || amqp_socket_open(s, "127.0.0.1", port) != 0) return -1;
  if (amqp_login(st, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest",
                 "guest").reply_type != AMQP_RESPONSE_NORMAL)
    return -1;
  if (amqp_channel_open(st, 1) == NULL || amqp_confirm_select(st, 1) == NULL)
    return -1;
  return amqp_queue_declare(st, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0,
                            args) != NULL ? 0 : -1;
}

/* Marks what a basic.ack or basic.nack confirms; returns how many. */
static long settle(char *done, long sent, long low, uint64_t tag,
                   int multiple) {
  long n = 0;

  for (long i = multiple ? low : (long)tag; i <= (long)tag && i <= sent; i++)
    if (!done[i]) {
      done[i] = 1;
      n++;
    }
  return n;
}

/* Publishes while fewer than window are unconfirmed, then reads one
 * frame. Returns the messages confirmed, or -1 on a lost connection. */
static long run(amqp_connection_state_t st, long n, long window,
                amqp_bytes_t body, const char *queue, long *nacked) {
  amqp_basic_properties_t p = {0};
  char *done = calloc((size_t)n + 1, 1);
  long sent = 0, confirmed = 0, low = 1;

  p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  p.content_type = amqp_cstring_bytes("application/json");
  p.delivery_mode = 2;
  while (done != NULL && confirmed < n) {
    struct timeval tv = {30, 0};
    amqp_frame_t f;

    for (; sent < n && sent - confirmed < window; sent++)
      if (amqp_basic_publish(st, 1, amqp_empty_bytes,
                             amqp_cstring_bytes(queue), 1, 0, &p, body) != 0)
        goto lost;
    if (amqp_simple_wait_frame_noblock(st, &f, &tv) != AMQP_STATUS_OK)
      goto lost;
    if (f.frame_type == AMQP_FRAME_METHOD &&
        f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
      amqp_basic_ack_t *a = f.payload.method.decoded;
      confirmed += settle(done, sent, low, a->delivery_tag, a->multiple);
    } else if (f.frame_type == AMQP_FRAME_METHOD &&
               f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
      amqp_basic_nack_t *a = f.payload.method.decoded;
      long k = settle(done, sent, low, a->delivery_tag, a->multiple);
      confirmed += k;
      *nacked += k;
    }
    while (low <= sent && done[low]) low++;
    amqp_maybe_release_buffers(st);
  }
  free(done);
  return done != NULL ? confirmed : -1;
lost:
  free(done);
  return -1;
}

int main(int argc, char **argv) {
  amqp_connection_state_t st = amqp_new_connection();
  amqp_table_entry_t e;
  long n, window, size, nacked = 0, confirmed;
  char *text;
  double start;

  if (argc < 6) {
    fprintf(stderr, "usage: %s PORT N WINDOW SIZE QUEUE [ARG=VALUE]\n",
            argv[0]);
    return 2;
  }
  n = atol(argv[2]);
  window = atol(argv[3]);
  size = atol(argv[4]);
  if (n <= 0 || window <= 0 || size < 2 || (text = malloc(size)) == NULL)
    return 2;
  memset(text, ' ', (size_t)size);
  text[0] = '{';
  text[size - 1] = '}';
  if (open_channel(st, atoi(argv[1]), argv[5],
                   queue_args(argc > 6 ? argv[6] : NULL, &e)) != 0) {
    fprintf(stderr, "cannot connect, open a channel or declare %s\n",
            argv[5]);
    return 1;
  }
  start = now_sec();
  confirmed = run(st, n, window, (amqp_bytes_t){(size_t)size, text},
                  argv[5], &nacked);
  if (confirmed < 0) {
    fprintf(stderr, "connection lost\n");
    return 1;
  }
  printf("%ld messages of %ld bytes, window %ld: %.2f s, %.0f messages/s, "
         "%ld nacked\n", n, size, window, now_sec() - start,
         n / (now_sec() - start), nacked);
  amqp_connection_close(st, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(st);
  free(text);
  return 0;
}
