/* What the store's three files share: the store and batch structures and
 * the operations a batch is made of. Not for use outside core/store*.c. */
#ifndef HOOKD_STORE_INTERNAL_H
#define HOOKD_STORE_INTERNAL_H

#include <sqlite3.h>

#include "history.h"
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
  RD_EVENTS_COUNT,
  RD_EVENTS_EDGES,
  RD_OUTBOX_RANGE,
  RD_EXPORTS,
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
  int64_t next_outbox_id; /* writer thread only */
  hk_history_chunk chunk; /* writer thread only: the batch's events */

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

void hk_store_finalize_all(hk_store *s);

/* Compiles every statement the store uses (those of store_write.c and
 * read_sql) against the database, so a table or column that is missing
 * is found at start. Returns 0, or -1 with err. */
int hk_store_check_statements(hk_store *s, const char *const *read_sql,
                              int n_read, char *err, size_t errlen);
int hk_store_check_all(hk_store *s, char *err, size_t errlen);

#endif
