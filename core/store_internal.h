/* What the store's three files share: the store and batch structures and
 * the operations a batch is made of. Not for use outside core/store*.c. */
#ifndef HOOKD_STORE_INTERNAL_H
#define HOOKD_STORE_INTERNAL_H

#include <sqlite3.h>

#include "history.h"
#include "history_files.h"
#include "store.h"

enum store_op_kind {
  OP_EVENT,
  OP_MESSAGE,
  OP_CONTENT,
  OP_PROFILE_PUT,
  OP_PROFILE_MERGE,
  OP_PROFILE_DELETE,
  OP_CATALOG,
  OP_CATALOG_RESET,
  OP_CATALOG_DELETE,
  OP_ACK,
  OP_RETRY_STATE,
  OP_DEAD,
  OP_RESEND,
  OP_FORGET,
  OP_CLEANUP,
  OP_HOOK_STATE,
  OP_HOOK_DELETE,
  OP_EXPORT,
  OP_DEAD_EVENT,
  OP_KINDS
};

#define OP_STATEMENTS 4 /* at most, per operation */

/* Each hook's outbox ids are a range of their own: slot << OUTBOX_SEQ_BITS
 * | seq, its slot from table hook_slots and seq counting from 1. A hook's
 * rows are then found by rowid alone, without an index by hook. */
#define OUTBOX_SEQ_BITS 40 /* stores keep their ids: it never changes */
#define OUTBOX_SEQ_MAX ((INT64_C(1) << OUTBOX_SEQ_BITS) - 1)
/* Slots start at 1 (ids below 1 << OUTBOX_SEQ_BITS are no hook's) and end
 * where ids would no longer fit in 63 bits. */
#define OUTBOX_SLOT_MAX ((INT64_C(1) << (63 - OUTBOX_SEQ_BITS)) - 1)

#define OUTBOX_STR_(x) #x
#define OUTBOX_STR(x) OUTBOX_STR_(x)
/* SQL: the first and the last id of the range of hook ?1 (NULL when it
 * has no slot), and the condition "the row is hook ?1's", which SQLite
 * answers with a rowid range. The hook column is checked too. */
#define OUTBOX_FIRST_SQL                                                   \
  "(SELECT slot << " OUTBOX_STR(OUTBOX_SEQ_BITS)                           \
  " FROM hook_slots WHERE hook = ?1)"
#define OUTBOX_LAST_SQL                                                    \
  "(SELECT ((slot + 1) << " OUTBOX_STR(OUTBOX_SEQ_BITS)                    \
  ") - 1 FROM hook_slots WHERE hook = ?1)"
#define OUTBOX_OF_HOOK_SQL                                                 \
  "id BETWEEN " OUTBOX_FIRST_SQL " AND " OUTBOX_LAST_SQL " AND hook = ?1"

/* A string inside the batch's arena, as an offset: the arena may move
 * while the batch is being built. */
typedef struct arena_str {
  size_t off, len;
} arena_str;

typedef struct store_op {
  enum store_op_kind kind;
  arena_str s[4];
  int64_t i;
  int n;
  double d[3];
  int64_t result;
} store_op;

struct hk_store_batch {
  struct hk_store_batch *next;
  store_op *ops;
  size_t n_ops, cap_ops;
  hk_buf arena;
  int persistent;
  double not_before; /* a persistent batch waits until then to retry */
  int ok;
  int refused; /* failed in this group's run; not run again */
  int disk_full;
  char error[300];
  hk_store_done_cb cb;
  void *ctx;
  int waited;   /* submitted with hk_store_submit_wait */
  int finished; /* for hk_store_submit_wait */
};

/* Read statements the loop thread keeps prepared. */
enum store_read_kind {
  RD_OUTBOX,
  RD_OUTBOX_COUNT,
  RD_DEAD_ALL,
  RD_DEAD_HOOK,
  RD_DEAD_ONE,
  RD_DEAD_COUNT,
  RD_PROFILE,
  RD_CONTENT,
  RD_CATALOG,
  RD_HOOK_STATE,
  RD_TOMBSTONE,
  RD_EVENTS_PAGE,
  RD_EVENTS_START,
  RD_EVENTS_COUNT,
  RD_EVENTS_EDGES,
  RD_OUTBOX_RANGE,
  RD_EXPORTS,
  RD_OUTBOX_HOOKS,
  RD_KINDS
};

struct hk_store {
  uv_loop_t *loop;
  char *path;
  int lock_fd;
  sqlite3 *wdb; /* the writer thread's connection */
  sqlite3 *rdb; /* the loop thread's connection */
  sqlite3_stmt *wstmt[OP_KINDS][OP_STATEMENTS];
  sqlite3_stmt *rstmt[RD_KINDS];
  hk_history_chunk chunk; /* writer thread only: the batch's events */
  /* The history files: appended to by the writer thread only; their
   * folder is read by the loop thread too. */
  hk_history_files files;
  hk_buf chunk_text; /* loop thread only: a chunk read from its file */
  int op_disk_full;  /* the failure of op_error is a full disk */
  /* The writer thread's: each hook's slot and next outbox id, and the
   * statements that find them (store_slots.c). */
  struct outbox_slot *slots;
  size_t slots_cap, slots_used, slots_unsettled;
  sqlite3_stmt *slot_stmt[4];
  const char *op_error; /* why the operation failed, when not SQLite */

  uv_thread_t thread;
  uv_mutex_t lock; /* guards everything below */
  uv_cond_t wake;  /* the writer waits on it for batches */
  uv_cond_t done;  /* hk_store_submit_wait waits on it */
  hk_store_batch *queue_head, *queue_tail;
  hk_store_batch *done_head, *done_tail;
  int stopping;
  size_t pending;
  uv_async_t async;
};

/* Runs the batch's operations inside the writer's open transaction.
 * Returns 1, or 0 with b->error set (the caller rolls the batch back). */
int hk_store_run_batch(hk_store *s, hk_store_batch *b);

/* Fills b->error (and disk_full) from the connection's last error. */
void hk_store_batch_fail(hk_store_batch *b, sqlite3 *db, const char *what);
/* Records why operation what of b failed: the store's own reason
 * (s->op_error, which it clears), when it gave one, or SQLite's. */
void hk_store_batch_failed(hk_store *s, hk_store_batch *b,
                           const char *what);

void hk_store_finalize_all(hk_store *s);

/* ---- outbox ids (store_slots.c, writer thread) ---- */

/* The next outbox id of hook, in its range: its slot is looked up, or
 * made, in the open transaction on its first message. Returns 1, or 0
 * with the connection's error or s->op_error set. */
int hk_store_outbox_id(hk_store *s, const char *hook, int64_t *id);
/* Reads every hook's slot and next id, when the store opens (before the
 * writer starts and anything is delivered). 0, or -1 with err. */
int hk_store_slots_load(hk_store *s, char *err, size_t errlen);
/* The transaction committed: the slots it made are there for good. */
void hk_store_slots_committed(hk_store *s);
/* A batch or the transaction was rolled back: slots made since the last
 * commit may be gone and are looked up again. Ids are never taken back. */
void hk_store_slots_rolled_back(hk_store *s);
void hk_store_slots_free(hk_store *s);

/* Compiles every statement the store uses against the database, so a
 * table or column that is missing is found at start. Returns 0, or -1
 * with err. */
int hk_store_check_all(hk_store *s, char *err, size_t errlen);

/* The text of each statement the store prepares, by index from 0: those
 * of store_write.c, store_read.c and store_slots.c; NULL past the last.
 * For hk_store_check_all, and for tests of their query plans. */
const char *hk_store_sql(size_t i);
const char *hk_store_read_sql(size_t i);
const char *hk_store_slots_sql(size_t i);

/* The SQL that makes schema version from the one before (NULL when there
 * is no such version), for tests that build a store of an older hookd. */
const char *hk_store_migration(int version);

#endif
