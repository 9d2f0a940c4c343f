/* A Kafka cluster for tests, on loopback: librdkafka's mock cluster driven
 * by commands on stdin. Usage: kafka_mock_cluster [BROKERS] (default 3).
 *
 * The first line on stdout is the bootstrap servers ("127.0.0.1:p,...").
 * Then one command per line; every command answers with lines ending in
 * a line "ok" (or "ok N" for consume) or "error <why>":
 *
 *   topic NAME PARTITIONS REPLICAS    create a topic
 *   errors - APIKEY COUNT ERR...      the next COUNT requests of APIKEY
 *                                     (e.g. Produce or 0) fail with the
 *                                     given errors in order, the last one
 *                                     repeated to make up COUNT
 *   errors TOPIC APIKEY COUNT ERR     TOPIC answers Metadata with ERR
 *                                     (NO_ERROR clears it; APIKEY and
 *                                     COUNT are not used)
 *   clear APIKEY                      forget the errors pushed for APIKEY
 *   down BROKER | up BROKER           stop / restart a broker (-1: all)
 *   rtt BROKER MS                     delay a broker's answers (-1: all)
 *   leader TOPIC PARTITION BROKER     move a partition's leader
 *   consume TOPIC N                   up to N messages of TOPIC from the
 *                                     start, one JSON object a line:
 *                                     {"topic","partition","offset","key",
 *                                     "value"} (key null when absent)
 *   quit                              exit (so does end of input)
 *
 * Errors are names as librdkafka spells them (NOT_ENOUGH_REPLICAS,
 * _TRANSPORT) or numbers. */
#include <ctype.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../tool_lines.h"

#define CONSUME_WAIT_MS 10000 /* the longest a consume command takes */

static rd_kafka_mock_cluster_t *mock;

static const struct {
  const char *name;
  int key;
} api_keys[] = {
    {"Produce", 0},          {"Fetch", 1},       {"ListOffsets", 2},
    {"Metadata", 3},         {"OffsetCommit", 8}, {"OffsetFetch", 9},
    {"FindCoordinator", 10}, {"JoinGroup", 11},  {"Heartbeat", 12},
    {"LeaveGroup", 13},      {"SyncGroup", 14},  {"ApiVersions", 18},
    {"InitProducerId", 22},
};

/* Parses a whole decimal number; returns 0, or -1 when s is not one. */

static int parse_api_key(const char *s, int *key) {
  long v;

  for (size_t i = 0; i < sizeof api_keys / sizeof api_keys[0]; i++)
    if (strcasecmp(s, api_keys[i].name) == 0) {
      *key = api_keys[i].key;
      return 0;
    }
  if (parse_long(s, &v) != 0 || v < 0 || v > 32767) return -1;
  *key = (int)v;
  return 0;
}

/* An error code from its number or its name, with or without librdkafka's
 * RD_KAFKA_RESP_ERR_ prefix. */
static int parse_error(const char *s, rd_kafka_resp_err_t *err) {
  const struct rd_kafka_err_desc *descs;
  size_t n;
  long v;

  if (parse_long(s, &v) == 0) {
    *err = (rd_kafka_resp_err_t)v;
    return 0;
  }
  if (strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0) s += 18;
  rd_kafka_get_err_descs(&descs, &n);
  for (size_t i = 0; i < n; i++)
    if (descs[i].name != NULL && strcasecmp(s, descs[i].name) == 0) {
      *err = descs[i].code;
      return 0;
    }
  return -1;
}

/* ---- output -------------------------------------------------------------- */

static void answer(rd_kafka_resp_err_t err) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) reply("ok");
  else reply("error %s", rd_kafka_err2name(err));
}

/* Writes p as a JSON string; bytes >= 0x80 pass as they are. */

static void print_message(const rd_kafka_message_t *m) {
  const char *topic = rd_kafka_topic_name(m->rkt);

  fputs("{\"topic\":", stdout);
  json_string(topic, strlen(topic));
  printf(",\"partition\":%d,\"offset\":%lld,\"key\":", (int)m->partition,
         (long long)m->offset);
  if (m->key != NULL) json_string(m->key, m->key_len);
  else fputs("null", stdout);
  fputs(",\"value\":", stdout);
  json_string(m->payload != NULL ? m->payload : "", m->len);
  putchar('}');
  putchar('\n');
}

/* ---- consume ------------------------------------------------------------- */

static rd_kafka_t *consumer_new(char *why, size_t n) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_t *rk;

  if (rd_kafka_conf_set(conf, "bootstrap.servers",
                        rd_kafka_mock_cluster_bootstraps(mock), why,
                        n) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "group.id", "kafka-mock-reader", why, n) ||
      rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, n) ||
      rd_kafka_conf_set(conf, "enable.partition.eof", "true", why, n)) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, n);
  if (rk == NULL) rd_kafka_conf_destroy(conf);
  else rd_kafka_poll_set_consumer(rk);
  return rk;
}

/* Assigns every partition of topic from its start. Returns the partition
 * count: 0 for a topic that does not exist, -1 on error. */
static int assign_all(rd_kafka_t *rk, const char *topic) {
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  rd_kafka_topic_partition_list_t *parts = NULL;
  int cnt = -1;

  if (rkt == NULL || rd_kafka_metadata(rk, 0, rkt, &md, 5000) != 0) goto done;
  cnt = md->topic_cnt == 1 && md->topics[0].err == 0
            ? md->topics[0].partition_cnt : 0;
  parts = rd_kafka_topic_partition_list_new(cnt > 0 ? cnt : 1);
  for (int i = 0; i < cnt; i++)
    rd_kafka_topic_partition_list_add(parts, topic, i)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  if (cnt > 0 && rd_kafka_assign(rk, parts) != 0) cnt = -1;
done:
  if (parts != NULL) rd_kafka_topic_partition_list_destroy(parts);
  if (md != NULL) rd_kafka_metadata_destroy(md);
  if (rkt != NULL) rd_kafka_topic_destroy(rkt);
  return cnt;
}

/* Prints messages until max, or until every partition reached its end. */
static long read_messages(rd_kafka_t *rk, int parts, long max) {
  long long deadline = now_ms() + CONSUME_WAIT_MS;
  long got = 0;
  int ends = 0;

  while (got < max && ends < parts && now_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);

    if (m == NULL) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ends++;
    } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      print_message(m);
      got++;
    }
    rd_kafka_message_destroy(m);
  }
  return got;
}

static void cmd_consume(char **argv, int argc) {
  char why[512] = "";
  rd_kafka_t *rk;
  long max;
  int parts;

  if (argc != 3 || parse_long(argv[2], &max) != 0 || max < 0) {
    reply("error usage: consume TOPIC N");
    return;
  }
  if ((rk = consumer_new(why, sizeof why)) == NULL) {
    reply("error consumer: %s", why);
    return;
  }
  parts = assign_all(rk, argv[1]);
  if (parts < 0) reply("error cannot read the topic's partitions");
  else reply("ok %ld", parts > 0 ? read_messages(rk, parts, max) : 0L);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

/* ---- commands ------------------------------------------------------------ */

static void cmd_topic(char **argv, int argc) {
  long parts, replicas;

  if (argc != 4 || parse_long(argv[2], &parts) != 0 ||
      parse_long(argv[3], &replicas) != 0) {
    reply("error usage: topic NAME PARTITIONS REPLICAS");
    return;
  }
  answer(rd_kafka_mock_topic_create(mock, argv[1], (int)parts, (int)replicas));
}

static void cmd_errors(char **argv, int argc) {
  rd_kafka_resp_err_t errs[TOOL_MAX_ARGS];
  int key, nerr = argc - 4;
  long count;

  if (argc < 5 || parse_api_key(argv[2], &key) != 0 ||
      parse_long(argv[3], &count) != 0 || count < 0) {
    reply("error usage: errors TOPIC|- APIKEY COUNT ERR...");
    return;
  }
  for (int i = 0; i < nerr; i++)
    if (parse_error(argv[4 + i], &errs[i]) != 0) {
      reply("error unknown error %s", argv[4 + i]);
      return;
    }
  if (strcmp(argv[1], "-") != 0) {
    rd_kafka_mock_topic_set_error(mock, argv[1], errs[0]);
  } else {
    for (long i = 0; i < count; i++)
      rd_kafka_mock_push_request_errors(mock, (int16_t)key, 1,
                                        errs[i < nerr ? i : nerr - 1]);
  }
  reply("ok");
}

static void cmd_clear(char **argv, int argc) {
  int key;

  if (argc != 2 || parse_api_key(argv[1], &key) != 0) {
    reply("error usage: clear APIKEY");
    return;
  }
  rd_kafka_mock_clear_request_errors(mock, (int16_t)key);
  reply("ok");
}

/* down, up, rtt and leader: a broker id, then a number or two. */
static void cmd_broker(char **argv, int argc) {
  long id, v = 0, part = 0;

  if (strcmp(argv[0], "leader") == 0) {
    if (argc != 4 || parse_long(argv[2], &part) || parse_long(argv[3], &id))
      reply("error usage: leader TOPIC PARTITION BROKER");
    else
      answer(rd_kafka_mock_partition_set_leader(mock, argv[1], (int32_t)part,
                                                (int32_t)id));
    return;
  }
  if (argc < 2 || parse_long(argv[1], &id) != 0 ||
      (strcmp(argv[0], "rtt") == 0 && (argc != 3 || parse_long(argv[2], &v)))) {
    reply("error usage: down|up BROKER, rtt BROKER MS");
    return;
  }
  if (strcmp(argv[0], "down") == 0)
    answer(rd_kafka_mock_broker_set_down(mock, (int32_t)id));
  else if (strcmp(argv[0], "up") == 0)
    answer(rd_kafka_mock_broker_set_up(mock, (int32_t)id));
  else
    answer(rd_kafka_mock_broker_set_rtt(mock, (int32_t)id, (int)v));
}

/* Runs one command line; returns 0 to go on, 1 to quit. */
static int run_line(char *line) {
  char *argv[TOOL_MAX_ARGS];
  int argc = split_words(line, argv);

  if (argc == 0) return 0;
  if (strcmp(argv[0], "quit") == 0) return 1;
  if (strcmp(argv[0], "topic") == 0) cmd_topic(argv, argc);
  else if (strcmp(argv[0], "errors") == 0) cmd_errors(argv, argc);
  else if (strcmp(argv[0], "clear") == 0) cmd_clear(argv, argc);
  else if (strcmp(argv[0], "consume") == 0) cmd_consume(argv, argc);
  else if (strcmp(argv[0], "down") == 0 || strcmp(argv[0], "up") == 0 ||
           strcmp(argv[0], "rtt") == 0 || strcmp(argv[0], "leader") == 0)
    cmd_broker(argv, argc);
  else reply("error unknown command %s", argv[0]);
  return 0;
}

int main(int argc, char **argv) {
  char why[512], line[4096];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_t *rk;
  long brokers = 3;

  /* A reader that went away must end us, not a signal mid-write. */
  signal(SIGPIPE, SIG_IGN);
  if (argc > 1 && (parse_long(argv[1], &brokers) != 0 || brokers < 1)) {
    fprintf(stderr, "usage: %s [BROKERS]\n", argv[0]);
    return 2;
  }
  /* The mock cluster needs a client handle for its bookkeeping only; its
   * notice about having no brokers of its own is noise. */
  rd_kafka_conf_set(conf, "log_level", "4", why, sizeof why);
  /* The brokers take their socket options from this handle. A Kafka
   * broker answers without Nagle's delay; with it, an answer could wait
   * 40 ms for the client's delayed ACK, which made every figure measured
   * against these brokers swing between two speeds. */
  rd_kafka_conf_set(conf, "socket.nagle.disable", "true", why, sizeof why);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
  if (rk == NULL) {
    fprintf(stderr, "kafka_mock_cluster: %s\n", why);
    return 1;
  }
  mock = rd_kafka_mock_cluster_new(rk, (int)brokers);
  if (mock == NULL) {
    fprintf(stderr, "kafka_mock_cluster: cannot start the cluster\n");
    rd_kafka_destroy(rk);
    return 1;
  }
  reply("%s", rd_kafka_mock_cluster_bootstraps(mock));
  while (fgets(line, sizeof line, stdin) != NULL)
    if (run_line(line)) break;
  rd_kafka_mock_cluster_destroy(mock);
  rd_kafka_destroy(rk);
  return 0;
}
