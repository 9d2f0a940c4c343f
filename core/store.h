/* The durable store: one SQLite database, data_dir/hookd.db, in WAL mode.
 * It keeps the event history, each hook's outbox, dead letters, message
 * content, profiles, the catalog of names and hook state.
 *
 * Writes are batches of operations handed to one writer thread, which
 * commits every batch waiting at that moment in one transaction (one fsync
 * for the group) and reports each batch back on the loop thread. Reads run
 * on the loop thread on a connection of their own, which WAL lets proceed
 * while the writer commits. */
#ifndef HOOKD_STORE_H
#define HOOKD_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

typedef struct hk_store hk_store;
typedef struct hk_store_batch hk_store_batch;

/* Runs on the loop thread once the batch is committed (ok 1) or refused
 * (ok 0, reason in hk_store_batch_error). The store frees the batch after
 * the callback returns. */
typedef void (*hk_store_done_cb)(hk_store_batch *b, int ok, void *ctx);

/* Opens or creates data_dir/hookd.db, applies the migrations this build
 * knows, and starts the writer. A file that is not a database, a database
 * of another program, or one from a newer hookd is refused, never
 * changed. Returns NULL with the reason in err. */
hk_store *hk_store_open(uv_loop_t *loop, const char *data_dir, char *err,
                        size_t errlen);

/* Opens data_dir/hookd.db for reading only, for tools that run beside a
 * router (`hookd try --from-store`): no lock, no writer thread, nothing
 * created or migrated. Only a store of exactly this build's schema is
 * read. The read functions below work on it; nothing may be submitted.
 * Returns NULL with the reason in err. */
hk_store *hk_store_open_readonly(const char *data_dir, char *err,
                                 size_t errlen);

/* Commits what is queued, stops the writer and closes the database (a
 * read-only store is just closed). */
void hk_store_close(hk_store *s);

const char *hk_store_path(const hk_store *s);
/* The bytes of the store's history files (data_dir/history). */
long long hk_store_history_bytes(const hk_store *s);

/* ---- batches of writes ---- */

hk_store_batch *hk_store_batch_new(void);
/* Only for a batch that was never submitted. */
void hk_store_batch_free(hk_store_batch *b);

/* Makes room for about ops operations and bytes of their text, so that a
 * batch whose size is known is not copied as it grows. Returns 0, or -1
 * when out of memory (the batch still works, growing as needed). */
int hk_store_batch_reserve(hk_store_batch *b, size_t ops, size_t bytes);

/* A batch that fails is normally reported as failed. A batch marked
 * persistent (acknowledgements, retry state, dead letters) is instead
 * tried again every second until it commits, so a full disk delays the
 * bookkeeping of deliveries but never loses it. */
void hk_store_batch_persistent(hk_store_batch *b);

/* Each add returns the operation's index in the batch, for
 * hk_store_batch_result. Strings are copied. */
size_t hk_store_add_event(hk_store_batch *b, const char *json, size_t len,
                          const char *type, size_t type_len, int64_t list_id,
                          double event_date);
/* A message for hook's outbox; its result is the outbox id. */
size_t hk_store_add_message(hk_store_batch *b, const char *hook,
                            const char *json, size_t len);
/* The same for a broker message: route is its queue, routing key or
 * topic, key its Kafka key (NULL: none); version is the version of the
 * hook's script that made it (0: unknown). */
size_t hk_store_add_routed(hk_store_batch *b, const char *hook,
                           const char *json, size_t len, const char *route,
                           const char *key, size_t key_len, long version);
size_t hk_store_add_content(hk_store_batch *b, const char *send_message_id,
                            const char *json, size_t len);

enum hk_profile_op { HK_PROFILE_PUT, HK_PROFILE_MERGE, HK_PROFILE_DELETE };
/* list_id is decimal text. MERGE adds the fields of json (an object) to
 * the stored ones, a null field removing one. Result: rows changed. */
size_t hk_store_add_profile(hk_store_batch *b, enum hk_profile_op op,
                            const char *list_id, const char *profile_id,
                            const char *json, size_t len);

/* A catalog entry. from_file: an entry from the catalog file, which does
 * not replace one set through the API. */
size_t hk_store_add_catalog(hk_store_batch *b, const char *kind,
                            const char *id, const char *json, size_t len,
                            int from_file);

/* Deletes one catalog entry. Result: rows deleted (0 or 1). */
size_t hk_store_add_catalog_delete(hk_store_batch *b, const char *kind,
                                   const char *id);
/* Forgets every entry that came from the catalog file (before the file's
 * current entries are added again). */
size_t hk_store_add_catalog_reset(hk_store_batch *b);

/* The transport acknowledged outbox message id: it leaves the outbox. */
size_t hk_store_add_ack(hk_store_batch *b, int64_t id);
/* Outbox message id failed attempts times; the next one is due at
 * next_at (unix seconds). */
size_t hk_store_add_retry_state(hk_store_batch *b, int64_t id, int attempts,
                                double first_at, double next_at);
/* Outbox message id becomes a dead letter. */
size_t hk_store_add_dead(hk_store_batch *b, int64_t id, const char *reason,
                         const char *destination, int attempts,
                         double first_at, double last_at);
/* Dead letter id (or, with id < 0, every dead letter of hook) goes back
 * to the end of its hook's outbox. Result: letters moved. */
size_t hk_store_add_resend(hk_store_batch *b, int64_t id, const char *hook);
/* Result: letters deleted (0 or 1). */
size_t hk_store_add_forget(hk_store_batch *b, int64_t id);
/* Deletes content stored before content_before and events dated before
 * events_before (unix seconds), at most HK_STORE_CLEANUP_CHUNK events at
 * a time. Result: rows deleted. */
#define HK_STORE_CLEANUP_CHUNK 50000
size_t hk_store_add_cleanup(hk_store_batch *b, double content_before,
                            double events_before);
/* The state set through the API for hook: 1 active, 0 stopped. */
size_t hk_store_add_hook_state(hk_store_batch *b, const char *hook,
                               int active);

/* A deleted hook: the messages of its outbox become dead letters (with
 * destination and reason), or are dropped when discard is set; its
 * stored state and export go. Result: the messages it had queued. */
size_t hk_store_add_hook_delete(hk_store_batch *b, const char *hook,
                                int discard, const char *destination,
                                const char *reason);
/* An event the hook's code failed on, kept as a dead letter of kind
 * "event" (it is not a message: it cannot be sent again as it is). */
size_t hk_store_add_dead_event(hk_store_batch *b, const char *hook,
                               const char *event, size_t len,
                               const char *destination, const char *reason,
                               long version);
/* The state of hook's historical export, as a JSON object with the
 * fields of hk_store_export_row (see export.c); replaces the old one.
 * When the batch holds messages before it, chunk_first and chunk_last
 * become the outbox ids the first and last of them got. */
size_t hk_store_add_export(hk_store_batch *b, const char *hook,
                           const char *json, size_t len);

size_t hk_store_batch_size(const hk_store_batch *b);
/* The bytes of text the batch holds. */
size_t hk_store_batch_bytes(const hk_store_batch *b);
/* The route and key of a message operation (NULL when it has none). */
typedef struct hk_store_meta {
  const char *route;
  const char *key;
  size_t key_len;
} hk_store_meta;
void hk_store_batch_meta(const hk_store_batch *b, size_t op,
                         hk_store_meta *meta);

/* The first string of operation op (the JSON of an event or message). */
const char *hk_store_batch_text(const hk_store_batch *b, size_t op,
                                size_t *len);
int64_t hk_store_batch_result(const hk_store_batch *b, size_t op);
const char *hk_store_batch_error(const hk_store_batch *b);
/* A failure that comes from the disk being full. */
int hk_store_batch_disk_full(const hk_store_batch *b);

/* Queues the batch for the writer; cb runs later on the loop thread. */
void hk_store_submit(hk_store *s, hk_store_batch *b, hk_store_done_cb cb,
                     void *ctx);
/* Commits the batch before returning, for start-up work before the loop
 * runs. Returns 0, or -1 with the reason in err. Frees the batch. */
int hk_store_submit_wait(hk_store *s, hk_store_batch *b, char *err,
                         size_t errlen);

/* Batches submitted and not yet reported. */
size_t hk_store_pending(hk_store *s);

/* ---- reads, on the loop thread ---- */

typedef struct hk_outbox_row {
  int64_t id;
  const char *body; /* valid during the callback only, like route, key */
  size_t len;
  const char *route; /* NULL for HTTP messages */
  const char *key;   /* NULL for none */
  size_t key_len;
  int attempts;
  double first_at, next_at; /* 0 when the message was never tried */
  double created_at;        /* when it was accepted */
  long version;             /* of the script that made it; 0: unknown */
} hk_outbox_row;

/* Calls cb for up to limit messages of hook with ids above after, in id
 * order. Returns how many, or -1 after logging a store error. */
long hk_store_outbox_read(hk_store *s, const char *hook, int64_t after,
                          long limit,
                          void (*cb)(void *ctx, const hk_outbox_row *row),
                          void *ctx);
/* Calls cb for every hook with messages in the outbox, with their count.
 * Returns 0 or -1. */
int hk_store_outbox_hooks(hk_store *s,
                          void (*cb)(void *ctx, const char *hook, long n),
                          void *ctx);
/* Messages waiting in hook's outbox, or -1 on a store error. */
long hk_store_outbox_count(hk_store *s, const char *hook);

/* Appends {"items": [...], "next": cursor|null}: dead letters of hook
 * (NULL: all) with id above after, at most limit. Returns 0 or -1. */
int hk_store_dead_letters_render(hk_store *s, hk_buf *out, const char *hook,
                                 int64_t after, int limit);
/* The hook of dead letter id into hook (size n), and whether it is an
 * event rather than a message (*is_event). 0, or -1 when none. */
int hk_store_dead_letter_hook(hk_store *s, int64_t id, char *hook, size_t n,
                              int *is_event);
/* Dead letters of hook, or -1 on a store error. */
long hk_store_dead_letters_count(hk_store *s, const char *hook);

/* The stored fields of a profile (a JSON object text, malloc'd), or NULL
 * when there is none. */
char *hk_store_profile_get(hk_store *s, const char *list_id,
                           const char *profile_id, size_t *len);
/* Content stored for send_message_id at or after not_before, or NULL. */
char *hk_store_content_get(hk_store *s, const char *send_message_id,
                           double not_before, size_t *len);
/* The whole catalog as {"kind": {"id": entry, ...}, ...}. Returns 0 or
 * -1. */
int hk_store_catalog_render(hk_store *s, hk_buf *out);
/* The active state stored for hook: 1, 0, or -1 when none is stored. */
int hk_store_hook_state(hk_store *s, const char *hook);

/* Nonzero when the profile was deleted through the API and not written
 * since. */
int hk_store_profile_deleted(hk_store *s, const char *list_id,
                             const char *profile_id);

/* ---- historical exports ---- */

/* One stored event for an export; body valid during the callback. */
typedef struct hk_event_row {
  int64_t id;
  double event_date;
  const char *body;
  size_t len;
} hk_event_row;

/* Events copied out of pages of reads (rows are valid only in their
 * callback): pass hk_event_page_add as the callback, with the page as its
 * context. last_date and last_id are those of the last event added. */
typedef struct hk_event_page {
  char **texts;
  size_t *lens;
  size_t n, cap;
  double last_date;
  int64_t last_id;
} hk_event_page;
void hk_event_page_add(void *ctx, const hk_event_row *row);
/* Frees the texts; the page can be filled again. */
void hk_event_page_clear(hk_event_page *p);
void hk_event_page_free(hk_event_page *p);

/* Calls cb for up to limit stored events dated in [from, to) that come
 * after the event after_id (0 for the first) in the order the history
 * keeps them, the order they were received, leaving out the types never
 * exported. Returns how many, or -1 after logging a store error. */
long hk_store_events_page(hk_store *s, double from, double to,
                          int64_t after_id, long limit,
                          void (*cb)(void *ctx, const hk_event_row *row),
                          void *ctx);
/* The same pages of every stored event, the types exports leave out
 * too: the history as the router saw it. */
long hk_store_history_page(hk_store *s, double from, double to,
                           int64_t after_id, long limit,
                           void (*cb)(void *ctx, const hk_event_row *row),
                           void *ctx);
/* How many events hk_store_events_page's pages hold in all, or -1. */
long hk_store_events_count(hk_store *s, double from, double to);
/* Messages of hook with ids in [first, last] still in the outbox, or -1. */
long hk_store_outbox_range(hk_store *s, const char *hook, int64_t first,
                           int64_t last);

typedef struct hk_store_export_row {
  const char *hook, *from, *to, *status, *paused_by, *reason;
  long total, scanned, sent;
  double started_at, ended_at, cursor_date;
  int64_t cursor_id, chunk_first, chunk_last;
  long chunk_count;
  long failed; /* events the hook's code failed on */
} hk_store_export_row;

/* Calls cb for every stored export (strings valid during the call; NULL
 * for SQL NULL). Returns 0 or -1. */
int hk_store_exports(hk_store *s,
                     void (*cb)(void *ctx, const hk_store_export_row *row),
                     void *ctx);

/* Wall-clock time in unix seconds, as the store records it. */
double hk_store_now(void);

/* Rows in the events table, or -1 on error (for tests and metrics). */
long hk_store_count(hk_store *s, const char *table);

#endif
