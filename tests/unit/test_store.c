/* Unit tests for the durable store (core/store*.c): opening and refusing
 * database files, the outbox, dead letters, profiles, content, the catalog,
 * cleanup, batch isolation inside a group commit, persistent batches and
 * closing with work queued. Each test runs in a temp dir of its own. JSON
 * the store renders is checked with SQLite's own JSON functions, so the
 * test needs no Lua. */
#include <ftw.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "log.h"
#include "store.h"
#include "store_internal.h" /* statement texts, older schemas */
#include "test_util.h"

#define CHECK_STR(got, want)                                               \
  do {                                                                     \
    const char *g_ = (got), *w_ = (want);                                  \
    if (g_ == NULL || strcmp(g_, w_) != 0)                                 \
      FAILF("got \"%s\", want \"%s\"", g_ ? g_ : "(null)", w_);            \
  } while (0)

#define CHECK_INT(got, want)                                               \
  do {                                                                     \
    long long g_ = (long long)(got), w_ = (long long)(want);               \
    if (g_ != w_) FAILF("%s: got %lld, want %lld", #got, g_, w_);          \
  } while (0)

/* "hook" in ASCII, the application_id the store stamps on its files. */
#define HOOKD_APP_ID 0x686f6f6b
#define MAX_OPS 16
#define MAX_ROWS 16
/* The slot of an outbox id: each hook's ids are a range of their own. */
#define SLOT_OF(id) ((int64_t)(id) >> 40)

/* A message body with bytes that break naive quoting: quotes (double and
 * single), a raw newline, a backslash and multi-byte UTF-8. */
static const char odd_body[] =
    "{\"text\":\"say \\\"hi\\\"; it's\",\n \"name\":\"Zo\xc3\xab \xe2\x80\x94 "
    "\xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x98\x80\"}";

/* ---- files and directories ---------------------------------------------- */

static int remove_one(const char *path, const struct stat *st, int flag,
                      struct FTW *ftw) {
  return remove(path);
}

/* Removes dir and everything under it (depth first, links not followed). */
static void remove_tree(const char *dir) {
  if (dir[0] && nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
    FAILF("cannot remove %s", dir);
}

/* Reads path whole into a malloc'd buffer. Returns it, or NULL. */
static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *data = NULL;
  long n;

  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
      fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)n + 1)) != NULL &&
      fread(data, 1, (size_t)n, f) == (size_t)n) {
    *len = (size_t)n;
  } else {
    free(data);
    data = NULL;
  }
  fclose(f);
  return data;
}

static int write_all(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");
  int ok = f != NULL && fwrite(data, 1, len, f) == len;

  if (f != NULL && fclose(f) != 0) ok = 0;
  return ok ? 0 : -1;
}

/* Runs sql on the database at path through a connection of the test's
 * own, as another program (or an older hookd) would. */
static int sql_exec(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  int rc = sqlite3_open(path, &db);

  if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK) FAILF("%s: %s: %s", path, sql, sqlite3_errmsg(db));
  sqlite3_close(db);
  return rc == SQLITE_OK ? 0 : -1;
}

/* The first column of the first row of sql on path, or -1. */
static long long sql_int(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  long long v = -1;

  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
      sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static double now_sec(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- JSON checks through an in-memory SQLite ---------------------------- */

static sqlite3 *jdb;

/* Runs "SELECT expr" with ?1 = json and ?2 = path. Returns the text
 * (malloc'd) or NULL for an SQL NULL. */
static char *json_query(const char *expr, const char *json, const char *path) {
  char sql[128];
  sqlite3_stmt *st = NULL;
  char *out = NULL;

  snprintf(sql, sizeof sql, "SELECT %s", expr);
  if (sqlite3_prepare_v2(jdb, sql, -1, &st, NULL) != SQLITE_OK) {
    FAILF("json query %s: %s", sql, sqlite3_errmsg(jdb));
    return NULL;
  }
  sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW &&
      sqlite3_column_type(st, 0) != SQLITE_NULL)
    out = strdup((const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  return out;
}

/* SQLite 3.40's json_valid() accepts strict RFC 8259 JSON only. */
static int json_ok(const char *json) {
  char *v = json_query("json_valid(?1)", json, "");
  int ok = v != NULL && strcmp(v, "1") == 0;

  free(v);
  if (!ok) FAILF("not valid JSON: %s", json);
  return ok;
}

/* The value at path (a string without quotes, other values as JSON), or
 * NULL when it is missing or null. The caller frees it. */
static char *json_at(const char *json, const char *path) {
  return json_query("json_extract(?1, ?2)", json, path);
}

/* Checks that the value at path is the string or number want. */
static void check_json_at(const char *file, int line, const char *json,
                          const char *path, const char *want) {
  char *got = json_at(json, path);

  if (got == NULL || strcmp(got, want) != 0)
    test_failf(file, line, "%s: got \"%s\", want \"%s\"", path,
               got ? got : "(null)", want);
  free(got);
}
#define CHECK_JSON_AT(json, path, want)                                    \
  check_json_at(__FILE__, __LINE__, json, path, want)

/* SQLite's json_type: "null", "object", "text", ... or NULL if missing. */
static void check_json_type(const char *file, int line, const char *json,
                            const char *path, const char *want) {
  char *got = json_query("json_type(?1, ?2)", json, path);

  if (got == NULL || strcmp(got, want) != 0)
    test_failf(file, line, "type of %s: got %s, want %s", path,
               got ? got : "(missing)", want);
  free(got);
}
#define CHECK_JSON_TYPE(json, path, want)                                  \
  check_json_type(__FILE__, __LINE__, json, path, want)

/* Items in the array at path, or -1 when there is no array there. */
static long json_len(const char *json, const char *path) {
  char *v = json_query("json_array_length(?1, ?2)", json, path);
  long n = v ? atol(v) : -1;

  free(v);
  return n;
}

/* 1 when json has no member at path. */
static int json_missing(const char *json, const char *path) {
  char *v = json_query("json_type(?1, ?2)", json, path);

  free(v);
  return v == NULL;
}

/* ---- the loop fixture ---------------------------------------------------- */

typedef struct outcome {
  int done, ok, disk_full;
  char error[300];
  int64_t result[MAX_OPS];
} outcome;

typedef struct fixture {
  char dir[64];
  char db[128];
  uv_loop_t loop;
  uv_timer_t tick; /* keeps the loop polling: the store's async is unref'd */
  hk_store *s;
  int loop_ready;
} fixture;

static void done_cb(hk_store_batch *b, int ok, void *ctx) {
  outcome *o = ctx;
  size_t n = hk_store_batch_size(b);

  o->done++;
  o->ok = ok;
  o->disk_full = hk_store_batch_disk_full(b);
  snprintf(o->error, sizeof o->error, "%s", hk_store_batch_error(b));
  for (size_t i = 0; i < n && i < MAX_OPS; i++)
    o->result[i] = hk_store_batch_result(b, i);
}

static void tick_cb(uv_timer_t *t) {}

/* Makes the temp dir and the loop; the store is opened by fx_open. */
static int fx_init(fixture *f) {
  memset(f, 0, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/hookd-store-XXXXXX");
  if (mkdtemp(f->dir) == NULL) {
    f->dir[0] = '\0';
    return -1;
  }
  snprintf(f->db, sizeof f->db, "%s/hookd.db", f->dir);
  if (uv_loop_init(&f->loop) != 0) return -1;
  uv_timer_init(&f->loop, &f->tick);
  f->loop_ready = 1;
  return 0;
}

static int fx_open(fixture *f) {
  char err[512];

  f->s = hk_store_open(&f->loop, f->dir, err, sizeof err);
  if (f->s == NULL) fprintf(stderr, "open %s: %s\n", f->dir, err);
  return f->s ? 0 : -1;
}

/* Closes the store and lets the loop free it (its async handle closes). */
static void fx_close_store(fixture *f) {
  if (f->s == NULL) return;
  hk_store_close(f->s);
  f->s = NULL;
  uv_run(&f->loop, UV_RUN_DEFAULT);
}

static int fx_reopen(fixture *f) {
  fx_close_store(f);
  return fx_open(f);
}

/* Closes everything and removes the temp dir. */
static void fx_done(fixture *f) {
  fx_close_store(f);
  if (f->loop_ready) {
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&f->loop) == 0);
  }
  remove_tree(f->dir);
}

/* Runs the loop until the n outcomes are done or max_sec passed. Returns 1
 * when all are done. */
static int fx_wait(fixture *f, outcome *o, int n, double max_sec) {
  uint64_t deadline;
  int all = 0;

  uv_update_time(&f->loop);
  deadline = uv_now(&f->loop) + (uint64_t)(max_sec * 1000);
  uv_timer_start(&f->tick, tick_cb, 10, 10);
  while (!all && uv_now(&f->loop) < deadline) {
    uv_run(&f->loop, UV_RUN_ONCE);
    all = 1;
    for (int i = 0; i < n; i++) all &= o[i].done > 0;
  }
  uv_timer_stop(&f->tick);
  return all;
}

static void fx_submit(fixture *f, hk_store_batch *b, outcome *o) {
  memset(o, 0, sizeof *o);
  hk_store_submit(f->s, b, done_cb, o);
}

/* Submits b and waits for its report. Returns 1 when it committed. */
static int fx_commit(fixture *f, hk_store_batch *b, outcome *o) {
  fx_submit(f, b, o);
  if (!fx_wait(f, o, 1, 10)) {
    FAILF("batch not reported within 10 s");
    return 0;
  }
  if (!o->ok) fprintf(stderr, "batch failed: %s\n", o->error);
  return o->ok;
}

/* Commits one message for hook; returns its outbox id or -1. */
static int64_t fx_message(fixture *f, const char *hook, const char *body) {
  hk_store_batch *b = hk_store_batch_new();
  outcome o;

  hk_store_add_message(b, hook, body, strlen(body));
  return fx_commit(f, b, &o) ? o.result[0] : -1;
}

/* Commits one event of the given date. */
static int fx_event(fixture *f, double event_date) {
  hk_store_batch *b = hk_store_batch_new();
  const char body[] = "{\"event_type\":\"click\"}";
  outcome o;

  hk_store_add_event(b, body, strlen(body), "click", 5, 7, event_date);
  return fx_commit(f, b, &o);
}

/* ---- outbox rows --------------------------------------------------------- */

typedef struct rows {
  int n;
  hk_outbox_row row[MAX_ROWS];
  char *body[MAX_ROWS]; /* copies: the row's body lives for the callback */
} rows;

static void collect_cb(void *ctx, const hk_outbox_row *row) {
  rows *r = ctx;

  if (r->n == MAX_ROWS) return;
  r->row[r->n] = *row;
  r->body[r->n] = malloc(row->len + 1);
  memcpy(r->body[r->n], row->body, row->len);
  r->body[r->n][row->len] = '\0';
  r->row[r->n].body = r->body[r->n];
  r->n++;
}

static void rows_free(rows *r) {
  for (int i = 0; i < r->n; i++) free(r->body[i]);
  r->n = 0;
}

/* Reads hook's outbox into r (freeing what r held). Returns the count. */
static long read_outbox(fixture *f, rows *r, const char *hook, int64_t after,
                        long limit) {
  rows_free(r);
  return hk_store_outbox_read(f->s, hook, after, limit, collect_cb, r);
}

/* A blocking writer of the test's own: holding SQLite's write lock makes
 * the store's writer wait in BEGIN IMMEDIATE, so the test can line up
 * batches behind it or make it give up after its busy timeout. */
static sqlite3 *block_writer(const char *path) {
  sqlite3 *db = NULL;

  if (sqlite3_open(path, &db) != SQLITE_OK ||
      sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    FAILF("cannot lock %s: %s", path, sqlite3_errmsg(db));
    sqlite3_close(db);
    return NULL;
  }
  return db;
}

static void unblock_writer(sqlite3 *db) {
  if (db == NULL) return;
  CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
}

/* ---- opening ------------------------------------------------------------- */

static void store_open_creates_missing_dir_and_stamps_file(void) {
  fixture f;
  char data[128], db[160], err[512];
  struct stat st;

  REQUIRE(fx_init(&f) == 0);
  snprintf(data, sizeof data, "%s/data", f.dir);
  snprintf(db, sizeof db, "%s/hookd.db", data);
  REQUIRE(stat(data, &st) != 0);
  f.s = hk_store_open(&f.loop, data, err, sizeof err);
  if (f.s == NULL) FAILF("open: %s", err);
  REQUIRE(f.s != NULL);
  CHECK(stat(data, &st) == 0 && S_ISDIR(st.st_mode));
  CHECK(stat(db, &st) == 0 && S_ISREG(st.st_mode));
  CHECK_STR(hk_store_path(f.s), db);
  fx_close_store(&f);
  CHECK_INT(sql_int(db, "PRAGMA application_id"), HOOKD_APP_ID);
  CHECK(sql_int(db, "PRAGMA user_version") >= 1);
  CHECK_INT(sql_int(db, "PRAGMA page_size"), 16384); /* a new store's */
  CHECK_INT(sql_int(db, "SELECT count(*) FROM sqlite_master WHERE name = "
                        "'outbox'"), 1);
  /* A second open of the same files finds them ours and current. */
  f.s = hk_store_open(&f.loop, data, err, sizeof err);
  if (f.s == NULL) FAILF("reopen: %s", err);
  REQUIRE(f.s != NULL);
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 0);
done:
  fx_done(&f);
}

/* Opens f's dir expecting a refusal whose reason contains want, and checks
 * that hookd.db is byte for byte what it was before. */
static void expect_refused(fixture *f, const char *want) {
  size_t before_len = 0, after_len = 0;
  char *before = read_all(f->db, &before_len), *after = NULL;
  char err[512] = "";
  hk_store *s;

  REQUIRE(before != NULL);
  s = hk_store_open(&f->loop, f->dir, err, sizeof err);
  CHECK(s == NULL);
  if (s != NULL) {
    f->s = s;
    goto done;
  }
  if (strstr(err, want) == NULL)
    FAILF("error \"%s\" does not mention \"%s\"", err, want);
  after = read_all(f->db, &after_len);
  REQUIRE(after != NULL);
  CHECK(before_len == after_len && memcmp(before, after, before_len) == 0);
done:
  free(before);
  free(after);
}

static void store_refuses_text_file(void) {
  fixture f;
  hk_buf text = HK_BUF_INIT;

  REQUIRE(fx_init(&f) == 0);
  for (int i = 0; i < 20; i++)
    hk_buf_printf(&text, "line %d: notes that are not a database\n", i);
  REQUIRE(write_all(f.db, text.data, text.len) == 0);
  expect_refused(&f, "not a usable SQLite database");
done:
  hk_buf_free(&text);
  fx_done(&f);
}

static void store_refuses_other_programs_database(void) {
  fixture f;

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(sql_exec(f.db, "CREATE TABLE notes(id INTEGER PRIMARY KEY, t TEXT);"
                         "INSERT INTO notes(t) VALUES('keep me')") == 0);
  expect_refused(&f, "another program");
done:
  fx_done(&f);
}

/* A database with no tables yet but a user_version of its own was set up
 * by some program: it is not an empty file hookd may take over. */
static void store_refuses_tableless_database_of_other_program(void) {
  fixture f;

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(sql_exec(f.db, "PRAGMA user_version=7") == 0);
  expect_refused(&f, "another program");
done:
  fx_done(&f);
}

static void store_refuses_newer_schema(void) {
  fixture f;
  char sql[256];

  REQUIRE(fx_init(&f) == 0);
  /* As a later hookd would leave it: WAL mode, tables this build does not
   * know, a schema version beyond ours. */
  snprintf(sql, sizeof sql,
           "PRAGMA journal_mode=WAL; CREATE TABLE future(x);"
           "INSERT INTO future VALUES(1);"
           "PRAGMA application_id=%d; PRAGMA user_version=999",
           HOOKD_APP_ID);
  REQUIRE(sql_exec(f.db, sql) == 0);
  expect_refused(&f, "newer");
  CHECK_INT(sql_int(f.db, "PRAGMA user_version"), 999);
done:
  fx_done(&f);
}

static void store_second_open_is_refused_by_lock(void) {
  fixture f;
  char err[512] = "";
  hk_store *second = NULL;

  REQUIRE(fx_init(&f) == 0);
  REQUIRE(fx_open(&f) == 0);
  CHECK(fx_message(&f, "crm", "{\"n\":1}") > 0);
  second = hk_store_open(&f.loop, f.dir, err, sizeof err);
  REQUIRE(second == NULL);
  if (strstr(err, "in use") == NULL) FAILF("lock error: %s", err);
  /* The refused open must not have disturbed the first store. */
  CHECK(fx_message(&f, "crm", "{\"n\":2}") > 0);
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 2);
done:
  if (second != NULL) {
    hk_store_close(second);
    uv_run(&f.loop, UV_RUN_DEFAULT);
  }
  fx_done(&f);
}

/* ---- the outbox ---------------------------------------------------------- */

static const char *const msg_bodies[] = {
    "{\"n\":1}", odd_body, "{\"q\":\"it's; DROP TABLE outbox; --\"}"};

typedef struct hook_count {
  char names[4][16];
  long counts[4];
  int n;
} hook_count;

static void hooks_cb(void *ctx, const char *hook, long n) {
  hook_count *h = ctx;

  if (h->n == 4) return;
  snprintf(h->names[h->n], sizeof h->names[0], "%s", hook);
  h->counts[h->n++] = n;
}

/* Checks that hook's outbox holds msg_bodies with ids id, in order. */
static void check_first_page(fixture *f, rows *r, const int64_t *id) {
  CHECK_INT(read_outbox(f, r, "crm", 0, 100), 3);
  for (int i = 0; i < r->n && i < 3; i++) {
    CHECK_INT(r->row[i].id, id[i]);
    CHECK_INT(r->row[i].len, strlen(msg_bodies[i]));
    CHECK_STR(r->row[i].body, msg_bodies[i]);
    CHECK(r->row[i].attempts == 0 && r->row[i].first_at == 0 &&
          r->row[i].next_at == 0);
  }
}

static void store_messages_keep_order_and_bytes(void) {
  fixture f;
  hk_store_batch *b;
  outcome o;
  rows r = {0};
  hook_count hc = {0};
  int64_t id[3];

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  b = hk_store_batch_new();
  for (int i = 0; i < 3; i++)
    hk_store_add_message(b, "crm", msg_bodies[i], strlen(msg_bodies[i]));
  hk_store_add_message(b, "other", "{}", 2);
  REQUIRE(fx_commit(&f, b, &o));
  for (int i = 0; i < 3; i++) id[i] = o.result[i];
  CHECK(id[0] > 0 && id[0] < id[1] && id[1] < id[2] && o.result[3] > 0);
  check_first_page(&f, &r, id);
  /* after and limit page through the outbox. */
  CHECK_INT(read_outbox(&f, &r, "crm", id[0], 1), 1);
  CHECK(r.n == 1 && r.row[0].id == id[1]);
  CHECK_INT(read_outbox(&f, &r, "crm", id[2], 10), 0);
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 3);
  CHECK_INT(hk_store_outbox_count(f.s, "other"), 1);
  CHECK_INT(hk_store_outbox_count(f.s, "nobody"), 0);
  CHECK(hk_store_outbox_hooks(f.s, hooks_cb, &hc) == 0);
  CHECK(hc.n == 2 && strcmp(hc.names[0], "crm") == 0 && hc.counts[0] == 3 &&
        strcmp(hc.names[1], "other") == 0 && hc.counts[1] == 1);
  /* A later batch continues the hook's sequence. */
  CHECK(fx_message(&f, "crm", "{}") > id[2]);
done:
  rows_free(&r);
  fx_done(&f);
}

static void store_ack_and_retry_state(void) {
  fixture f;
  hk_store_batch *b;
  outcome o;
  rows r = {0};
  int64_t a, c;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE((a = fx_message(&f, "crm", "{\"n\":1}")) > 0);
  REQUIRE((c = fx_message(&f, "crm", "{\"n\":2}")) > 0);
  b = hk_store_batch_new();
  hk_store_add_ack(b, a);
  hk_store_add_retry_state(b, c, 3, 1700000000.25, 1700000060.5);
  hk_store_add_ack(b, 999999); /* unknown ids change nothing */
  REQUIRE(fx_commit(&f, b, &o));
  CHECK_INT(o.result[0], 1);
  CHECK_INT(o.result[1], 1);
  CHECK_INT(o.result[2], 0);
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 1);
  REQUIRE(read_outbox(&f, &r, "crm", 0, 10) == 1);
  CHECK_INT(r.row[0].id, c);
  CHECK_INT(r.row[0].attempts, 3);
  CHECK(r.row[0].first_at == 1700000000.25);
  CHECK(r.row[0].next_at == 1700000060.5);
  CHECK_STR(r.row[0].body, "{\"n\":2}");
done:
  rows_free(&r);
  fx_done(&f);
}

/* Runs of acknowledgements are deleted several at a time: longer runs
 * than one statement takes, split by another operation, with a hole and
 * an unknown id, delete exactly the acknowledged rows. */
static void store_ack_runs_delete_exactly_those(void) {
  fixture f;
  hk_store_batch *b;
  outcome o;
  rows r = {0};
  int64_t id[80];

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  for (int i = 0; i < 80; i++)
    REQUIRE((id[i] = fx_message(&f, i % 8 == 7 ? "other" : "crm", "{}")) > 0);
  b = hk_store_batch_new();
  for (int i = 0; i < 80; i++) {
    if (i == 40) hk_store_add_retry_state(b, id[79], 1, 1.0, 2.0);
    if (i != 13 && i != 79) hk_store_add_ack(b, id[i]);
    if (i == 50) hk_store_add_ack(b, 999999);
  }
  REQUIRE(fx_commit(&f, b, &o));
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 1);
  CHECK_INT(hk_store_outbox_count(f.s, "other"), 1);
  REQUIRE(read_outbox(&f, &r, "crm", 0, 10) == 1);
  CHECK_INT(r.row[0].id, id[13]);
  REQUIRE(read_outbox(&f, &r, "other", 0, 10) == 1);
  CHECK_INT(r.row[0].id, id[79]);
  CHECK_INT(r.row[0].attempts, 1);
done:
  rows_free(&r);
  fx_done(&f);
}

/* ---- dead letters -------------------------------------------------------- */

/* Moves outbox messages ids[0..n) to dead letters in one batch. */
static int kill_messages(fixture *f, const int64_t *ids, int n) {
  hk_store_batch *b = hk_store_batch_new();
  outcome o;
  int moved = 0;

  for (int i = 0; i < n; i++)
    hk_store_add_dead(b, ids[i], "status=500 body=\"boom\"",
                      "https://crm.example/hook", 4, 1700000000.25,
                      1700000300.5);
  if (!fx_commit(f, b, &o)) return -1;
  for (int i = 0; i < n; i++) moved += (int)o.result[i];
  return moved;
}

/* Renders one page of hook's letters into a fresh string; NULL on error. */
static char *render_page(fixture *f, const char *hook, int64_t after,
                         int limit) {
  hk_buf out = HK_BUF_INIT;

  if (hk_store_dead_letters_render(f->s, &out, hook, after, limit) != 0) {
    hk_buf_free(&out);
    return NULL;
  }
  hk_buf_cstr(&out);
  return hk_buf_steal(&out, NULL);
}

static void check_first_letter(const char *page, int64_t id) {
  char want[32];

  snprintf(want, sizeof want, "%lld", (long long)id);
  CHECK_JSON_AT(page, "$.items[0].id", want);
  CHECK_JSON_AT(page, "$.items[0].hook", "crm");
  CHECK_JSON_AT(page, "$.items[0].destination", "https://crm.example/hook");
  CHECK_JSON_AT(page, "$.items[0].reason", "status=500 body=\"boom\"");
  CHECK_JSON_AT(page, "$.items[0].attempts", "4");
  CHECK_JSON_AT(page, "$.items[0].first_attempt_at",
                "2023-11-14T22:13:20.250Z");
  CHECK_JSON_AT(page, "$.items[0].last_attempt_at",
                "2023-11-14T22:18:20.500Z");
  CHECK_JSON_TYPE(page, "$.items[0].dead_at", "text");
  /* The message is embedded as JSON, not as a string. */
  CHECK_JSON_TYPE(page, "$.items[0].message", "object");
  CHECK_JSON_AT(page, "$.items[0].message.n", "0");
}

/* Pages through hook's 5 letters two at a time, checking the cursors. */
static void check_paging(fixture *f, const int64_t *ids) {
  int64_t after = 0;
  char want[32], *page = NULL, *next = NULL;

  for (int p = 0; p < 3; p++) {
    page = render_page(f, "crm", after, 2);
    REQUIRE(page != NULL && json_ok(page));
    if (p == 0) check_first_letter(page, ids[0]);
    CHECK_INT(json_len(page, "$.items"), p < 2 ? 2 : 1);
    snprintf(want, sizeof want, "%lld", (long long)ids[2 * p]);
    CHECK_JSON_AT(page, "$.items[0].id", want);
    if (p == 2) {
      CHECK_JSON_TYPE(page, "$.next", "null");
      break;
    }
    CHECK_JSON_TYPE(page, "$.next", "text");
    next = json_at(page, "$.next");
    REQUIRE(next != NULL);
    CHECK_INT(atoll(next), ids[2 * p + 1]);
    after = atoll(next);
    free(next);
    next = NULL;
    free(page);
    page = NULL;
  }
done:
  free(next);
  free(page);
}

/* Five messages of crm, one of other; crm's five become dead letters,
 * whose ids go to ids (and the messages' outbox ids to msgs). */
static int make_letters(fixture *f, int64_t *ids, int64_t *msgs) {
  char body[32], sql[96];

  for (int i = 0; i < 5; i++) {
    snprintf(body, sizeof body, "{\"n\":%d}", i);
    if ((msgs[i] = fx_message(f, "crm", body)) < 0) return -1;
  }
  if (fx_message(f, "other", "{\"n\":99}") < 0) return -1;
  if (kill_messages(f, msgs, 5) != 5) return -1;
  for (int i = 0; i < 5; i++) {
    snprintf(sql, sizeof sql, "SELECT id FROM dead_letters WHERE hook = "
             "'crm' ORDER BY id LIMIT 1 OFFSET %d", i);
    if ((ids[i] = sql_int(f->db, sql)) < 0) return -1;
  }
  return 0;
}

static void store_dead_letters_render_and_page(void) {
  fixture f;
  int64_t ids[5], msgs[5];
  char hook[64], *all = NULL;
  int is_event = 0;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(make_letters(&f, ids, msgs) == 0);
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 0);
  CHECK_INT(hk_store_outbox_count(f.s, "other"), 1);
  CHECK_INT(hk_store_dead_letters_count(f.s, "crm"), 5);
  CHECK_INT(hk_store_dead_letters_count(f.s, "other"), 0);
  check_paging(&f, ids);
  all = render_page(&f, NULL, 0, 100);
  REQUIRE(all != NULL && json_ok(all));
  CHECK_INT(json_len(all, "$.items"), 5);
  CHECK_JSON_TYPE(all, "$.next", "null");
  CHECK(hk_store_dead_letter_hook(f.s, ids[3], hook, sizeof hook,
                                  &is_event) == 0 &&
        strcmp(hook, "crm") == 0 && !is_event);
  CHECK(hk_store_dead_letter_hook(f.s, 987654, hook, sizeof hook,
                                  &is_event) == -1);
  /* A message that is no longer in the outbox cannot die twice. */
  CHECK_INT(kill_messages(&f, msgs, 1), 0);
done:
  free(all);
  fx_done(&f);
}

/* Runs one resend, or forget when hook is "-forget"; returns its result. */
static int64_t letter_op(fixture *f, int64_t id, const char *hook) {
  hk_store_batch *b = hk_store_batch_new();
  outcome o;

  if (hook != NULL && strcmp(hook, "-forget") == 0)
    hk_store_add_forget(b, id);
  else
    hk_store_add_resend(b, id, hook);
  return fx_commit(f, b, &o) ? o.result[0] : -1;
}

static void store_dead_letters_resend_and_forget(void) {
  fixture f;
  int64_t ids[5], msgs[5], other;
  char hook[64];
  int is_event = 0;
  rows r = {0};

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(make_letters(&f, ids, msgs) == 0);
  other = fx_message(&f, "other", "{}");
  REQUIRE(other > 0);
  CHECK_INT(letter_op(&f, ids[0], NULL), 1);
  CHECK(hk_store_dead_letter_hook(f.s, ids[0], hook, sizeof hook,
                                  &is_event) == -1);
  REQUIRE(read_outbox(&f, &r, "crm", 0, 10) == 1);
  /* Back in crm's range, after every id crm had. */
  CHECK(r.row[0].id > msgs[4] && SLOT_OF(r.row[0].id) == SLOT_OF(msgs[4]));
  CHECK(SLOT_OF(r.row[0].id) != SLOT_OF(other));
  CHECK_STR(r.row[0].body, "{\"n\":0}");
  CHECK_INT(r.row[0].attempts, 0);
  CHECK_INT(letter_op(&f, ids[0], NULL), 0); /* already moved */
  CHECK_INT(letter_op(&f, ids[1], "-forget"), 1);
  CHECK_INT(letter_op(&f, ids[1], "-forget"), 0);
  CHECK_INT(letter_op(&f, -1, "other"), 0);
  CHECK_INT(letter_op(&f, -1, "crm"), 3);
  CHECK_INT(hk_store_dead_letters_count(f.s, "crm"), 0);
  REQUIRE(read_outbox(&f, &r, "crm", 0, 10) == 4);
  for (int i = 1; i < 4; i++) CHECK(r.row[i].id > r.row[i - 1].id);
  CHECK_STR(r.body[1], "{\"n\":2}");
  CHECK_STR(r.body[3], "{\"n\":4}");
done:
  rows_free(&r);
  fx_done(&f);
}

/* ---- batch isolation ----------------------------------------------------- */

/* A batch that must commit: a message of hook good and an event. */
static hk_store_batch *good_batch(int n) {
  hk_store_batch *b = hk_store_batch_new();
  char body[32];

  snprintf(body, sizeof body, "{\"n\":%d}", n);
  hk_store_add_message(b, "good", body, strlen(body));
  hk_store_add_event(b, body, strlen(body), "click", 5, -1, 1700000000);
  return b;
}

/* A batch that must fail on its last operation, after a message, an event
 * and a profile that would otherwise be kept. */
static hk_store_batch *bad_batch(void) {
  hk_store_batch *b = hk_store_batch_new();

  hk_store_add_message(b, "bad", "{\"n\":-1}", 8);
  hk_store_add_event(b, "{}", 2, "click", 5, -1, 1700000000);
  hk_store_add_profile(b, HK_PROFILE_PUT, "42", "p-bad", "{\"a\":1}", 7);
  hk_store_add_profile(b, HK_PROFILE_MERGE, "42", "p1", "not json", 8);
  return b;
}

/* Commits the n batches as one group, as far as the test can arrange it:
 * the writer takes a plug batch first and waits for the test's lock, and
 * the n batches queue meanwhile. Returns 1 when all were reported. */
static int commit_as_group(fixture *f, hk_store_batch **b, outcome *o,
                           int n) {
  hk_store_batch *plug;
  outcome plugged;
  sqlite3 *lock = block_writer(f->db);

  if (lock == NULL) {
    for (int i = 0; i < n; i++) hk_store_batch_free(b[i]);
    return 0;
  }
  plug = hk_store_batch_new();
  hk_store_add_hook_state(plug, "plug", 1);
  fx_submit(f, plug, &plugged);
  usleep(100 * 1000);
  for (int i = 0; i < n; i++) fx_submit(f, b[i], &o[i]);
  unblock_writer(lock);
  return fx_wait(f, &plugged, 1, 10) && plugged.ok && fx_wait(f, o, n, 10);
}

static void store_failing_batch_fails_alone(void) {
  fixture f;
  outcome o[3];
  hk_store_batch *b[3];
  size_t len;
  char *p = NULL;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  b[0] = good_batch(1);
  b[1] = bad_batch();
  b[2] = good_batch(2);
  REQUIRE(commit_as_group(&f, b, o, 3));
  CHECK(o[0].ok && o[2].ok);
  CHECK(o[1].ok == 0 && o[1].disk_full == 0);
  if (strstr(o[1].error, "profile merge") == NULL)
    FAILF("bad batch error: \"%s\"", o[1].error);
  CHECK_INT(hk_store_outbox_count(f.s, "good"), 2);
  CHECK_INT(hk_store_outbox_count(f.s, "bad"), 0);
  CHECK_INT(hk_store_count(f.s, "history"), 2);
  CHECK((p = hk_store_profile_get(f.s, "42", "p-bad", &len)) == NULL);
  CHECK(o[0].result[0] > 0 && o[2].result[0] > o[0].result[0]);
  CHECK_INT(hk_store_pending(f.s), 0);
done:
  free(p);
  fx_done(&f);
}

/* Checks that a batch reported committed kept its message and one
 * reported failed left none: the caller acts on the report. */
static void check_report_matches_outbox(fixture *f, const char *hook,
                                        const outcome *o) {
  long kept = hk_store_outbox_count(f->s, hook);

  if (o->ok != (kept == 1))
    FAILF("batch of %s reported ok=%d (%s) but the outbox holds %ld", hook,
          o->ok, o->error, kept);
}

/* Some SQLite errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM, an
 * interrupt) may roll back the whole transaction, not just the failing
 * statement. A RAISE(ROLLBACK) trigger, added here through the test's own
 * connection, does the same on demand. The other batches of the group must
 * still commit, and every report must match what the store kept. */
static void store_group_rollback_reports_truthfully(void) {
  fixture f;
  outcome o[3];
  hk_store_batch *b[3];

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(sql_exec(f.db, "CREATE TRIGGER boom BEFORE INSERT ON hook_state "
                         "WHEN NEW.hook = 'boom' BEGIN "
                         "SELECT RAISE(ROLLBACK, 'boom'); END") == 0);
  for (int i = 0; i < 3; i++) b[i] = hk_store_batch_new();
  hk_store_add_message(b[0], "before", "{}", 2);
  hk_store_add_hook_state(b[1], "boom", 1);
  hk_store_add_message(b[2], "after", "{}", 2);
  REQUIRE(commit_as_group(&f, b, o, 3));
  CHECK(o[1].ok == 0);
  check_report_matches_outbox(&f, "before", &o[0]);
  check_report_matches_outbox(&f, "after", &o[2]);
  /* Neither good batch had anything to do with the failure. */
  CHECK(o[0].ok && o[2].ok);
done:
  fx_done(&f);
}

/* ---- profiles, content, catalog ------------------------------------------ */

/* Commits one profile operation; returns its result or -1. */
static int64_t profile_op(fixture *f, enum hk_profile_op op, const char *json) {
  hk_store_batch *b = hk_store_batch_new();
  outcome o;

  hk_store_add_profile(b, op, "42", "p1", json, json ? strlen(json) : 0);
  return fx_commit(f, b, &o) ? o.result[0] : -1;
}

static void store_profiles_put_merge_delete(void) {
  fixture f;
  const char put[] = "{\"name\":\"Ann\",\"age\":30,\"tags\":[\"a\"]}";
  char *p = NULL;
  size_t len = 0;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  CHECK_INT(profile_op(&f, HK_PROFILE_PUT, put), 1);
  p = hk_store_profile_get(f.s, "42", "p1", &len);
  REQUIRE(p != NULL);
  CHECK_STR(p, put);
  CHECK_INT(len, strlen(put));
  free(p);
  CHECK(hk_store_profile_get(f.s, "43", "p1", &len) == NULL);
  CHECK_INT(profile_op(&f, HK_PROFILE_MERGE, "{\"city\":\"Oslo\",\"age\":null}"),
            1);
  p = hk_store_profile_get(f.s, "42", "p1", &len);
  REQUIRE(p != NULL && json_ok(p));
  CHECK_JSON_AT(p, "$.name", "Ann");
  CHECK_JSON_AT(p, "$.city", "Oslo");
  CHECK_JSON_AT(p, "$.tags[0]", "a");
  CHECK(json_missing(p, "$.age"));
  CHECK_INT(profile_op(&f, HK_PROFILE_DELETE, NULL), 1);
  CHECK_INT(profile_op(&f, HK_PROFILE_DELETE, NULL), 0);
  free(p);
  p = hk_store_profile_get(f.s, "42", "p1", &len);
  CHECK(p == NULL);
done:
  free(p);
  fx_done(&f);
}

static void store_content_respects_not_before(void) {
  fixture f;
  hk_store_batch *b;
  const char body[] = "{\"subject\":\"Hi \\\"you\\\"\"}";
  double before, after;
  char *c = NULL;
  size_t len = 0;
  outcome o;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  before = now_sec() - 1;
  b = hk_store_batch_new();
  hk_store_add_content(b, "sm-1", body, strlen(body));
  REQUIRE(fx_commit(&f, b, &o));
  CHECK_INT(o.result[0], 1);
  after = now_sec() + 1;
  c = hk_store_content_get(f.s, "sm-1", before, &len);
  CHECK(c != NULL && len == strlen(body) && strcmp(c, body) == 0);
  free(c);
  c = hk_store_content_get(f.s, "sm-1", after, &len);
  CHECK(c == NULL);
  free(c);
  c = hk_store_content_get(f.s, "sm-2", 0, &len);
  CHECK(c == NULL);
done:
  free(c);
  fx_done(&f);
}

/* Commits one catalog entry; returns rows changed or -1. */
static int64_t catalog_op(fixture *f, const char *kind, const char *id,
                          const char *json, int from_file) {
  hk_store_batch *b = hk_store_batch_new();
  outcome o;

  hk_store_add_catalog(b, kind, id, json, strlen(json), from_file);
  return fx_commit(f, b, &o) ? o.result[0] : -1;
}

static char *render_catalog(fixture *f) {
  hk_buf out = HK_BUF_INIT;

  if (hk_store_catalog_render(f->s, &out) != 0) {
    hk_buf_free(&out);
    return NULL;
  }
  hk_buf_cstr(&out);
  return hk_buf_steal(&out, NULL);
}

static void store_catalog_api_wins_over_file(void) {
  fixture f;
  char *cat = NULL;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  cat = render_catalog(&f);
  CHECK_STR(cat, "{}");
  free(cat);
  CHECK_INT(catalog_op(&f, "segment", "vip", "{\"v\":1}", 1), 1);
  cat = render_catalog(&f);
  CHECK_STR(cat, "{\"segment\":{\"vip\":{\"v\":1}}}");
  free(cat);
  CHECK_INT(catalog_op(&f, "segment", "vip", "{\"v\":2}", 0), 1);
  CHECK_INT(catalog_op(&f, "segment", "vip", "{\"v\":3}", 1), 0);
  CHECK_INT(catalog_op(&f, "segment", "new", "{\"v\":1}", 1), 1);
  CHECK_INT(catalog_op(&f, "segment", "new", "{\"v\":4}", 1), 1);
  CHECK_INT(catalog_op(&f, "campaign", "c1", "{\"name\":\"Spring\"}", 0), 1);
  cat = render_catalog(&f);
  REQUIRE(cat != NULL && json_ok(cat));
  CHECK_STR(cat, "{\"campaign\":{\"c1\":{\"name\":\"Spring\"}},"
                 "\"segment\":{\"new\":{\"v\":4},\"vip\":{\"v\":2}}}");
done:
  free(cat);
  fx_done(&f);
}

/* ---- cleanup ------------------------------------------------------------- */

static int put_content(fixture *f, const char *id) {
  hk_store_batch *b = hk_store_batch_new();
  outcome o;

  hk_store_add_content(b, id, "{}", 2);
  return fx_commit(f, b, &o);
}

static void store_cleanup_deletes_old_rows(void) {
  fixture f;
  hk_store_batch *b;
  double cut;
  char *c = NULL;
  size_t len;
  outcome o;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(put_content(&f, "old"));
  usleep(20 * 1000);
  cut = now_sec();
  usleep(20 * 1000);
  REQUIRE(put_content(&f, "new"));
  REQUIRE(fx_event(&f, 1000) && fx_event(&f, 2000) && fx_event(&f, 3000));
  CHECK_INT(hk_store_count(f.s, "history"), 3);
  b = hk_store_batch_new();
  hk_store_add_cleanup(b, cut, 2500);
  REQUIRE(fx_commit(&f, b, &o));
  CHECK_INT(o.result[0], 3); /* one content row and two events */
  CHECK((c = hk_store_content_get(f.s, "old", 0, &len)) == NULL);
  free(c);
  CHECK((c = hk_store_content_get(f.s, "new", 0, &len)) != NULL);
  CHECK_INT(hk_store_count(f.s, "history"), 1);
  CHECK_INT(hk_store_count(f.s, "content"), 1);
done:
  free(c);
  fx_done(&f);
}

/* ---- history chunks ------------------------------------------------------ */

/* Events as a page hands them over, for checks. */
typedef struct seen_events {
  int n;
  int64_t id[16];
  double date[16];
  char text[16][64];
} seen_events;

static void see_event(void *ctx, const hk_event_row *row) {
  seen_events *v = ctx;

  if (v->n == 16) return;
  v->id[v->n] = row->id;
  v->date[v->n] = row->event_date;
  snprintf(v->text[v->n], sizeof v->text[0], "%.*s", (int)row->len,
           row->body);
  v->n++;
}

/* Adds {"n":n} of type type dated date to b. */
static void add_numbered(hk_store_batch *b, int n, const char *type,
                         double date) {
  char body[64];

  snprintf(body, sizeof body, "{\"n\":%d}", n);
  hk_store_add_event(b, body, strlen(body), type, strlen(type), 7, date);
}

/* The events of one request make one row; pages read them in the order
 * received, by date range, after a given event, leaving out the types
 * exports never send (which the history pages keep). */
static void store_history_keeps_a_request_as_one_chunk(void) {
  static const char *const types[] = {"click", "campaign_launch", "open",
                                      "click", "open"};
  static const double dates[] = {500, 100, 300, 200, 900};
  seen_events v = {0};
  hk_store_batch *b;
  fixture f;
  outcome o;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  b = hk_store_batch_new();
  for (int i = 0; i < 5; i++) add_numbered(b, i, types[i], dates[i]);
  REQUIRE(fx_commit(&f, b, &o));
  REQUIRE(fx_event(&f, 250)); /* a second chunk: {"event_type":"click"} */
  CHECK_INT(hk_store_count(f.s, "history"), 2);
  CHECK_INT(hk_store_events_page(f.s, 150, 600, 0, 10, see_event, &v), 4);
  REQUIRE(v.n == 4);
  CHECK(strcmp(v.text[0], "{\"n\":0}") == 0 && v.date[0] == 500);
  CHECK(strcmp(v.text[1], "{\"n\":2}") == 0);
  CHECK(strcmp(v.text[2], "{\"n\":3}") == 0);
  CHECK(strcmp(v.text[3], "{\"event_type\":\"click\"}") == 0);
  CHECK(v.id[0] < v.id[1] && v.id[1] < v.id[2] && v.id[2] < v.id[3]);
  /* A page of 2, then the rest after its last event. */
  memset(&v, 0, sizeof v);
  CHECK_INT(hk_store_events_page(f.s, 150, 600, 0, 2, see_event, &v), 2);
  CHECK_INT(hk_store_events_page(f.s, 150, 600, v.id[1], 2, see_event, &v),
            2);
  CHECK(v.n == 4 && strcmp(v.text[2], "{\"n\":3}") == 0);
  CHECK_INT(hk_store_events_page(f.s, 150, 600, v.id[3], 2, see_event, &v),
            0);
  /* The history pages keep every type. */
  memset(&v, 0, sizeof v);
  CHECK_INT(hk_store_history_page(f.s, 0, 1000, 0, 10, see_event, &v), 6);
  CHECK(v.n == 6 && strcmp(v.text[1], "{\"n\":1}") == 0);
  /* Counts: chunks inside the range by their totals, the others event by
   * event. */
  CHECK_INT(hk_store_events_count(f.s, 0, 1000), 5);
  CHECK_INT(hk_store_events_count(f.s, 150, 600), 4);
  CHECK_INT(hk_store_events_count(f.s, 240, 260), 1);
  CHECK_INT(hk_store_events_count(f.s, 950, 2000), 0);
done:
  fx_done(&f);
}

/* Retention deletes whole chunks whose newest event is older than the
 * cut, and counts their events; a chunk with a newer event stays. */
static void store_cleanup_deletes_whole_chunks(void) {
  hk_store_batch *b;
  fixture f;
  outcome o;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  b = hk_store_batch_new();
  for (int i = 0; i < 3; i++) add_numbered(b, i, "click", 100 + i);
  REQUIRE(fx_commit(&f, b, &o));
  b = hk_store_batch_new();
  add_numbered(b, 3, "click", 100);
  add_numbered(b, 4, "click", 5000);
  REQUIRE(fx_commit(&f, b, &o));
  b = hk_store_batch_new();
  hk_store_add_cleanup(b, 0, 1000);
  REQUIRE(fx_commit(&f, b, &o));
  CHECK_INT(o.result[0], 3);
  CHECK_INT(hk_store_count(f.s, "history"), 1);
  CHECK_INT(hk_store_events_count(f.s, 0, 10000), 2);
  /* A backlog of expired one-event requests goes a chunk of events per
   * pass, not all at once. */
  fx_close_store(&f);
  REQUIRE(sql_exec(f.db, "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL "
                         "SELECT i + 1 FROM k WHERE i < 60000) INSERT INTO "
                         "history(received_at, first_date, last_date, n, "
                         "n_exported, meta, body) SELECT 1, i, i, 1, 1, "
                         "x'00', '{}' FROM k") == 0);
  REQUIRE(fx_open(&f) == 0);
  b = hk_store_batch_new();
  hk_store_add_cleanup(b, 0, 1e9);
  REQUIRE(fx_commit(&f, b, &o));
  CHECK_INT(o.result[0], HK_STORE_CLEANUP_CHUNK);
  CHECK_INT(sql_int(f.db, "SELECT sum(n) FROM history"),
            60002 - HK_STORE_CLEANUP_CHUNK);
done:
  fx_done(&f);
}

/* A request's events take more than one row once their texts pass
 * HK_HISTORY_BYTES_MAX; a row deleted by retention does not give its id
 * to the next one, so an export's position never points into a newer
 * request. */
static void store_history_rows_are_bounded_and_ids_not_reused(void) {
  size_t big = (size_t)12 << 20;
  char *text = malloc(big + 16);
  seen_events v = {0};
  hk_store_batch *b;
  fixture f;
  outcome o;

  REQUIRE(text != NULL && fx_init(&f) == 0 && fx_open(&f) == 0);
  memset(text, ' ', big);
  memcpy(text, "{\"n\":9}", 7);
  b = hk_store_batch_new();
  for (int i = 0; i < 3; i++)
    hk_store_add_event(b, text, big, "click", 5, 7, 100 + i);
  REQUIRE(fx_commit(&f, b, &o));
  CHECK_INT(hk_store_count(f.s, "history"), 2); /* 24 MB, then 12 */
  CHECK_INT(sql_int(f.db, "SELECT sum(n) FROM history"), 3);
  b = hk_store_batch_new();
  hk_store_add_cleanup(b, 0, 1000);
  REQUIRE(fx_commit(&f, b, &o));
  CHECK_INT(hk_store_count(f.s, "history"), 0);
  REQUIRE(fx_event(&f, 500));
  CHECK_INT(sql_int(f.db, "SELECT min(id) FROM history"), 3);
  CHECK_INT(hk_store_events_page(f.s, 0, 1000, HK_HISTORY_ID(2, 0), 10,
                                 see_event, &v), 1);
done:
  free(text);
  fx_done(&f);
}

/* A store of schema 5 keeps its history as a row per event: migrating it
 * makes chunks of 1,000 of them in the order received, and ends an
 * export in progress, whose place in the old order cannot be kept. */
static void store_migrates_rows_of_events_into_chunks(void) {
  static const char v5_history[] =
      "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k "
      "WHERE i < 2500) INSERT INTO events(received_at, event_date, "
      "event_type, body) SELECT 1.5, 3000 - i, CASE WHEN i = 7 THEN "
      "'profile_merge' ELSE 'click' END, '{\"n\":' || i || '}' FROM k;"
      "INSERT INTO exports(hook, from_day, to_day, status, total, scanned, "
      "sent, started_at) VALUES ('h', '2026-01-01', '2026-01-02', "
      "'in_progress', 9, 3, 3, 1);";
  seen_events v = {0};
  char sql[128];
  fixture f;

  REQUIRE(fx_init(&f) == 0);
  for (int k = 1; k <= 5; k++)
    REQUIRE(sql_exec(f.db, hk_store_migration(k)) == 0);
  snprintf(sql, sizeof sql, "PRAGMA application_id=%d; "
           "PRAGMA user_version=5", HOOKD_APP_ID);
  REQUIRE(sql_exec(f.db, sql) == 0 && sql_exec(f.db, v5_history) == 0);
  REQUIRE(fx_open(&f) == 0);
  CHECK(sql_int(f.db, "PRAGMA user_version") >= 6);
  /* An existing store keeps the page size it was made with. */
  CHECK_INT(sql_int(f.db, "PRAGMA page_size"), 4096);
  CHECK_INT(sql_int(f.db, "SELECT count(*) FROM sqlite_master WHERE name "
                          "IN ('events', 'events_by_date')"), 0);
  CHECK_INT(hk_store_count(f.s, "history"), 3);
  CHECK_INT(sql_int(f.db, "SELECT sum(n) FROM history"), 2500);
  CHECK_INT(sql_int(f.db, "SELECT sum(n_exported) FROM history"), 2499);
  CHECK_INT(hk_store_history_page(f.s, 0, 1e9, 0, 3, see_event, &v), 3);
  CHECK(v.n == 3 && strcmp(v.text[0], "{\"n\":1}") == 0 &&
        v.date[0] == 2999 && strcmp(v.text[2], "{\"n\":3}") == 0);
  CHECK_INT(hk_store_events_count(f.s, 0, 1e9), 2499);
  CHECK_INT(sql_int(f.db, "SELECT count(*) FROM exports WHERE status = "
                          "'error' AND reason LIKE '%start the export "
                          "again'"), 1);
done:
  fx_done(&f);
}

/* ---- history files ------------------------------------------------------- */

/* The path of history file n of the fixture's store. */
static void history_file(const fixture *f, int n, char *path, size_t len) {
  snprintf(path, len, "%s/history/%010d.ndjson", f->dir, n);
}

/* A batch of the one event {"n":n}. */
static hk_store_batch *fx_numbered_batch(int n) {
  hk_store_batch *b = hk_store_batch_new();

  add_numbered(b, n, "click", 100);
  return b;
}

/* A commit of the events {"n":first} .. {"n":first + count - 1}, dated
 * date. */
static int fx_numbered(fixture *f, int first, int count, double date) {
  hk_store_batch *b = hk_store_batch_new();
  outcome o;

  for (int i = first; i < first + count; i++)
    add_numbered(b, i, "click", date);
  return fx_commit(f, b, &o) && o.ok;
}

/* A request's texts are appended to a history file as NDJSON, an event
 * sent on several lines on one; its row keeps an empty body and names
 * the file and the offset. After a restart chunks go to a new file, and
 * a page reads across both. */
static void store_history_texts_go_to_files(void) {
  seen_events v = {0};
  char path[160], *data = NULL;
  hk_store_batch *b;
  size_t len = 0;
  fixture f;
  outcome o;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(fx_numbered(&f, 0, 2, 100) && fx_numbered(&f, 2, 1, 100));
  b = hk_store_batch_new();
  hk_store_add_event(b, "{\r\n\"p\":\n[1]}", 12, "click", 5, 7, 100);
  REQUIRE(fx_commit(&f, b, &o));
  history_file(&f, 1, path, sizeof path);
  REQUIRE((data = read_all(path, &len)) != NULL);
  CHECK(len == 37 && memcmp(data, "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n"
                            "{  \"p\": [1]}\n", 37) == 0);
  CHECK_INT(sql_int(f.db, "SELECT count(*) FROM history WHERE file = 1 "
                          "AND length(body) = 0"), 3);
  CHECK_INT(sql_int(f.db, "SELECT max(file_offset) FROM history"), 24);
  REQUIRE(fx_reopen(&f) == 0 && fx_numbered(&f, 3, 1, 100));
  history_file(&f, 2, path, sizeof path);
  CHECK(access(path, F_OK) == 0);
  CHECK_INT(hk_store_events_page(f.s, 0, 1000, 0, 10, see_event, &v), 5);
  CHECK(v.n == 5 && strcmp(v.text[1], "{\"n\":1}") == 0 &&
        strcmp(v.text[3], "{  \"p\": [1]}") == 0 &&
        strcmp(v.text[4], "{\"n\":3}") == 0 && v.date[4] == 100);
  /* A file cut short is damage, told as a failed read. */
  REQUIRE(truncate(path, 4) == 0);
  memset(&v, 0, sizeof v);
  CHECK_INT(hk_store_events_page(f.s, 0, 1000, 0, 10, see_event, &v), -1);
done:
  free(data);
  fx_done(&f);
}

/* What a crash between writing and committing leaves is taken back when
 * the store opens: files no row names are deleted, and the newest named
 * file is cut to the end of its last chunk. Other files in the folder
 * are left alone, and the next file is numbered past every one there
 * was. */
static void store_unnamed_history_files_are_deleted_on_open(void) {
  char stray[160], notes[160], next[160], *data = NULL;
  size_t len = 0;
  FILE *tail;
  fixture f;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(fx_numbered(&f, 0, 1, 100));
  fx_close_store(&f);
  history_file(&f, 9, stray, sizeof stray);
  snprintf(notes, sizeof notes, "%s/history/notes.txt", f.dir);
  REQUIRE(write_all(stray, "{\"n\":99}\n", 9) == 0 &&
          write_all(notes, "x", 1) == 0);
  history_file(&f, 1, next, sizeof next);
  REQUIRE((tail = fopen(next, "ab")) != NULL);
  fputs("{\"n\":98}\n{\"n\"", tail);
  fclose(tail);
  REQUIRE(fx_open(&f) == 0 && fx_numbered(&f, 1, 1, 100));
  REQUIRE((data = read_all(next, &len)) != NULL);
  CHECK(len == 8 && memcmp(data, "{\"n\":0}\n", 8) == 0);
  history_file(&f, 10, next, sizeof next);
  CHECK(access(stray, F_OK) != 0 && access(notes, F_OK) == 0 &&
        access(next, F_OK) == 0);
  CHECK_INT(hk_store_events_count(f.s, 0, 1000), 2);
done:
  free(data);
  fx_done(&f);
}

/* A new store did not write the files a history folder already holds (a
 * database moved away, a wrong data_dir): it leaves them alone and
 * numbers its own past them. */
static void store_new_store_leaves_history_files_alone(void) {
  char path[160];
  fixture f;

  REQUIRE(fx_init(&f) == 0);
  snprintf(path, sizeof path, "%s/history", f.dir);
  REQUIRE(mkdir(path, 0700) == 0);
  history_file(&f, 3, path, sizeof path);
  REQUIRE(write_all(path, "{\"n\":3}\n", 8) == 0);
  REQUIRE(fx_open(&f) == 0 && fx_numbered(&f, 0, 1, 100));
  CHECK(access(path, F_OK) == 0);
  CHECK_INT(sql_int(f.db, "SELECT max(file) FROM history"), 4);
done:
  fx_done(&f);
}

/* Once retention deleted every file, the next one still takes a number
 * of its own (the store keeps how far numbers went): a backup restored
 * beside the folder never names a file that holds other texts. */
static void store_history_file_numbers_are_not_used_again(void) {
  hk_store_batch *b;
  fixture f;
  outcome o;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(fx_numbered(&f, 0, 1, 100));
  b = hk_store_batch_new();
  hk_store_add_cleanup(b, 0, 1000);
  REQUIRE(fx_commit(&f, b, &o) && o.ok);
  /* The first start deletes file 1, which nothing names; the second
   * finds neither a file nor a row. */
  REQUIRE(fx_reopen(&f) == 0 && fx_reopen(&f) == 0);
  CHECK_INT(hk_store_count(f.s, "history"), 0);
  REQUIRE(fx_numbered(&f, 1, 1, 100));
  CHECK_INT(sql_int(f.db, "SELECT max(file) FROM history"), 2);
done:
  fx_done(&f);
}

/* The texts of a batch rolled back are taken back from the file, so
 * nothing of a refused request stays there; the next batch goes on at
 * the same place. A file deleted by hand while it is written fails the
 * batch that wrote to it (its texts would be nowhere), and the next one
 * starts a new file. */
static void store_refused_batch_leaves_no_texts(void) {
  char path[160], *data = NULL;
  size_t len = 0;
  fixture f;
  outcome o;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(fx_numbered(&f, 0, 1, 100));
  fx_submit(&f, bad_batch(), &o);
  REQUIRE(fx_wait(&f, &o, 1, 10) && !o.ok);
  REQUIRE(fx_numbered(&f, 1, 1, 100));
  history_file(&f, 1, path, sizeof path);
  REQUIRE((data = read_all(path, &len)) != NULL);
  CHECK(len == 16 && memcmp(data, "{\"n\":0}\n{\"n\":1}\n", 16) == 0);
  REQUIRE(unlink(path) == 0);
  fx_submit(&f, fx_numbered_batch(2), &o);
  REQUIRE(fx_wait(&f, &o, 1, 10));
  CHECK(!o.ok && strstr(o.error, "No such file"));
  REQUIRE(fx_numbered(&f, 3, 1, 100));
  CHECK_INT(sql_int(f.db, "SELECT max(file) FROM history"), 2);
done:
  free(data);
  fx_done(&f);
}

/* Retention deletes a file once its last chunk is gone, but not the file
 * being appended to, which goes after a newer one is started. A chunk
 * whose file is gone when it is read is skipped. */
static void store_cleanup_deletes_emptied_history_files(void) {
  char path[160];
  hk_store_batch *b;
  fixture f;
  outcome o;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  f.s->files.file_bytes = 1; /* a file per chunk */
  REQUIRE(fx_numbered(&f, 0, 2, 100) && fx_numbered(&f, 2, 1, 5000) &&
          fx_numbered(&f, 3, 1, 100));
  b = hk_store_batch_new();
  hk_store_add_cleanup(b, 0, 1000);
  REQUIRE(fx_commit(&f, b, &o) && o.ok);
  CHECK_INT(o.result[0], 3);
  history_file(&f, 1, path, sizeof path);
  CHECK(access(path, F_OK) != 0);
  history_file(&f, 3, path, sizeof path); /* being appended to */
  CHECK(access(path, F_OK) == 0);
  REQUIRE(fx_numbered(&f, 4, 1, 5000));
  CHECK(access(path, F_OK) != 0);
  history_file(&f, 2, path, sizeof path);
  REQUIRE(unlink(path) == 0);
  CHECK_INT(hk_store_events_page(f.s, 0, 1e4, 0, 10, see_event,
                                 &(seen_events){0}), 1);
done:
  fx_done(&f);
}

/* A history file that cannot be written refuses the batch with the
 * reason and keeps nothing of it; the next batch starts another file. */
static void store_history_write_failure_refuses_the_batch(void) {
  char path[160];
  hk_store_batch *b;
  fixture f;
  outcome o;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  f.s->files.file_bytes = 1;
  REQUIRE(fx_numbered(&f, 0, 1, 100));
  history_file(&f, 2, path, sizeof path);
  REQUIRE(mkdir(path, 0700) == 0); /* the next file's name is taken */
  b = hk_store_batch_new();
  add_numbered(b, 1, "click", 100);
  fx_submit(&f, b, &o);
  REQUIRE(fx_wait(&f, &o, 1, 10));
  CHECK(!o.ok && !o.disk_full && strstr(o.error, "history") &&
        strstr(o.error, "File exists"));
  CHECK_INT(hk_store_count(f.s, "history"), 1);
  REQUIRE(fx_numbered(&f, 2, 1, 100));
  CHECK_INT(sql_int(f.db, "SELECT max(file) FROM history"), 3);
  CHECK_INT(hk_store_events_count(f.s, 0, 1000), 2);
done:
  fx_done(&f);
}

/* ---- persistence and closing --------------------------------------------- */

/* A full disk cannot be arranged here, so the test holds SQLite's write
 * lock past the writer's busy timeout (5 s): every batch then fails to
 * begin. The plain batch is reported failed; the persistent one waits and
 * commits once the lock is gone. */
static void store_persistent_batch_retries_until_commit(void) {
  fixture f;
  outcome o[2];
  hk_store_batch *plain, *kept;
  sqlite3 *lock = NULL;
  rows r = {0};
  int64_t id;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE((id = fx_message(&f, "crm", "{}")) > 0);
  REQUIRE((lock = block_writer(f.db)) != NULL);
  plain = hk_store_batch_new();
  kept = hk_store_batch_new();
  hk_store_add_hook_state(plain, "crm", 0);
  hk_store_add_retry_state(kept, id, 2, 1700000000, 1700000010);
  hk_store_batch_persistent(kept);
  fx_submit(&f, plain, &o[0]);
  fx_submit(&f, kept, &o[1]);
  CHECK(fx_wait(&f, o, 1, 15));
  CHECK(o[0].ok == 0 && o[0].disk_full == 0 && o[0].error[0] != '\0');
  CHECK(fx_wait(&f, o + 1, 1, 1.5) == 0); /* still waiting, not failed */
  CHECK_INT(hk_store_pending(f.s), 1);
  unblock_writer(lock);
  lock = NULL;
  REQUIRE(fx_wait(&f, o + 1, 1, 10));
  CHECK(o[1].ok && o[1].done == 1);
  REQUIRE(read_outbox(&f, &r, "crm", 0, 10) == 1);
  CHECK_INT(r.row[0].attempts, 2);
  CHECK_INT(hk_store_hook_state(f.s, "crm"), -1);
done:
  unblock_writer(lock);
  rows_free(&r);
  fx_done(&f);
}

static void store_close_commits_queued_batches(void) {
  fixture f;
  outcome o[3];
  int64_t last = 0;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  for (int i = 0; i < 3; i++) {
    hk_store_batch *b = hk_store_batch_new();

    hk_store_add_message(b, "crm", "{\"q\":1}", 7);
    fx_submit(&f, b, &o[i]);
  }
  /* No loop turn between submitting and closing. */
  fx_close_store(&f);
  for (int i = 0; i < 3; i++) {
    CHECK(o[i].done == 1 && o[i].ok == 1);
    if (o[i].result[0] > last) last = o[i].result[0];
  }
  REQUIRE(fx_open(&f) == 0);
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 3);
  CHECK(fx_message(&f, "crm", "{}") > last);
  REQUIRE(fx_reopen(&f) == 0);
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 4);
done:
  fx_done(&f);
}

/* ---- outbox id ranges ---------------------------------------------------- */

#define SEQ_OF(id) ((int64_t)(id) & ((INT64_C(1) << 40) - 1))

/* Commits one message for each of hooks[0..n_hooks) in one batch, with
 * bodies {"h":"<hook>","n":n}; ids[i] gets hook i's outbox id. */
static int fx_messages(fixture *f, const char *const *hooks, int n_hooks,
                       int n, int64_t *ids) {
  hk_store_batch *b = hk_store_batch_new();
  char body[64];
  outcome o;

  for (int i = 0; i < n_hooks; i++) {
    snprintf(body, sizeof body, "{\"h\":\"%s\",\"n\":%d}", hooks[i], n);
    hk_store_add_message(b, hooks[i], body, strlen(body));
  }
  if (!fx_commit(f, b, &o)) return -1;
  for (int i = 0; i < n_hooks; i++) ids[i] = o.result[i];
  return 0;
}

/* Checks that hook's outbox holds exactly the messages of fx_messages
 * numbered ns[0..n), in that order, with ids ids[0..n). */
static void check_hook_outbox(fixture *f, const char *hook, const int *ns,
                              const int64_t *ids, int n) {
  rows r = {0};
  char want[64];

  CHECK_INT(read_outbox(f, &r, hook, 0, MAX_ROWS), n);
  for (int i = 0; i < r.n && i < n; i++) {
    snprintf(want, sizeof want, "{\"h\":\"%s\",\"n\":%d}", hook, ns[i]);
    CHECK_STR(r.body[i], want);
    CHECK_INT(r.row[i].id, ids[i]);
  }
  CHECK_INT(hk_store_outbox_count(f->s, hook), n);
  rows_free(&r);
}

/* Deletes hook, its messages becoming dead letters; returns how many. */
static int64_t hook_delete(fixture *f, const char *hook) {
  hk_store_batch *b = hk_store_batch_new();
  outcome o;

  hk_store_add_hook_delete(b, hook, 0, "https://x.example", "deleted");
  return fx_commit(f, b, &o) ? o.result[0] : -1;
}

/* Every outbox row is in the range of its hook's slot. */
static void check_rows_in_ranges(fixture *f) {
  CHECK_INT(sql_int(f->db, "SELECT count(*) FROM outbox WHERE (id >> 40) "
                           "IS NOT (SELECT slot FROM hook_slots AS h "
                           "WHERE h.hook = outbox.hook)"), 0);
}

/* Two hooks' messages, interleaved across batches and within one, get ids
 * in ranges of their own; each hook reads back its own in order; a
 * reopened store continues each hook's sequence. */
static void store_outbox_ids_per_hook_ranges(void) {
  static const char *const hooks[] = {"crm", "erp"};
  static const int crm_n[] = {1, 3, 4, 5}, erp_n[] = {0, 2, 4, 5};
  fixture f;
  int64_t crm[4], erp[4], pair[2];
  rows r = {0};

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  /* erp n=0, crm n=1, erp n=2, crm n=3: one batch each. */
  for (int k = 0; k < 4; k++) {
    REQUIRE(fx_messages(&f, hooks + (k % 2 ? 0 : 1), 1, k, pair) == 0);
    (k % 2 ? crm : erp)[k / 2] = pair[0];
  }
  REQUIRE(fx_messages(&f, hooks, 2, 4, pair) == 0); /* both in one */
  crm[2] = pair[0];
  erp[2] = pair[1];
  CHECK(SLOT_OF(crm[0]) >= 1 && SLOT_OF(erp[0]) >= 1);
  CHECK(SLOT_OF(crm[0]) != SLOT_OF(erp[0]));
  CHECK_INT(SEQ_OF(erp[0]), 1);
  CHECK_INT(SEQ_OF(crm[0]), 1);
  for (int i = 1; i < 3; i++) {
    CHECK(SLOT_OF(crm[i]) == SLOT_OF(crm[0]) && crm[i] > crm[i - 1]);
    CHECK(SLOT_OF(erp[i]) == SLOT_OF(erp[0]) && erp[i] > erp[i - 1]);
  }
  REQUIRE(fx_reopen(&f) == 0);
  REQUIRE(fx_messages(&f, hooks + 1, 1, 5, &erp[3]) == 0);
  REQUIRE(fx_messages(&f, hooks, 1, 5, &crm[3]) == 0);
  CHECK(SLOT_OF(crm[3]) == SLOT_OF(crm[0]) && crm[3] > crm[2]);
  CHECK(SLOT_OF(erp[3]) == SLOT_OF(erp[0]) && erp[3] > erp[2]);
  check_hook_outbox(&f, "crm", crm_n, crm, 4);
  check_hook_outbox(&f, "erp", erp_n, erp, 4);
  CHECK_INT(read_outbox(&f, &r, "crm", crm[1], 10), 2);
  CHECK(r.n == 2 && r.row[0].id == crm[2] && r.row[1].id == crm[3]);
  CHECK_INT(sql_int(f.db, "SELECT count(*) FROM hook_slots"), 2);
  check_rows_in_ranges(&f);
  /* A deleted hook keeps its slot, and its ids go on growing: its
   * dispatcher skips any id it has seen. */
  REQUIRE(hook_delete(&f, "crm") == 4);
  CHECK_INT(hk_store_dead_letters_count(f.s, "crm"), 4);
  REQUIRE(fx_messages(&f, hooks, 1, 6, pair) == 0);
  CHECK(SLOT_OF(pair[0]) == SLOT_OF(crm[0]) && pair[0] > crm[3]);
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 1);
  CHECK_INT(hk_store_outbox_count(f.s, "erp"), 4);
done:
  rows_free(&r);
  fx_done(&f);
}

/* A reopened store continues each hook's ids after what its range held
 * when it opened, even once that has been delivered: the hook's
 * dispatcher has seen those ids and skips any at or below them. */
static void store_ids_grow_after_range_drained(void) {
  static const char *const hooks[] = {"crm"};
  fixture f;
  hk_store_batch *b;
  outcome o;
  rows r = {0};
  int64_t ids[3], next;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  for (int i = 0; i < 3; i++)
    REQUIRE(fx_messages(&f, hooks, 1, i, &ids[i]) == 0);
  REQUIRE(fx_reopen(&f) == 0);
  REQUIRE(read_outbox(&f, &r, "crm", 0, 10) == 3);
  b = hk_store_batch_new();
  for (int i = 0; i < 3; i++) hk_store_add_ack(b, r.row[i].id);
  REQUIRE(fx_commit(&f, b, &o));
  CHECK_INT(hk_store_outbox_count(f.s, "crm"), 0);
  REQUIRE(fx_messages(&f, hooks, 1, 3, &next) == 0);
  CHECK(next > ids[2] && SLOT_OF(next) == SLOT_OF(ids[0]));
  REQUIRE(read_outbox(&f, &r, "crm", ids[2], 10) == 1);
  CHECK_INT(r.row[0].id, next);
done:
  rows_free(&r);
  fx_done(&f);
}

/* A dead letter sent again goes to the end of its hook's range: after
 * the messages the hook got meanwhile, whatever other hooks got. */
static void store_resend_lands_in_hook_range(void) {
  static const char *const hooks[] = {"crm", "erp"};
  static const int order[] = {1, 2, 0};
  fixture f;
  int64_t ids[3], erp, letter, moved[3];
  rows r = {0};

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(fx_messages(&f, hooks, 1, 0, &ids[0]) == 0);
  REQUIRE(fx_messages(&f, hooks, 1, 1, &ids[1]) == 0);
  REQUIRE(kill_messages(&f, ids, 1) == 1);
  REQUIRE((letter = sql_int(f.db, "SELECT max(id) FROM dead_letters")) > 0);
  REQUIRE(fx_messages(&f, hooks, 1, 2, &ids[2]) == 0);
  REQUIRE(fx_messages(&f, hooks + 1, 1, 0, &erp) == 0);
  CHECK_INT(letter_op(&f, letter, NULL), 1);
  REQUIRE(read_outbox(&f, &r, "crm", 0, 10) == 3);
  for (int i = 0; i < 3; i++) moved[i] = r.row[i].id;
  CHECK(moved[0] == ids[1] && moved[1] == ids[2]);
  CHECK(moved[2] > ids[2] && SLOT_OF(moved[2]) == SLOT_OF(ids[0]));
  check_hook_outbox(&f, "crm", order, moved, 3);
  /* Every letter of the hook at once: in the order they died. */
  REQUIRE(kill_messages(&f, moved, 3) == 3);
  CHECK_INT(letter_op(&f, -1, "crm"), 3);
  REQUIRE(read_outbox(&f, &r, "crm", 0, 10) == 3);
  CHECK(r.row[0].id > moved[2] && SLOT_OF(r.row[2].id) == SLOT_OF(ids[0]));
  for (int i = 0; i < 3; i++) moved[i] = r.row[i].id;
  check_hook_outbox(&f, "crm", order, moved, 3);
  CHECK_INT(hk_store_outbox_count(f.s, "erp"), 1);
  check_rows_in_ranges(&f);
done:
  rows_free(&r);
  fx_done(&f);
}

/* A batch that made a hook's slot and was rolled back took the slot with
 * it: the hook's next message gets a slot that is in the table, and no
 * other hook shares it. */
static void store_rolled_back_slot_is_made_again(void) {
  static const char *const hooks[] = {"fresh", "newcomer"};
  fixture f;
  outcome o[2];
  hk_store_batch *b[2];
  int64_t ids[2];

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  b[0] = hk_store_batch_new();
  hk_store_add_message(b[0], "fresh", "{}", 2);
  hk_store_add_profile(b[0], HK_PROFILE_MERGE, "42", "p1", "not json", 8);
  b[1] = hk_store_batch_new();
  hk_store_add_message(b[1], "newcomer", "{}", 2);
  REQUIRE(commit_as_group(&f, b, o, 2));
  CHECK(o[0].ok == 0 && o[1].ok == 1);
  CHECK_INT(hk_store_outbox_count(f.s, "fresh"), 0);
  REQUIRE(fx_messages(&f, hooks, 2, 1, ids) == 0);
  CHECK(SLOT_OF(ids[0]) != SLOT_OF(ids[1]));
  CHECK(SLOT_OF(ids[1]) == SLOT_OF(o[1].result[0]) && ids[1] > o[1].result[0]);
  CHECK_INT(hk_store_outbox_count(f.s, "fresh"), 1);
  CHECK_INT(hk_store_outbox_count(f.s, "newcomer"), 2);
  CHECK_INT(sql_int(f.db, "SELECT count(*) FROM hook_slots"), 2);
  check_rows_in_ranges(&f);
done:
  fx_done(&f);
}

/* Runs EXPLAIN QUERY PLAN on every statement of the store whose SQL
 * holds uses: a plan line holding bad or bad2 (NULL: none) is a failure.
 * Returns how many of those statements key() accepts. */
static int check_plans(const char *uses, const char *bad, const char *bad2,
                       int (*key)(const char *sql)) {
  fixture f;
  sqlite3 *db = NULL;
  const char *sql;
  char q[2048];
  int checked = 0;

  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  REQUIRE(sqlite3_open_v2(f.db, &db, SQLITE_OPEN_READONLY, NULL) ==
          SQLITE_OK);
  for (size_t i = 0; (sql = hk_store_sql(i)) != NULL; i++) {
    sqlite3_stmt *st = NULL;

    if (strstr(sql, uses) == NULL) continue;
    snprintf(q, sizeof q, "EXPLAIN QUERY PLAN %s", sql);
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK) {
      FAILF("%s: %s", sql, sqlite3_errmsg(db));
      continue;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
      const char *detail = (const char *)sqlite3_column_text(st, 3);

      if (strstr(detail, bad) || (bad2 && strstr(detail, bad2)))
        FAILF("%s: plan: %s", sql, detail);
    }
    sqlite3_finalize(st);
    checked += key(sql);
  }
done:
  sqlite3_close(db);
  fx_done(&f);
  return checked;
}

static int per_hook(const char *sql) {
  return strstr(sql, "hook = ?1") != NULL || strstr(sql, "h.hook") != NULL;
}

static int any_statement(const char *sql) { return sql != NULL; }

/* Every statement of the store that reads or changes the outbox searches
 * it by rowid: none scans the table or sorts it, and the table has no
 * index left to keep up. */
static void store_outbox_queries_search_by_rowid(void) {
  fixture f;

  /* the per-hook reads and deletes were seen */
  CHECK(check_plans("outbox", "SCAN outbox", "TEMP B-TREE", per_hook) >= 6);
  REQUIRE(fx_init(&f) == 0 && fx_open(&f) == 0);
  CHECK_INT(sql_int(f.db, "SELECT count(*) FROM sqlite_master WHERE "
                          "type = 'index' AND tbl_name = 'outbox'"), 0);
done:
  fx_done(&f);
}

/* The history's reads and retention find rows through the index by
 * newest date (or from a given row id), never by reading the table. */
static void store_history_queries_use_the_index(void) {
  /* page, start, count, edges, retention */
  CHECK(check_plans("FROM history", "SCAN history", NULL, any_statement) >=
        5);
}

/* ---- migration from schema 5 -------------------------------------------- */

/* A store as hookd of schema 5 left it: crm and erp messages with ids
 * interleaved (one of erp's beyond 1 << 40, which no hookd made but the
 * migration must not trip on), dead letters, and exports: erp's with a
 * page in flight of which two messages are still queued, one of a hook
 * whose page has left, and crm's done. */
static const char v5_rows[] =
    "INSERT INTO outbox(id, hook, body, created_at) VALUES"
    " (1, 'crm', '{\"h\":\"crm\",\"n\":0}', 1700000000),"
    " (2, 'erp', '{\"h\":\"erp\",\"n\":0}', 1700000000),"
    " (4, 'erp', '{\"h\":\"erp\",\"n\":1}', 1700000001),"
    " (5, 'crm', '{\"h\":\"crm\",\"n\":1}', 1700000001),"
    " (1099511627777, 'erp', '{\"h\":\"erp\",\"n\":2}', 1700000002);"
    "INSERT INTO outbox(id, hook, body, created_at, attempts, "
    " first_attempt_at, next_attempt_at, route, msg_key, version) VALUES"
    " (9, 'crm', '{\"h\":\"crm\",\"n\":2}', 1700000003, 2, 1700000010.5,"
    " 1700000070.25, 'orders', x'6b6579', 7);"
    "INSERT INTO dead_letters(hook, destination, reason, attempts, "
    " created_at, body) VALUES"
    " ('crm', 'https://crm.example', 'status=500', 3, 1700000000, '{}'),"
    " ('crm', 'https://crm.example', 'status=500', 3, 1700000000, '[1]');"
    "INSERT INTO exports(hook, from_day, to_day, status, total, scanned, "
    " sent, started_at, chunk_first, chunk_last, chunk_count) VALUES"
    " ('erp', '2024-01-01', '2024-01-31', 'paused', 9, 3, 0, 1700000000,"
    "  3, 1099511627777, 3),"
    " ('gone', '2024-01-01', '2024-01-31', 'paused', 9, 3, 0, 1700000000,"
    "  6, 8, 2),"
    " ('crm', '2024-01-01', '2024-01-31', 'completed', 0, 0, 0, 1700000000,"
    "  NULL, NULL, NULL);";

/* Builds f's store with hookd's own migrations 1 to 5 and v5_rows. */
static int make_v5_store(fixture *f) {
  char sql[128];

  for (int v = 1; v <= 5; v++)
    if (sql_exec(f->db, hk_store_migration(v)) != 0) return -1;
  snprintf(sql, sizeof sql, "PRAGMA application_id=%d; "
           "PRAGMA user_version=5", HOOKD_APP_ID);
  if (sql_exec(f->db, sql) != 0 || sql_exec(f->db, v5_rows) != 0) return -1;
  return sql_int(f->db, "SELECT count(*) FROM sqlite_master WHERE name = "
                        "'outbox_by_hook'") == 1 ? 0 : -1;
}

typedef struct export_chunks {
  char hook[4][16];
  int64_t first[4], last[4];
  int n;
} export_chunks;

static void chunk_cb(void *ctx, const hk_store_export_row *row) {
  export_chunks *x = ctx;

  if (x->n == 4) return;
  snprintf(x->hook[x->n], sizeof x->hook[0], "%s", row->hook);
  x->first[x->n] = row->chunk_first;
  x->last[x->n++] = row->chunk_last;
}

/* The exports after the migration: erp's page is the new ids of its two
 * queued messages; gone's and crm's are 0..0 (none queued, or no page). */
static void check_migrated_exports(fixture *f, const int64_t *erp) {
  export_chunks x = {0};

  REQUIRE(hk_store_exports(f->s, chunk_cb, &x) == 0 && x.n == 3);
  CHECK_STR(x.hook[0], "crm");
  CHECK(x.first[0] == 0 && x.last[0] == 0);
  CHECK_STR(x.hook[1], "erp");
  CHECK_INT(x.first[1], erp[1]);
  CHECK_INT(x.last[1], erp[2]);
  CHECK_INT(hk_store_outbox_range(f->s, "erp", x.first[1], x.last[1]), 2);
  CHECK_STR(x.hook[2], "gone");
  CHECK(x.first[2] == 0 && x.last[2] == 0);
  CHECK_INT(hk_store_outbox_range(f->s, "gone", 0, 0), 0);
done:;
}

/* crm's migrated row n=2 kept its delivery state, route, key and
 * version (checked in the callback: they live only during it). */
static void migrated_row_cb(void *ctx, const hk_outbox_row *row) {
  int *seen = ctx;

  if (row->len < 3 || memcmp(row->body + row->len - 3, ":2}", 3) != 0)
    return;
  (*seen)++;
  CHECK_INT(row->attempts, 2);
  CHECK(row->first_at == 1700000010.5 && row->next_at == 1700000070.25);
  CHECK(row->route != NULL && strcmp(row->route, "orders") == 0);
  CHECK(row->key_len == 3 && memcmp(row->key, "key", 3) == 0);
  CHECK_INT(row->version, 7);
  CHECK(row->created_at == 1700000003);
}

static void store_migrates_schema_5_outbox(void) {
  static const int ns[] = {0, 1, 2, 3};
  fixture f;
  int64_t crm[4], erp[4];
  rows r = {0};
  int seen = 0;

  REQUIRE(fx_init(&f) == 0 && make_v5_store(&f) == 0 && fx_open(&f) == 0);
  CHECK(sql_int(f.db, "PRAGMA user_version") >= 7);
  CHECK_INT(sql_int(f.db, "SELECT count(*) FROM sqlite_master WHERE "
                          "type = 'index' AND tbl_name = 'outbox'"), 0);
  CHECK_INT(sql_int(f.db, "SELECT count(*) FROM sqlite_master WHERE "
                          "name IN ('outbox_v5', 'outbox_moves')"), 0);
  /* Slots in name order, for every hook with messages or an export. */
  CHECK_INT(sql_int(f.db, "SELECT count(*) FROM hook_slots"), 3);
  CHECK_INT(sql_int(f.db, "SELECT slot FROM hook_slots WHERE hook='crm'"), 1);
  CHECK_INT(sql_int(f.db, "SELECT slot FROM hook_slots WHERE hook='erp'"), 2);
  CHECK_INT(sql_int(f.db, "SELECT slot FROM hook_slots WHERE hook='gone'"),
            3);
  for (int i = 0; i < 3; i++) {
    crm[i] = (INT64_C(1) << 40) + i + 1;
    erp[i] = (INT64_C(2) << 40) + i + 1;
  }
  check_hook_outbox(&f, "crm", ns, crm, 3);
  check_hook_outbox(&f, "erp", ns, erp, 3);
  CHECK_INT(hk_store_outbox_read(f.s, "crm", crm[1], 10, migrated_row_cb,
                                 &seen), 1);
  CHECK_INT(seen, 1);
  CHECK_INT(hk_store_dead_letters_count(f.s, "crm"), 2);
  check_migrated_exports(&f, erp);
  /* Each hook goes on after its migrated messages, across a restart. */
  REQUIRE(fx_messages(&f, (const char *const[]){"erp"}, 1, 3, &erp[3]) == 0);
  REQUIRE(fx_reopen(&f) == 0);
  REQUIRE(fx_messages(&f, (const char *const[]){"crm"}, 1, 3, &crm[3]) == 0);
  CHECK_INT(crm[3], (INT64_C(1) << 40) + 4);
  CHECK_INT(erp[3], (INT64_C(2) << 40) + 4);
  check_hook_outbox(&f, "crm", ns, crm, 4);
  check_hook_outbox(&f, "erp", ns, erp, 4);
  CHECK_INT(letter_op(&f, -1, "crm"), 2);
  REQUIRE(read_outbox(&f, &r, "crm", 0, 10) == 6);
  CHECK(r.row[4].id == crm[3] + 1 && r.row[5].id == crm[3] + 2);
  check_rows_in_ranges(&f);
done:
  rows_free(&r);
  fx_done(&f);
}

int main(int argc, char **argv) {
  /* The store logs each open and close; only problems matter here. */
  hk_log_min_level = HK_LOG_WARN;
  if (sqlite3_open(":memory:", &jdb) != SQLITE_OK) return 1;
  RUN(store_open_creates_missing_dir_and_stamps_file);
  RUN(store_refuses_text_file);
  RUN(store_refuses_other_programs_database);
  RUN(store_refuses_tableless_database_of_other_program);
  RUN(store_refuses_newer_schema);
  RUN(store_second_open_is_refused_by_lock);
  RUN(store_messages_keep_order_and_bytes);
  RUN(store_ack_and_retry_state);
  RUN(store_ack_runs_delete_exactly_those);
  RUN(store_dead_letters_render_and_page);
  RUN(store_dead_letters_resend_and_forget);
  RUN(store_failing_batch_fails_alone);
  RUN(store_group_rollback_reports_truthfully);
  RUN(store_profiles_put_merge_delete);
  RUN(store_content_respects_not_before);
  RUN(store_catalog_api_wins_over_file);
  RUN(store_cleanup_deletes_old_rows);
  RUN(store_history_keeps_a_request_as_one_chunk);
  RUN(store_cleanup_deletes_whole_chunks);
  RUN(store_migrates_rows_of_events_into_chunks);
  RUN(store_history_rows_are_bounded_and_ids_not_reused);
  RUN(store_history_queries_use_the_index);
  RUN(store_history_texts_go_to_files);
  RUN(store_unnamed_history_files_are_deleted_on_open);
  RUN(store_new_store_leaves_history_files_alone);
  RUN(store_history_file_numbers_are_not_used_again);
  RUN(store_refused_batch_leaves_no_texts);
  RUN(store_cleanup_deletes_emptied_history_files);
  RUN(store_history_write_failure_refuses_the_batch);
  RUN(store_persistent_batch_retries_until_commit);
  RUN(store_close_commits_queued_batches);
  RUN(store_outbox_ids_per_hook_ranges);
  RUN(store_ids_grow_after_range_drained);
  RUN(store_resend_lands_in_hook_range);
  RUN(store_rolled_back_slot_is_made_again);
  RUN(store_outbox_queries_search_by_rowid);
  RUN(store_migrates_schema_5_outbox);
  sqlite3_close(jdb);
  return test_finish("test_store");
}
