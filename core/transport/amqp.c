/* RabbitMQ transport (AMQP 0-9-1 through rabbitmq-c): publishes each
 * message of a send persistently with publisher confirms and reports every
 * message on its own. rabbitmq-c blocks, so each target owns a worker
 * thread with one connection and one channel; the loop thread hands it
 * sends through a queue under a mutex (waking it with a pipe) and gets the
 * outcomes back, in the same order, through a uv_async_t. The worker
 * publishes a send while earlier ones still wait for their confirms, so
 * the broker's confirm latency overlaps. A loop-side watchdog unsticks a
 * worker that stops making progress, so a hung broker never holds a
 * hook's callback for good. */
#include "transport/transport.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "transport/pool.h"

#define HK_AMQP_FRAME_MAX 131072 /* asked of the broker; rabbitmq-c splits bodies */
#define HK_AMQP_NAME_MAX 255     /* AMQP shortstr: queue, exchange, routing key */
#define HK_AMQP_BODY_MAX ((size_t)128 << 20) /* RabbitMQ's default max_message_size */
#define HK_AMQP_BACKOFF_MIN 0.5
#define HK_AMQP_BACKOFF_MAX 30.0
#define HK_AMQP_IDLE_MS 1000       /* longest idle sleep of a connected worker */
#define HK_AMQP_DECLARED_MAX 4096  /* queue names remembered per connection */
#define HK_AMQP_KICK_GRACE_SEC 5.0 /* after a kick, before the loop gives up */
#define HK_AMQP_MIN_SECRET 4       /* shorter passwords are not scrubbed */
#define HK_AMQP_CONNECTIONS_MAX 4  /* a hook has at most 4 rounds in flight */

/* One message of a send, copied into the job's arena: the body, then the
 * routing key after it. */
typedef struct amqp_item {
  char *data;
  size_t len;
  const char *key; /* the queue name (queue targets) or routing key */
  uint64_t tag;    /* delivery tag once published, 0 before */
  int done;        /* the outcome is in the job's res */
  int returned;    /* came back unroutable: its confirm means FAIL */
} amqp_item;

typedef struct amqp_job {
  struct amqp_job *next;  /* in the todo, worker or answered list */
  struct amqp_job *lnext; /* in the loop's list of sends in flight */
  amqp_item *items;
  hk_tx_result *res;
  char *arena; /* the items' bodies and keys */
  size_t n;
  size_t open;     /* items without an outcome yet */
  size_t cursor;   /* every item before it has its outcome */
  double deadline; /* worker: every confirm is due by then */
  hk_tx_batch_cb cb;
  void *ctx;
  int abandoned; /* the loop stopped waiting; the worker frees the job */
} amqp_job;

/* A queue of jobs, oldest first. */
typedef struct job_list {
  amqp_job *head, *tail;
} job_list;

/* Settings, read-only once the target exists. */
typedef struct amqp_conf {
  char *host, *user, *password, *vhost, *queue, *exchange, *ca_file;
  const char *exchange_type;
  int port, heartbeat, tls, durable, auto_delete, is_exchange;
  int quorum; /* queue_type "quorum": queues declared x-queue-type=quorum */
  double confirm_timeout, connect_timeout;
} amqp_conf;

/* A basic.return being read: the method, then a header and body frames. */
typedef struct amqp_ret {
  int active;
  unsigned code;
  char text[64];
  char key[HK_AMQP_NAME_MAX + 1];
  char *body; /* NULL when not kept; then matching is by key alone */
  size_t size, got;
} amqp_ret;

/* The worker's connection; only the worker thread touches it. */
typedef struct amqp_conn {
  amqp_connection_state_t st; /* NULL while disconnected */
  amqp_channel_t ch;          /* 0 while no channel is open */
  amqp_channel_t last_ch;
  int channel_max;
  uint64_t next_tag; /* delivery tag of the next publish on ch */
  char **declared;   /* queues declared on this connection */
  size_t n_declared;
  double backoff;
  double next_try; /* monotonic time of the next background attempt */
  double last_end; /* when the last attempt finished */
  char err[400];   /* why the last attempt or the connection failed */
  size_t body_max; /* the broker's max_message_size, once it told us */
  amqp_ret ret;
  job_list active; /* published, waiting for confirms, oldest first */
} amqp_conn;

typedef struct hk_amqp {
  hk_tx_target base;
  amqp_conf conf;
  char desc[1024];
  double stall_sec; /* a send without progress this long gets kicked */
  /* loop thread only */
  uv_loop_t *loop;
  uv_async_t async;
  uv_timer_t watchdog;
  amqp_job *flight, *flight_last; /* sends not yet answered, in order */
  size_t n_flight;
  int destroyed, kicked, handles_closing, n_handles;
  /* shared with the worker, under mu */
  pthread_mutex_t mu;
  job_list todo;     /* handed over, not yet taken by the worker */
  job_list answered; /* finished by the worker, not yet delivered */
  size_t unanswered; /* handed over and not yet in answered */
  int cut;           /* confirms were lost: publish nothing until the loop
                        has every answer (see cut_active) */
  int closing, loop_gone, refs;
  int fd;          /* the connection's socket, for the watchdog's kick */
  int kicked_fd;   /* the watchdog shut that socket */
  double progress; /* when the worker last got anywhere */
  int wake[2];
  /* worker thread only */
  amqp_conn c;
} hk_amqp;

/* ---- small helpers ---------------------------------------------------- */

static double now_sec(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timeval tv_from(double sec) {
  struct timeval tv;

  if (sec < 0) sec = 0;
  tv.tv_sec = (time_t)sec;
  tv.tv_usec = (suseconds_t)((sec - (double)tv.tv_sec) * 1e6);
  return tv;
}


static void lock(hk_amqp *a) { pthread_mutex_lock(&a->mu); }
static void unlock(hk_amqp *a) { pthread_mutex_unlock(&a->mu); }

/* Replaces the password by "***" in text that came from the broker. The
 * well-known default "guest" is no secret and stays, so names that
 * contain it are not mangled. */
static void scrub(const hk_amqp *a, char *s) {
  const char *pw = a->conf.password;
  size_t n = strlen(pw);
  char *hit;

  if (n < HK_AMQP_MIN_SECRET || strcmp(pw, "guest") == 0) return;
  while ((hit = strstr(s, pw)) != NULL) {
    memcpy(hit, "***", 3);
    memmove(hit + 3, hit + n, strlen(hit + n) + 1);
  }
}

static const char *esc(char *buf, size_t n, const char *s) {
  return hk_log_escape(buf, n, s);
}

/* Writes the broker's "<text> (<code>)", e.g. "NOT_FOUND - no exchange
 * 'x' in vhost '/' (404)", scrubbed of the password. */
static void broker_text(const hk_amqp *a, char *out, size_t n, unsigned code,
                        amqp_bytes_t text) {
  snprintf(out, n, "%.*s (%u)", (int)text.len, (const char *)text.bytes, code);
  scrub(a, out);
}

/* ---- jobs ------------------------------------------------------------- */

static void job_free(amqp_job *job) {
  if (job == NULL) return;
  free(job->arena);
  free(job->items);
  free(job->res);
  free(job);
}

static void list_push(job_list *l, amqp_job *job) {
  job->next = NULL;
  if (l->tail != NULL) l->tail->next = job;
  else l->head = job;
  l->tail = job;
}

static amqp_job *list_pop(job_list *l) {
  amqp_job *job = l->head;

  if (job == NULL) return NULL;
  l->head = job->next;
  if (l->head == NULL) l->tail = NULL;
  job->next = NULL;
  return job;
}

/* The routing key of message m: a queue target with a queue of its own
 * ignores the route. */
static const char *item_key(const hk_amqp *a, const hk_tx_msg *m) {
  if (!a->conf.is_exchange && a->conf.queue[0] != '\0') return a->conf.queue;
  return m->route != NULL ? m->route : "";
}

/* Copies every body and key into one block: one allocation per send. */
static int job_copy(const hk_amqp *a, amqp_job *job, const hk_tx_msg *msgs) {
  size_t total = 1;
  char *p;

  for (size_t i = 0; i < job->n; i++)
    total += msgs[i].len + strlen(item_key(a, &msgs[i])) + 1;
  if ((job->arena = p = malloc(total)) == NULL) return -1;
  for (size_t i = 0; i < job->n; i++) {
    const char *key = item_key(a, &msgs[i]);
    size_t klen = strlen(key);
    amqp_item *it = &job->items[i];

    if (msgs[i].len > 0) memcpy(p, msgs[i].data, msgs[i].len);
    it->data = p;
    it->len = msgs[i].len;
    p += msgs[i].len;
    memcpy(p, key, klen + 1);
    it->key = p;
    p += klen + 1;
  }
  return 0;
}

static amqp_job *job_new(const hk_amqp *a, const hk_tx_msg *msgs, size_t n,
                         hk_tx_batch_cb cb, void *ctx) {
  amqp_job *job = calloc(1, sizeof *job);

  if (job == NULL) return NULL;
  job->items = calloc(n ? n : 1, sizeof *job->items);
  job->res = calloc(n ? n : 1, sizeof *job->res);
  if (job->items == NULL || job->res == NULL) goto fail;
  job->n = job->open = n;
  job->cb = cb;
  job->ctx = ctx;
  for (size_t i = 0; i < n; i++) job->res[i].status = HK_TX_RETRY;
  if (job_copy(a, job, msgs) != 0) goto fail;
  return job;
fail:
  job_free(job);
  return NULL;
}

/* Gives message i its outcome; reason NULL keeps the one already set. */
static void item_set(amqp_job *job, size_t i, hk_tx_status st,
                     const char *reason) {
  if (job->items[i].done) return;
  job->items[i].done = 1;
  job->open--;
  job->res[i].status = st;
  if (reason != NULL)
    snprintf(job->res[i].reason, sizeof job->res[i].reason, "%s", reason);
}

static void job_settle(amqp_job *job, hk_tx_status st, const char *reason) {
  for (size_t i = job->cursor; i < job->n && job->open > 0; i++)
    item_set(job, i, st, reason);
}

/* Moves the cursor past the items that have their outcome. */
static void job_advance(amqp_job *job) {
  while (job->cursor < job->n && job->items[job->cursor].done) job->cursor++;
}

/* ---- settings --------------------------------------------------------- */

/* The value of key (the last one wins), or NULL. */
static const char *kv_get(const hk_kv *kv, size_t n, const char *key) {
  const char *v = NULL;

  for (size_t i = 0; i < n; i++)
    if (kv[i].key != NULL && strcmp(kv[i].key, key) == 0) v = kv[i].value;
  return v;
}

static int conf_str(char **out, const hk_kv *kv, size_t n, const char *key,
                    const char *def) {
  const char *v = kv_get(kv, n, key);

  *out = strdup(v != NULL ? v : def);
  return *out != NULL ? 0 : -1;
}

static int conf_bool(int *out, const hk_kv *kv, size_t n, const char *key,
                     int def, char *err, size_t errlen) {
  const char *v = kv_get(kv, n, key);

  *out = def;
  if (v == NULL) return 0;
  if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
    *out = v[0] == 't';
    return 0;
  }
  hk_tx_errorf(err, errlen, "%s must be \"true\" or \"false\"", key);
  return -1;
}

static int conf_num(double *out, const hk_kv *kv, size_t n, const char *key,
                    double def, double min, double max, char *err,
                    size_t errlen) {
  const char *v = kv_get(kv, n, key);
  char *end;

  *out = def;
  if (v == NULL) return 0;
  errno = 0;
  *out = strtod(v, &end);
  if (errno == 0 && end != v && *end == '\0' && *out >= min && *out <= max)
    return 0;
  hk_tx_errorf(err, errlen, "%s must be a number from %g to %g", key, min, max);
  return -1;
}

/* An AMQP name: at most 255 bytes, no control characters. */
static int name_ok(const char *s) {
  if (strlen(s) > HK_AMQP_NAME_MAX) return 0;
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return 0;
  return 1;
}

static int conf_names(amqp_conf *f, const hk_kv *kv, size_t n, char *err,
                      size_t errlen) {
  const char *type = kv_get(kv, n, "exchange_type");

  if (conf_str(&f->queue, kv, n, "queue", "") != 0 ||
      conf_str(&f->exchange, kv, n, "exchange", "") != 0) {
    hk_tx_errorf(err, errlen, "out of memory");
    return -1;
  }
  if (!name_ok(f->queue) || !name_ok(f->exchange)) {
    hk_tx_errorf(err, errlen, "queue and exchange must be at most 255 bytes "
            "without control characters");
    return -1;
  }
  if (f->is_exchange && f->exchange[0] == '\0') {
    hk_tx_errorf(err, errlen, "exchange must name an exchange");
    return -1;
  }
  f->exchange_type = "direct";
  if (type != NULL && strcmp(type, "topic") == 0) f->exchange_type = "topic";
  else if (type != NULL && strcmp(type, "direct") != 0) {
    hk_tx_errorf(err, errlen, "exchange_type must be \"direct\" or \"topic\"");
    return -1;
  }
  return 0;
}

/* The system's CA bundle: $SSL_CERT_FILE, else the first usual path. */
static const char *ca_default(void) {
  static const char *const paths[] = {
      "/etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Alpine */
      "/etc/pki/tls/certs/ca-bundle.crt",   /* Fedora, RHEL */
      "/etc/ssl/ca-bundle.pem",             /* openSUSE */
      "/etc/ssl/cert.pem",                  /* BSDs, macOS */
  };
  const char *env = getenv("SSL_CERT_FILE");

  if (env != NULL && *env && access(env, R_OK) == 0) return env;
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
    if (access(paths[i], R_OK) == 0) return paths[i];
  return NULL;
}

/* rabbitmq-c loads no default trust store, so TLS needs a CA file: the
 * given one or the system bundle. */
static int conf_tls(amqp_conf *f, const hk_kv *kv, size_t n, char *err,
                    size_t errlen) {
  const char *ca = kv_get(kv, n, "tls_ca_file");

  if (conf_bool(&f->tls, kv, n, "tls", 0, err, errlen) != 0) return -1;
  if (!f->tls) return 0;
  if (ca == NULL || *ca == '\0') ca = ca_default();
  if (ca == NULL) {
    hk_tx_errorf(err, errlen, "tls: no system CA bundle found; set tls_ca_file");
    return -1;
  }
  if (access(ca, R_OK) != 0) {
    hk_tx_errorf(err, errlen, "tls_ca_file %s: %s", ca, strerror(errno));
    return -1;
  }
  f->ca_file = strdup(ca);
  if (f->ca_file == NULL) hk_tx_errorf(err, errlen, "out of memory");
  return f->ca_file != NULL ? 0 : -1;
}

/* queue_type: "classic" (the default: declared without arguments, as
 * before the setting existed) or "quorum". Queue targets only. */
static int conf_queue_type(amqp_conf *f, const hk_kv *kv, size_t n,
                           char *err, size_t errlen) {
  const char *v = kv_get(kv, n, "queue_type");

  f->quorum = 0;
  if (v == NULL) return 0;
  if (f->is_exchange) {
    hk_tx_errorf(err, errlen, "queue_type is a setting of rabbitmq_queue "
                 "only (an exchange target declares no queue)");
    return -1;
  }
  if (strcmp(v, "quorum") == 0) f->quorum = 1;
  else if (strcmp(v, "classic") != 0) {
    hk_tx_errorf(err, errlen, "queue_type must be \"classic\" or \"quorum\"");
    return -1;
  }
  return 0;
}

static int conf_numbers(amqp_conf *f, const hk_kv *kv, size_t n, char *err,
                        size_t errlen) {
  double port, hb;

  if (conf_num(&port, kv, n, "port", 5672, 1, 65535, err, errlen) != 0 ||
      conf_num(&hb, kv, n, "heartbeat_sec", 30, 0, 65535, err, errlen) != 0 ||
      conf_num(&f->confirm_timeout, kv, n, "confirm_timeout_sec", 30, 0.001,
               86400, err, errlen) != 0 ||
      conf_num(&f->connect_timeout, kv, n, "connect_timeout_sec", 10, 0.001,
               86400, err, errlen) != 0 ||
      conf_bool(&f->durable, kv, n, "durable", 1, err, errlen) != 0 ||
      conf_bool(&f->auto_delete, kv, n, "auto_delete", 0, err, errlen) != 0)
    return -1;
  f->port = (int)port;
  f->heartbeat = (int)hb;
  return 0;
}

static int conf_load(amqp_conf *f, const char *type, const hk_kv *kv,
                     size_t n, char *err, size_t errlen) {
  if (type != NULL && strcmp(type, "rabbitmq_exchange") == 0)
    f->is_exchange = 1;
  else if (type == NULL || strcmp(type, "rabbitmq_queue") != 0) {
    hk_tx_errorf(err, errlen, "unknown send type %s", type ? type : "(none)");
    return -1;
  }
  if (conf_str(&f->host, kv, n, "host", "") != 0 ||
      conf_str(&f->user, kv, n, "user", "guest") != 0 ||
      conf_str(&f->password, kv, n, "password", "guest") != 0 ||
      conf_str(&f->vhost, kv, n, "vhost", "/") != 0) {
    hk_tx_errorf(err, errlen, "out of memory");
    return -1;
  }
  if (f->host[0] == '\0') {
    hk_tx_errorf(err, errlen, "host is required");
    return -1;
  }
  if (conf_names(f, kv, n, err, errlen) != 0 ||
      conf_queue_type(f, kv, n, err, errlen) != 0 ||
      conf_numbers(f, kv, n, err, errlen) != 0)
    return -1;
  return conf_tls(f, kv, n, err, errlen);
}

static void conf_free(amqp_conf *f) {
  free(f->host);
  free(f->user);
  free(f->password);
  free(f->vhost);
  free(f->queue);
  free(f->exchange);
  free(f->ca_file);
}

/* src percent-encoded into dst (cap bytes) but for letters, digits and
 * "-._~", cut to fit: a name may hold spaces, quotes or '=', which would
 * otherwise read as other fields of the log lines that show it. */
static void encode_name(char *dst, size_t cap, const char *src) {
  size_t j = 0;

  for (const char *p = src; *p && j + 4 < cap; p++) {
    unsigned char ch = (unsigned char)*p;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9') || strchr("-._~", ch) != NULL)
      dst[j++] = (char)ch;
    else
      j += (size_t)snprintf(dst + j, 4, "%%%02X", ch);
  }
  dst[j] = '\0';
}

/* "amqp://host:port/VHOST queue=NAME" (or exchange=), without
 * credentials, the vhost and the name percent-encoded; "queue=(route)"
 * when each message names its queue; " queue_type=quorum" after it for
 * quorum queues. */
static void describe_build(hk_amqp *a) {
  const amqp_conf *f = &a->conf;
  char vhost[3 * 256 + 1], name[3 * 256 + 1];
  int v6 = strchr(f->host, ':') != NULL;

  encode_name(vhost, sizeof vhost, f->vhost);
  if (!f->is_exchange && f->queue[0] == '\0')
    snprintf(name, sizeof name, "(route)");
  else
    encode_name(name, sizeof name, f->is_exchange ? f->exchange : f->queue);
  snprintf(a->desc, sizeof a->desc, "%s://%s%.255s%s:%d/%.300s %s=%.300s%s",
           f->tls ? "amqps" : "amqp", v6 ? "[" : "", f->host, v6 ? "]" : "",
           f->port, vhost, f->is_exchange ? "exchange" : "queue", name,
           f->quorum ? " queue_type=quorum" : "");
}

/* ---- the worker's connection ------------------------------------------ */

static void touch(hk_amqp *a) {
  lock(a);
  a->progress = now_sec();
  unlock(a);
}

/* "connection lost: <detail>", saying so when it was the watchdog that
 * shut the socket under a stalled call. */
static void lost_reason(hk_amqp *a, char *why, size_t n, const char *detail) {
  int kicked;

  lock(a);
  kicked = a->kicked_fd;
  a->kicked_fd = 0;
  unlock(a);
  if (kicked)
    snprintf(why, n, "connection lost: no progress for %gs, dropped (%s)",
             a->stall_sec, detail);
  else
    snprintf(why, n, "connection lost: %s", detail);
}

static void declared_clear(amqp_conn *c) {
  for (size_t i = 0; i < c->n_declared; i++) free(c->declared[i]);
  free(c->declared);
  c->declared = NULL;
  c->n_declared = 0;
}

static ssize_t declared_find(const amqp_conn *c, const char *name) {
  for (size_t i = 0; i < c->n_declared; i++)
    if (strcmp(c->declared[i], name) == 0) return (ssize_t)i;
  return -1;
}

/* Remembers name; forgetting everything when full only costs redeclares. */
static void declared_add(amqp_conn *c, const char *name) {
  char **grown;
  char *copy;

  if (c->n_declared == HK_AMQP_DECLARED_MAX) declared_clear(c);
  grown = realloc(c->declared, (c->n_declared + 1) * sizeof *grown);
  if (grown == NULL) return;
  c->declared = grown;
  copy = strdup(name);
  if (copy != NULL) c->declared[c->n_declared++] = copy;
}

static void declared_forget(amqp_conn *c, const char *name) {
  ssize_t i = declared_find(c, name);

  if (i < 0) return;
  free(c->declared[i]);
  c->declared[i] = c->declared[--c->n_declared];
}

static void ret_reset(amqp_ret *r) {
  free(r->body);
  memset(r, 0, sizeof *r);
}

/* The channel or the connection went away with the published messages
 * that had no confirm yet: they are retried. The sends not yet published
 * are then answered RETRY without publishing (see worker_take) until the
 * loop has every answer, so none of them overtakes the retry on a new
 * channel. */
static void cut_active(hk_amqp *a, const char *why) {
  int lost = 0;

  for (amqp_job *job = a->c.active.head; job != NULL; job = job->next) {
    lost |= job->open > 0;
    job_settle(job, HK_TX_RETRY, why);
  }
  if (!lost) return;
  lock(a);
  a->cut = 1;
  unlock(a);
}

/* Forgets the connection after an error; why is logged and kept for the
 * sends that find no connection. The next attempt waits for the backoff. */
static void conn_lost(hk_amqp *a, const char *why) {
  char buf[512];

  cut_active(a, why);
  lock(a);
  a->fd = -1;
  a->kicked_fd = 0;
  unlock(a);
  amqp_destroy_connection(a->c.st);
  a->c.st = NULL;
  a->c.ch = 0;
  declared_clear(&a->c);
  ret_reset(&a->c.ret);
  snprintf(a->c.err, sizeof a->c.err, "%s", why);
  a->c.last_end = now_sec();
  a->c.next_try = a->c.last_end + a->c.backoff;
  hk_warn("amqp", "dest=%s msg=\"connection lost\" reason=\"%s\"", a->desc,
          esc(buf, sizeof buf, why));
}

/* Writes why an RPC failed, in the broker's words when it gave any. */
static void reply_text(const hk_amqp *a, amqp_rpc_reply_t r, char *out,
                       size_t n) {
  const amqp_connection_close_t *cc = r.reply.decoded;
  const amqp_channel_close_t *hc = r.reply.decoded;

  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
    snprintf(out, n, "%s", amqp_error_string2(r.library_error));
  else if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION)
    snprintf(out, n, "no reply");
  else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
    broker_text(a, out, n, cc->reply_code, cc->reply_text);
  else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
    broker_text(a, out, n, hc->reply_code, hc->reply_text);
  else
    snprintf(out, n, "unexpected %s", amqp_method_name(r.reply.id));
}

static void frame_handle(hk_amqp *a, const amqp_frame_t *f);

/* Handles the frames rabbitmq-c set aside during an RPC (confirms and
 * returns that came before its answer), so that a channel the RPC closed
 * cuts only what really lost its confirm. */
static void drain_queued(hk_amqp *a) {
  struct timeval zero = {0, 0};
  amqp_frame_t f;

  while (amqp_frames_enqueued(a->c.st) &&
         amqp_simple_wait_frame_noblock(a->c.st, &f, &zero) == AMQP_STATUS_OK)
    frame_handle(a, &f);
}

/* After a failed RPC named what: returns 1 when the broker closed only
 * the channel (why: "<what> refused: <broker text>"), -1 when the
 * connection is gone (why: "connection lost: ..."). */
static int rpc_failed(hk_amqp *a, const char *what, char *why, size_t n) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(a->c.st);
  char text[400];

  reply_text(a, r, text, sizeof text);
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
      r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_ok_t ok = {0};
    drain_queued(a);
    amqp_send_method(a->c.st, a->c.ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    a->c.ch = 0;
    snprintf(why, n, "%s refused: %s", what, text);
    cut_active(a, why);
    return 1;
  }
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
      r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    amqp_connection_close_ok_t ok = {0};
    amqp_send_method(a->c.st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
  }
  snprintf(why, n, "connection lost: %s: %s", what, text);
  conn_lost(a, why);
  return -1;
}

static int exchange_declare(hk_amqp *a, char *why, size_t n) {
  const amqp_conf *f = &a->conf;
  char what[300];

  if (amqp_exchange_declare(a->c.st, a->c.ch, amqp_cstring_bytes(f->exchange),
                            amqp_cstring_bytes(f->exchange_type), 0,
                            f->durable, f->auto_delete, 0,
                            amqp_empty_table) != NULL)
    return 0;
  snprintf(what, sizeof what, "exchange.declare \"%s\"", f->exchange);
  return rpc_failed(a, what, why, n);
}

/* The arguments of a queue.declare: {"x-queue-type": "quorum"} (in *e)
 * for a quorum target, else none at all, so that a classic target stays
 * equivalent to queues declared before queue_type existed. */
static amqp_table_t queue_args(const hk_amqp *a, amqp_table_entry_t *e) {
  amqp_table_t t = amqp_empty_table;

  if (!a->conf.quorum) return t;
  e->key = amqp_cstring_bytes("x-queue-type");
  e->value.kind = AMQP_FIELD_KIND_UTF8; /* 'S', a longstr */
  e->value.value.bytes = amqp_cstring_bytes("quorum");
  t.num_entries = 1;
  t.entries = e;
  return t;
}

/* Declares queue name (durable, never auto-deleted: the durable and
 * auto_delete settings are the exchange's; quorum when queue_type says
 * so) unless this connection already did. Returns 0, 1 when the broker
 * refused it (the channel is closed; e.g. the queue exists with another
 * type), -1 when the connection is gone. */
static int queue_declare_once(hk_amqp *a, const char *name, char *why,
                              size_t n) {
  amqp_table_entry_t type_arg;
  char what[300];

  if (declared_find(&a->c, name) >= 0) return 0;
  touch(a);
  if (amqp_queue_declare(a->c.st, a->c.ch, amqp_cstring_bytes(name), 0, 1, 0,
                         0, queue_args(a, &type_arg)) != NULL) {
    declared_add(&a->c, name);
    return 0;
  }
  snprintf(what, sizeof what, "queue.declare \"%s\"", name);
  return rpc_failed(a, what, why, n);
}

static void log_refused(const hk_amqp *a, const char *why) {
  char buf[512];

  hk_warn("amqp", "dest=%s msg=\"declare refused\" reason=\"%s\"", a->desc,
          esc(buf, sizeof buf, why));
}

/* Makes sure a channel in confirm mode is open, with the target's exchange
 * or fixed queue declared. Returns 0; 1 when the broker refused (why says
 * how; the channel is closed again); -1 without a connection. */
static int channel_ensure(hk_amqp *a, char *why, size_t n) {
  amqp_channel_t ch;
  int rc = 0;

  if (a->c.st == NULL) {
    snprintf(why, n, "not connected: %s", a->c.err);
    return -1;
  }
  if (a->c.ch != 0) return 0;
  /* A fresh number each time keeps late frames of a closed channel from
   * being taken for this one's. */
  ch = (amqp_channel_t)(a->c.last_ch % a->c.channel_max + 1);
  a->c.last_ch = ch;
  a->c.ch = ch;
  if (amqp_channel_open(a->c.st, ch) == NULL)
    return rpc_failed(a, "channel.open", why, n);
  if (amqp_confirm_select(a->c.st, ch) == NULL)
    return rpc_failed(a, "confirm.select", why, n);
  a->c.next_tag = 1;
  if (a->conf.is_exchange) rc = exchange_declare(a, why, n);
  else if (a->conf.queue[0] != '\0')
    rc = queue_declare_once(a, a->conf.queue, why, n);
  if (rc > 0) log_refused(a, why);
  return rc;
}

static amqp_socket_t *tls_socket(hk_amqp *a, amqp_connection_state_t st) {
  amqp_socket_t *s = amqp_ssl_socket_new(st);

  if (s == NULL) {
    snprintf(a->c.err, sizeof a->c.err, "cannot set up TLS");
    return NULL;
  }
  amqp_ssl_socket_set_verify_peer(s, 1);
  amqp_ssl_socket_set_verify_hostname(s, 1);
  if (amqp_ssl_socket_set_cacert(s, a->conf.ca_file) != AMQP_STATUS_OK) {
    snprintf(a->c.err, sizeof a->c.err, "cannot load CA file %s",
             a->conf.ca_file);
    return NULL;
  }
  return s;
}

/* Connects and logs in, every step bounded by connect_timeout_sec.
 * Returns the connection, or NULL with a->c.err set. */
static amqp_connection_state_t conn_open(hk_amqp *a) {
  const amqp_conf *f = &a->conf;
  amqp_connection_state_t st = amqp_new_connection();
  struct timeval tv = tv_from(f->connect_timeout);
  amqp_socket_t *sock;
  amqp_rpc_reply_t r;
  char text[400];
  int rc;

  if (st == NULL) {
    snprintf(a->c.err, sizeof a->c.err, "out of memory");
    return NULL;
  }
  sock = f->tls ? tls_socket(a, st) : amqp_tcp_socket_new(st);
  if (sock == NULL) goto fail;
  rc = amqp_socket_open_noblock(sock, f->host, f->port, &tv);
  if (rc != AMQP_STATUS_OK) { /* rabbitmq-c keeps no errno worth quoting */
    snprintf(a->c.err, sizeof a->c.err, "cannot connect to %s:%d: %s",
             f->host, f->port, amqp_error_string2(rc));
    goto fail;
  }
  amqp_set_handshake_timeout(st, &tv);
  amqp_set_rpc_timeout(st, &tv);
  r = amqp_login(st, f->vhost, 0, HK_AMQP_FRAME_MAX, f->heartbeat,
                 AMQP_SASL_METHOD_PLAIN, f->user, f->password);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return st;
  reply_text(a, r, text, sizeof text);
  snprintf(a->c.err, sizeof a->c.err, "login failed: %.380s", text);
fail:
  amqp_destroy_connection(st);
  return NULL;
}

static void conn_ready(hk_amqp *a, amqp_connection_state_t st) {
  char why[400];

  a->c.st = st;
  a->c.ch = 0;
  a->c.channel_max = amqp_get_channel_max(st);
  if (a->c.channel_max <= 0) a->c.channel_max = 65535;
  a->c.backoff = HK_AMQP_BACKOFF_MIN;
  lock(a);
  a->fd = amqp_get_sockfd(st);
  unlock(a);
  hk_info("amqp", "dest=%s msg=connected frame_max=%d heartbeat=%ds", a->desc,
          amqp_get_frame_max(st), amqp_get_heartbeat(st));
  /* Declaring now shows a conflict in the log before any send; a refusal
   * is answered again, per message, when a send needs the channel. */
  channel_ensure(a, why, sizeof why);
}

static void conn_try(hk_amqp *a) {
  amqp_connection_state_t st = conn_open(a);
  char buf[512];

  a->c.last_end = now_sec();
  if (st != NULL) {
    conn_ready(a, st);
    return;
  }
  a->c.next_try = a->c.last_end + a->c.backoff;
  hk_warn("amqp", "dest=%s msg=\"cannot connect\" retry_in=%.1fs reason=\"%s\"",
          a->desc, a->c.backoff, esc(buf, sizeof buf, a->c.err));
  a->c.backoff *= 2;
  if (a->c.backoff > HK_AMQP_BACKOFF_MAX) a->c.backoff = HK_AMQP_BACKOFF_MAX;
}

/* ---- frames: confirms, returns, closes -------------------------------- */

/* Settles a confirmed item. A message that came back unroutable fails
 * even though the broker acks it. */
static void confirm_item(amqp_job *job, size_t i, hk_tx_status st) {
  if (job->items[i].returned) item_set(job, i, HK_TX_FAIL, NULL);
  else item_set(job, i, st, st == HK_TX_OK ? "" : "nack");
}

/* A confirm for tag (and every earlier one when multiple; all of them for
 * a multiple 0). Tags grow in publish order through the jobs, so the scan
 * starts at each job's cursor and stops past tag. */
static void confirm(hk_amqp *a, uint64_t tag, int multiple,
                    hk_tx_status st) {
  uint64_t last = multiple && tag == 0 ? UINT64_MAX : tag;

  for (amqp_job *job = a->c.active.head; job != NULL; job = job->next) {
    int past = 0;

    for (size_t i = job->cursor; i < job->n && !past; i++) {
      amqp_item *it = &job->items[i];

      if (it->done || it->tag == 0) continue;
      past = it->tag > last;
      if (!past && (multiple || it->tag == tag)) confirm_item(job, i, st);
    }
    job_advance(job);
    if (past) return;
  }
}

/* The message a basic.return stands for. Returns carry no delivery tag, so
 * the match is the earliest unconfirmed message with the returned routing
 * key and body (the broker returns in publish order), or by key alone when
 * the body was not kept. NULL when none (a late return). */
static amqp_item *return_match(hk_amqp *a, const amqp_ret *r,
                               amqp_job **owner, size_t *index) {
  amqp_item *first = NULL;

  for (amqp_job *job = a->c.active.head; job != NULL; job = job->next)
    for (size_t i = job->cursor; i < job->n; i++) {
      amqp_item *it = &job->items[i];
      if (it->done || it->tag == 0 || it->returned) continue;
      if (strcmp(it->key, r->key) != 0) continue;
      if (first == NULL) {
        first = it;
        *owner = job;
        *index = i;
      }
      if (r->body != NULL && it->len == r->size &&
          memcmp(it->data, r->body, r->size) == 0) {
        *owner = job;
        *index = i;
        return it;
      }
    }
  return first;
}

/* Under mandatory publishing a message no queue takes comes back. That is
 * a failure for good, not a retry: an exchange without a matching binding
 * (or a queue deleted under us) will not start routing by itself, and
 * retrying would only park the hook. Its confirm, which follows, settles
 * it as FAIL with this reason. */
static void return_finish(hk_amqp *a) {
  amqp_ret *r = &a->c.ret;
  amqp_job *job = NULL;
  size_t i = 0;
  amqp_item *it = return_match(a, r, &job, &i);

  if (it != NULL) {
    it->returned = 1;
    snprintf(job->res[i].reason, sizeof job->res[i].reason,
             "unroutable: %s (%u) exchange=%s routing_key=%s", r->text,
             r->code, a->conf.is_exchange ? a->conf.exchange : "(default)",
             r->key);
  }
  /* A queue target's queue is gone: declare it again next time. */
  if (!a->conf.is_exchange) declared_forget(&a->c, r->key);
  ret_reset(r);
}

static void return_start(hk_amqp *a, const amqp_basic_return_t *m) {
  amqp_ret *r = &a->c.ret;

  ret_reset(r);
  r->active = 1;
  r->code = m->reply_code;
  snprintf(r->text, sizeof r->text, "%.*s", (int)m->reply_text.len,
           (const char *)m->reply_text.bytes);
  snprintf(r->key, sizeof r->key, "%.*s", (int)m->routing_key.len,
           (const char *)m->routing_key.bytes);
}

static void return_content(hk_amqp *a, const amqp_frame_t *f) {
  amqp_ret *r = &a->c.ret;

  if (f->frame_type == AMQP_FRAME_HEADER) {
    r->size = (size_t)f->payload.properties.body_size;
    if (r->size > 0 && r->size <= HK_AMQP_BODY_MAX) r->body = malloc(r->size);
  } else if (f->frame_type == AMQP_FRAME_BODY) {
    amqp_bytes_t b = f->payload.body_fragment;
    if (r->body != NULL && r->got + b.len <= r->size)
      memcpy(r->body + r->got, b.bytes, b.len);
    r->got += b.len;
  } else {
    return;
  }
  if (r->got >= r->size) return_finish(a);
}

static void broker_closed_connection(hk_amqp *a,
                                     const amqp_connection_close_t *m) {
  amqp_connection_close_ok_t ok = {0};
  char text[400], why[512];

  broker_text(a, text, sizeof text, m->reply_code, m->reply_text);
  snprintf(why, sizeof why, "connection lost: broker closed the connection: %s",
           text);
  amqp_send_method(a->c.st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
  conn_lost(a, why);
}

/* RabbitMQ closes the channel for a body over its max_message_size
 * ("PRECONDITION_FAILED - message size S is larger than configured max
 * size N"). The messages over N fail as too large, and N is remembered so
 * later ones are refused before publishing instead of costing the channel
 * (and every other unconfirmed message) again. */
static void size_refused(hk_amqp *a, unsigned code, const char *text) {
  const char *p = strstr(text, "max size ");
  unsigned long long max;

  if (code != 406 || p == NULL || sscanf(p + 9, "%llu", &max) != 1) return;
  a->c.body_max = (size_t)max;
  for (amqp_job *job = a->c.active.head; job != NULL; job = job->next)
    for (size_t i = job->cursor; i < job->n; i++) {
      if (job->items[i].done || job->items[i].len <= max) continue;
      item_set(job, i, HK_TX_FAIL, text);
      job->res[i].too_large = 1;
    }
}

/* The broker closed a channel (e.g. NOT_FOUND after the exchange was
 * deleted): what was not confirmed is retried on a new channel, which
 * declares the exchange again. */
static void broker_closed_channel(hk_amqp *a, amqp_channel_t ch,
                                  const amqp_channel_close_t *m) {
  amqp_channel_close_ok_t ok = {0};
  char text[400], why[512], buf[512];

  amqp_send_method(a->c.st, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
  if (ch != a->c.ch) return;
  a->c.ch = 0;
  ret_reset(&a->c.ret);
  broker_text(a, text, sizeof text, m->reply_code, m->reply_text);
  snprintf(why, sizeof why, "channel closed by broker: %s", text);
  hk_warn("amqp", "dest=%s msg=\"channel closed\" reason=\"%s\"", a->desc,
          esc(buf, sizeof buf, text));
  size_refused(a, m->reply_code, text);
  cut_active(a, why);
}

static void method_handle(hk_amqp *a, amqp_channel_t ch,
                          const amqp_method_t *m) {
  if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
    broker_closed_connection(a, m->decoded);
    return;
  }
  if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
    broker_closed_channel(a, ch, m->decoded);
    return;
  }
  if (ch != a->c.ch) return;
  if (m->id == AMQP_BASIC_RETURN_METHOD) {
    return_start(a, m->decoded);
  } else if (m->id == AMQP_BASIC_ACK_METHOD) {
    const amqp_basic_ack_t *ack = m->decoded;
    confirm(a, ack->delivery_tag, ack->multiple, HK_TX_OK);
  } else if (m->id == AMQP_BASIC_NACK_METHOD) {
    const amqp_basic_nack_t *nack = m->decoded;
    confirm(a, nack->delivery_tag, nack->multiple, HK_TX_RETRY);
  }
}

/* Handles one frame for the jobs waiting for confirms (none while idle:
 * late frames are dropped). */
static void frame_handle(hk_amqp *a, const amqp_frame_t *f) {
  if (f->frame_type == AMQP_FRAME_METHOD)
    method_handle(a, f->channel, &f->payload.method);
  else if (f->channel == a->c.ch && a->c.ret.active)
    return_content(a, f);
}

/* ---- running a send ---------------------------------------------------- */

/* Why message it cannot be published at all, or 0: the checks the broker
 * would answer by closing the channel (and so losing every confirm). */
static int item_refusal(const hk_amqp *a, const amqp_item *it, char *why,
                        size_t n) {
  const char *what = a->conf.is_exchange ? "routing key" : "queue name";
  size_t klen = strlen(it->key);

  if (it->len > a->c.body_max) {
    snprintf(why, n, "message of %zu bytes is over the broker's limit of "
             "%zu", it->len, a->c.body_max);
    return 1;
  }
  if (klen > HK_AMQP_NAME_MAX)
    snprintf(why, n, "%s of %zu bytes is too long: AMQP allows at most %d",
             what, klen, HK_AMQP_NAME_MAX);
  else if (!name_ok(it->key))
    snprintf(why, n, "%s \"%.64s\" contains control characters", what,
             it->key);
  else if (!a->conf.is_exchange && klen == 0)
    snprintf(why, n, "empty queue name");
  else if (!a->conf.is_exchange && strncmp(it->key, "amq.", 4) == 0)
    snprintf(why, n, "queue name \"%.64s\" uses the reserved prefix amq.",
             it->key);
  else
    return 0;
  return 1;
}

static void refuse_bad(const hk_amqp *a, amqp_job *job) {
  char why[400];

  for (size_t i = 0; i < job->n; i++) {
    if (!item_refusal(a, &job->items[i], why, sizeof why)) continue;
    item_set(job, i, HK_TX_FAIL, why);
    job->res[i].too_large = job->items[i].len > a->c.body_max;
  }
}

static void fail_key(amqp_job *job, const char *key, const char *why) {
  for (size_t i = 0; i < job->n; i++)
    if (strcmp(job->items[i].key, key) == 0) item_set(job, i, HK_TX_FAIL, why);
}

/* Declares, before anything is published, each queue of the send not yet
 * declared on this connection. A refused declare fails that queue's
 * messages; the others go on over a new channel. Returns -1 when the
 * connection was lost (then every open message is settled). */
static int declare_routes(hk_amqp *a, amqp_job *job) {
  char why[512];

  for (size_t i = 0; i < job->n; i++) {
    amqp_item *it = &job->items[i];
    int rc;

    if (it->done) continue;
    rc = channel_ensure(a, why, sizeof why);
    if (rc == 0) rc = queue_declare_once(a, it->key, why, sizeof why);
    if (rc > 0 && a->conf.queue[0] == '\0') log_refused(a, why);
    if (rc > 0) fail_key(job, it->key, why);
    if (rc < 0) {
      job_settle(job, HK_TX_RETRY, why);
      return -1;
    }
  }
  return 0;
}

static int publish_one(hk_amqp *a, amqp_item *it) {
  amqp_basic_properties_t p;
  amqp_bytes_t exchange = amqp_empty_bytes, body;
  int rc;

  memset(&p, 0, sizeof p);
  p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  p.content_type = amqp_cstring_bytes("application/json");
  p.delivery_mode = 2; /* persistent */
  if (a->conf.is_exchange) exchange = amqp_cstring_bytes(a->conf.exchange);
  body.len = it->len;
  body.bytes = it->data;
  rc = amqp_basic_publish(a->c.st, a->c.ch, exchange,
                          amqp_cstring_bytes(it->key), 1, 0, &p, body);
  if (rc == AMQP_STATUS_OK) it->tag = a->c.next_tag++;
  return rc;
}

static int publish_all(hk_amqp *a, amqp_job *job) {
  char why[512];

  for (size_t i = 0; i < job->n; i++) {
    int rc;

    if (job->items[i].done) continue;
    rc = publish_one(a, &job->items[i]);
    if (rc != AMQP_STATUS_OK) {
      lost_reason(a, why, sizeof why, amqp_error_string2(rc));
      conn_lost(a, why);
      job_settle(job, HK_TX_RETRY, why);
      return -1;
    }
    touch(a);
  }
  job->deadline = now_sec() + a->conf.confirm_timeout;
  return 0;
}

static int is_cut(hk_amqp *a) {
  int cut;

  lock(a);
  cut = a->cut;
  unlock(a);
  return cut;
}

/* Publishes a send behind the ones waiting for their confirms. What cannot
 * go is settled here; the rest waits in the active list (the caller puts
 * the job there either way, so that answers keep their order). */
static void run_job(hk_amqp *a, amqp_job *job) {
  char why[512];
  int rc;

  refuse_bad(a, job);
  if (job->open == 0) return;
  /* A send is a reason to try now rather than at the next backoff step;
   * the dispatcher's own retry schedule keeps this from hammering. */
  if (a->c.st == NULL && now_sec() - a->c.last_end >= HK_AMQP_BACKOFF_MIN)
    conn_try(a);
  /* A refusal here is of the exchange or the fixed queue, which every
   * message of the send needs. */
  rc = channel_ensure(a, why, sizeof why);
  if (rc != 0) {
    job_settle(job, rc > 0 ? HK_TX_FAIL : HK_TX_RETRY, why);
    return;
  }
  if (!a->conf.is_exchange && declare_routes(a, job) < 0) return;
  /* A refused declare closed the channel under earlier sends. */
  if (is_cut(a)) {
    job_settle(job, HK_TX_RETRY, "not sent: an earlier send lost its "
               "channel before its confirms");
    return;
  }
  if (job->open > 0) publish_all(a, job);
}

/* ---- the worker thread ------------------------------------------------- */

static void target_free(hk_amqp *a) {
  conf_free(&a->conf);
  if (a->wake[0] >= 0) close(a->wake[0]);
  if (a->wake[1] >= 0) close(a->wake[1]);
  pthread_mutex_destroy(&a->mu);
  free(a);
}

static void target_unref(hk_amqp *a) {
  int left;

  lock(a);
  left = --a->refs;
  unlock(a);
  if (left == 0) target_free(a);
}

/* Hands a finished job to the loop (or frees it when the loop gave up on
 * it). The last answer always wakes the loop, which ends a cut. */
static void answer(hk_amqp *a, amqp_job *job) {
  int abandoned;

  lock(a);
  abandoned = job->abandoned;
  a->unanswered--;
  if (!abandoned) list_push(&a->answered, job);
  if ((!abandoned || a->unanswered == 0) && !a->loop_gone)
    uv_async_send(&a->async);
  unlock(a);
  if (abandoned) job_free(job);
}

/* Answers the oldest jobs that have every outcome, in order. */
static void answer_done(hk_amqp *a) {
  while (a->c.active.head != NULL && a->c.active.head->open == 0)
    answer(a, list_pop(&a->c.active));
}

/* Reads whatever the broker sent: confirms for the active jobs (late ones
 * are dropped while idle), heartbeats (answered inside rabbitmq-c), a
 * connection.close or a dead socket. */
static void drain_frames(hk_amqp *a) {
  struct timeval zero = {0, 0};
  char why[512];
  amqp_frame_t f;
  int got = 0;

  while (a->c.st != NULL) {
    int rc = amqp_simple_wait_frame_noblock(a->c.st, &f, &zero);
    if (rc == AMQP_STATUS_TIMEOUT) break;
    if (rc != AMQP_STATUS_OK) {
      lost_reason(a, why, sizeof why, amqp_error_string2(rc));
      conn_lost(a, why);
      break;
    }
    got = 1;
    frame_handle(a, &f);
  }
  if (got) touch(a);
  if (a->c.st != NULL) amqp_maybe_release_buffers(a->c.st);
}

/* Waits for the socket, the wake pipe (a new job), a due heartbeat or
 * ms; then reads what came. */
static void wait_and_drain(hk_amqp *a, int ms) {
  struct pollfd p[2] = {{a->wake[0], POLLIN, 0}, {-1, POLLIN, 0}};
  char drain[64];

  if (a->c.st != NULL) {
    int hb = amqp_get_heartbeat(a->c.st); /* as negotiated */
    p[1].fd = amqp_get_sockfd(a->c.st);
    if (hb > 0 && hb * 500 < ms) ms = hb * 500;
    if (amqp_data_in_buffer(a->c.st) || amqp_frames_enqueued(a->c.st)) ms = 0;
  }
  poll(p, 2, ms);
  if (p[0].revents & POLLIN)
    while (read(a->wake[0], drain, sizeof drain) > 0) {
    }
  if (a->c.st != NULL) drain_frames(a);
}

/* Sleeps until there is work, the socket has data, a heartbeat is due or
 * the next connection attempt. */
static void worker_wait(hk_amqp *a) {
  int ms = HK_AMQP_IDLE_MS;

  if (a->c.st == NULL) {
    double left = a->c.next_try - now_sec();
    if (left <= 0) {
      conn_try(a);
      return;
    }
    ms = (int)(left * 1000) + 1;
  }
  wait_and_drain(a, ms);
}

/* Reads confirms for the active jobs until a new job comes or the oldest
 * job's confirm_timeout_sec passes without all its confirms; then the
 * connection is dropped, so late confirms cannot be taken for later
 * sends'. */
static void await_confirms(hk_amqp *a) {
  double left = a->c.active.head->deadline - now_sec();
  char why[512];

  if (a->c.st == NULL || a->c.ch == 0) { /* settled when it went */
    cut_active(a, "channel lost");
    return;
  }
  if (left <= 0) {
    snprintf(why, sizeof why, "no publisher confirm within %gs",
             a->conf.confirm_timeout);
    conn_lost(a, why);
    return;
  }
  wait_and_drain(a, (int)(left * 1000) + 1);
}

/* The next job handed over, or NULL. A job that comes while confirms are
 * cut off is answered RETRY without publishing (see cut_active); so is
 * every job once the target is closing. */
static amqp_job *worker_take(hk_amqp *a, int *closing) {
  amqp_job *job;
  int cut;

  lock(a);
  job = list_pop(&a->todo);
  cut = a->cut;
  *closing = a->closing;
  unlock(a);
  if (job == NULL) return NULL;
  if (*closing) job_settle(job, HK_TX_RETRY, "shutting down");
  else if (cut)
    job_settle(job, HK_TX_RETRY, "not sent: an earlier send lost its "
               "connection or channel before its confirms");
  else run_job(a, job);
  return job;
}

static void worker_close(hk_amqp *a) {
  if (a->c.st != NULL) {
    lock(a);
    a->fd = -1;
    unlock(a);
    amqp_connection_close(a->c.st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(a->c.st);
    a->c.st = NULL;
  }
  declared_clear(&a->c);
  ret_reset(&a->c.ret);
  hk_info("amqp", "dest=%s msg=closed", a->desc);
}

/* Publishes each job as it comes and answers them in order as their
 * confirms arrive; jobs waiting for confirms still get them while the
 * target closes. */
static void *worker_main(void *arg) {
  hk_amqp *a = arg;

  for (;;) {
    int closing;
    amqp_job *job = worker_take(a, &closing);

    if (job != NULL) {
      list_push(&a->c.active, job);
    } else if (a->c.active.head != NULL) {
      await_confirms(a);
    } else if (closing) {
      break;
    } else {
      worker_wait(a);
    }
    answer_done(a);
  }
  worker_close(a);
  target_unref(a);
  return NULL;
}

/* Starts the worker detached (nobody joins it: it frees the target when
 * it is the last one out) with every signal blocked, so signals reach
 * the loop thread. */
static int worker_start(hk_amqp *a) {
  pthread_attr_t attr;
  sigset_t all, old;
  pthread_t tid;
  int rc;

  if (pthread_attr_init(&attr) != 0) return -1;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  a->refs++;
  rc = pthread_create(&tid, &attr, worker_main, a);
  if (rc != 0) a->refs--;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return rc == 0 ? 0 : -1;
}

/* ---- the loop side ----------------------------------------------------- */

static void handle_closed(uv_handle_t *h) {
  hk_amqp *a = h->data;

  if (--a->n_handles == 0) target_unref(a);
}

static void close_handles(hk_amqp *a) {
  if (a->handles_closing) return;
  a->handles_closing = 1;
  lock(a);
  a->loop_gone = 1;
  unlock(a);
  uv_close((uv_handle_t *)&a->async, handle_closed);
  uv_close((uv_handle_t *)&a->watchdog, handle_closed);
}

/* Takes the oldest send in flight off the loop's list. */
static amqp_job *flight_pop(hk_amqp *a) {
  amqp_job *job = a->flight;

  a->flight = job->lnext;
  if (a->flight == NULL) a->flight_last = NULL;
  a->n_flight--;
  if (a->flight == NULL) {
    uv_timer_stop(&a->watchdog);
    a->kicked = 0;
  }
  return job;
}

/* Hands res to a send's callback; the target may be destroyed inside (the
 * sends after it are still answered). */
static void deliver(hk_amqp *a, hk_tx_batch_cb cb, void *ctx,
                    const hk_tx_result *res, size_t n) {
  cb(ctx, res, n);
  if (a->destroyed && a->flight == NULL) close_handles(a);
}

/* Delivers what the worker answered, in order: the answered jobs are
 * always the oldest sends in flight. Once every send handed over is
 * answered, the loop hears of every cut one here before it can send
 * again, so the cut ends. */
static void async_cb(uv_async_t *h) {
  hk_amqp *a = h->data;
  job_list done;
  amqp_job *job;

  lock(a);
  done = a->answered;
  a->answered.head = a->answered.tail = NULL;
  if (a->unanswered == 0) a->cut = 0;
  unlock(a);
  while ((job = list_pop(&done)) != NULL) {
    if (a->flight != job) /* cannot happen: answers come in order */
      hk_error("amqp", "dest=%s msg=\"answer out of order\"", a->desc);
    else
      flight_pop(a);
    deliver(a, job->cb, job->ctx, job->res, job->n);
    job_free(job);
  }
}

/* Shuts the socket under a worker stuck in a blocking call (a broker that
 * stopped reading), which makes that call fail at once. */
static void kick(hk_amqp *a, double quiet) {
  lock(a);
  if (a->fd >= 0) {
    shutdown(a->fd, SHUT_RDWR);
    a->kicked_fd = 1;
  }
  unlock(a);
  hk_warn("amqp", "dest=%s msg=\"send stalled; dropping the connection\" "
          "quiet=%.1fs", a->desc, quiet);
}

static void watchdog_cb(uv_timer_t *t);

/* n results, all RETRY with reason; NULL when out of memory. */
static hk_tx_result *retry_results(size_t n, const char *reason) {
  hk_tx_result *res = calloc(n ? n : 1, sizeof *res);

  for (size_t i = 0; res != NULL && i < n; i++) {
    res[i].status = HK_TX_RETRY;
    snprintf(res[i].reason, sizeof res[i].reason, "%s", reason);
  }
  return res;
}

/* A send given up on: what its callback needs, read while the worker
 * cannot free it yet. */
typedef struct stuck_send {
  hk_tx_batch_cb cb;
  void *ctx;
  size_t n;
  amqp_job *ours; /* taken back from todo: the loop frees it */
} stuck_send;

/* Takes the sends in flight after the answered ones off the worker, under
 * the lock: those still in todo come back, the others are marked
 * abandoned (the worker frees them when it is done). Returns how many. */
static size_t take_stuck(hk_amqp *a, amqp_job *from, stuck_send *out) {
  size_t k = 0;

  for (amqp_job *job = from; job != NULL; job = job->lnext, k++) {
    amqp_job **p = &a->todo.head, *prev = NULL;

    out[k] = (stuck_send){job->cb, job->ctx, job->n, NULL};
    while (*p != NULL && *p != job) {
      prev = *p;
      p = &(*p)->next;
    }
    if (*p == NULL) {
      job->abandoned = 1;
      continue;
    }
    *p = job->next;
    if (a->todo.tail == job) a->todo.tail = prev;
    a->unanswered--;
    out[k].ours = job;
  }
  return k;
}

/* The worker did not answer even after the kick: the sends it answered
 * meanwhile are delivered, then the rest RETRY without it, in order. */
static void abandon(hk_amqp *a) {
  const char *why = a->destroyed ? "shutting down"
                                 : "send stalled: the broker connection hangs";
  stuck_send *stuck = calloc(a->n_flight, sizeof *stuck);
  job_list done;
  amqp_job *job, *rest = a->flight;
  size_t k;

  if (stuck == NULL) { /* try again shortly */
    uv_timer_start(&a->watchdog, watchdog_cb, 1000, 0);
    return;
  }
  lock(a);
  done = a->answered;
  a->answered.head = a->answered.tail = NULL;
  for (job = done.head; job != NULL && rest == job; job = job->next)
    rest = rest->lnext;
  k = take_stuck(a, rest, stuck);
  if (a->unanswered == 0) a->cut = 0; /* the loop answers them all below */
  unlock(a);
  while ((job = list_pop(&done)) != NULL) {
    flight_pop(a);
    deliver(a, job->cb, job->ctx, job->res, job->n);
    job_free(job);
  }
  for (size_t i = 0; i < k; i++) {
    hk_tx_result *res = retry_results(stuck[i].n, why);

    flight_pop(a);
    job_free(stuck[i].ours);
    if (res != NULL) deliver(a, stuck[i].cb, stuck[i].ctx, res, stuck[i].n);
    free(res);
  }
  free(stuck);
}

static void watchdog_cb(uv_timer_t *t) {
  hk_amqp *a = t->data;
  double quiet;

  if (a->flight == NULL) return;
  lock(a);
  quiet = now_sec() - a->progress;
  unlock(a);
  if (a->kicked) {
    abandon(a);
  } else if (quiet < a->stall_sec) {
    uv_timer_start(t, watchdog_cb,
                   (uint64_t)((a->stall_sec - quiet) * 1000) + 1, 0);
  } else {
    kick(a, quiet);
    a->kicked = 1;
    uv_timer_start(t, watchdog_cb, (uint64_t)(HK_AMQP_KICK_GRACE_SEC * 1000), 0);
  }
}

static void wake_worker(hk_amqp *a) {
  ssize_t rc;

  do {
    rc = write(a->wake[1], "w", 1);
  } while (rc < 0 && errno == EINTR);
}

/* ---- the transport interface ------------------------------------------- */

static int amqp_send(hk_tx_target *t, const hk_tx_msg *msgs, size_t n,
                     hk_tx_batch_cb cb, void *ctx) {
  hk_amqp *a = (hk_amqp *)t;
  amqp_job *job;

  if (a->destroyed || a->n_flight >= HK_TX_SENDS_MAX || cb == NULL)
    return -1;
  job = job_new(a, msgs, n, cb, ctx);
  if (job == NULL) return -1;
  lock(a);
  list_push(&a->todo, job);
  a->unanswered++;
  /* The worker's time without progress counts from the first send out. */
  if (a->flight == NULL) a->progress = now_sec();
  unlock(a);
  if (a->flight_last != NULL) a->flight_last->lnext = job;
  else a->flight = job;
  a->flight_last = job;
  a->n_flight++;
  if (!uv_is_active((uv_handle_t *)&a->watchdog))
    uv_timer_start(&a->watchdog, watchdog_cb,
                   (uint64_t)(a->stall_sec * 1000), 0);
  wake_worker(a);
  return 0;
}

static void amqp_destroy(hk_tx_target *t) {
  hk_amqp *a = (hk_amqp *)t;

  if (a == NULL || a->destroyed) return;
  a->destroyed = 1;
  lock(a);
  a->closing = 1;
  unlock(a);
  wake_worker(a);
  if (a->flight == NULL) close_handles(a);
}

static const char *amqp_describe(const hk_tx_target *t) {
  return ((const hk_amqp *)t)->desc;
}

static const hk_tx_ops amqp_ops = {amqp_send, amqp_destroy, amqp_describe};

/* Everything but the uv handles and the thread; NULL with err on failure. */
static hk_amqp *target_alloc(const char *type, const hk_kv *kv, size_t n,
                             char *err, size_t errlen) {
  hk_amqp *a = calloc(1, sizeof *a);

  if (a == NULL) {
    hk_tx_errorf(err, errlen, "out of memory");
    return NULL;
  }
  a->wake[0] = a->wake[1] = -1;
  pthread_mutex_init(&a->mu, NULL);
  if (conf_load(&a->conf, type, kv, n, err, errlen) != 0) goto fail;
  if (pipe2(a->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
    hk_tx_errorf(err, errlen, "pipe: %s", strerror(errno));
    goto fail;
  }
  a->base.ops = &amqp_ops;
  a->refs = 1;
  a->fd = -1;
  a->c.backoff = HK_AMQP_BACKOFF_MIN;
  a->c.body_max = HK_AMQP_BODY_MAX;
  /* Long enough for a connect attempt, the declares and a full confirm
   * wait, so only a worker that is really stuck gets kicked. */
  a->stall_sec = a->conf.confirm_timeout + 2 * a->conf.connect_timeout + 5;
  describe_build(a);
  return a;
fail:
  target_free(a);
  return NULL;
}

/* One connection to the destination, with its worker thread. Its
 * description gets suffix (one of several connections: which); base, when
 * not NULL, gets the description without it. */
static hk_tx_target *one_target(uv_loop_t *loop, const char *type,
                                const hk_kv *kv, size_t n,
                                const char *suffix, char *base, char *err,
                                size_t errlen) {
  hk_amqp *a = target_alloc(type, kv, n, err, errlen);

  if (a == NULL) return NULL;
  if (base != NULL) snprintf(base, sizeof a->desc, "%s", a->desc);
  if (suffix != NULL)
    snprintf(a->desc + strlen(a->desc), sizeof a->desc - strlen(a->desc),
             "%s", suffix);
  a->loop = loop;
  if (uv_async_init(loop, &a->async, async_cb) != 0) {
    hk_tx_errorf(err, errlen, "cannot create async handle");
    target_free(a);
    return NULL;
  }
  uv_timer_init(loop, &a->watchdog);
  a->async.data = a->watchdog.data = a;
  a->n_handles = 2;
  if (worker_start(a) != 0) {
    hk_tx_errorf(err, errlen, "cannot start the connection thread");
    a->destroyed = 1;
    close_handles(a);
    return NULL;
  }
  hk_info("amqp", "dest=%s msg=created", a->desc);
  return &a->base;
}

/* connections > 1 spreads the sends over that many connections, each
 * with its own worker (see transport/pool.c). */
hk_tx_target *hk_amqp_target_create(uv_loop_t *loop, const char *type,
                                    const hk_kv *kv, size_t n, char *err,
                                    size_t errlen) {
  hk_tx_target *subs[HK_AMQP_CONNECTIONS_MAX], *pool;
  char base[sizeof ((hk_amqp *)0)->desc], suffix[40];
  double want;
  size_t k = 0, count;

  if (conf_num(&want, kv, n, "connections", 1, 1, HK_AMQP_CONNECTIONS_MAX,
               err, errlen) != 0)
    return NULL;
  if ((count = (size_t)want) == 1)
    return one_target(loop, type, kv, n, NULL, NULL, err, errlen);
  for (; k < count; k++) {
    snprintf(suffix, sizeof suffix, " connection=%zu/%zu", k + 1, count);
    subs[k] = one_target(loop, type, kv, n, suffix, k == 0 ? base : NULL,
                         err, errlen);
    if (subs[k] == NULL) goto fail;
  }
  snprintf(base + strlen(base), sizeof base - strlen(base),
           " connections=%zu", count);
  pool = hk_tx_pool_create(subs, count, base);
  if (pool != NULL) return pool;
  hk_tx_errorf(err, errlen, "out of memory");
fail:
  while (k > 0) {
    k--;
    subs[k]->ops->destroy(subs[k]);
  }
  return NULL;
}
