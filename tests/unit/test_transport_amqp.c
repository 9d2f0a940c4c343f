/* Tests of the RabbitMQ transport (core/transport/amqp.c) against a private
 * broker this program starts with tests/rabbitmq/broker.sh on free
 * loopback ports: publish and consume, queues per route, direct and topic
 * exchanges, unroutable messages, declare conflicts, quorum queues (and
 * a quorum declare refused on a classic queue), a 5 MB body, the
 * broker's size limit, refused routes, descriptions without secrets, TLS,
 * heartbeats while idle, shutdown with a send in flight, a hung broker
 * and a broker restart in the middle of a stream. The test plays the
 * dispatcher: it resends what came back RETRY. It is skipped only when
 * rabbitmq-server is not installed. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "test_util.h"
#include "transport/transport.h"

#define MAX_MSGS 64

static uv_loop_t *loop;
static uv_timer_t tick; /* keeps UV_RUN_ONCE from sleeping for long */
static char broker_dir[256];
static char broker_script[1024];
static int broker_port;
static char port_text[16];
static char tls_port_text[16], ca_file[600]; /* amqps, when openssl works */

static amqp_connection_state_t adm; /* the test's own connection */
static amqp_channel_t adm_ch, adm_next_ch;

/* ---- helpers: time, ports, the broker --------------------------------- */

static double now_sec(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int free_port(void) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
    port = ntohs(sa.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

/* Starts broker.sh cmd (start|stop) for our node in a child process,
 * its output in <dir>/<cmd>.out. Returns the child's pid or -1. Only
 * async-signal-safe calls after fork: transport threads are running. */
static pid_t broker_spawn(const char *cmd) {
  char out[512];
  pid_t pid;
  int fd;

  snprintf(out, sizeof out, "%s/%s.out", broker_dir, cmd);
  pid = fork();
  if (pid != 0) return pid;
  fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(1);
  execlp("bash", "bash", broker_script, cmd, broker_dir, port_text,
         (char *)NULL);
  _exit(127);
}

/* Waits for a broker.sh child; returns its exit status (its output is
 * shown when it failed). */
static int broker_wait(pid_t pid, const char *cmd) {
  char line[600];
  int st = 0;

  if (pid < 0 || waitpid(pid, &st, 0) != pid) return -1;
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
  snprintf(line, sizeof line, "cat '%s/%s.out' >&2", broker_dir, cmd);
  if (system(line) != 0) fprintf(stderr, "(no output)\n");
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int broker(const char *cmd) { return broker_wait(broker_spawn(cmd), cmd); }

/* The pid in <dir>/<name>, or 0. */
static int pid_file(const char *name) {
  char path[512];
  FILE *f;
  int pid = 0;

  snprintf(path, sizeof path, "%s/%s", broker_dir, name);
  f = fopen(path, "r");
  if (f == NULL) return 0;
  if (fscanf(f, "%d", &pid) != 1) pid = 0;
  fclose(f);
  return pid;
}

/* Whether the node from our last start is still running. */
static int broker_alive(void) {
  int pid = pid_file("server.pid");

  return pid > 0 && kill(pid, 0) == 0;
}

/* Occurrences of needle in the node's log. */
static int log_count(const char *needle) {
  char path[512], *data, *p;
  size_t len;
  int n = 0;
  FILE *f;
  long size;

  snprintf(path, sizeof path, "%s/log/node.log", broker_dir);
  f = fopen(path, "rb");
  if (f == NULL) return 0;
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 0, SEEK_SET);
  data = malloc((size_t)size + 1);
  len = data ? fread(data, 1, (size_t)size, f) : 0;
  fclose(f);
  if (data == NULL) return 0;
  data[len] = '\0';
  for (p = data; (p = strstr(p, needle)) != NULL; p++) n++;
  free(data);
  return n;
}

static void run_for(double sec) {
  double end = now_sec() + sec;

  while (now_sec() < end) uv_run(loop, UV_RUN_ONCE);
}

/* log_count once it has stayed the same for half a second (the node
 * logs a connection a moment after accepting it). */
static int log_settled(const char *needle) {
  int n = log_count(needle), last = -1;

  for (int i = 0; i < 20 && n != last; i++) {
    last = n;
    run_for(0.5);
    n = log_count(needle);
  }
  return n;
}

static double last_tick, max_tick_gap; /* how freely the loop runs */

static void tick_cb(uv_timer_t *t) {
  double now = now_sec();

  (void)t;
  if (last_tick > 0 && now - last_tick > max_tick_gap)
    max_tick_gap = now - last_tick;
  last_tick = now;
}

/* ---- the test's own AMQP connection ----------------------------------- */

static void adm_close(void) {
  if (adm == NULL) return;
  amqp_connection_close(adm, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(adm);
  adm = NULL;
}

static int adm_open(void) {
  amqp_socket_t *s;
  amqp_rpc_reply_t r;

  adm_close();
  adm = amqp_new_connection();
  s = amqp_tcp_socket_new(adm);
  if (s == NULL || amqp_socket_open(s, "127.0.0.1", broker_port) != 0)
    goto fail;
  r = amqp_login(adm, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest",
                 "guest");
  if (r.reply_type != AMQP_RESPONSE_NORMAL) goto fail;
  adm_ch = 0;
  return 0;
fail:
  amqp_destroy_connection(adm);
  adm = NULL;
  return -1;
}

/* The admin channel: opened on first use and again after a refusal. */
static amqp_channel_t adm_channel(void) {
  if (adm_ch == 0) {
    adm_next_ch++;
    if (amqp_channel_open(adm, adm_next_ch) == NULL) return 0;
    adm_ch = adm_next_ch;
  }
  return adm_ch;
}

/* Whether the last admin RPC worked; a refusal closes the channel. */
static int adm_ok(void) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(adm);
  amqp_channel_close_ok_t ok = {0};

  if (r.reply_type == AMQP_RESPONSE_NORMAL) return 1;
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
      r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_send_method(adm, adm_ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    adm_ch = 0;
  }
  return 0;
}

static int adm_queue(const char *name, int durable) {
  amqp_queue_declare(adm, adm_channel(), amqp_cstring_bytes(name), 0, durable,
                     0, 0, amqp_empty_table);
  return adm_ok();
}

/* Declares a durable queue with x-queue-type type ("classic" or
 * "quorum"): works when the queue is new or already of that type. */
static long adm_count(const char *q);

static int adm_queue_typed(const char *name, const char *type) {
  amqp_table_entry_t e;
  amqp_table_t args;

  e.key = amqp_cstring_bytes("x-queue-type");
  e.value.kind = AMQP_FIELD_KIND_UTF8;
  e.value.value.bytes = amqp_cstring_bytes(type);
  args.num_entries = 1;
  args.entries = &e;
  amqp_queue_declare(adm, adm_channel(), amqp_cstring_bytes(name), 0, 1, 0, 0,
                     args);
  return adm_ok();
}

/* Whether queue name exists and is of type: a passive declare finds it,
 * a declare of that type is accepted and one of the other is refused. */
static int adm_is_type(const char *name, const char *type) {
  const char *other = strcmp(type, "quorum") == 0 ? "classic" : "quorum";

  return adm_count(name) >= 0 && adm_queue_typed(name, type) &&
         !adm_queue_typed(name, other);
}

static int adm_queue_delete(const char *name) {
  amqp_queue_delete(adm, adm_channel(), amqp_cstring_bytes(name), 0, 0);
  return adm_ok();
}

static int adm_exchange(const char *name, const char *type) {
  amqp_exchange_declare(adm, adm_channel(), amqp_cstring_bytes(name),
                        amqp_cstring_bytes(type), 0, 1, 0, 0,
                        amqp_empty_table);
  return adm_ok();
}

static int adm_exchange_delete(const char *name) {
  amqp_exchange_delete(adm, adm_channel(), amqp_cstring_bytes(name), 0);
  return adm_ok();
}

static int adm_bind(const char *q, const char *ex, const char *key) {
  amqp_queue_bind(adm, adm_channel(), amqp_cstring_bytes(q),
                  amqp_cstring_bytes(ex), amqp_cstring_bytes(key),
                  amqp_empty_table);
  return adm_ok();
}

/* Messages waiting in queue q, or -1 when it does not exist. */
static long adm_count(const char *q) {
  amqp_queue_declare_ok_t *ok = amqp_queue_declare(
      adm, adm_channel(), amqp_cstring_bytes(q), 1, 0, 0, 0, amqp_empty_table);

  return adm_ok() && ok != NULL ? (long)ok->message_count : -1;
}

typedef struct got_msg {
  char *body; /* malloc'd, NUL-terminated */
  size_t len;
  int json;       /* content_type was application/json */
  int persistent; /* delivery_mode was 2 */
} got_msg;

static void props_check(const amqp_basic_properties_t *p, got_msg *m) {
  static const char ct[] = "application/json";

  m->json = (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) &&
            p->content_type.len == strlen(ct) &&
            memcmp(p->content_type.bytes, ct, strlen(ct)) == 0;
  m->persistent = (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) &&
                  p->delivery_mode == 2;
}

/* Takes the next message of queue q: 1 with *m filled, 0 when the queue
 * is empty, -1 on error. */
static int adm_get(const char *q, got_msg *m) {
  amqp_rpc_reply_t r;
  amqp_message_t msg;
  amqp_channel_t ch = adm_channel();

  memset(m, 0, sizeof *m);
  r = amqp_basic_get(adm, ch, amqp_cstring_bytes(q), 1);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    adm_ok(); /* reopens the channel after a refusal */
    return -1;
  }
  if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) return 0;
  r = amqp_read_message(adm, ch, &msg, 0);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) return -1;
  m->len = msg.body.len;
  m->body = malloc(m->len + 1);
  if (m->body != NULL) {
    memcpy(m->body, msg.body.bytes, m->len);
    m->body[m->len] = '\0';
  }
  props_check(&msg.properties, m);
  amqp_destroy_message(&msg);
  amqp_maybe_release_buffers(adm);
  return m->body != NULL ? 1 : -1;
}

/* Takes one message from q and checks its body and properties. */
static void expect_msg(const char *q, const char *body) {
  got_msg m;

  if (adm_get(q, &m) != 1) {
    FAILF("queue %s: no message, expected %s", q, body);
    return;
  }
  if (strcmp(m.body, body) != 0)
    FAILF("queue %s: got %.80s, expected %s", q, m.body, body);
  if (!m.json) FAILF("queue %s: content_type is not application/json", q);
  if (!m.persistent) FAILF("queue %s: delivery_mode is not 2", q);
  free(m.body);
}

/* ---- targets and sends ------------------------------------------------- */

/* A target for our broker: type, then key/value pairs, NULL-ended. Later
 * pairs override the defaults given first. */
static hk_tx_target *make(const char *type, ...) {
  hk_kv kv[32] = {{"host", "127.0.0.1"},
                  {"port", port_text},
                  {"confirm_timeout_sec", "10"},
                  {"connect_timeout_sec", "3"}};
  size_t n = 4;
  char err[256] = "";
  hk_tx_target *t;
  va_list ap;

  va_start(ap, type);
  while (n < 32 && (kv[n].key = va_arg(ap, const char *)) != NULL)
    kv[n++].value = va_arg(ap, const char *);
  va_end(ap);
  t = hk_amqp_target_create(loop, type, kv, n, err, sizeof err);
  if (t == NULL) FAILF("create %s: %s", type, err);
  return t;
}

typedef struct outcome {
  int calls;
  int order; /* of the last call among every send's calls */
  size_t n;
  hk_tx_result res[MAX_MSGS];
} outcome;

static int in_send, answers;

static void on_batch(void *ctx, const hk_tx_result *res, size_t n) {
  outcome *o = ctx;

  if (in_send) FAILF("batch callback ran inside send");
  o->calls++;
  o->order = ++answers;
  o->n = n;
  memcpy(o->res, res, (n < MAX_MSGS ? n : MAX_MSGS) * sizeof *res);
}

/* Runs the loop until o has its outcome or limit seconds pass. */
static void wait_outcome(const outcome *o, double limit) {
  double end = now_sec() + limit;

  while (o->calls == 0 && now_sec() < end) uv_run(loop, UV_RUN_ONCE);
}

/* Sends msgs and runs the loop until the outcome or limit seconds. */
static int send_wait(hk_tx_target *t, const hk_tx_msg *msgs, size_t n,
                     outcome *o, double limit) {
  int rc;

  memset(o, 0, sizeof *o);
  in_send = 1;
  rc = t->ops->send(t, msgs, n, on_batch, o);
  in_send = 0;
  if (rc != 0) return -1;
  wait_outcome(o, limit);
  return o->calls == 1 && o->n == n ? 0 : -1;
}

static hk_tx_msg msg(const char *body, const char *route) {
  hk_tx_msg m = {body, strlen(body), route, NULL, 0};
  return m;
}

static int all_ok(const outcome *o) {
  for (size_t i = 0; i < o->n; i++) {
    if (o->res[i].status == HK_TX_OK) continue;
    fprintf(stderr, "message %zu: status %d reason %s\n", i,
            (int)o->res[i].status, o->res[i].reason);
    return 0;
  }
  return 1;
}

static void destroy(hk_tx_target *t) {
  if (t != NULL) t->ops->destroy(t);
  uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- tests ------------------------------------------------------------- */

static void expect_fail(const hk_tx_result *r, const char *a, const char *b) {
  if (r->status != HK_TX_FAIL)
    FAILF("status %d, expected FAIL (reason %s)", (int)r->status, r->reason);
  if (a != NULL && strstr(r->reason, a) == NULL)
    FAILF("reason \"%s\" lacks \"%s\"", r->reason, a);
  if (b != NULL && strstr(r->reason, b) == NULL)
    FAILF("reason \"%s\" lacks \"%s\"", r->reason, b);
}

static void test_queue_publish(void) {
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.q1", NULL);
  hk_tx_msg m[3] = {msg("{\"n\":1}", "hk.q1"), msg("{\"n\":2}", "hk.q1"),
                    msg("{\"n\":3,\"s\":\"\\u00e9\"}", "hk.q1")};
  outcome o;
  got_msg g;

  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 3, &o, 15) == 0);
  CHECK(all_ok(&o));
  expect_msg("hk.q1", "{\"n\":1}");
  expect_msg("hk.q1", "{\"n\":2}");
  expect_msg("hk.q1", "{\"n\":3,\"s\":\"\\u00e9\"}");
  CHECK(adm_get("hk.q1", &g) == 0);
done:
  destroy(t);
}

/* Sends in flight together are published and answered in the order they
 * were made; one more than HK_TX_SENDS_MAX is refused. */
static void test_sends_in_order(void) {
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.order", NULL);
  static char bodies[HK_TX_SENDS_MAX][2][32];
  hk_tx_msg m[HK_TX_SENDS_MAX][2];
  outcome o[HK_TX_SENDS_MAX], extra;

  REQUIRE(t != NULL);
  memset(o, 0, sizeof o);
  memset(&extra, 0, sizeof extra);
  in_send = 1;
  for (int i = 0; i < HK_TX_SENDS_MAX; i++) {
    for (int j = 0; j < 2; j++) {
      snprintf(bodies[i][j], sizeof bodies[i][j], "{\"s\":%d}", 2 * i + j);
      m[i][j] = msg(bodies[i][j], "hk.order");
    }
    CHECK(t->ops->send(t, m[i], 2, on_batch, &o[i]) == 0);
  }
  CHECK(t->ops->send(t, m[0], 1, on_batch, &extra) == -1);
  in_send = 0;
  wait_outcome(&o[HK_TX_SENDS_MAX - 1], 20);
  for (int i = 0; i < HK_TX_SENDS_MAX; i++) {
    CHECK(o[i].calls == 1 && o[i].n == 2 && all_ok(&o[i]));
    if (i > 0) CHECK(o[i].order == o[i - 1].order + 1);
  }
  CHECK(extra.calls == 0);
  for (int i = 0; i < HK_TX_SENDS_MAX; i++)
    for (int j = 0; j < 2; j++) expect_msg("hk.order", bodies[i][j]);
done:
  destroy(t);
}

/* A declare refused while an earlier send waits for its confirm closes
 * the channel under it: what lost its confirm comes back RETRY, and the
 * sends behind are not published ahead of that retry. Whether the confirm
 * or the close comes first is the broker's race; both ways are checked. */
static void test_cut_holds_later_sends(void) {
  hk_tx_target *t = make("rabbitmq_queue", NULL);
  hk_tx_msg first[1] = {msg("{\"c\":1}", "hk.cut")};
  hk_tx_msg second[2] = {msg("{\"c\":2}", "hk.cut.bad"),
                         msg("{\"c\":3}", "hk.cut")};
  hk_tx_msg third[1] = {msg("{\"c\":4}", "hk.cut")};
  outcome o1, o2, o3;
  got_msg g;

  REQUIRE(t != NULL && adm_queue("hk.cut.bad", 0));
  memset(&o1, 0, sizeof o1);
  memset(&o2, 0, sizeof o2);
  memset(&o3, 0, sizeof o3);
  REQUIRE(t->ops->send(t, first, 1, on_batch, &o1) == 0);
  REQUIRE(t->ops->send(t, second, 2, on_batch, &o2) == 0);
  REQUIRE(t->ops->send(t, third, 1, on_batch, &o3) == 0);
  wait_outcome(&o3, 20);
  REQUIRE(o1.calls == 1 && o2.calls == 1 && o3.calls == 1);
  expect_fail(&o2.res[0], "hk.cut.bad", "PRECONDITION_FAILED");
  printf("cut: first send %s\n", o1.res[0].status == HK_TX_OK ? "confirmed"
         : o1.res[0].reason);
  if (o1.res[0].status == HK_TX_OK) {
    CHECK(o2.res[1].status == HK_TX_OK && all_ok(&o3));
    expect_msg("hk.cut", "{\"c\":1}");
    expect_msg("hk.cut", "{\"c\":3}");
    expect_msg("hk.cut", "{\"c\":4}");
  } else {
    CHECK(o1.res[0].status == HK_TX_RETRY);
    CHECK(o2.res[1].status == HK_TX_RETRY && o3.res[0].status == HK_TX_RETRY);
    CHECK(strstr(o3.res[0].reason, "not sent") != NULL);
    while (adm_get("hk.cut", &g) == 1) { /* c:1 may be there, no later one */
      CHECK(strcmp(g.body, "{\"c\":1}") == 0);
      free(g.body);
    }
  }
  REQUIRE(send_wait(t, third, 1, &o3, 15) == 0); /* the cut is over */
  CHECK(all_ok(&o3));
done:
  destroy(t);
}

static void test_per_route_queues(void) {
  hk_tx_target *t = make("rabbitmq_queue", "queue", "", NULL);
  hk_tx_msg m[3] = {msg("{\"e\":\"c1\"}", "hk.click"),
                    msg("{\"e\":\"o1\"}", "hk.open"),
                    msg("{\"e\":\"c2\"}", "hk.click")};
  outcome o;

  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 3, &o, 15) == 0);
  CHECK(all_ok(&o));
  CHECK(adm_count("hk.click") == 2);
  CHECK(adm_count("hk.open") == 1);
  expect_msg("hk.click", "{\"e\":\"c1\"}");
  expect_msg("hk.click", "{\"e\":\"c2\"}");
  expect_msg("hk.open", "{\"e\":\"o1\"}");
  /* The queues are durable: declaring one non-durable is refused. */
  CHECK(!adm_queue("hk.open", 0));
done:
  destroy(t);
}

/* Checks that an outcome is FAIL and its reason mentions each string. */
static void test_exchange_direct(void) {
  hk_tx_target *t = NULL;
  hk_tx_msg m[3] = {msg("{\"d\":1}", "111.click"), msg("{\"d\":2}", "111.open"),
                    msg("{\"d\":3}", "111.click")};
  outcome o;

  REQUIRE(adm_exchange("hk.direct", "direct"));
  REQUIRE(adm_queue("hk.direct.q", 1));
  REQUIRE(adm_bind("hk.direct.q", "hk.direct", "111.click"));
  t = make("rabbitmq_exchange", "exchange", "hk.direct", "exchange_type",
           "direct", NULL);
  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 3, &o, 15) == 0);
  CHECK(o.res[0].status == HK_TX_OK);
  expect_fail(&o.res[1], "unroutable: NO_ROUTE (312)",
              "exchange=hk.direct routing_key=111.open");
  CHECK(o.res[2].status == HK_TX_OK);
  CHECK(adm_count("hk.direct.q") == 2);
  expect_msg("hk.direct.q", "{\"d\":1}");
  expect_msg("hk.direct.q", "{\"d\":3}");
done:
  destroy(t);
}

static void test_exchange_topic(void) {
  hk_tx_target *t = NULL;
  hk_tx_msg m[3] = {msg("{\"t\":1}", "111.click"), msg("{\"t\":2}", "222.click"),
                    msg("{\"t\":3}", "111.open")};
  outcome o;

  REQUIRE(adm_exchange("hk.topic", "topic"));
  REQUIRE(adm_queue("hk.topic.q", 1));
  REQUIRE(adm_bind("hk.topic.q", "hk.topic", "111.*"));
  t = make("rabbitmq_exchange", "exchange", "hk.topic", "exchange_type",
           "topic", NULL);
  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 3, &o, 15) == 0);
  CHECK(o.res[0].status == HK_TX_OK);
  expect_fail(&o.res[1], "NO_ROUTE", "routing_key=222.click");
  CHECK(o.res[2].status == HK_TX_OK);
  CHECK(adm_count("hk.topic.q") == 2);
  expect_msg("hk.topic.q", "{\"t\":1}");
  expect_msg("hk.topic.q", "{\"t\":3}");
done:
  destroy(t);
}

/* An exchange the transport declares itself, with no queue bound. */
static void test_exchange_unbound(void) {
  hk_tx_target *t = make("rabbitmq_exchange", "exchange", "hk.lonely", NULL);
  hk_tx_msg m[2] = {msg("{\"u\":1}", "1.a"), msg("{\"u\":2}", "1.b")};
  outcome o;

  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 2, &o, 15) == 0);
  expect_fail(&o.res[0], "unroutable", "routing_key=1.a");
  expect_fail(&o.res[1], "unroutable", "routing_key=1.b");
  CHECK(adm_exchange("hk.lonely", "direct")); /* it exists, durable */
done:
  destroy(t);
}

/* durable=false reaches the exchange's declaration: declaring it durable
 * afterwards is refused as inequivalent. */
static void test_exchange_flags(void) {
  hk_tx_target *t = make("rabbitmq_exchange", "exchange", "hk.transient",
                         "durable", "false", NULL);
  hk_tx_msg m[1] = {msg("{\"f\":1}", "1.f")};
  outcome o;

  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  expect_fail(&o.res[0], "unroutable", NULL);
  CHECK(!adm_exchange("hk.transient", "direct"));
done:
  destroy(t);
}

static void test_queue_conflict(void) {
  hk_tx_target *t = NULL;
  hk_tx_msg m[2] = {msg("{\"c\":1}", "hk.conflict"),
                    msg("{\"c\":2}", "hk.conflict")};
  outcome o;

  REQUIRE(adm_queue("hk.conflict", 0));
  t = make("rabbitmq_queue", "queue", "hk.conflict", NULL);
  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 2, &o, 15) == 0);
  expect_fail(&o.res[0], "PRECONDITION_FAILED", "durable");
  expect_fail(&o.res[1], "PRECONDITION_FAILED", "durable");
  /* Fixed on the broker: the next send works on a new channel. */
  REQUIRE(adm_queue_delete("hk.conflict"));
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  CHECK(all_ok(&o));
  expect_msg("hk.conflict", "{\"c\":1}");
done:
  destroy(t);
}

/* One conflicting queue among per-route queues fails only its messages. */
static void test_route_conflict(void) {
  hk_tx_target *t = NULL;
  hk_tx_msg m[3] = {msg("{\"r\":1}", "hk.pr.good"), msg("{\"r\":2}", "hk.pr.bad"),
                    msg("{\"r\":3}", "hk.pr.good")};
  outcome o;

  REQUIRE(adm_queue("hk.pr.bad", 0));
  t = make("rabbitmq_queue", "queue", "", NULL);
  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 3, &o, 15) == 0);
  CHECK(o.res[0].status == HK_TX_OK);
  expect_fail(&o.res[1], "PRECONDITION_FAILED", "hk.pr.bad");
  CHECK(o.res[2].status == HK_TX_OK);
  expect_msg("hk.pr.good", "{\"r\":1}");
  expect_msg("hk.pr.good", "{\"r\":3}");
done:
  destroy(t);
}

static void test_exchange_conflict(void) {
  hk_tx_target *t = NULL;
  hk_tx_msg m[1] = {msg("{\"x\":1}", "1.x")};
  outcome o;

  REQUIRE(adm_exchange("hk.xconf", "topic"));
  t = make("rabbitmq_exchange", "exchange", "hk.xconf", "exchange_type",
           "direct", NULL);
  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  expect_fail(&o.res[0], "PRECONDITION_FAILED", "inequivalent arg 'type'");
  REQUIRE(adm_exchange_delete("hk.xconf"));
  /* Now the declare works; with nothing bound the message is unroutable. */
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  expect_fail(&o.res[0], "unroutable", NULL);
done:
  destroy(t);
}

/* queue_type quorum: the fixed queue and each per-route queue are
 * declared as quorum queues and take every message with its confirm. */
static void test_quorum_queue(void) {
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.quorum",
                         "queue_type", "quorum", NULL);
  hk_tx_target *r = make("rabbitmq_queue", "queue", "", "queue_type",
                         "quorum", NULL);
  hk_tx_target *c = NULL;
  hk_tx_msg m[3] = {msg("{\"q\":1}", "hk.quorum"),
                    msg("{\"q\":2}", "hk.quorum"),
                    msg("{\"q\":3}", "hk.quorum")};
  hk_tx_msg p[3] = {msg("{\"p\":1}", "hk.qr.click"),
                    msg("{\"p\":2}", "hk.qr.open"),
                    msg("{\"p\":3}", "hk.qr.click")};
  outcome o;

  REQUIRE(t != NULL && r != NULL);
  REQUIRE(send_wait(t, m, 3, &o, 15) == 0);
  CHECK(all_ok(&o));
  REQUIRE(send_wait(r, p, 3, &o, 15) == 0);
  CHECK(all_ok(&o));
  CHECK(adm_is_type("hk.quorum", "quorum"));
  CHECK(adm_is_type("hk.qr.click", "quorum"));
  CHECK(adm_is_type("hk.qr.open", "quorum"));
  expect_msg("hk.quorum", "{\"q\":1}");
  expect_msg("hk.quorum", "{\"q\":2}");
  expect_msg("hk.quorum", "{\"q\":3}");
  expect_msg("hk.qr.click", "{\"p\":1}");
  expect_msg("hk.qr.click", "{\"p\":3}");
  expect_msg("hk.qr.open", "{\"p\":2}");
  /* queue_type classic declares without arguments, as before. */
  c = make("rabbitmq_queue", "queue", "hk.qclassic", "queue_type", "classic",
           NULL);
  REQUIRE(c != NULL);
  REQUIRE(send_wait(c, m, 1, &o, 15) == 0);
  CHECK(all_ok(&o));
  CHECK(adm_is_type("hk.qclassic", "classic"));
done:
  destroy(t);
  destroy(r);
  destroy(c);
  CHECK(adm_queue_delete("hk.quorum") && adm_queue_delete("hk.qr.click") &&
        adm_queue_delete("hk.qr.open"));
  adm_queue_delete("hk.qclassic");
}

/* A quorum target on a queue that exists as a classic one: the broker
 * refuses the declare (406, inequivalent x-queue-type) and each message
 * fails with that reason, leaving the classic queue alone. Once the queue
 * is deleted the same target declares it quorum and delivers. */
static void test_quorum_on_classic(void) {
  hk_tx_target *t = NULL;
  hk_tx_msg m[2] = {msg("{\"k\":1}", "hk.qconf"),
                    msg("{\"k\":2}", "hk.qconf")};
  outcome o;

  REQUIRE(adm_queue("hk.qconf", 1));
  t = make("rabbitmq_queue", "queue", "hk.qconf", "queue_type", "quorum",
           NULL);
  REQUIRE(t != NULL);
  REQUIRE(send_wait(t, m, 2, &o, 15) == 0);
  expect_fail(&o.res[0], "PRECONDITION_FAILED", "'x-queue-type'");
  expect_fail(&o.res[1], "inequivalent arg", "'quorum'");
  CHECK(strstr(o.res[0].reason, "hk.qconf") != NULL);
  printf("quorum on classic: %s\n", o.res[0].reason);
  CHECK(adm_is_type("hk.qconf", "classic"));
  CHECK(adm_count("hk.qconf") == 0);
  REQUIRE(adm_queue_delete("hk.qconf"));
  REQUIRE(send_wait(t, m, 2, &o, 15) == 0);
  CHECK(all_ok(&o));
  CHECK(adm_is_type("hk.qconf", "quorum"));
  expect_msg("hk.qconf", "{\"k\":1}");
  expect_msg("hk.qconf", "{\"k\":2}");
done:
  destroy(t);
  adm_queue_delete("hk.qconf");
}

/* queue_type in the description, and the values the transport refuses. */
static void test_queue_type_settings(void) {
  char expect[128], err[256] = "";
  hk_kv fast[] = {{"host", "127.0.0.1"}, {"queue_type", "fast"}};
  hk_kv ex[] = {{"host", "127.0.0.1"}, {"exchange", "x"},
                {"queue_type", "quorum"}};
  hk_tx_target *q = make("rabbitmq_queue", "queue", "hk.d", "queue_type",
                         "quorum", NULL);
  hk_tx_target *c = make("rabbitmq_queue", "queue", "hk.d", "queue_type",
                         "classic", NULL);

  REQUIRE(q != NULL && c != NULL);
  snprintf(expect, sizeof expect,
           "amqp://127.0.0.1:%d/%%2F queue=hk.d queue_type=quorum",
           broker_port);
  CHECK(strcmp(q->ops->describe(q), expect) == 0);
  snprintf(expect, sizeof expect, "amqp://127.0.0.1:%d/%%2F queue=hk.d",
           broker_port);
  CHECK(strcmp(c->ops->describe(c), expect) == 0);
  CHECK(hk_amqp_target_create(loop, "rabbitmq_queue", fast, 2, err,
                              sizeof err) == NULL);
  CHECK(strstr(err, "queue_type must be \"classic\" or \"quorum\"") != NULL);
  CHECK(hk_amqp_target_create(loop, "rabbitmq_exchange", ex, 3, err,
                              sizeof err) == NULL);
  CHECK(strstr(err, "queue_type") != NULL);
done:
  destroy(q);
  destroy(c);
}

/* connections = 2: the target opens two connections to the broker, and
 * sends spread over them are all published once and answered in the
 * order they were made. Messages of different sends may be queued in
 * either order, so the queue is checked as a set. */
static void test_two_connections(void) {
  const char *accepted = "accepting AMQP connection";
  int before = log_settled(accepted);
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.conns",
                         "connections", "2", NULL);
  static char bodies[HK_TX_SENDS_MAX][3][32];
  int seen[HK_TX_SENDS_MAX * 3] = {0};
  hk_tx_msg m[HK_TX_SENDS_MAX][3];
  outcome o[HK_TX_SENDS_MAX];
  double end = now_sec() + 10;
  char expect[128];
  got_msg g;

  REQUIRE(t != NULL);
  snprintf(expect, sizeof expect, "amqp://127.0.0.1:%d/%%2F queue=hk.conns "
           "connections=2", broker_port);
  CHECK(strcmp(t->ops->describe(t), expect) == 0);
  memset(o, 0, sizeof o);
  in_send = 1;
  for (int i = 0; i < HK_TX_SENDS_MAX; i++) {
    for (int j = 0; j < 3; j++) {
      snprintf(bodies[i][j], sizeof bodies[i][j], "{\"s\":%d}", 3 * i + j);
      m[i][j] = msg(bodies[i][j], "hk.conns");
    }
    CHECK(t->ops->send(t, m[i], 3, on_batch, &o[i]) == 0);
  }
  in_send = 0;
  wait_outcome(&o[HK_TX_SENDS_MAX - 1], 20);
  for (int i = 0; i < HK_TX_SENDS_MAX; i++) {
    CHECK(o[i].calls == 1 && o[i].n == 3 && all_ok(&o[i]));
    if (i > 0) CHECK(o[i].order == o[i - 1].order + 1);
  }
  for (int k = 0; k < HK_TX_SENDS_MAX * 3; k++) {
    int v = -1;

    REQUIRE(adm_get("hk.conns", &g) == 1);
    if (sscanf(g.body, "{\"s\":%d}", &v) != 1 || v < 0 ||
        v >= HK_TX_SENDS_MAX * 3 || seen[v]++)
      FAILF("unexpected or repeated message %s", g.body);
    free(g.body);
  }
  CHECK(adm_get("hk.conns", &g) == 0);
  while (log_count(accepted) < before + 2 && now_sec() < end) run_for(0.1);
  if (log_count(accepted) != before + 2)
    FAILF("%d connections accepted, expected 2", log_count(accepted) - before);
done:
  destroy(t);
  adm_queue_delete("hk.conns");
}

/* connections outside 1 to 4 is refused with the range. */
static void test_connections_settings(void) {
  hk_kv kv[] = {{"host", "127.0.0.1"}, {"queue", "q"}, {"connections", ""}};
  const char *bad[] = {"0", "5", "two"};
  char err[256];

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    kv[2].value = bad[i];
    CHECK(hk_amqp_target_create(loop, "rabbitmq_queue", kv, 3, err,
                                sizeof err) == NULL);
    if (strstr(err, "connections must be a number from 1 to 4") == NULL)
      FAILF("connections=%s: \"%s\"", bad[i], err);
  }
}

static void test_large_body(void) {
  size_t len = 5u << 20;
  char *body = malloc(len + 1);
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.large", NULL);
  hk_tx_msg m[2];
  outcome o;
  got_msg g = {0};

  REQUIRE(body != NULL && t != NULL);
  memcpy(body, "{\"pad\":\"", 8);
  for (size_t i = 8; i < len - 2; i++) body[i] = (char)('a' + i % 26);
  memcpy(body + len - 2, "\"}", 3);
  m[0] = (hk_tx_msg){body, len, "hk.large", NULL, 0};
  m[1] = msg("{\"small\":true}", "hk.large");
  REQUIRE(send_wait(t, m, 2, &o, 30) == 0);
  CHECK(all_ok(&o));
  REQUIRE(adm_get("hk.large", &g) == 1);
  CHECK(g.len == len && memcmp(g.body, body, len) == 0);
  CHECK(g.json && g.persistent);
  expect_msg("hk.large", "{\"small\":true}");
done:
  free(g.body);
  free(body);
  destroy(t);
}

/* A body over the broker's max_message_size (16 MiB here): the broker
 * closes the channel; that message fails as too large, what else was not
 * confirmed is retried, and later big ones are refused before publishing,
 * so the rest of their send goes through. */
static void test_size_limit(void) {
  size_t len = 17u << 20;
  char *big = malloc(len);
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.size", NULL);
  hk_tx_msg m[3] = {msg("{\"s\":1}", "hk.size"), {big, len, "hk.size", NULL, 0},
                    msg("{\"s\":2}", "hk.size")};
  outcome o;

  REQUIRE(big != NULL && t != NULL);
  memset(big, ' ', len);
  big[0] = '{';
  big[len - 1] = '}';
  REQUIRE(send_wait(t, m, 3, &o, 30) == 0);
  CHECK(o.res[0].status != HK_TX_FAIL);
  expect_fail(&o.res[1], "larger than configured max size 16777216", NULL);
  CHECK(o.res[1].too_large);
  CHECK(o.res[2].status == HK_TX_RETRY);
  REQUIRE(send_wait(t, m, 3, &o, 30) == 0);
  CHECK(o.res[0].status == HK_TX_OK && o.res[2].status == HK_TX_OK);
  expect_fail(&o.res[1], "over the broker's limit of 16777216", NULL);
  CHECK(o.res[1].too_large);
done:
  free(big);
  destroy(t);
}

static void test_bad_routes(void) {
  char route[301];
  hk_tx_target *t = make("rabbitmq_queue", "queue", "", NULL);
  hk_tx_target *x = make("rabbitmq_exchange", "exchange", "hk.direct", NULL);
  hk_tx_msg m[4];
  outcome o;

  REQUIRE(t != NULL && x != NULL);
  REQUIRE(adm_exchange("hk.direct", "direct"));
  REQUIRE(adm_queue("hk.direct.q", 1));
  REQUIRE(adm_bind("hk.direct.q", "hk.direct", "111.click"));
  memset(route, 'r', 300);
  route[300] = '\0';
  m[0] = msg("{\"l\":1}", "hk.lr");
  m[1] = msg("{\"l\":2}", route);
  m[2] = msg("{\"l\":3}", "amq.reserved");
  m[3] = msg("{\"l\":4}", "hk.lr");
  REQUIRE(send_wait(t, m, 4, &o, 15) == 0);
  CHECK(o.res[0].status == HK_TX_OK);
  expect_fail(&o.res[1], "300 bytes", "255");
  expect_fail(&o.res[2], "reserved", NULL);
  CHECK(o.res[3].status == HK_TX_OK);
  /* The connection is fine afterwards. */
  m[0] = msg("{\"l\":5}", "hk.lr");
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  CHECK(all_ok(&o));
  CHECK(adm_count("hk.lr") == 3);
  m[0] = msg("{\"l\":6}", route);
  m[1] = msg("{\"l\":7}", "111.click");
  REQUIRE(send_wait(x, m, 2, &o, 15) == 0);
  expect_fail(&o.res[0], "routing key of 300 bytes", NULL);
  CHECK(o.res[1].status == HK_TX_OK);
  expect_msg("hk.direct.q", "{\"l\":7}");
done:
  destroy(t);
  destroy(x);
}

static void test_describe_and_secrets(void) {
  char expect[128], err[256];
  hk_kv bad[] = {{"host", "127.0.0.1"}, {"exchange", ""}};
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.d", "user", "guest",
                         "password", "s3cret-pw", NULL);
  hk_tx_target *x = make("rabbitmq_exchange", "exchange", "hk.direct",
                         "vhost", "v/1", "tls", "false", NULL);
  hk_tx_target *r = make("rabbitmq_queue", NULL);
  hk_tx_msg m[1] = {msg("{}", "hk.d")};
  outcome o;

  REQUIRE(t != NULL && x != NULL && r != NULL);
  snprintf(expect, sizeof expect, "amqp://127.0.0.1:%d/%%2F queue=hk.d",
           broker_port);
  CHECK(strcmp(t->ops->describe(t), expect) == 0);
  snprintf(expect, sizeof expect, "amqp://127.0.0.1:%d/v%%2F1 exchange=hk.direct",
           broker_port);
  CHECK(strcmp(x->ops->describe(x), expect) == 0);
  CHECK(strstr(r->ops->describe(r), "queue=(route)") != NULL);
  /* A name with spaces, quotes or '=' cannot pass for other fields of a
   * log line that shows the destination. */
  hk_tx_target *odd = make("rabbitmq_queue", "queue", "q x\"y hook=b", NULL);
  REQUIRE(odd != NULL);
  CHECK(strstr(odd->ops->describe(odd), "/%2F queue=q%20x%22y%20hook%3Db") !=
        NULL);
  destroy(odd);
  /* Wrong password: RETRY (fixable), and the reason does not quote it. */
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  CHECK(o.res[0].status == HK_TX_RETRY);
  CHECK(strstr(o.res[0].reason, "login failed") != NULL);
  CHECK(strstr(o.res[0].reason, "s3cret") == NULL);
  CHECK(strstr(t->ops->describe(t), "s3cret") == NULL);
  /* Settings the transport cannot use. */
  CHECK(hk_amqp_target_create(loop, "rabbitmq_exchange", bad, 2, err,
                              sizeof err) == NULL && err[0] != '\0');
  CHECK(hk_amqp_target_create(loop, "kafka", bad, 1, err, sizeof err) == NULL);
done:
  destroy(t);
  destroy(x);
  destroy(r);
}

/* A TLS target on our broker trusting the system CAs only; NULL (the
 * case skipped) when the system has no CA bundle. */
static hk_tx_target *tls_system_ca(void) {
  hk_kv kv[] = {{"host", "localhost"}, {"port", tls_port_text},
                {"tls", "true"}, {"queue", "hk.tls"}};
  char err[256] = "";
  hk_tx_target *t = hk_amqp_target_create(loop, "rabbitmq_queue", kv, 4, err,
                                          sizeof err);

  if (t == NULL && strstr(err, "no system CA bundle") != NULL)
    printf("test_tls: system CAs part skipped: %s\n", err);
  else if (t == NULL)
    FAILF("create: %s", err);
  return t;
}

/* amqps with the test CA, whose server certificate names localhost:
 * publishes. By IP address (not in the certificate) or with only the
 * system CAs the peer check refuses, and sends come back RETRY. */
static void test_tls(void) {
  hk_tx_target *ok = NULL, *ip = NULL, *sys = NULL;
  hk_tx_msg m[1] = {msg("{\"tls\":1}", "hk.tls")};
  char expect[128];
  outcome o;

  if (access(ca_file, R_OK) != 0) {
    printf("test_tls: SKIP: the broker has no TLS listener (openssl?)\n");
    return;
  }
  ok = make("rabbitmq_queue", "host", "localhost", "port", tls_port_text,
            "tls", "true", "tls_ca_file", ca_file, "queue", "hk.tls", NULL);
  ip = make("rabbitmq_queue", "port", tls_port_text, "tls", "true",
            "tls_ca_file", ca_file, "queue", "hk.tls", NULL);
  REQUIRE(ok != NULL && ip != NULL);
  snprintf(expect, sizeof expect, "amqps://localhost:%s/%%2F queue=hk.tls",
           tls_port_text);
  CHECK(strcmp(ok->ops->describe(ok), expect) == 0);
  REQUIRE(send_wait(ok, m, 1, &o, 15) == 0);
  CHECK(all_ok(&o));
  expect_msg("hk.tls", "{\"tls\":1}");
  REQUIRE(send_wait(ip, m, 1, &o, 15) == 0);
  CHECK(o.res[0].status == HK_TX_RETRY && strstr(o.res[0].reason, "SSL"));
  printf("tls by IP address: %s\n", o.res[0].reason);
  sys = tls_system_ca();
  if (sys == NULL) goto done;
  REQUIRE(send_wait(sys, m, 1, &o, 15) == 0);
  CHECK(o.res[0].status == HK_TX_RETRY && strstr(o.res[0].reason, "SSL"));
done:
  destroy(ok);
  destroy(ip);
  destroy(sys);
}

/* Nobody listens: sends come back RETRY at once, nothing blocks. */
static void test_broker_absent(void) {
  char port[16];
  hk_tx_target *t;
  hk_tx_msg m[1] = {msg("{}", "q")};
  outcome o;
  double start;

  snprintf(port, sizeof port, "%d", free_port());
  t = make("rabbitmq_queue", "port", port, "queue", "q", NULL);
  REQUIRE(t != NULL);
  start = now_sec();
  REQUIRE(send_wait(t, m, 1, &o, 10) == 0);
  CHECK(now_sec() - start < 3);
  CHECK(o.res[0].status == HK_TX_RETRY);
  CHECK(strstr(o.res[0].reason, "connect") != NULL);
done:
  destroy(t);
}

/* Sends small messages until one is confirmed or limit seconds pass. */
static int send_until_ok(hk_tx_target *t, double limit) {
  hk_tx_msg m[1] = {msg("{\"again\":1}", "hk.hung")};
  double end = now_sec() + limit;
  outcome o;

  while (now_sec() < end) {
    if (send_wait(t, m, 1, &o, limit) == 0 && o.res[0].status == HK_TX_OK)
      return 1;
    run_for(0.2);
  }
  return 0;
}

/* A broker that stops answering (SIGSTOP): a confirm wait times out with
 * RETRY; a 32 MB publish stuck on a full socket is kicked by the
 * watchdog; a reconnect times out in the handshake; the loop keeps
 * running throughout; after SIGCONT sends work again. */
static void test_hung_broker(void) {
  size_t len = 32u << 20;
  char *big = malloc(len);
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.hung",
                         "confirm_timeout_sec", "1", "connect_timeout_sec",
                         "1", NULL);
  hk_tx_msg m[1] = {msg("{\"h\":1}", "hk.hung")};
  int node = pid_file("node.pid"), stopped = 0;
  outcome o;
  double start;

  REQUIRE(big != NULL && t != NULL && node > 0);
  memset(big, ' ', len);
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0 && all_ok(&o));
  REQUIRE(kill(node, SIGSTOP) == 0);
  stopped = 1;
  max_tick_gap = last_tick = 0;
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  CHECK(o.res[0].status == HK_TX_RETRY &&
        strstr(o.res[0].reason, "no publisher confirm within 1s") != NULL);
  run_for(0.7); /* past the backoff: the next attempt meets the hang */
  start = now_sec();
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  CHECK(o.res[0].status == HK_TX_RETRY && now_sec() - start < 3);
  CHECK(strstr(o.res[0].reason, "login failed") != NULL);
  kill(node, SIGCONT);
  REQUIRE(send_until_ok(t, 20)); /* connected again, before the big one */
  kill(node, SIGSTOP);
  m[0] = (hk_tx_msg){big, len, "hk.hung", NULL, 0};
  memset(&o, 0, sizeof o);
  REQUIRE(t->ops->send(t, m, 1, on_batch, &o) == 0);
  start = now_sec();
  max_tick_gap = last_tick = 0; /* from here on, copying is done */
  wait_outcome(&o, 30);
  printf("hung broker: 32 MB publish answered after %.1fs (longest loop "
         "pause %.3fs): %s\n", now_sec() - start, max_tick_gap,
         o.res[0].reason);
  CHECK(o.calls == 1 && o.res[0].status == HK_TX_RETRY);
  CHECK(max_tick_gap < 0.5);
  kill(node, SIGCONT);
  stopped = 0;
  CHECK(send_until_ok(t, 20));
done:
  if (stopped) kill(node, SIGCONT);
  free(big);
  destroy(t);
}

/* Sends the pending messages (indices in todo) in batches; what comes back
 * OK is done, RETRY goes back to the end. Returns messages still to do. */
static size_t play_dispatcher(hk_tx_target *t, hk_tx_msg *all, int *todo,
                              size_t n_todo, size_t batch, int *retries) {
  hk_tx_msg m[MAX_MSGS];
  outcome o;
  size_t k = n_todo < batch ? n_todo : batch, left = 0;

  if (k == 0) return 0;
  for (size_t i = 0; i < k; i++) m[i] = all[todo[i]];
  if (send_wait(t, m, k, &o, 40) != 0) {
    FAILF("send got no outcome");
    return n_todo;
  }
  for (size_t i = 0; i < k; i++) {
    if (o.res[i].status == HK_TX_RETRY) {
      (*retries)++;
      todo[n_todo + left++] = todo[i];
    } else if (o.res[i].status != HK_TX_OK) {
      FAILF("message %d: status %d %s", todo[i], (int)o.res[i].status,
            o.res[i].reason);
    }
  }
  memmove(todo, todo + k, (n_todo - k + left) * sizeof *todo);
  return n_todo - k + left;
}

static void check_restart_queue(int n) {
  int seen[64] = {0};
  got_msg g;

  while (adm_get("hk.restart", &g) == 1) {
    int seq = -1;
    if (sscanf(g.body, "{\"seq\":%d}", &seq) == 1 && seq >= 0 && seq < n)
      seen[seq]++;
    free(g.body);
  }
  for (int i = 0; i < n; i++)
    if (seen[i] == 0) FAILF("message %d lost across the restart", i);
}

static void test_broker_restart(void) {
  enum { N = 60 };
  static char bodies[N][32];
  hk_tx_msg all[N];
  int todo[2 * N], retries = 0;
  size_t left = N;
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.restart",
                         "confirm_timeout_sec", "5", NULL);
  pid_t stopper = -1;
  double end;

  REQUIRE(t != NULL);
  for (int i = 0; i < N; i++) {
    snprintf(bodies[i], sizeof bodies[i], "{\"seq\":%d}", i);
    all[i] = msg(bodies[i], "hk.restart");
    todo[i] = i;
  }
  for (int b = 0; b < 3; b++) left = play_dispatcher(t, all, todo, left, 4, &retries);
  CHECK(left == N - 12 && retries == 0);
  stopper = broker_spawn("stop"); /* sends go on meanwhile */
  end = now_sec() + 40;
  /* A slow stream (2 messages every 0.2 s) lasts through the shutdown. */
  while ((broker_alive() || retries == 0) && left > 0 && now_sec() < end) {
    left = play_dispatcher(t, all, todo, left, 2, &retries);
    run_for(0.2);
  }
  CHECK(retries > 0);
  CHECK(broker_wait(stopper, "stop") == 0);
  stopper = -1;
  REQUIRE(broker("start") == 0);
  while (left > 0 && now_sec() < end) {
    left = play_dispatcher(t, all, todo, left, 4, &retries);
    if (left > 0) run_for(0.2);
  }
  CHECK(left == 0);
  printf("restart: %d RETRY outcomes before all %d were confirmed\n", retries, N);
  REQUIRE(adm_open() == 0);
  check_restart_queue(N);
done:
  if (stopper > 0) broker_wait(stopper, "stop");
  destroy(t);
}

/* With heartbeat_sec=1 an idle target keeps its connection: the broker
 * logs no missed heartbeats for it, while a control connection that
 * nobody services is dropped for that in the same time. */
static void test_idle_heartbeats(void) {
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.hb", "heartbeat_sec",
                         "1", NULL);
  amqp_connection_state_t ctl = amqp_new_connection();
  amqp_socket_t *s = amqp_tcp_socket_new(ctl);
  hk_tx_msg m[1] = {msg("{\"hb\":1}", "hk.hb")};
  int before = log_count("missed heartbeats");
  outcome o;
  double end;

  REQUIRE(t != NULL && s != NULL);
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  CHECK(all_ok(&o));
  REQUIRE(amqp_socket_open(s, "127.0.0.1", broker_port) == 0);
  REQUIRE(amqp_login(ctl, "/", 0, 131072, 1, AMQP_SASL_METHOD_PLAIN, "guest",
                     "guest").reply_type == AMQP_RESPONSE_NORMAL);
  end = now_sec() + 10;
  while (log_count("missed heartbeats") == before && now_sec() < end)
    run_for(0.25);
  run_for(1.5); /* as long again for our connection to miss any */
  CHECK(log_count("missed heartbeats") == before + 1);
  REQUIRE(send_wait(t, m, 1, &o, 15) == 0);
  CHECK(all_ok(&o));
  CHECK(adm_count("hk.hb") == 2);
done:
  amqp_destroy_connection(ctl);
  destroy(t);
}

/* destroy() with a send in flight: the callback still runs exactly once,
 * on the loop thread, and the target's handles close. */
static void test_destroy_in_flight(void) {
  hk_tx_target *t = make("rabbitmq_queue", "queue", "hk.destroy", NULL);
  hk_tx_target *idle = make("rabbitmq_queue", "queue", "hk.destroy", NULL);
  hk_tx_msg m[2] = {msg("{\"z\":1}", "hk.destroy"),
                    msg("{\"z\":2}", "hk.destroy")};
  outcome o;

  REQUIRE(t != NULL && idle != NULL);
  memset(&o, 0, sizeof o);
  REQUIRE(t->ops->send(t, m, 2, on_batch, &o) == 0);
  t->ops->destroy(t);
  t = NULL;
  idle->ops->destroy(idle);
  idle = NULL;
  wait_outcome(&o, 20);
  run_for(0.3); /* no second call */
  CHECK(o.calls == 1 && o.n == 2);
  for (size_t i = 0; i < o.n; i++)
    CHECK(o.res[i].status == HK_TX_OK ||
          (o.res[i].status == HK_TX_RETRY &&
           strstr(o.res[i].reason, "shutting down") != NULL));
done:
  destroy(t);
  destroy(idle);
}

/* ---- main ---------------------------------------------------------------- */

/* Starts our broker. Returns 0, 1 to skip (not installed), -1 on failure. */
static int broker_setup(void) {
  char tmpl[] = "/tmp/hookd-amqp-XXXXXX", owner[32];
  double start = now_sec();
  int rc;

  /* The broker script's watcher stops the node once this process ends,
   * even if it crashes. */
  snprintf(owner, sizeof owner, "%d", (int)getpid());
  setenv("BROKER_OWNER_PID", owner, 1);
  test_path(broker_script, sizeof broker_script, "rabbitmq/broker.sh");
  if (mkdtemp(tmpl) == NULL) return -1;
  snprintf(broker_dir, sizeof broker_dir, "%s", tmpl);
  broker_port = free_port();
  snprintf(port_text, sizeof port_text, "%d", broker_port);
  snprintf(tls_port_text, sizeof tls_port_text, "%d", free_port());
  setenv("BROKER_TLS_PORT", tls_port_text, 1);
  setenv("BROKER_EXTRA_CONF", "max_message_size = 16777216", 1);
  snprintf(ca_file, sizeof ca_file, "%s/tls/ca.pem", broker_dir);
  rc = broker("start");
  if (rc == 2) return 1;
  if (rc != 0) return -1;
  printf("broker up on 127.0.0.1:%d in %.1fs\n", broker_port, now_sec() - start);
  return adm_open() == 0 ? 0 : -1;
}

static void broker_teardown(void) {
  char line[600];

  adm_close();
  broker("stop");
  snprintf(line, sizeof line, "rm -rf '%s'", broker_dir);
  if (system(line) != 0) fprintf(stderr, "cannot remove %s\n", broker_dir);
}

static void run_all(int argc, char **argv) {
  RUN(test_queue_publish);
  RUN(test_sends_in_order);
  RUN(test_cut_holds_later_sends);
  RUN(test_per_route_queues);
  RUN(test_exchange_direct);
  RUN(test_exchange_topic);
  RUN(test_exchange_unbound);
  RUN(test_exchange_flags);
  RUN(test_queue_conflict);
  RUN(test_route_conflict);
  RUN(test_exchange_conflict);
  RUN(test_quorum_queue);
  RUN(test_quorum_on_classic);
  RUN(test_queue_type_settings);
  RUN(test_two_connections);
  RUN(test_connections_settings);
  RUN(test_large_body);
  RUN(test_size_limit);
  RUN(test_bad_routes);
  RUN(test_describe_and_secrets);
  RUN(test_tls);
  RUN(test_broker_absent);
  RUN(test_idle_heartbeats);
  RUN(test_destroy_in_flight);
  RUN(test_hung_broker);
  RUN(test_broker_restart); /* last: it restarts the broker */
}

int main(int argc, char **argv) {
  double start = now_sec();
  int rc;

  hk_log_min_level = HK_LOG_WARN;
  signal(SIGPIPE, SIG_IGN);
  loop = uv_default_loop();
  uv_timer_init(loop, &tick);
  uv_timer_start(&tick, tick_cb, 50, 50);
  rc = broker_setup();
  if (rc == 1) {
    printf("test_transport_amqp: SKIP: rabbitmq-server is not installed\n");
    return 0;
  }
  if (rc == 0) run_all(argc, argv);
  else FAILF("cannot start rabbitmq-server (see above)");
  broker_teardown();
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(loop, UV_RUN_DEFAULT); /* every target's handles close */
  CHECK(uv_loop_close(loop) == 0);
  printf("test_transport_amqp: %.1fs\n", now_sec() - start);
  return test_finish("test_transport_amqp");
}
