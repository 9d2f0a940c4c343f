/* A RabbitMQ client for the integration tests, driven by commands on stdin.
 * Usage: amqp_tool PORT. It logs in to 127.0.0.1:PORT as guest/guest on
 * vhost "/" and keeps that connection.
 *
 * The first line on stdout is "ok" once connected ("error <why>" and exit
 * status 1 otherwise). Then one command per line; every command answers
 * with lines ending in a line "ok" (or "ok N") or "error <why>", where why
 * is the broker's reply text when the broker refused:
 *
 *   queue NAME DURABLE             declare a queue (DURABLE 0 or 1; never
 *                                  exclusive or auto-deleted)
 *   exchange NAME TYPE DURABLE     declare an exchange (TYPE direct, topic,
 *                                  fanout; never auto-deleted)
 *   bind QUEUE EXCHANGE KEY        bind an existing queue to an existing
 *                                  exchange with routing key KEY
 *   consume QUEUE N WAIT_MS        take up to N messages with basic.get,
 *                                  acknowledging each, until N were taken
 *                                  or WAIT_MS passed; one JSON object a
 *                                  line: {"routing_key","exchange",
 *                                  "content_type","delivery_mode","body"}
 *                                  (absent properties are null; the body
 *                                  is a JSON string), then "ok N"
 *   count QUEUE                    "ok N": messages ready in QUEUE (a
 *                                  passive declare: an error when the
 *                                  queue does not exist)
 *   delete QUEUE                   delete a queue with its messages
 *   quit                           exit (so does end of input)
 *
 * A command that loses the connection answers "error connection lost: ..."
 * and the next command connects again, so a test can go on after it
 * restarted the broker. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "../tool_lines.h"

#define RPC_TIMEOUT_SEC 10 /* no command waits on a silent broker longer */
#define GET_PAUSE_MS 20    /* between polls of an empty queue */

static int port;
static amqp_connection_state_t conn; /* NULL while disconnected */
static amqp_channel_t chan;          /* 0 while no channel is open */
static amqp_channel_t last_chan;

/* ---- output -------------------------------------------------------------- */

static void json_bytes(amqp_bytes_t b) { json_string(b.bytes, b.len); }

/* ---- connection ---------------------------------------------------------- */

static void drop_connection(void) {
  if (conn == NULL) return;
  amqp_destroy_connection(conn);
  conn = NULL;
  chan = 0;
}

/* Connects and logs in; returns 0, or -1 with why filled. */
static int connect_broker(char *why, size_t n) {
  struct timeval tv = {RPC_TIMEOUT_SEC, 0};
  amqp_socket_t *sock;
  amqp_rpc_reply_t r;
  int rc;

  conn = amqp_new_connection();
  if (conn == NULL || (sock = amqp_tcp_socket_new(conn)) == NULL) {
    snprintf(why, n, "out of memory");
    goto fail;
  }
  rc = amqp_socket_open_noblock(sock, "127.0.0.1", port, &tv);
  if (rc != AMQP_STATUS_OK) {
    snprintf(why, n, "cannot connect to 127.0.0.1:%d: %s", port,
             amqp_error_string2(rc));
    goto fail;
  }
  amqp_set_rpc_timeout(conn, &tv);
  /* No heartbeat: the tool sits idle while a test waits on hookd. */
  r = amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest",
                 "guest");
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return 0;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
    snprintf(why, n, "login failed: %s", amqp_error_string2(r.library_error));
  else
    snprintf(why, n, "login failed: refused by the broker");
fail:
  if (conn != NULL) amqp_destroy_connection(conn);
  conn = NULL;
  return -1;
}

/* Turns the last RPC's failure into text. A refusal that closed only the
 * channel is acknowledged so that the connection stays usable; anything
 * else drops the connection. */
static void rpc_error(char *why, size_t n) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
  amqp_channel_close_ok_t ch_ok = {0};
  amqp_connection_close_ok_t conn_ok = {0};

  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
      r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_t *m = r.reply.decoded;

    snprintf(why, n, "%.*s", (int)m->reply_text.len,
             (const char *)m->reply_text.bytes);
    amqp_send_method(conn, chan, AMQP_CHANNEL_CLOSE_OK_METHOD, &ch_ok);
    chan = 0;
    return;
  }
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
      r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    amqp_connection_close_t *m = r.reply.decoded;

    snprintf(why, n, "connection lost: %.*s", (int)m->reply_text.len,
             (const char *)m->reply_text.bytes);
    amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &conn_ok);
  } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
    snprintf(why, n, "connection lost: %s",
             amqp_error_string2(r.library_error));
  } else {
    snprintf(why, n, "connection lost: unexpected reply");
  }
  drop_connection();
}

/* Makes sure a connection with an open channel exists. Returns 0, or -1
 * with why filled. */
static int ensure_channel(char *why, size_t n) {
  if (conn == NULL && connect_broker(why, n) != 0) return -1;
  if (chan != 0) return 0;
  /* A new number each time keeps late frames of a closed channel away. */
  chan = (amqp_channel_t)(last_chan % 1000 + 1);
  last_chan = chan;
  if (amqp_channel_open(conn, chan) != NULL) return 0;
  rpc_error(why, n);
  chan = 0;
  return -1;
}

/* Answers a command whose RPC returned ok_ptr: "ok" when it is set. */
static void answer_rpc(const void *ok_ptr) {
  char why[512];

  if (ok_ptr != NULL) {
    reply("ok");
    return;
  }
  rpc_error(why, sizeof why);
  reply("error %s", why);
}

/* ---- commands ------------------------------------------------------------ */

/* Parses a whole decimal number; returns 0, or -1 when s is not one. */

static int parse_flag(const char *s, int *out) {
  long v;

  if (parse_long(s, &v) != 0 || (v != 0 && v != 1)) return -1;
  *out = (int)v;
  return 0;
}

static void cmd_queue(char **argv, int argc) {
  int durable;

  if (argc != 3 || parse_flag(argv[2], &durable) != 0) {
    reply("error usage: queue NAME DURABLE(0|1)");
    return;
  }
  answer_rpc(amqp_queue_declare(conn, chan, amqp_cstring_bytes(argv[1]), 0,
                                durable, 0, 0, amqp_empty_table));
}

static void cmd_exchange(char **argv, int argc) {
  int durable;

  if (argc != 4 || parse_flag(argv[3], &durable) != 0) {
    reply("error usage: exchange NAME TYPE DURABLE(0|1)");
    return;
  }
  answer_rpc(amqp_exchange_declare(conn, chan, amqp_cstring_bytes(argv[1]),
                                   amqp_cstring_bytes(argv[2]), 0, durable, 0,
                                   0, amqp_empty_table));
}

static void cmd_bind(char **argv, int argc) {
  if (argc != 4) {
    reply("error usage: bind QUEUE EXCHANGE KEY");
    return;
  }
  answer_rpc(amqp_queue_bind(conn, chan, amqp_cstring_bytes(argv[1]),
                             amqp_cstring_bytes(argv[2]),
                             amqp_cstring_bytes(argv[3]), amqp_empty_table));
}

static void cmd_count(char **argv, int argc) {
  amqp_queue_declare_ok_t *ok;
  char why[512];

  if (argc != 2) {
    reply("error usage: count QUEUE");
    return;
  }
  ok = amqp_queue_declare(conn, chan, amqp_cstring_bytes(argv[1]), 1, 0, 0, 0,
                          amqp_empty_table);
  if (ok != NULL) {
    reply("ok %u", (unsigned)ok->message_count);
    return;
  }
  rpc_error(why, sizeof why);
  reply("error %s", why);
}

static void cmd_delete(char **argv, int argc) {
  if (argc != 2) {
    reply("error usage: delete QUEUE");
    return;
  }
  answer_rpc(amqp_queue_delete(conn, chan, amqp_cstring_bytes(argv[1]), 0, 0));
}

/* ---- consume ------------------------------------------------------------- */

static void print_message(amqp_bytes_t key, amqp_bytes_t exchange,
                          const amqp_message_t *m) {
  const amqp_basic_properties_t *p = &m->properties;

  fputs("{\"routing_key\":", stdout);
  json_bytes(key);
  fputs(",\"exchange\":", stdout);
  json_bytes(exchange);
  fputs(",\"content_type\":", stdout);
  if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) json_bytes(p->content_type);
  else fputs("null", stdout);
  if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
    printf(",\"delivery_mode\":%u", (unsigned)p->delivery_mode);
  else fputs(",\"delivery_mode\":null", stdout);
  fputs(",\"body\":", stdout);
  json_bytes(m->body);
  fputs("}\n", stdout);
}

/* Takes one message of queue q. Returns 1 when one was printed and
 * acknowledged, 0 when the queue is empty, -1 with why filled. */
static int get_one(const char *q, char *why, size_t n) {
  amqp_rpc_reply_t r;
  amqp_basic_get_ok_t *got;
  amqp_bytes_t key = amqp_empty_bytes, exchange = amqp_empty_bytes;
  amqp_message_t msg;
  uint64_t tag;
  int rc = -1;

  amqp_maybe_release_buffers(conn);
  r = amqp_basic_get(conn, chan, amqp_cstring_bytes(q), 0);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) goto rpc_failed;
  if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) return 0;
  got = r.reply.decoded;
  /* Reading the content may reuse the memory the method was decoded in. */
  tag = got->delivery_tag;
  key = amqp_bytes_malloc_dup(got->routing_key);
  exchange = amqp_bytes_malloc_dup(got->exchange);
  r = amqp_read_message(conn, chan, &msg, 0);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) goto rpc_failed;
  print_message(key, exchange, &msg);
  amqp_destroy_message(&msg);
  if (amqp_basic_ack(conn, chan, tag, 0) != AMQP_STATUS_OK) {
    snprintf(why, n, "connection lost: basic.ack failed");
    drop_connection();
    goto cleanup;
  }
  rc = 1;
  goto cleanup;
rpc_failed:
  rpc_error(why, n);
cleanup:
  amqp_bytes_free(key);
  amqp_bytes_free(exchange);
  return rc;
}

static void cmd_consume(char **argv, int argc) {
  long max, wait_ms, got = 0;
  long long deadline;
  char why[512];
  int rc = 0;

  if (argc != 4 || parse_long(argv[2], &max) != 0 || max < 0 ||
      parse_long(argv[3], &wait_ms) != 0 || wait_ms < 0) {
    reply("error usage: consume QUEUE N WAIT_MS");
    return;
  }
  deadline = now_ms() + wait_ms;
  while (got < max) {
    rc = get_one(argv[1], why, sizeof why);
    if (rc < 0) break;
    if (rc > 0) got++;
    else if (now_ms() >= deadline) break;
    else nanosleep(&(struct timespec){0, GET_PAUSE_MS * 1000000L}, NULL);
  }
  if (rc < 0) reply("error %s (after %ld messages)", why, got);
  else reply("ok %ld", got);
}

/* ---- main ---------------------------------------------------------------- */

static const struct {
  const char *name;
  void (*run)(char **argv, int argc);
} commands[] = {
    {"queue", cmd_queue},     {"exchange", cmd_exchange},
    {"bind", cmd_bind},       {"consume", cmd_consume},
    {"count", cmd_count},     {"delete", cmd_delete},
};

/* Runs one command line; returns 0 to go on, 1 to quit. */
static int run_line(char *line) {
  char *argv[TOOL_MAX_ARGS], why[512];
  int argc = split_words(line, argv);

  if (argc == 0) return 0;
  if (strcmp(argv[0], "quit") == 0) return 1;
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp(argv[0], commands[i].name) != 0) continue;
    if (ensure_channel(why, sizeof why) != 0) reply("error %s", why);
    else commands[i].run(argv, argc);
    return 0;
  }
  reply("error unknown command %s", argv[0]);
  return 0;
}

int main(int argc, char **argv) {
  char line[4096], why[512];
  long p;

  /* A reader that went away must end us, not a signal mid-write. */
  signal(SIGPIPE, SIG_IGN);
  if (argc != 2 || parse_long(argv[1], &p) != 0 || p < 1 || p > 65535) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  port = (int)p;
  if (ensure_channel(why, sizeof why) != 0) {
    reply("error %s", why);
    return 1;
  }
  reply("ok");
  while (fgets(line, sizeof line, stdin) != NULL)
    if (run_line(line)) break;
  if (conn != NULL) {
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    drop_connection();
  }
  return 0;
}
