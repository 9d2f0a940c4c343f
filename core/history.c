/* Building, storing and reading history chunks (the format is in
 * history.h), and turning a store's old one-row-per-event history into
 * chunks when it is migrated. */
#include "history.h"

#include <stdio.h>
#include <string.h>

#define MIGRATE_CHUNK 1000 /* events per chunk made from the old table */

static void put_u32(unsigned char *p, uint32_t v) {
  for (int k = 0; k < 4; k++) p[k] = (unsigned char)(v >> (8 * k));
}

static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;

  for (int k = 0; k < 4; k++) v |= (uint32_t)p[k] << (8 * k);
  return v;
}

static void put_f64(unsigned char *p, double d) {
  uint64_t v;

  memcpy(&v, &d, sizeof v);
  put_u32(p, (uint32_t)v);
  put_u32(p + 4, (uint32_t)(v >> 32));
}

static double get_f64(const unsigned char *p) {
  uint64_t v = get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
  double d;

  memcpy(&d, &v, sizeof d);
  return d;
}

/* Whether a historical export sends events of this type: it never sends
 * those that describe the platform's own work rather than something that
 * happened to a subscriber. */
static int exported_type(const char *type, size_t len) {
  static const char *const never[] = {"campaign_launch", "profile_merge",
                                      "profile_split"};

  for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
    if (strlen(never[i]) == len && memcmp(never[i], type, len) == 0)
      return 0;
  return 1;
}

/* Turns the line breaks of an event's text into spaces, so that it is
 * one line of its history file. In a checked event they can only be
 * white space between values: inside strings they must be escaped. */
static void one_line(char *text, size_t len) {
  static const char breaks[] = {'\n', '\r'};
  char *end = text + len;

  for (size_t k = 0; k < sizeof breaks; k++)
    for (char *p = text; (p = memchr(p, breaks[k], (size_t)(end - p)));)
      *p++ = ' ';
}

void hk_history_chunk_reset(hk_history_chunk *c, double received_at,
                            int lines) {
  c->lines = lines;
  hk_buf_reset(&c->meta);
  hk_buf_reset(&c->body);
  c->n = c->n_exported = 0;
  c->first = c->last = 0;
  c->received_at = received_at;
}

int hk_history_chunk_full(const hk_history_chunk *c, size_t len,
                          size_t max_events) {
  return c->n > 0 && (c->n >= max_events ||
                      c->body.len + len + 1 > HK_HISTORY_BYTES_MAX);
}

int hk_history_chunk_add(hk_history_chunk *c, double date, const char *type,
                         size_t type_len, const char *json, size_t len) {
  unsigned char e[HK_HISTORY_ENTRY];
  int exported = exported_type(type, type_len);

  if (len > UINT32_MAX) return -1;
  put_f64(e, date);
  put_u32(e + 8, (uint32_t)len);
  put_u32(e + 12, exported ? HK_HISTORY_EXPORTED : 0);
  if (hk_buf_reserve(&c->meta, sizeof e) != 0 ||
      hk_buf_reserve(&c->body, len + 1) != 0)
    return -1;
  hk_buf_append(&c->meta, e, sizeof e);
  hk_buf_append(&c->body, json, len);
  if (c->lines) {
    one_line(c->body.data + c->body.len - len, len);
    hk_buf_putc(&c->body, '\n');
  }
  if (c->n == 0 || date < c->first) c->first = date;
  if (c->n == 0 || date > c->last) c->last = date;
  c->n++;
  c->n_exported += (size_t)exported;
  return 0;
}

int hk_history_chunk_insert(sqlite3_stmt *st, const hk_history_chunk *c,
                            int64_t file, uint64_t offset) {
  int rc;

  sqlite3_bind_double(st, 1, c->received_at);
  sqlite3_bind_double(st, 2, c->first);
  sqlite3_bind_double(st, 3, c->last);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)c->n);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)c->n_exported);
  sqlite3_bind_blob(st, 6, c->meta.data ? c->meta.data : "",
                    (int)c->meta.len, SQLITE_STATIC);
  if (file >= 0) {
    sqlite3_bind_int64(st, 7, file);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)offset);
  } else {
    sqlite3_bind_blob(st, 7, c->body.data ? c->body.data : "",
                      (int)c->body.len, SQLITE_STATIC);
  }
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_DONE;
}

void hk_history_chunk_free(hk_history_chunk *c) {
  hk_buf_free(&c->meta);
  hk_buf_free(&c->body);
}

void hk_history_entry_get(const void *meta, size_t i, hk_history_entry *e) {
  const unsigned char *p = (const unsigned char *)meta + i * HK_HISTORY_ENTRY;

  e->date = get_f64(p);
  e->len = get_u32(p + 8);
  e->flags = get_u32(p + 12);
}

uint64_t hk_history_text_bytes(const void *meta, size_t entries) {
  uint64_t n = entries;

  for (size_t i = 0; i < entries; i++) {
    hk_history_entry e;

    hk_history_entry_get(meta, i, &e);
    n += e.len;
  }
  return n;
}

/* Adds the event of the old table's current row to c. */
static int add_row(hk_history_chunk *c, sqlite3_stmt *rd) {
  if (c->n == 0)
    hk_history_chunk_reset(c, sqlite3_column_double(rd, 0), 0);
  return hk_history_chunk_add(
      c, sqlite3_column_double(rd, 1), (const char *)sqlite3_column_text(rd, 2),
      (size_t)sqlite3_column_bytes(rd, 2), sqlite3_column_blob(rd, 3),
      (size_t)sqlite3_column_bytes(rd, 3));
}

int hk_history_from_events(sqlite3 *db, char *err, size_t errlen) {
  sqlite3_stmt *rd = NULL, *wr = NULL;
  hk_history_chunk c = {0};
  int rc = -1, step;

  err[0] = '\0';
  if (sqlite3_prepare_v2(db, "SELECT received_at, event_date, event_type, "
                         "body FROM events ORDER BY id", -1, &rd,
                         NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db, HK_HISTORY_INSERT_SQL, -1, &wr, NULL) !=
          SQLITE_OK)
    goto done;
  while ((step = sqlite3_step(rd)) == SQLITE_ROW) {
    if (hk_history_chunk_full(&c, (size_t)sqlite3_column_bytes(rd, 3),
                              MIGRATE_CHUNK)) {
      if (!hk_history_chunk_insert(wr, &c, -1, 0)) goto done;
      c.n = 0;
    }
    if (add_row(&c, rd) != 0) goto out_of_memory;
  }
  if (step != SQLITE_DONE ||
      (c.n > 0 && !hk_history_chunk_insert(wr, &c, -1, 0)))
    goto done;
  sqlite3_finalize(rd);
  rd = NULL;
  rc = sqlite3_exec(db, "DROP TABLE events", NULL, NULL, NULL) == SQLITE_OK
           ? 0 : -1;
  goto done;
out_of_memory:
  snprintf(err, errlen, "moving the history into chunks: out of memory");
  rc = -1;
done:
  sqlite3_finalize(rd);
  sqlite3_finalize(wr);
  hk_history_chunk_free(&c);
  return rc;
}
