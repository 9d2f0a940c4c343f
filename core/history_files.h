/* The texts of history chunks live in files of their own,
 * data_dir/history/NNNNNNNNNN.ndjson: each event's JSON text on one line
 * (history.c turns its line breaks into spaces) followed by a newline,
 * one chunk after another, so a file is plain NDJSON. The
 * history table keeps a chunk's dates and entries, the number of its
 * file and the offset of its first byte; the texts are written once,
 * appended in one call, rather than to SQLite's log and again at its
 * checkpoint.
 *
 * Only the store's writer thread appends, and a chunk's bytes are on
 * disk (hk_history_files_sync) before the transaction that names them
 * commits. A file is never written again once a newer one is started,
 * and its number is never reused: the next file is numbered past every
 * file in the folder, every file the table names and the number the
 * table history_files keeps (so also past files retention deleted).
 * Bytes no committed row names are taken back: a batch or a group rolled
 * back truncates the file to where it was, and at start the newest file
 * is cut to the end of its last chunk (a crash between writing and
 * committing). Files no row names are deleted when the store opens and
 * after retention removes their last chunk. */
#ifndef HOOKD_HISTORY_FILES_H
#define HOOKD_HISTORY_FILES_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* A new file is started before a chunk would take the current one past
 * this size (a chunk larger than that has a file to itself). */
#define HK_HISTORY_FILE_BYTES ((uint64_t)64 << 20)

typedef struct hk_history_files {
  char *dir;            /* data_dir/history */
  int fd;               /* the file being appended to; -1 when none */
  int64_t file;         /* its number, or the next one's when fd is -1 */
  uint64_t end;         /* where its next chunk goes */
  uint64_t file_bytes;  /* HK_HISTORY_FILE_BYTES; smaller in tests */
  int unsynced;         /* written since the last sync */
  int lost;             /* errno of a failed sync not yet reported */
  int64_t recorded;     /* numbers below it are kept in history_files */
  int64_t *freed;       /* files retention took chunks from */
  size_t n_freed, freed_cap;
} hk_history_files;

/* Where the history files stood: what hk_history_files_rewind goes back
 * to. */
typedef struct hk_history_mark {
  int64_t file;
  uint64_t end;
} hk_history_mark;

/* Names the folder of data_dir's history files, for reading only.
 * Returns 0, or -1 when memory runs out. */
int hk_history_files_init(hk_history_files *h, const char *data_dir);
/* For the writer: creates the folder when missing, deletes the files no
 * row of db's history table names (unless the store is new: fresh), cuts
 * the newest named file to the end of its last chunk, and picks the next
 * file's number. Returns 0, or -1 with err set. */
int hk_history_files_open(hk_history_files *h, sqlite3 *db, int fresh,
                          char *err, size_t errlen);
/* Appends len bytes as one chunk and says where they went. Returns 0, or
 * an errno value (nothing is counted as written then). */
int hk_history_files_append(hk_history_files *h, const void *p, size_t len,
                            int64_t *file, uint64_t *offset);
/* Puts what was appended since the last call on disk, and checks that
 * the file is still in the folder. Returns 0, or an errno value, also
 * for a failure since the last call (a sync before a new file was
 * started): the file is then given up, and the next chunk starts a new
 * one (after a failed fsync, what the kernel holds of a file cannot be
 * trusted). */
int hk_history_files_sync(hk_history_files *h);
/* Where appending stands now. */
hk_history_mark hk_history_files_mark(const hk_history_files *h);
/* What was appended since m will not be named (its batch or group was
 * rolled back): the file is cut back to m when it is still the one being
 * appended to, or emptied when a newer one was started since. */
void hk_history_files_rewind(hk_history_files *h, hk_history_mark m);
/* In the writer's open transaction, before it commits: keeps in the
 * table history_files that the current file's number is used. Returns 1,
 * or 0 with the connection's error. */
int hk_history_files_record(hk_history_files *h, sqlite3 *db);
/* The transaction that hk_history_files_record ran in committed. */
void hk_history_files_recorded(hk_history_files *h);
/* Notes that retention deleted a chunk of file, in the open transaction. */
void hk_history_files_freed(hk_history_files *h, int64_t file);
/* After the transaction ended (committed or not): deletes the noted files
 * that no row names any more, except the one being appended to. */
void hk_history_files_sweep(hk_history_files *h, sqlite3 *db);
void hk_history_files_close(hk_history_files *h);

/* The bytes of the history files in the folder (for the metrics). */
long long hk_history_files_bytes(const hk_history_files *h);

/* Reads len bytes at offset of file into out (replacing what it held).
 * Returns 0; ENOENT when the file is gone (retention deleted it); EIO
 * when it is shorter than that; or another errno value. */
int hk_history_files_read(const hk_history_files *h, int64_t file,
                          uint64_t offset, size_t len, hk_buf *out);

#endif
