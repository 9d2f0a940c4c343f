/* Reads from the store, on the loop thread's own connection: outbox pages
 * for the dispatchers, dead letters for the API, profiles, content, the
 * catalog and hook state. */
#include "store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json_write.h"
#include "log.h"

static const char *const read_sql[RD_KINDS] = {
    /* Outbox reads are rowid ranges inside the hook's range. */
    [RD_OUTBOX] = "SELECT id, body, attempts, first_attempt_at, "
                  "next_attempt_at, route, msg_key, created_at, version "
                  "FROM outbox WHERE id > max(?2, " OUTBOX_FIRST_SQL ") AND "
                  "id <= " OUTBOX_LAST_SQL " AND hook = ?1 "
                  "ORDER BY id LIMIT ?3",
    [RD_OUTBOX_COUNT] = "SELECT count(*) FROM outbox WHERE "
                        OUTBOX_OF_HOOK_SQL,
    [RD_DEAD_ALL] = "SELECT id, hook, destination, reason, attempts, "
                    "first_attempt_at, last_attempt_at, created_at, body, "
                    "version, kind FROM dead_letters WHERE id > ?2 ORDER BY "
                    "id LIMIT ?3",
    [RD_DEAD_HOOK] = "SELECT id, hook, destination, reason, attempts, "
                     "first_attempt_at, last_attempt_at, created_at, body, "
                     "version, kind FROM dead_letters WHERE hook = ?1 AND "
                     "id > ?2 ORDER BY id LIMIT ?3",
    [RD_DEAD_ONE] = "SELECT hook, kind FROM dead_letters WHERE id = ?1",
    [RD_DEAD_COUNT] = "SELECT count(*) FROM dead_letters WHERE hook = ?1",
    [RD_PROFILE] = "SELECT fields FROM profiles WHERE list_id = ?1 AND "
                   "profile_id = ?2",
    [RD_CONTENT] = "SELECT body FROM content WHERE send_message_id = ?1 AND "
                   "stored_at >= ?2",
    [RD_CATALOG] = "SELECT kind, id, body FROM catalog ORDER BY kind, id",
    [RD_HOOK_STATE] = "SELECT active FROM hook_state WHERE hook = ?1",
    [RD_TOMBSTONE] = "SELECT 1 FROM profile_tombstones WHERE list_id = ?1 "
                     "AND profile_id = ?2",
    /* History chunks that may hold events dated in [?2, ?3), from the
     * chunk of the event after which a page starts (history.h). */
    [RD_EVENTS_PAGE] = "SELECT id, meta, body, file, file_offset FROM "
                       "history WHERE id >= ?1 AND last_date >= ?2 AND "
                       "first_date < ?3 ORDER BY id",
    /* Where the first page starts: the oldest chunk not wholly before
     * the range, found through the index by newest date. */
    [RD_EVENTS_START] = "SELECT coalesce(min(id), 0) FROM history "
                        "INDEXED BY history_by_last_date "
                        "WHERE last_date >= ?1",
    /* Exported events of the chunks wholly inside [?1, ?2) ... */
    [RD_EVENTS_COUNT] = "SELECT coalesce(sum(n_exported), 0) FROM history "
                        "WHERE last_date >= ?1 AND last_date < ?2 AND "
                        "first_date >= ?1",
    /* ... and the chunks it cuts through, counted event by event. */
    [RD_EVENTS_EDGES] = "SELECT meta FROM history WHERE last_date >= ?1 AND "
                        "first_date < ?2 AND (first_date < ?1 OR "
                        "last_date >= ?2)",
    [RD_OUTBOX_RANGE] = "SELECT count(*) FROM outbox WHERE id BETWEEN "
                        "max(?2, " OUTBOX_FIRST_SQL ") AND min(?3, "
                        OUTBOX_LAST_SQL ") AND hook = ?1",
    [RD_EXPORTS] = "SELECT hook, from_day, to_day, status, paused_by, "
                   "reason, total, scanned, sent, started_at, ended_at, "
                   "cursor_date, cursor_id, chunk_first, chunk_last, "
                   "chunk_count, failed FROM exports ORDER BY hook",
    /* Each hook's messages: a rowid range per slot (0 for most). */
    [RD_OUTBOX_HOOKS] = "SELECT hook, (SELECT count(*) FROM outbox WHERE id "
                        "BETWEEN h.slot << " OUTBOX_STR(OUTBOX_SEQ_BITS)
                        " AND ((h.slot + 1) << " OUTBOX_STR(OUTBOX_SEQ_BITS)
                        ") - 1 AND outbox.hook = h.hook) FROM hook_slots AS "
                        "h ORDER BY hook",
};

const char *hk_store_read_sql(size_t i) {
  return i < RD_KINDS ? read_sql[i] : NULL;
}

static sqlite3_stmt *rstmt(hk_store *s, enum store_read_kind kind) {
  sqlite3_stmt **st = &s->rstmt[kind];

  if (*st == NULL &&
      sqlite3_prepare_v3(s->rdb, read_sql[kind], -1,
                         SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
    hk_error("store", "path=%s read_failed=1 error=\"%s\"", s->path,
             sqlite3_errmsg(s->rdb));
    return NULL;
  }
  sqlite3_reset(*st);
  sqlite3_clear_bindings(*st);
  return *st;
}

/* Ends a read: resets the statement so it holds no read transaction, and
 * logs rc when it is an error. Returns 0, or -1 for an error. */
static int rdone(hk_store *s, sqlite3_stmt *st, int rc) {
  sqlite3_reset(st);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) return 0;
  hk_error("store", "path=%s read_failed=1 error=\"%s\"", s->path,
           sqlite3_errstr(rc));
  return -1;
}

static void bind_cstr(sqlite3_stmt *st, int col, const char *v) {
  sqlite3_bind_text(st, col, v, -1, SQLITE_STATIC);
}

long hk_store_outbox_read(hk_store *s, const char *hook, int64_t after,
                          long limit,
                          void (*cb)(void *ctx, const hk_outbox_row *row),
                          void *ctx) {
  sqlite3_stmt *st = rstmt(s, RD_OUTBOX);
  hk_outbox_row row;
  long n = 0;
  int rc;

  if (st == NULL) return -1;
  bind_cstr(st, 1, hook);
  sqlite3_bind_int64(st, 2, after);
  sqlite3_bind_int64(st, 3, limit);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    row.id = sqlite3_column_int64(st, 0);
    row.body = (const char *)sqlite3_column_text(st, 1);
    row.len = (size_t)sqlite3_column_bytes(st, 1);
    row.attempts = sqlite3_column_int(st, 2);
    row.first_at = sqlite3_column_double(st, 3);
    row.next_at = sqlite3_column_double(st, 4);
    row.route = (const char *)sqlite3_column_text(st, 5);
    row.key = sqlite3_column_blob(st, 6);
    row.key_len = (size_t)sqlite3_column_bytes(st, 6);
    row.created_at = sqlite3_column_double(st, 7);
    row.version = (long)sqlite3_column_int64(st, 8);
    cb(ctx, &row);
    n++;
  }
  return rdone(s, st, rc) == 0 ? n : -1;
}

/* Runs a one-value count query bound to hook. */
/* The single integer a counting statement answers, or -1. */
static long count_of(hk_store *s, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  long n = rc == SQLITE_ROW ? (long)sqlite3_column_int64(st, 0) : -1;

  return rdone(s, st, rc) == 0 ? n : -1;
}

static long count_for(hk_store *s, enum store_read_kind kind,
                      const char *hook) {
  sqlite3_stmt *st = rstmt(s, kind);

  if (st == NULL) return -1;
  bind_cstr(st, 1, hook);
  return count_of(s, st);
}

long hk_store_outbox_count(hk_store *s, const char *hook) {
  return count_for(s, RD_OUTBOX_COUNT, hook);
}

long hk_store_dead_letters_count(hk_store *s, const char *hook) {
  return count_for(s, RD_DEAD_COUNT, hook);
}

static void render_time(hk_buf *out, sqlite3_stmt *st, int col) {
  double t = sqlite3_column_type(st, col) == SQLITE_NULL
                 ? 0 : sqlite3_column_double(st, col);

  hk_json_write_time(out, t, 1);
}

static void render_column_str(hk_buf *out, sqlite3_stmt *st, int col) {
  const char *v = (const char *)sqlite3_column_text(st, col);

  hk_json_write_cstr(out, v);
}

/* One dead letter: the message is embedded as the JSON it was sent as
 * (an event the hook's code failed on, as "event"). */
static void render_letter(hk_buf *out, sqlite3_stmt *st) {
  int is_event = sqlite3_column_type(st, 10) != SQLITE_NULL;

  hk_buf_printf(out, "{\"id\":%lld,\"hook\":",
                (long long)sqlite3_column_int64(st, 0));
  render_column_str(out, st, 1);
  hk_buf_append(out, ",\"destination\":", 15);
  render_column_str(out, st, 2);
  hk_buf_append(out, ",\"reason\":", 10);
  render_column_str(out, st, 3);
  hk_buf_printf(out, ",\"attempts\":%d,\"first_attempt_at\":",
                sqlite3_column_int(st, 4));
  render_time(out, st, 5);
  hk_buf_append(out, ",\"last_attempt_at\":", 19);
  render_time(out, st, 6);
  hk_buf_append(out, ",\"dead_at\":", 11);
  render_time(out, st, 7);
  if (sqlite3_column_type(st, 9) == SQLITE_NULL)
    hk_buf_append(out, ",\"version\":null", 15);
  else
    hk_buf_printf(out, ",\"version\":%lld",
                  (long long)sqlite3_column_int64(st, 9));
  hk_buf_printf(out, ",\"kind\":\"%s\",\"%s\":", is_event ? "event" : "message",
                is_event ? "event" : "message");
  hk_buf_append(out, sqlite3_column_text(st, 8),
                (size_t)sqlite3_column_bytes(st, 8));
  hk_buf_putc(out, '}');
}

/* What a page of dead letters may hold before it ends early (the letter
 * that crosses it is still in the page). */
#define HK_DEAD_PAGE_BYTES ((size_t)8 << 20)

int hk_store_dead_letters_render(hk_store *s, hk_buf *out, const char *hook,
                                 int64_t after, int limit) {
  sqlite3_stmt *st = rstmt(s, hook ? RD_DEAD_HOOK : RD_DEAD_ALL);
  int64_t last = 0;
  size_t start = out->len;
  int n = 0, rc;

  if (st == NULL) return -1;
  if (hook) bind_cstr(st, 1, hook);
  sqlite3_bind_int64(st, 2, after);
  sqlite3_bind_int64(st, 3, (int64_t)limit + 1); /* one more: is there a next? */
  hk_buf_append(out, "{\"items\":[", 10);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    /* A page of large letters ends early, with a next cursor. */
    if (n == limit || out->len - start >= HK_DEAD_PAGE_BYTES) break;
    if (n++) hk_buf_putc(out, ',');
    render_letter(out, st);
    last = sqlite3_column_int64(st, 0);
  }
  if (rdone(s, st, rc) != 0) return -1;
  if (rc == SQLITE_ROW)
    hk_buf_printf(out, "],\"next\":\"%lld\"}", (long long)last);
  else
    hk_buf_append(out, "],\"next\":null}", 14);
  return 0;
}

int hk_store_dead_letter_hook(hk_store *s, int64_t id, char *hook, size_t n,
                              int *is_event) {
  sqlite3_stmt *st = rstmt(s, RD_DEAD_ONE);
  int rc, found = 0;

  if (st == NULL) return -1;
  sqlite3_bind_int64(st, 1, id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    snprintf(hook, n, "%s", (const char *)sqlite3_column_text(st, 0));
    *is_event = sqlite3_column_type(st, 1) != SQLITE_NULL;
    found = 1;
  }
  return rdone(s, st, rc) == 0 && found ? 0 : -1;
}

/* Copies column 0 of the statement's first row, or NULL when none. */
static char *first_text(hk_store *s, sqlite3_stmt *st, size_t *len) {
  int rc = sqlite3_step(st);
  char *out = NULL;

  if (rc == SQLITE_ROW) {
    *len = (size_t)sqlite3_column_bytes(st, 0);
    out = malloc(*len + 1);
    if (out) {
      memcpy(out, sqlite3_column_text(st, 0), *len);
      out[*len] = '\0';
    }
  }
  rdone(s, st, rc);
  return out;
}

char *hk_store_profile_get(hk_store *s, const char *list_id,
                           const char *profile_id, size_t *len) {
  sqlite3_stmt *st = rstmt(s, RD_PROFILE);

  if (st == NULL) return NULL;
  bind_cstr(st, 1, list_id);
  bind_cstr(st, 2, profile_id);
  return first_text(s, st, len);
}

char *hk_store_content_get(hk_store *s, const char *send_message_id,
                           double not_before, size_t *len) {
  sqlite3_stmt *st = rstmt(s, RD_CONTENT);

  if (st == NULL) return NULL;
  bind_cstr(st, 1, send_message_id);
  sqlite3_bind_double(st, 2, not_before);
  return first_text(s, st, len);
}

int hk_store_catalog_render(hk_store *s, hk_buf *out) {
  sqlite3_stmt *st = rstmt(s, RD_CATALOG);
  char kind[64] = "";
  int rc, n = 0;

  if (st == NULL) return -1;
  hk_buf_putc(out, '{');
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *k = (const char *)sqlite3_column_text(st, 0);

    if (strcmp(k, kind) != 0) {
      hk_buf_append(out, n ? "}," : "", n ? 2 : 0);
      hk_json_write_cstr(out, k);
      hk_buf_append(out, ":{", 2);
      snprintf(kind, sizeof kind, "%s", k);
      n = 0;
    }
    if (n++) hk_buf_putc(out, ',');
    render_column_str(out, st, 1);
    hk_buf_putc(out, ':');
    hk_buf_append(out, sqlite3_column_text(st, 2),
                  (size_t)sqlite3_column_bytes(st, 2));
  }
  hk_buf_append(out, kind[0] ? "}}" : "}", kind[0] ? 2 : 1);
  return rdone(s, st, rc);
}

int hk_store_hook_state(hk_store *s, const char *hook) {
  sqlite3_stmt *st = rstmt(s, RD_HOOK_STATE);
  int rc, v = -1;

  if (st == NULL) return -1;
  bind_cstr(st, 1, hook);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) v = sqlite3_column_int(st, 0);
  rdone(s, st, rc);
  return v;
}

int hk_store_outbox_hooks(hk_store *s,
                          void (*cb)(void *ctx, const char *hook, long n),
                          void *ctx) {
  sqlite3_stmt *st = rstmt(s, RD_OUTBOX_HOOKS);
  int rc;

  if (st == NULL) return -1;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    if (sqlite3_column_int64(st, 1) > 0)
      cb(ctx, (const char *)sqlite3_column_text(st, 0),
         (long)sqlite3_column_int64(st, 1));
  return rdone(s, st, rc);
}

long hk_store_count(hk_store *s, const char *table) {
  sqlite3_stmt *st = NULL;
  char sql[128];
  long n = -1;

  snprintf(sql, sizeof sql, "SELECT count(*) FROM \"%s\"", table);
  if (sqlite3_prepare_v2(s->rdb, sql, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    n = (long)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

int hk_store_profile_deleted(hk_store *s, const char *list_id,
                             const char *profile_id) {
  sqlite3_stmt *st = rstmt(s, RD_TOMBSTONE);
  int rc;

  if (st == NULL) return 0;
  bind_cstr(st, 1, list_id);
  bind_cstr(st, 2, profile_id);
  rc = sqlite3_step(st);
  rdone(s, st, rc);
  return rc == SQLITE_ROW;
}

/* What a pass over history chunks looks for. */
typedef struct chunk_scan {
  double from, to;  /* events dated in [from, to) */
  int64_t after;    /* after this event id */
  long limit;       /* at most this many */
  int all;          /* also the types exports leave out */
  void (*cb)(void *ctx, const hk_event_row *row);
  void *ctx;
  long n;           /* passed to cb so far */
} chunk_scan;

/* The texts of the chunk in st's current row (id, meta, body, file,
 * file_offset): its body, or what its history file holds for it, read
 * into s->chunk_text (each text then ends with a newline: *sep is 1).
 * Returns 0; 1 when retention deleted the file after the row was read;
 * -1 when the file cannot be read (logged). */
static int chunk_text(hk_store *s, sqlite3_stmt *st, const char **body,
                      size_t *len, size_t *sep) {
  const unsigned char *meta = sqlite3_column_blob(st, 1);
  size_t entries = (size_t)sqlite3_column_bytes(st, 1) / HK_HISTORY_ENTRY;
  int64_t file = sqlite3_column_int64(st, 3);
  int rc;

  *sep = sqlite3_column_type(st, 3) != SQLITE_NULL;
  if (!*sep) {
    *body = sqlite3_column_blob(st, 2);
    *len = (size_t)sqlite3_column_bytes(st, 2);
    return 0;
  }
  *len = (size_t)hk_history_text_bytes(meta, entries);
  rc = hk_history_files_read(&s->files, file,
                             (uint64_t)sqlite3_column_int64(st, 4), *len,
                             &s->chunk_text);
  *body = s->chunk_text.data;
  if (rc == 0) return 0;
  if (rc == ENOENT) { /* retention deleted it since the row was read */
    hk_warn("store", "path=%s history_file=%lld missing=1 chunk=%lld "
            "skipped=1", s->files.dir, (long long)file,
            (long long)sqlite3_column_int64(st, 0));
    return 1;
  }
  hk_error("store", "path=%s read_failed=1 error=\"history file %lld: %s\"",
           s->files.dir, (long long)file,
           rc == EIO ? "shorter than its chunks" : strerror(rc));
  return -1;
}

/* Passes the events of the chunk in st's current row that q looks for
 * to its callback. Returns 0, or -1 when the chunk is damaged (its
 * entries do not fit its texts) or its file cannot be read. */
static int chunk_events(hk_store *s, sqlite3_stmt *st, chunk_scan *q) {
  int64_t chunk = sqlite3_column_int64(st, 0);
  const void *meta = sqlite3_column_blob(st, 1);
  size_t entries = (size_t)sqlite3_column_bytes(st, 1) / HK_HISTORY_ENTRY;
  const char *body;
  size_t body_len, off = 0, sep;
  int rc = chunk_text(s, st, &body, &body_len, &sep);

  if (rc != 0) return rc > 0 ? 0 : -1;
  for (size_t i = 0; i < entries && q->n < q->limit; i++) {
    hk_history_entry e;
    hk_event_row row;

    hk_history_entry_get(meta, i, &e);
    if (e.len + sep > body_len - off ||
        (sep && body[off + e.len] != '\n'))
      return -1;
    row.id = HK_HISTORY_ID(chunk, i);
    row.event_date = e.date;
    row.body = body + off;
    row.len = e.len;
    off += e.len + sep;
    if (row.id <= q->after || e.date < q->from || e.date >= q->to ||
        (!q->all && !(e.flags & HK_HISTORY_EXPORTED)))
      continue;
    q->cb(q->ctx, &row);
    q->n++;
  }
  return 0;
}

/* The chunk a pass for q starts at: the cursor's, or for a first page
 * the oldest chunk that is not wholly before the range (0 after a read
 * error: the pass then looks at every chunk). */
static int64_t first_chunk(hk_store *s, const chunk_scan *q) {
  sqlite3_stmt *st;
  int64_t first = 0;
  int rc;

  if (q->after > 0) return HK_HISTORY_CHUNK_OF(q->after);
  if ((st = rstmt(s, RD_EVENTS_START)) == NULL) return 0;
  sqlite3_bind_double(st, 1, q->from);
  if ((rc = sqlite3_step(st)) == SQLITE_ROW)
    first = sqlite3_column_int64(st, 0);
  rdone(s, st, rc);
  return first;
}

/* Runs st (RD_EVENTS_PAGE's SQL) for q. Returns the events passed to the
 * callback, or -1 after logging a store error. */
static long scan_chunks(hk_store *s, sqlite3_stmt *st, chunk_scan *q) {
  int rc;

  sqlite3_bind_int64(st, 1, first_chunk(s, q));
  sqlite3_bind_double(st, 2, q->from);
  sqlite3_bind_double(st, 3, q->to);
  while (q->n < q->limit && (rc = sqlite3_step(st)) == SQLITE_ROW)
    if (chunk_events(s, st, q) != 0) {
      hk_error("store", "path=%s read_failed=1 error=\"history chunk %lld "
               "is damaged\"", s->path,
               (long long)sqlite3_column_int64(st, 0));
      sqlite3_reset(st);
      return -1;
    }
  if (q->n >= q->limit) rc = SQLITE_DONE; /* stopped early, on purpose */
  return rdone(s, st, rc) == 0 ? q->n : -1;
}

long hk_store_events_page(hk_store *s, double from, double to,
                          int64_t after_id, long limit,
                          void (*cb)(void *ctx, const hk_event_row *row),
                          void *ctx) {
  sqlite3_stmt *st = rstmt(s, RD_EVENTS_PAGE);
  chunk_scan q = {from, to, after_id, limit, 0, cb, ctx, 0};

  if (st == NULL) return -1;
  return scan_chunks(s, st, &q);
}

/* Prepared for each page rather than kept: its only reader is a one-shot
 * command, and a statement finalized after each page holds no read
 * transaction between pages. */
long hk_store_history_page(hk_store *s, double from, double to,
                           int64_t after_id, long limit,
                           void (*cb)(void *ctx, const hk_event_row *row),
                           void *ctx) {
  chunk_scan q = {from, to, after_id, limit, 1, cb, ctx, 0};
  sqlite3_stmt *st = NULL;
  long n;

  if (sqlite3_prepare_v2(s->rdb, read_sql[RD_EVENTS_PAGE], -1, &st,
                         NULL) != SQLITE_OK) {
    hk_error("store", "path=%s read_failed=1 error=\"%s\"", s->path,
             sqlite3_errmsg(s->rdb));
    return -1;
  }
  n = scan_chunks(s, st, &q);
  sqlite3_finalize(st);
  return n;
}

/* Exported events dated in [from, to) of the chunks st yields (meta). */
static long edge_count(hk_store *s, sqlite3_stmt *st, double from,
                       double to) {
  long n = 0;
  int rc;

  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const void *meta = sqlite3_column_blob(st, 0);
    size_t entries = (size_t)sqlite3_column_bytes(st, 0) / HK_HISTORY_ENTRY;

    for (size_t i = 0; i < entries; i++) {
      hk_history_entry e;

      hk_history_entry_get(meta, i, &e);
      n += e.date >= from && e.date < to && (e.flags & HK_HISTORY_EXPORTED);
    }
  }
  return rdone(s, st, rc) == 0 ? n : -1;
}

long hk_store_events_count(hk_store *s, double from, double to) {
  sqlite3_stmt *inside = rstmt(s, RD_EVENTS_COUNT);
  sqlite3_stmt *edges = rstmt(s, RD_EVENTS_EDGES);
  long a, b;

  if (inside == NULL || edges == NULL) return -1;
  sqlite3_bind_double(inside, 1, from);
  sqlite3_bind_double(inside, 2, to);
  sqlite3_bind_double(edges, 1, from);
  sqlite3_bind_double(edges, 2, to);
  if ((a = count_of(s, inside)) < 0 || (b = edge_count(s, edges, from, to)) < 0)
    return -1;
  return a + b;
}

long hk_store_outbox_range(hk_store *s, const char *hook, int64_t first,
                           int64_t last) {
  sqlite3_stmt *st = rstmt(s, RD_OUTBOX_RANGE);

  if (st == NULL) return -1;
  bind_cstr(st, 1, hook);
  sqlite3_bind_int64(st, 2, first);
  sqlite3_bind_int64(st, 3, last);
  return count_of(s, st);
}

static const char *col_text(sqlite3_stmt *st, int col) {
  return (const char *)sqlite3_column_text(st, col);
}

int hk_store_exports(hk_store *s,
                     void (*cb)(void *ctx, const hk_store_export_row *row),
                     void *ctx) {
  sqlite3_stmt *st = rstmt(s, RD_EXPORTS);
  hk_store_export_row r;
  int rc;

  if (st == NULL) return -1;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    memset(&r, 0, sizeof r);
    r.hook = col_text(st, 0);
    r.from = col_text(st, 1);
    r.to = col_text(st, 2);
    r.status = col_text(st, 3);
    r.paused_by = col_text(st, 4);
    r.reason = col_text(st, 5);
    r.total = (long)sqlite3_column_int64(st, 6);
    r.scanned = (long)sqlite3_column_int64(st, 7);
    r.sent = (long)sqlite3_column_int64(st, 8);
    r.started_at = sqlite3_column_double(st, 9);
    r.ended_at = sqlite3_column_double(st, 10);
    r.cursor_date = sqlite3_column_double(st, 11);
    r.cursor_id = sqlite3_column_int64(st, 12);
    r.chunk_first = sqlite3_column_int64(st, 13);
    r.chunk_last = sqlite3_column_int64(st, 14);
    r.chunk_count = (long)sqlite3_column_int64(st, 15);
    r.failed = (long)sqlite3_column_int64(st, 16);
    cb(ctx, &r);
  }
  return rdone(s, st, rc);
}

void hk_event_page_add(void *ctx, const hk_event_row *row) {
  hk_event_page *p = ctx;
  char *copy = malloc(row->len + 1);

  if (copy == NULL) abort();
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 256;
    char **texts = realloc(p->texts, cap * sizeof *texts);
    size_t *lens = texts ? realloc(p->lens, cap * sizeof *lens) : NULL;

    if (texts == NULL || lens == NULL) abort();
    p->texts = texts;
    p->lens = lens;
    p->cap = cap;
  }
  memcpy(copy, row->body, row->len);
  copy[row->len] = '\0';
  p->texts[p->n] = copy;
  p->lens[p->n++] = row->len;
  p->last_date = row->event_date;
  p->last_id = row->id;
}

void hk_event_page_clear(hk_event_page *p) {
  for (size_t i = 0; i < p->n; i++) free(p->texts[i]);
  p->n = 0;
}

void hk_event_page_free(hk_event_page *p) {
  hk_event_page_clear(p);
  free(p->texts);
  free(p->lens);
  p->texts = NULL;
  p->lens = NULL;
  p->cap = 0;
}
