/* What the test helper programs (tests/kafka/mock_cluster.c,
 * tests/rabbitmq/amqp_tool.c) share: they read commands on stdin, one
 * line each, and answer on stdout line by line for the Python tests
 * (see LineTool in tests/integration/harness.py). Included by exactly one
 * source file of each program, hence static functions. */
#ifndef HOOKD_TESTS_TOOL_LINES_H
#define HOOKD_TESTS_TOOL_LINES_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOOL_MAX_ARGS 64

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void reply(const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  /* The test on the other end reads line by line. */
  if (fflush(stdout) != 0) exit(1);
}

/* n bytes as a JSON string on stdout; bytes >= 0x80 pass as they are, so
 * UTF-8 text stays readable. */
static void json_string(const void *data, size_t n) {
  const unsigned char *p = data;

  putchar('"');
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '"' || p[i] == '\\') printf("\\%c", p[i]);
    else if (p[i] == '\n') fputs("\\n", stdout);
    else if (p[i] < 0x20 || p[i] == 0x7f) printf("\\u%04x", p[i]);
    else putchar(p[i]);
  }
  putchar('"');
}

static int parse_long(const char *s, long *out) {
  char *end;

  if (s == NULL || *s == '\0') return -1;
  *out = strtol(s, &end, 10);
  return *end == '\0' ? 0 : -1;
}

static long long now_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Splits a command line into at most TOOL_MAX_ARGS words, in place. */
static int split_words(char *line, char **argv) {
  int argc = 0;
  char *save = NULL;

  for (char *w = strtok_r(line, " \t\r\n", &save);
       w && argc < TOOL_MAX_ARGS; w = strtok_r(NULL, " \t\r\n", &save))
    argv[argc++] = w;
  return argc;
}

#endif
