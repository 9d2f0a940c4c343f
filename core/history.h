/* The history table keeps accepted events in chunks: one row holds the
 * events of one request (up to HK_HISTORY_CHUNK_MAX of them, and
 * HK_HISTORY_BYTES_MAX of text), and in `meta` one fixed-size entry per
 * event:
 *
 *   bytes 0-7   event_date, unix seconds, an IEEE 754 double, little endian
 *   bytes 8-11  the length of its text in body, little endian
 *   bytes 12-15 flags, little endian (HK_HISTORY_EXPORTED)
 *
 * The JSON texts are in a history file (history_files.h), each followed
 * by a newline, from `file_offset` of file number `file`. Chunks written
 * before history files existed have `file` NULL and their texts one
 * after another, without newlines, in `body`.
 *
 * A row costs one B-tree insert however many events it holds, and no
 * index is kept: readers find chunks by their first and last dates.
 * Event i of chunk c is known by the id HK_HISTORY_ID(c, i), which grows
 * in the order events were received; pages of history go in that order. */
#ifndef HOOKD_HISTORY_H
#define HOOKD_HISTORY_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define HK_HISTORY_ENTRY 16
#define HK_HISTORY_CHUNK_MAX 65535
/* A chunk's texts stay under this many bytes (SQLite takes values of up
 * to a billion bytes; smaller rows are cheaper to read back), unless one
 * event alone is larger. */
#define HK_HISTORY_BYTES_MAX ((size_t)32 << 20)
#define HK_HISTORY_EXPORTED 1u /* a type historical exports send */
#define HK_HISTORY_ID(chunk, i) (((int64_t)(chunk) << 16) | (int64_t)(i))
#define HK_HISTORY_CHUNK_OF(id) ((id) >> 16)

/* The statements that store a chunk, its texts in the row (schema 6, as
 * the migration to chunks wrote them) or in a history file; their
 * parameters are bound by hk_history_chunk_insert in this order. */
#define HK_HISTORY_INSERT_SQL                                           \
  "INSERT INTO history(received_at, first_date, last_date, n, "        \
  "n_exported, meta, body) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"
#define HK_HISTORY_INSERT_FILE_SQL                                      \
  "INSERT INTO history(received_at, first_date, last_date, n, "        \
  "n_exported, meta, body, file, file_offset) "                        \
  "VALUES(?1, ?2, ?3, ?4, ?5, ?6, x'', ?7, ?8)"

typedef struct hk_history_entry {
  double date;
  uint32_t len, flags;
} hk_history_entry;

/* A chunk being built. */
typedef struct hk_history_chunk {
  hk_buf meta, body;
  size_t n, n_exported;
  double first, last, received_at;
  int lines; /* each text is followed by a newline (for a history file) */
} hk_history_chunk;

/* Empties c for the events received at received_at; lines: whether it
 * goes to a history file. */
void hk_history_chunk_reset(hk_history_chunk *c, double received_at,
                            int lines);
/* Whether c must be stored before an event of len bytes is added: it
 * holds max_events events, or the event would take it over
 * HK_HISTORY_BYTES_MAX. */
int hk_history_chunk_full(const hk_history_chunk *c, size_t len,
                          size_t max_events);
/* Adds one event (in a chunk for a history file, on one line: its line
 * breaks, white space between values, become spaces). Returns 0, or -1
 * when memory runs out. */
int hk_history_chunk_add(hk_history_chunk *c, double date, const char *type,
                         size_t type_len, const char *json, size_t len);
/* Stores c's row with st, reset by the caller: HK_HISTORY_INSERT_SQL
 * when file is negative, else HK_HISTORY_INSERT_FILE_SQL for texts
 * written at offset of that history file. Returns 1, or 0 when the
 * statement failed (the connection has the error). */
int hk_history_chunk_insert(sqlite3_stmt *st, const hk_history_chunk *c,
                            int64_t file, uint64_t offset);
void hk_history_chunk_free(hk_history_chunk *c);

/* Entry i of meta (which holds at least i + 1 entries). */
void hk_history_entry_get(const void *meta, size_t i, hk_history_entry *e);
/* The bytes the texts of a chunk with these entries take in a history
 * file: each text and its newline. */
uint64_t hk_history_text_bytes(const void *meta, size_t entries);

/* Moves the rows of the old events table, in id order, into chunks of
 * up to 1,000 and drops the table; part of the store's migration, inside
 * its transaction. Returns 0, or -1 with err set (or left empty when the
 * connection's own error says why). */
int hk_history_from_events(sqlite3 *db, char *err, size_t errlen);

#endif
