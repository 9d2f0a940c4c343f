/* The shared part of the C unit tests (header-only; each test program
 * includes it once): the failure count, assertions that report file:line,
 * the summary and exit status at the end of main, and test data paths. */
#ifndef HOOKD_TEST_UTIL_H
#define HOOKD_TEST_UTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Failed assertions so far in this program. */
static int failures;

/* Counts a failure and prints "file:line: " and the message on stderr. */
__attribute__((format(printf, 3, 4))) static inline void
test_failf(const char *file, int line, const char *fmt, ...) {
  va_list ap;

  fprintf(stderr, "%s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  failures++;
}

/* A failure at the caller's line with a message of its own. */
#define FAILF(...) test_failf(__FILE__, __LINE__, __VA_ARGS__)

/* Reports a false cond and goes on with the test. */
#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) FAILF("check failed: %s", #cond);                         \
  } while (0)

/* Reports a false cond and jumps to the test's done: label, where its
 * cleanup runs (which uses CHECK, so it cannot jump again). */
#define REQUIRE(cond)                                                      \
  do {                                                                     \
    if (!(cond)) {                                                         \
      FAILF("check failed: %s", #cond);                                    \
      goto done;                                                           \
    }                                                                      \
  } while (0)

/* Ends main: prints "name: ok" on stdout, or the failure count on stderr.
 * Returns the exit status: 0 without failures, else 1. */
static inline int test_finish(const char *name) {
  if (failures) {
    fprintf(stderr, "%s: %d failure(s)\n", name, failures);
    return 1;
  }
  printf("%s: ok\n", name);
  return 0;
}

/* Writes to out the path of rel (e.g. "fixtures/x.json") inside tests/:
 * below $HOOKD_SOURCE_DIR when it is set, else beside this header's
 * folder (tests/unit). */
static inline void test_path(char *out, size_t n, const char *rel) {
  const char *dir = getenv("HOOKD_SOURCE_DIR");
  const char *slash = strrchr(__FILE__, '/');

  if (dir != NULL && *dir)
    snprintf(out, n, "%s/tests/%s", dir, rel);
  else if (slash != NULL)
    snprintf(out, n, "%.*s/../%s", (int)(slash - __FILE__), __FILE__, rel);
  else
    snprintf(out, n, "../%s", rel);
}

/* Reads the file tests/<rel> whole. Returns it malloc'd (the caller frees
 * it) with a NUL after its *len bytes, or NULL after saying why. */
static inline char *test_read_file(const char *rel, size_t *len) {
  char path[1024];
  char *data = NULL;
  FILE *f;
  long n;

  test_path(path, sizeof path, rel);
  f = fopen(path, "rb");
  if (f == NULL) goto done;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
      fseek(f, 0, SEEK_SET) != 0 || (data = malloc((size_t)n + 1)) == NULL)
    goto done;
  if (fread(data, 1, (size_t)n, f) != (size_t)n) {
    free(data);
    data = NULL;
    goto done;
  }
  data[n] = '\0';
  *len = (size_t)n;
done:
  if (f != NULL) fclose(f);
  if (data == NULL) fprintf(stderr, "cannot read %s\n", path);
  return data;
}

/* In main(argc, argv): runs the test unless a name filter was given on
 * the command line that it does not match. */
#define RUN(test)                                                          \
  do {                                                                     \
    if (argc < 2 || strstr(#test, argv[1]) != NULL) test();                \
  } while (0)

#endif
