/* Batches of store writes: building them on the loop thread, and running
 * their operations on the writer thread inside the group's transaction. */
#include "store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- building a batch (loop thread) ---- */

hk_store_batch *hk_store_batch_new(void) {
  return calloc(1, sizeof(hk_store_batch));
}

void hk_store_batch_free(hk_store_batch *b) {
  if (b == NULL) return;
  free(b->ops);
  hk_buf_free(&b->arena);
  free(b);
}

int hk_store_batch_reserve(hk_store_batch *b, size_t ops, size_t bytes) {
  store_op *grown;

  if (ops > b->cap_ops) {
    if ((grown = realloc(b->ops, ops * sizeof *grown)) == NULL) return -1;
    b->ops = grown;
    b->cap_ops = ops;
  }
  return hk_buf_reserve(&b->arena, bytes);
}

void hk_store_batch_persistent(hk_store_batch *b) { b->persistent = 1; }

static arena_str keep(hk_store_batch *b, const char *p, size_t len) {
  arena_str a = {b->arena.len, len};

  if (p == NULL) {
    a.len = (size_t)-1; /* NULL, as opposed to "" */
    return a;
  }
  hk_buf_append(&b->arena, p, len);
  return a;
}

static store_op *add_op(hk_store_batch *b, enum store_op_kind kind) {
  store_op *op;

  if (b->n_ops == b->cap_ops) {
    size_t cap = b->cap_ops ? b->cap_ops * 2 : 16;
    store_op *grown = realloc(b->ops, cap * sizeof *grown);

    if (grown == NULL) abort(); /* the writer cannot work without memory */
    b->ops = grown;
    b->cap_ops = cap;
  }
  op = &b->ops[b->n_ops++];
  memset(op, 0, sizeof *op);
  op->kind = kind;
  return op;
}

/* A C string: kept with a NUL after it (not counted in len), so that
 * hk_store_batch_meta can hand it out as a C string. */
static arena_str keep_cstr(hk_store_batch *b, const char *s) {
  arena_str a = keep(b, s, s ? strlen(s) : 0);

  if (s) hk_buf_putc(&b->arena, '\0');
  return a;
}

#define STR(s) keep_cstr(b, s)

size_t hk_store_add_event(hk_store_batch *b, const char *json, size_t len,
                          const char *type, size_t type_len, int64_t list_id,
                          double event_date) {
  store_op *op = add_op(b, OP_EVENT);

  op->s[0] = keep(b, json, len);
  op->s[1] = keep(b, type, type_len);
  op->i = list_id;
  op->d[0] = event_date;
  return b->n_ops - 1;
}

size_t hk_store_add_message(hk_store_batch *b, const char *hook,
                            const char *json, size_t len) {
  return hk_store_add_routed(b, hook, json, len, NULL, NULL, 0, 0);
}

size_t hk_store_add_routed(hk_store_batch *b, const char *hook,
                           const char *json, size_t len, const char *route,
                           const char *key, size_t key_len, long version) {
  store_op *op = add_op(b, OP_MESSAGE);

  op->i = version;
  op->s[0] = keep(b, json, len);
  op->s[1] = STR(hook);
  op->s[2] = STR(route);
  op->s[3] = keep(b, key, key_len);
  return b->n_ops - 1;
}

size_t hk_store_add_content(hk_store_batch *b, const char *send_message_id,
                            const char *json, size_t len) {
  store_op *op = add_op(b, OP_CONTENT);

  op->s[0] = keep(b, json, len);
  op->s[1] = STR(send_message_id);
  return b->n_ops - 1;
}

size_t hk_store_add_profile(hk_store_batch *b, enum hk_profile_op which,
                            const char *list_id, const char *profile_id,
                            const char *json, size_t len) {
  static const enum store_op_kind kinds[] = {OP_PROFILE_PUT, OP_PROFILE_MERGE,
                                             OP_PROFILE_DELETE};
  store_op *op = add_op(b, kinds[which]);

  op->s[0] = keep(b, json ? json : "{}", json ? len : 2);
  op->s[1] = STR(list_id);
  op->s[2] = STR(profile_id);
  return b->n_ops - 1;
}

size_t hk_store_add_catalog(hk_store_batch *b, const char *kind,
                            const char *id, const char *json, size_t len,
                            int from_file) {
  store_op *op = add_op(b, OP_CATALOG);

  op->s[0] = keep(b, json, len);
  op->s[1] = STR(kind);
  op->s[2] = STR(id);
  op->n = from_file;
  return b->n_ops - 1;
}

size_t hk_store_add_catalog_delete(hk_store_batch *b, const char *kind,
                                   const char *id) {
  store_op *op = add_op(b, OP_CATALOG_DELETE);

  op->s[1] = STR(kind);
  op->s[2] = STR(id);
  return b->n_ops - 1;
}

size_t hk_store_add_catalog_reset(hk_store_batch *b) {
  add_op(b, OP_CATALOG_RESET);
  return b->n_ops - 1;
}

size_t hk_store_add_ack(hk_store_batch *b, int64_t id) {
  add_op(b, OP_ACK)->i = id;
  return b->n_ops - 1;
}

size_t hk_store_add_retry_state(hk_store_batch *b, int64_t id, int attempts,
                                double first_at, double next_at) {
  store_op *op = add_op(b, OP_RETRY_STATE);

  op->i = id;
  op->n = attempts;
  op->d[0] = first_at;
  op->d[1] = next_at;
  return b->n_ops - 1;
}

size_t hk_store_add_dead(hk_store_batch *b, int64_t id, const char *reason,
                         const char *destination, int attempts,
                         double first_at, double last_at) {
  store_op *op = add_op(b, OP_DEAD);

  op->i = id;
  op->s[0] = STR(reason);
  op->s[1] = STR(destination);
  op->n = attempts;
  op->d[0] = first_at;
  op->d[1] = last_at;
  return b->n_ops - 1;
}

size_t hk_store_add_resend(hk_store_batch *b, int64_t id, const char *hook) {
  store_op *op = add_op(b, OP_RESEND);

  op->i = id;
  op->s[0] = STR(hook);
  return b->n_ops - 1;
}

size_t hk_store_add_forget(hk_store_batch *b, int64_t id) {
  add_op(b, OP_FORGET)->i = id;
  return b->n_ops - 1;
}

size_t hk_store_add_cleanup(hk_store_batch *b, double content_before,
                            double events_before) {
  store_op *op = add_op(b, OP_CLEANUP);

  op->d[0] = content_before;
  op->d[1] = events_before;
  return b->n_ops - 1;
}

size_t hk_store_add_hook_state(hk_store_batch *b, const char *hook,
                               int active) {
  store_op *op = add_op(b, OP_HOOK_STATE);

  op->s[0] = STR(hook);
  op->n = active;
  return b->n_ops - 1;
}

size_t hk_store_add_hook_delete(hk_store_batch *b, const char *hook,
                                int discard, const char *destination,
                                const char *reason) {
  store_op *op = add_op(b, OP_HOOK_DELETE);

  op->s[0] = STR(hook);
  op->s[1] = STR(destination);
  op->s[2] = STR(reason);
  op->n = discard;
  return b->n_ops - 1;
}

size_t hk_store_add_dead_event(hk_store_batch *b, const char *hook,
                               const char *event, size_t len,
                               const char *destination, const char *reason,
                               long version) {
  store_op *op = add_op(b, OP_DEAD_EVENT);

  op->s[0] = keep(b, event, len);
  op->s[1] = STR(hook);
  op->s[2] = STR(destination);
  op->s[3] = STR(reason);
  op->i = version;
  return b->n_ops - 1;
}

size_t hk_store_add_export(hk_store_batch *b, const char *hook,
                           const char *json, size_t len) {
  store_op *op = add_op(b, OP_EXPORT);

  op->s[0] = STR(hook);
  op->s[1] = keep(b, json, len);
  return b->n_ops - 1;
}

size_t hk_store_batch_size(const hk_store_batch *b) { return b->n_ops; }

size_t hk_store_batch_bytes(const hk_store_batch *b) {
  return b->arena.len + b->n_ops * sizeof(store_op);
}

const char *hk_store_batch_text(const hk_store_batch *b, size_t op,
                                size_t *len) {
  const arena_str *a = &b->ops[op].s[0];

  *len = a->len == (size_t)-1 ? 0 : a->len;
  return b->arena.data ? b->arena.data + a->off : "";
}

/* A string of the arena, or NULL when it was given as NULL. */
static const char *arena_get(const hk_store_batch *b, arena_str a) {
  if (a.len == (size_t)-1) return NULL;
  return b->arena.data ? b->arena.data + a.off : "";
}

void hk_store_batch_meta(const hk_store_batch *b, size_t op,
                         hk_store_meta *meta) {
  const store_op *o = &b->ops[op];

  meta->route = arena_get(b, o->s[2]);
  meta->key = arena_get(b, o->s[3]);
  meta->key_len = meta->key ? o->s[3].len : 0;
}

int64_t hk_store_batch_result(const hk_store_batch *b, size_t op) {
  return op < b->n_ops ? b->ops[op].result : 0;
}

const char *hk_store_batch_error(const hk_store_batch *b) { return b->error; }

int hk_store_batch_disk_full(const hk_store_batch *b) { return b->disk_full; }

void hk_store_batch_fail(hk_store_batch *b, sqlite3 *db, const char *what) {
  int code = sqlite3_extended_errcode(db);

  b->ok = 0;
  b->disk_full = (code & 0xff) == SQLITE_FULL;
  if (b->disk_full)
    snprintf(b->error, sizeof b->error,
             "the store's disk is full (%s: %s)", what, sqlite3_errmsg(db));
  else
    snprintf(b->error, sizeof b->error, "store error (%s: %s)", what,
             sqlite3_errmsg(db));
}

/* ---- running a batch (writer thread) ---- */

/* A profile written again is no longer a deleted one. */
#define TOMBSTONE_CLEAR \
  "DELETE FROM profile_tombstones WHERE list_id = ?1 AND profile_id = ?2"

/* Acknowledged messages leave the outbox up to ACK_MANY at a time, one
 * statement for a run of acknowledgements rather than one each. */
#define ACK_MANY 32
#define ACK_MANY_SQL                                                       \
  "DELETE FROM outbox WHERE id IN (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "   \
  "?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, " \
  "?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)"

/* SQL per operation; an operation may need up to OP_STATEMENTS. */
static const char *const op_sql[OP_KINDS][OP_STATEMENTS] = {
    [OP_EVENT] = {HK_HISTORY_INSERT_FILE_SQL},
    [OP_MESSAGE] = {"INSERT INTO outbox(id, hook, body, created_at, route, "
                    "msg_key, version) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
    [OP_CONTENT] = {"INSERT INTO content(send_message_id, body, stored_at) "
                    "VALUES(?1, ?2, ?3) ON CONFLICT(send_message_id) DO "
                    "UPDATE SET body = excluded.body, "
                    "stored_at = excluded.stored_at"},
    [OP_PROFILE_PUT] = {"INSERT INTO profiles(list_id, profile_id, fields, "
                        "updated_at) VALUES(?1, ?2, ?3, ?4) ON CONFLICT DO "
                        "UPDATE SET fields = excluded.fields, "
                        "updated_at = excluded.updated_at",
                        TOMBSTONE_CLEAR},
    [OP_PROFILE_MERGE] = {"INSERT INTO profiles(list_id, profile_id, fields, "
                          "updated_at) VALUES(?1, ?2, json_patch('{}', ?3), "
                          "?4) ON CONFLICT DO UPDATE SET fields = "
                          "json_patch(fields, ?3), "
                          "updated_at = excluded.updated_at",
                          TOMBSTONE_CLEAR},
    [OP_PROFILE_DELETE] = {"DELETE FROM profiles WHERE list_id = ?1 AND "
                           "profile_id = ?2",
                           "INSERT OR REPLACE INTO profile_tombstones("
                           "list_id, profile_id, deleted_at) "
                           "VALUES(?1, ?2, ?3)"},
    [OP_CATALOG] = {"INSERT INTO catalog(kind, id, body, source, updated_at) "
                    "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(kind, id) DO "
                    "UPDATE SET body = excluded.body, source = "
                    "excluded.source, updated_at = excluded.updated_at "
                    "WHERE excluded.source = 'api' OR source = 'file'"},
    [OP_CATALOG_RESET] = {"DELETE FROM catalog WHERE source = 'file'"},
    [OP_CATALOG_DELETE] = {"DELETE FROM catalog WHERE kind = ?1 AND id = ?2"},
    [OP_ACK] = {"DELETE FROM outbox WHERE id = ?1", ACK_MANY_SQL},
    [OP_RETRY_STATE] = {"UPDATE outbox SET attempts = ?2, first_attempt_at "
                        "= ?3, next_attempt_at = ?4 WHERE id = ?1"},
    [OP_DEAD] = {"INSERT INTO dead_letters(hook, destination, reason, "
                 "attempts, first_attempt_at, last_attempt_at, created_at, "
                 "body, route, msg_key, version) SELECT hook, ?2, ?3, ?4, ?5, "
                 "?6, ?7, body, route, msg_key, version FROM outbox WHERE "
                 "id = ?1",
                 "DELETE FROM outbox WHERE id = ?1"},
    [OP_RESEND] = {"INSERT INTO outbox(id, hook, body, created_at, route, "
                   "msg_key, version) SELECT ?2, hook, body, ?3, route, "
                   "msg_key, version FROM dead_letters WHERE id = ?1 AND "
                   "kind IS NULL",
                   "DELETE FROM dead_letters WHERE id = ?1",
                   "SELECT id FROM dead_letters WHERE hook = ?1 AND kind IS "
                   "NULL ORDER BY id",
                   "SELECT hook FROM dead_letters WHERE id = ?1 AND kind IS "
                   "NULL"},
    [OP_FORGET] = {"DELETE FROM dead_letters WHERE id = ?1"},
    [OP_CLEANUP] = {"DELETE FROM content WHERE stored_at < ?1",
                    /* whole expired chunks, by newest date, until they
                     * hold ?2 events (at least one chunk); each pass
                     * reads at most ?2 of them, however many expired */
                    "DELETE FROM history WHERE id IN (SELECT id FROM "
                    "(SELECT id, n, sum(n) OVER (ORDER BY last_date, id) "
                    "AS upto FROM (SELECT id, n, last_date FROM history "
                    "INDEXED BY history_by_last_date WHERE last_date < ?1 "
                    "ORDER BY last_date LIMIT ?2)) WHERE upto - n < ?2) "
                    "RETURNING n, file"},
    [OP_HOOK_STATE] = {"INSERT INTO hook_state(hook, active, updated_at) "
                       "VALUES(?1, ?2, ?3) ON CONFLICT(hook) DO UPDATE SET "
                       "active = excluded.active, "
                       "updated_at = excluded.updated_at"},
    [OP_HOOK_DELETE] = {"INSERT INTO dead_letters(hook, destination, reason, "
                        "attempts, first_attempt_at, last_attempt_at, "
                        "created_at, body, route, msg_key, version) SELECT "
                        "hook, ?2, ?3, attempts, first_attempt_at, NULL, ?4, "
                        "body, route, msg_key, version FROM outbox WHERE "
                        OUTBOX_OF_HOOK_SQL " ORDER BY id",
                        "DELETE FROM outbox WHERE " OUTBOX_OF_HOOK_SQL,
                        "DELETE FROM hook_state WHERE hook = ?1",
                        "DELETE FROM exports WHERE hook = ?1"},
    /* The export's state comes as one JSON object (see export.c). */
    [OP_EXPORT] = {"INSERT OR REPLACE INTO exports(hook, from_day, to_day, "
                   "status, paused_by, reason, total, scanned, sent, "
                   "started_at, ended_at, cursor_date, cursor_id, "
                   "chunk_first, chunk_last, chunk_count, failed) SELECT ?1, "
                   "j->>'from', j->>'to', j->>'status', j->>'paused_by', "
                   "j->>'reason', j->>'total', j->>'scanned', j->>'sent', "
                   "j->>'started_at', j->>'ended_at', j->>'cursor_date', "
                   "j->>'cursor_id', coalesce(?3, j->>'chunk_first'), "
                   "coalesce(?4, j->>'chunk_last'), j->>'chunk_count', "
                   "j->>'failed' FROM (SELECT ?2 AS j)"},
    [OP_DEAD_EVENT] = {"INSERT INTO dead_letters(hook, destination, reason, "
                       "attempts, created_at, body, version, kind) VALUES("
                       "?1, ?2, ?3, 0, ?4, ?5, ?6, 'event')"},
};

const char *hk_store_sql(size_t i) {
  const char *sql;

  for (int k = 0; k < OP_KINDS; k++)
    for (int j = 0; j < OP_STATEMENTS; j++)
      if (op_sql[k][j] && i-- == 0) return op_sql[k][j];
  for (size_t k = 0; (sql = hk_store_read_sql(k)) != NULL; k++)
    if (i-- == 0) return sql;
  for (size_t k = 0; (sql = hk_store_slots_sql(k)) != NULL; k++)
    if (i-- == 0) return sql;
  return NULL;
}

int hk_store_check_all(hk_store *s, char *err, size_t errlen) {
  const char *sql;

  for (size_t i = 0; (sql = hk_store_sql(i)) != NULL; i++) {
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(s->wdb, sql, -1, &st, NULL) != SQLITE_OK) {
      snprintf(err, errlen, "store %s: damaged or changed by hand: %s; "
               "hookd leaves it alone: restore a backup or move it aside",
               s->path, sqlite3_errmsg(s->wdb));
      return -1;
    }
    sqlite3_finalize(st);
  }
  return 0;
}

/* The writer's prepared statement for (kind, which), prepared on first
 * use. NULL on error (the connection holds the message). */
static sqlite3_stmt *wstmt(hk_store *s, enum store_op_kind kind, int which) {
  sqlite3_stmt **st = &s->wstmt[kind][which];

  if (*st == NULL &&
      sqlite3_prepare_v3(s->wdb, op_sql[kind][which], -1,
                         SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
    return NULL;
  sqlite3_reset(*st);
  sqlite3_clear_bindings(*st);
  return *st;
}

static void bind_str(hk_store_batch *b, sqlite3_stmt *st, int col,
                     arena_str a) {
  if (a.len == (size_t)-1)
    sqlite3_bind_null(st, col);
  else
    sqlite3_bind_text(st, col, b->arena.data ? b->arena.data + a.off : "",
                      (int)a.len, SQLITE_STATIC);
}

static void bind_time(sqlite3_stmt *st, int col, double t) {
  if (t > 0) sqlite3_bind_double(st, col, t);
  else sqlite3_bind_null(st, col);
}

/* Steps a statement that returns no rows. Returns 1 or 0. */
static int step_done(sqlite3_stmt *st) {
  return st != NULL && sqlite3_step(st) == SQLITE_DONE;
}

/* Steps a statement that returns no rows and keeps the rows it changed
 * as the operation's result. Returns 1 or 0. */
static int step_count(hk_store *s, sqlite3_stmt *st, store_op *op) {
  if (!step_done(st)) return 0;
  op->result = sqlite3_changes(s->wdb);
  return 1;
}

#define HISTORY_KEEP_BYTES ((size_t)4 << 20)

/* Writes the chunk's texts to the history file and stores its row.
 * Returns 1, or 0 with the connection's error or s->op_error set. */
static int store_chunk(hk_store *s, hk_history_chunk *c) {
  sqlite3_stmt *st = wstmt(s, OP_EVENT, 0);
  uint64_t offset;
  int64_t file;
  int rc;

  if (st == NULL) return 0;
  rc = hk_history_files_append(&s->files, c->body.data, c->body.len, &file,
                               &offset);
  if (rc != 0) {
    s->op_error = strerror(rc);
    s->op_disk_full = rc == ENOSPC || rc == EDQUOT;
    return 0;
  }
  return hk_history_chunk_insert(st, c, file, offset);
}

/* Stores the batch's events (its OP_EVENT operations, in order) as
 * history chunks: a row for up to HK_HISTORY_CHUNK_MAX of them (or
 * HK_HISTORY_BYTES_MAX of text). */
static int run_history(hk_store *s, hk_store_batch *b, double now) {
  hk_history_chunk *c = &s->chunk;

  hk_history_chunk_reset(c, now, 1);
  for (size_t i = 0; i < b->n_ops; i++) {
    const store_op *op = &b->ops[i];

    if (op->kind != OP_EVENT) continue;
    if (hk_history_chunk_full(c, op->s[0].len, HK_HISTORY_CHUNK_MAX)) {
      if (!store_chunk(s, c)) return 0;
      hk_history_chunk_reset(c, now, 1);
    }
    if (hk_history_chunk_add(c, op->d[0], b->arena.data + op->s[1].off,
                             op->s[1].len, b->arena.data + op->s[0].off,
                             op->s[0].len) != 0) {
      s->op_error = "out of memory";
      return 0;
    }
  }
  if (c->n > 0 && !store_chunk(s, c)) return 0;
  /* The buffers are kept for the next batch, unless a large request made
   * them larger than requests usually are. */
  if (c->body.cap > HISTORY_KEEP_BYTES) hk_history_chunk_free(c);
  return 1;
}

static int run_message(hk_store *s, hk_store_batch *b, store_op *op,
                       double now) {
  sqlite3_stmt *st = wstmt(s, OP_MESSAGE, 0);

  if (st == NULL ||
      !hk_store_outbox_id(s, arena_get(b, op->s[1]), &op->result))
    return 0;
  sqlite3_bind_int64(st, 1, op->result);
  bind_str(b, st, 2, op->s[1]);
  bind_str(b, st, 3, op->s[0]);
  sqlite3_bind_double(st, 4, now);
  bind_str(b, st, 5, op->s[2]);
  if (op->s[3].len != (size_t)-1)
    sqlite3_bind_blob(st, 6, b->arena.data + op->s[3].off, (int)op->s[3].len,
                      SQLITE_STATIC);
  if (op->i > 0) sqlite3_bind_int64(st, 7, op->i);
  return step_done(st);
}

/* Operations whose statement binds strings s[1], s[2], s[0] (in that
 * order), then the time: content, profiles. */
static int run_keyed(hk_store *s, hk_store_batch *b, store_op *op,
                     double now) {
  sqlite3_stmt *st = wstmt(s, op->kind, 0);
  int col = 1;

  if (st == NULL) return 0;
  bind_str(b, st, col++, op->s[1]);
  if (op->kind != OP_CONTENT) bind_str(b, st, col++, op->s[2]);
  if (op->kind != OP_PROFILE_DELETE) {
    bind_str(b, st, col++, op->s[0]);
    sqlite3_bind_double(st, col, now);
  }
  if (!step_count(s, st, op)) return 0;
  if (op->kind == OP_CONTENT) return 1;
  /* The profile's tombstone: set by a delete, cleared by a write. */
  st = wstmt(s, op->kind, 1);
  if (st == NULL) return 0;
  bind_str(b, st, 1, op->s[1]);
  bind_str(b, st, 2, op->s[2]);
  if (op->kind == OP_PROFILE_DELETE) sqlite3_bind_double(st, 3, now);
  return step_done(st);
}

static int run_catalog(hk_store *s, hk_store_batch *b, store_op *op,
                       double now) {
  sqlite3_stmt *st = wstmt(s, OP_CATALOG, 0);

  if (st == NULL) return 0;
  bind_str(b, st, 1, op->s[1]);
  bind_str(b, st, 2, op->s[2]);
  bind_str(b, st, 3, op->s[0]);
  sqlite3_bind_text(st, 4, op->n ? "file" : "api", -1, SQLITE_STATIC);
  sqlite3_bind_double(st, 5, now);
  return step_count(s, st, op);
}

static int run_catalog_delete(hk_store *s, hk_store_batch *b, store_op *op) {
  sqlite3_stmt *st = wstmt(s, OP_CATALOG_DELETE, 0);

  if (st == NULL) return 0;
  bind_str(b, st, 1, op->s[1]);
  bind_str(b, st, 2, op->s[2]);
  return step_count(s, st, op);
}

static int run_outbox_update(hk_store *s, store_op *op) {
  sqlite3_stmt *st = wstmt(s, op->kind, 0);

  if (st == NULL) return 0;
  sqlite3_bind_int64(st, 1, op->i);
  if (op->kind == OP_RETRY_STATE) {
    sqlite3_bind_int(st, 2, op->n);
    bind_time(st, 3, op->d[0]);
    bind_time(st, 4, op->d[1]);
  }
  return step_count(s, st, op);
}

static int run_dead(hk_store *s, hk_store_batch *b, store_op *op,
                    double now) {
  sqlite3_stmt *st = wstmt(s, OP_DEAD, 0);

  if (st == NULL) return 0;
  sqlite3_bind_int64(st, 1, op->i);
  bind_str(b, st, 2, op->s[1]);
  bind_str(b, st, 3, op->s[0]);
  sqlite3_bind_int(st, 4, op->n);
  bind_time(st, 5, op->d[0]);
  bind_time(st, 6, op->d[1]);
  sqlite3_bind_double(st, 7, now);
  if (!step_done(st)) return 0;
  op->result = sqlite3_changes(s->wdb);
  st = wstmt(s, OP_DEAD, 1);
  if (st == NULL) return 0;
  sqlite3_bind_int64(st, 1, op->i);
  return step_done(st);
}

/* The next outbox id of the hook of dead letter id into *out, or 0 when
 * there is no such letter (or it is an event). Returns 1, or 0. */
static int resend_id(hk_store *s, int64_t id, int64_t *out) {
  sqlite3_stmt *st = wstmt(s, OP_RESEND, 3);
  int rc, ok;

  *out = 0;
  if (st == NULL) return 0;
  sqlite3_bind_int64(st, 1, id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    ok = hk_store_outbox_id(s, (const char *)sqlite3_column_text(st, 0), out);
  else
    ok = rc == SQLITE_DONE;
  sqlite3_reset(st);
  return ok;
}

/* Moves one dead letter back to the end of its hook's outbox, in the
 * hook's range of ids. Adds 1 to *moved when there was such a letter. */
static int resend_one(hk_store *s, int64_t id, double now, int64_t *moved) {
  sqlite3_stmt *st;
  int64_t new_id;

  if (!resend_id(s, id, &new_id)) return 0;
  if (new_id == 0) return 1;
  if ((st = wstmt(s, OP_RESEND, 0)) == NULL) return 0;
  sqlite3_bind_int64(st, 1, id);
  sqlite3_bind_int64(st, 2, new_id);
  sqlite3_bind_double(st, 3, now);
  if (!step_done(st)) return 0;
  if (sqlite3_changes(s->wdb) == 0) return 1;
  (*moved)++;
  st = wstmt(s, OP_RESEND, 1);
  if (st == NULL) return 0;
  sqlite3_bind_int64(st, 1, id);
  return step_done(st);
}

static int run_resend(hk_store *s, hk_store_batch *b, store_op *op,
                      double now) {
  sqlite3_stmt *st;
  int64_t *ids = NULL;
  size_t n = 0, cap = 0;
  int ok = 1, rc;

  if (op->i >= 0) return resend_one(s, op->i, now, &op->result);
  st = wstmt(s, OP_RESEND, 2);
  if (st == NULL) return 0;
  bind_str(b, st, 1, op->s[0]);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (n == cap) {
      int64_t *grown = realloc(ids, (cap = cap ? cap * 2 : 64) * sizeof *ids);
      if (grown == NULL) abort();
      ids = grown;
    }
    ids[n++] = sqlite3_column_int64(st, 0);
  }
  if (rc != SQLITE_DONE) ok = 0;
  for (size_t i = 0; ok && i < n; i++)
    ok = resend_one(s, ids[i], now, &op->result);
  free(ids);
  return ok;
}

static int run_cleanup(hk_store *s, store_op *op) {
  sqlite3_stmt *st = wstmt(s, OP_CLEANUP, 0);
  int rc;

  if (st == NULL) return 0;
  sqlite3_bind_double(st, 1, op->d[0]);
  if (!step_done(st)) return 0;
  op->result = sqlite3_changes(s->wdb);
  if (op->d[1] <= 0) return 1;
  st = wstmt(s, OP_CLEANUP, 1);
  if (st == NULL) return 0;
  sqlite3_bind_double(st, 1, op->d[1]);
  sqlite3_bind_int(st, 2, HK_STORE_CLEANUP_CHUNK);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    op->result += sqlite3_column_int64(st, 0); /* events of the chunk */
    if (sqlite3_column_type(st, 1) != SQLITE_NULL)
      hk_history_files_freed(&s->files, sqlite3_column_int64(st, 1));
  }
  return rc == SQLITE_DONE;
}

static int run_hook_state(hk_store *s, hk_store_batch *b, store_op *op,
                          double now) {
  sqlite3_stmt *st = wstmt(s, OP_HOOK_STATE, 0);

  if (st == NULL) return 0;
  bind_str(b, st, 1, op->s[0]);
  sqlite3_bind_int(st, 2, op->n);
  sqlite3_bind_double(st, 3, now);
  return step_done(st);
}

/* Sets aside (or, with n set, discards) what a deleted hook had in its
 * outbox and forgets its state. Result: the messages of its outbox. */
static int run_hook_delete(hk_store *s, hk_store_batch *b, store_op *op,
                           double now) {
  sqlite3_stmt *st;

  for (int j = op->n ? 1 : 0; j < OP_STATEMENTS; j++) {
    if ((st = wstmt(s, OP_HOOK_DELETE, j)) == NULL) return 0;
    bind_str(b, st, 1, op->s[0]);
    if (j == 0) {
      bind_str(b, st, 2, op->s[1]);
      bind_str(b, st, 3, op->s[2]);
      sqlite3_bind_double(st, 4, now);
    }
    if (!step_done(st)) return 0;
    if (j == 1) op->result = sqlite3_changes(s->wdb);
  }
  return 1;
}

/* The export's state, with the outbox ids its messages in this batch
 * got (they are known only here, in the writer) as its chunk. */
static int run_export(hk_store *s, hk_store_batch *b, store_op *op) {
  sqlite3_stmt *st = wstmt(s, OP_EXPORT, 0);
  int64_t first = 0, last = 0;

  if (st == NULL) return 0;
  for (store_op *m = b->ops; m < op; m++) {
    if (m->kind != OP_MESSAGE) continue;
    if (first == 0) first = m->result;
    last = m->result;
  }
  bind_str(b, st, 1, op->s[0]);
  bind_str(b, st, 2, op->s[1]);
  if (first) {
    sqlite3_bind_int64(st, 3, first);
    sqlite3_bind_int64(st, 4, last);
  }
  return step_done(st);
}

static int run_dead_event(hk_store *s, hk_store_batch *b, store_op *op,
                          double now) {
  sqlite3_stmt *st = wstmt(s, OP_DEAD_EVENT, 0);

  if (st == NULL) return 0;
  bind_str(b, st, 1, op->s[1]);
  bind_str(b, st, 2, op->s[2]);
  bind_str(b, st, 3, op->s[3]);
  sqlite3_bind_double(st, 4, now);
  bind_str(b, st, 5, op->s[0]);
  if (op->i > 0) sqlite3_bind_int64(st, 6, op->i);
  return step_done(st);
}

/* How many acknowledgements follow from op i on (at most ACK_MANY). */
static size_t ack_run(const hk_store_batch *b, size_t i) {
  size_t n = 1;

  while (n < ACK_MANY && i + n < b->n_ops && b->ops[i + n].kind == OP_ACK)
    n++;
  return n;
}

/* Deletes the n acknowledged messages of ops in one statement; each op's
 * result is 1 (whether its row was still there is not told apart). */
static int run_acks(hk_store *s, store_op *ops, size_t n) {
  sqlite3_stmt *st = wstmt(s, OP_ACK, 1);

  if (st == NULL) return 0;
  for (size_t j = 0; j < ACK_MANY; j++) {
    if (j < n) sqlite3_bind_int64(st, (int)j + 1, ops[j].i);
    else sqlite3_bind_null(st, (int)j + 1);
  }
  for (size_t j = 0; j < n; j++) ops[j].result = 1;
  return step_done(st);
}

static int run_op(hk_store *s, hk_store_batch *b, store_op *op, double now) {
  switch (op->kind) {
  case OP_EVENT: return 1; /* stored by run_history */
  case OP_MESSAGE: return run_message(s, b, op, now);
  case OP_CONTENT:
  case OP_PROFILE_PUT:
  case OP_PROFILE_MERGE:
  case OP_PROFILE_DELETE: return run_keyed(s, b, op, now);
  case OP_CATALOG: return run_catalog(s, b, op, now);
  case OP_CATALOG_RESET: return step_done(wstmt(s, OP_CATALOG_RESET, 0));
  case OP_CATALOG_DELETE: return run_catalog_delete(s, b, op);
  case OP_ACK:
  case OP_RETRY_STATE:
  case OP_FORGET: return run_outbox_update(s, op);
  case OP_DEAD: return run_dead(s, b, op, now);
  case OP_RESEND: return run_resend(s, b, op, now);
  case OP_CLEANUP: return run_cleanup(s, op);
  case OP_HOOK_STATE: return run_hook_state(s, b, op, now);
  case OP_HOOK_DELETE: return run_hook_delete(s, b, op, now);
  case OP_EXPORT: return run_export(s, b, op);
  case OP_DEAD_EVENT: return run_dead_event(s, b, op, now);
  default: return 0;
  }
}

static const char *const op_names[OP_KINDS] = {
    "event", "message", "content", "profile put", "profile merge",
    "profile delete", "catalog", "catalog reset", "catalog delete", "ack",
    "retry state",
    "dead letter",
    "resend", "forget", "cleanup", "hook state", "hook delete", "export",
    "dead event"};

void hk_store_batch_failed(hk_store *s, hk_store_batch *b,
                           const char *what) {
  if (s->op_error == NULL) {
    hk_store_batch_fail(b, s->wdb, what);
    return;
  }
  b->ok = 0;
  b->disk_full = s->op_disk_full;
  snprintf(b->error, sizeof b->error, "%s (%s: %s)",
           b->disk_full ? "the store's disk is full" : "store error", what,
           s->op_error);
  s->op_error = NULL;
  s->op_disk_full = 0;
}

/* Runs the batch's operations in the open transaction, without a
 * savepoint of its own: a savepoint makes SQLite copy every page the
 * batch changes to a journal first, which cost more than the batches
 * themselves. On failure the caller rolls the whole transaction back and
 * runs the other batches of the group again. */
int hk_store_run_batch(hk_store *s, hk_store_batch *b) {
  hk_history_mark mark = hk_history_files_mark(&s->files);
  double now = hk_store_now();
  const char *what = "history";

  if (!run_history(s, b, now)) goto fail;
  for (size_t i = 0, n; i < b->n_ops; i += n) {
    b->ops[i].result = 0; /* the batch may be run again */
    n = 1;
    if (b->ops[i].kind == OP_ACK && (n = ack_run(b, i)) > 1) {
      if (run_acks(s, &b->ops[i], n)) continue;
    } else if (run_op(s, b, &b->ops[i], now)) {
      continue;
    }
    what = op_names[b->ops[i].kind];
    goto fail;
  }
  return 1;
fail:
  hk_store_batch_failed(s, b, what);
  hk_history_files_rewind(&s->files, mark);
  return 0;
}

void hk_store_finalize_all(hk_store *s) {
  for (int k = 0; k < OP_KINDS; k++)
    for (int j = 0; j < OP_STATEMENTS; j++) sqlite3_finalize(s->wstmt[k][j]);
  for (int k = 0; k < RD_KINDS; k++) sqlite3_finalize(s->rstmt[k]);
}
