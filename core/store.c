/* Opening the store (identity checks, migrations, the data_dir lock) and
 * its writer thread, which commits queued batches in groups; and opening
 * it read-only for tools that read beside a running router. */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "history.h"
#include "log.h"

/* "hook" in ASCII: marks the file as a hookd store. */
#define STORE_APPLICATION_ID 0x686f6f6b

/* Schema versions, in order; version N is migrations[N - 1]. A new
 * version is a new entry at the end: entries already released never
 * change, since stores out there were made with them. */
static const char *const migrations[] = {
    /* 1: the first schema. Times are unix seconds (REAL). */
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY,"
    "  received_at REAL NOT NULL,"
    "  event_date REAL NOT NULL,"
    "  event_type TEXT NOT NULL,"
    "  list_id INTEGER,"
    "  body TEXT NOT NULL);"
    "CREATE INDEX events_by_date ON events(event_date);"
    "CREATE INDEX events_by_type ON events(event_type, event_date);"
    "CREATE INDEX events_by_list ON events(list_id, event_date);"
    "CREATE TABLE outbox ("
    "  id INTEGER PRIMARY KEY,"
    "  hook TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  created_at REAL NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  first_attempt_at REAL,"
    "  next_attempt_at REAL);"
    "CREATE INDEX outbox_by_hook ON outbox(hook, id);"
    "CREATE TABLE dead_letters ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  hook TEXT NOT NULL,"
    "  destination TEXT,"
    "  reason TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL,"
    "  first_attempt_at REAL,"
    "  last_attempt_at REAL,"
    "  created_at REAL NOT NULL,"
    "  body TEXT NOT NULL);"
    "CREATE INDEX dead_letters_by_hook ON dead_letters(hook, id);"
    "CREATE TABLE content ("
    "  send_message_id TEXT PRIMARY KEY,"
    "  body TEXT NOT NULL,"
    "  stored_at REAL NOT NULL);"
    "CREATE INDEX content_by_time ON content(stored_at);"
    "CREATE TABLE profiles ("
    "  list_id INTEGER NOT NULL,"
    "  profile_id TEXT NOT NULL,"
    "  fields TEXT NOT NULL,"
    "  updated_at REAL NOT NULL,"
    "  PRIMARY KEY (list_id, profile_id));"
    "CREATE TABLE catalog ("
    "  kind TEXT NOT NULL,"
    "  id TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  updated_at REAL NOT NULL,"
    "  PRIMARY KEY (kind, id));"
    "CREATE TABLE hook_state ("
    "  hook TEXT PRIMARY KEY,"
    "  active INTEGER NOT NULL,"
    "  updated_at REAL NOT NULL);",
    /* 2: where a broker message goes (queue, routing key or topic) and
     * its Kafka key, decided when the message was made. */
    "ALTER TABLE outbox ADD COLUMN route TEXT;"
    "ALTER TABLE outbox ADD COLUMN msg_key BLOB;"
    "ALTER TABLE dead_letters ADD COLUMN route TEXT;"
    "ALTER TABLE dead_letters ADD COLUMN msg_key BLOB;",
    /* 3: historical exports, one row per hook, and the profiles deleted
     * through the API (an export sends null for their fields). */
    "CREATE TABLE exports ("
    "  hook TEXT PRIMARY KEY,"
    "  from_day TEXT NOT NULL,"
    "  to_day TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  paused_by TEXT,"
    "  reason TEXT,"
    "  total INTEGER NOT NULL,"
    "  scanned INTEGER NOT NULL,"
    "  sent INTEGER NOT NULL,"
    "  started_at REAL NOT NULL,"
    "  ended_at REAL,"
    "  cursor_date REAL,"
    "  cursor_id INTEGER,"
    "  chunk_first INTEGER,"
    "  chunk_last INTEGER,"
    "  chunk_count INTEGER);"
    "CREATE TABLE profile_tombstones ("
    "  list_id INTEGER NOT NULL,"
    "  profile_id TEXT NOT NULL,"
    "  deleted_at REAL NOT NULL,"
    "  PRIMARY KEY (list_id, profile_id));",
    /* 4: the version of the hook's script that made each message, and
     * dead letters that are events the hook's code failed on. */
    "ALTER TABLE outbox ADD COLUMN version INTEGER;"
    "ALTER TABLE dead_letters ADD COLUMN version INTEGER;"
    "ALTER TABLE dead_letters ADD COLUMN kind TEXT;"
    "ALTER TABLE exports ADD COLUMN failed INTEGER;",
    /* 5: history is only ever read by day (exports, retention), so the
     * indexes by type and by database only cost writes: each one dirtied
     * pages all over its B-tree in every commit. */
    "DROP INDEX events_by_type;"
    "DROP INDEX events_by_list;",
    /* 6: history in chunks, one row per request (see history.h); the
     * rows of the events table move into it (hk_history_from_events).
     * Ids are never reused (an export's position names one), and rows
     * are found by their newest date (retention, exports of recent days)
     * through one index entry per request.
     * An export in progress counted its place by (event_date, id) of the
     * old table, which the chunks do not keep: it ends with a reason. */
    "CREATE TABLE history ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  received_at REAL NOT NULL,"
    "  first_date REAL NOT NULL,"
    "  last_date REAL NOT NULL,"
    "  n INTEGER NOT NULL,"
    "  n_exported INTEGER NOT NULL,"
    "  meta BLOB NOT NULL,"
    "  body BLOB NOT NULL);"
    "CREATE INDEX history_by_last_date ON history(last_date);"
    "UPDATE exports SET status = 'error', paused_by = NULL, reason = "
    "'stopped by an upgrade of the store (history is kept in chunks "
    "now): start the export again', ended_at = "
    "(julianday('now') - 2440587.5) * 86400.0 "
    "WHERE status IN ('in_progress', 'paused');",
    /* 7: each hook's outbox ids in a range of their own (slot << 40 |
     * seq, see store_slots.c), so that per-hook reads and deletes are
     * rowid ranges and outbox_by_hook, a second B-tree every message
     * insert and delete kept up, can go. Hooks get slots in name order;
     * each hook's rows move into its range in the order of their old ids
     * (the table is rebuilt, so old and new ids never meet), and an
     * export's page in flight (chunk_first..chunk_last) is renumbered
     * with its rows: it spans the new ids of the rows of its old range
     * still queued, or 0..0 when none is. Dropping the old table drops
     * outbox_by_hook. */
    "CREATE TABLE hook_slots ("
    "  hook TEXT PRIMARY KEY,"
    "  slot INTEGER NOT NULL UNIQUE);"
    "INSERT INTO hook_slots(hook, slot) SELECT hook, row_number() OVER "
    "  (ORDER BY hook) FROM (SELECT hook FROM outbox UNION "
    "  SELECT hook FROM exports);"
    "CREATE TEMP TABLE outbox_moves ("
    "  old_id INTEGER PRIMARY KEY,"
    "  new_id INTEGER NOT NULL,"
    "  hook TEXT NOT NULL);"
    "INSERT INTO outbox_moves(old_id, new_id, hook) SELECT o.id, "
    "  (h.slot << 40) + row_number() OVER (PARTITION BY o.hook "
    "  ORDER BY o.id), o.hook FROM outbox AS o JOIN hook_slots AS h "
    "  ON h.hook = o.hook;"
    "ALTER TABLE outbox RENAME TO outbox_v5;"
    "CREATE TABLE outbox ("
    "  id INTEGER PRIMARY KEY,"
    "  hook TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  created_at REAL NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  first_attempt_at REAL,"
    "  next_attempt_at REAL,"
    "  route TEXT,"
    "  msg_key BLOB,"
    "  version INTEGER);"
    "INSERT INTO outbox(id, hook, body, created_at, attempts, "
    "  first_attempt_at, next_attempt_at, route, msg_key, version) "
    "  SELECT m.new_id, o.hook, o.body, o.created_at, o.attempts, "
    "  o.first_attempt_at, o.next_attempt_at, o.route, o.msg_key, "
    "  o.version FROM outbox_v5 AS o JOIN outbox_moves AS m "
    "  ON m.old_id = o.id ORDER BY m.new_id;"
    "UPDATE exports SET"
    "  chunk_first = coalesce((SELECT min(new_id) FROM outbox_moves AS m "
    "  WHERE m.old_id BETWEEN exports.chunk_first AND exports.chunk_last "
    "  AND m.hook = exports.hook), 0),"
    "  chunk_last = coalesce((SELECT max(new_id) FROM outbox_moves AS m "
    "  WHERE m.old_id BETWEEN exports.chunk_first AND exports.chunk_last "
    "  AND m.hook = exports.hook), 0)"
    "  WHERE chunk_first > 0;"
    "DROP TABLE outbox_v5;"
    "DROP TABLE temp.outbox_moves;",
    /* 8: the texts of new chunks go to history files (history_files.h);
     * a row names its file and where its texts start there. Older rows
     * keep theirs in body. The index finds whether a file is still
     * named once retention has deleted chunks of it; history_files
     * keeps the number the next file may take at the least, so that
     * numbers are not used again once retention deleted their files. */
    "ALTER TABLE history ADD COLUMN file INTEGER;"
    "ALTER TABLE history ADD COLUMN file_offset INTEGER;"
    "CREATE INDEX history_by_file ON history(file);"
    "CREATE TABLE history_files (next INTEGER NOT NULL);"
    "INSERT INTO history_files(next) VALUES (1);",
};

/* What a migration does beyond its SQL, by the version it makes (NULL
 * for none); run right after that version's SQL, in its transaction. */
static int (*const migration_steps[])(sqlite3 *db, char *err,
                                      size_t errlen) = {
    NULL, NULL, NULL, NULL, NULL, hk_history_from_events, NULL, NULL,
};

#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

_Static_assert(sizeof migration_steps / sizeof migration_steps[0] ==
                   sizeof migrations / sizeof migrations[0],
               "one entry of migration_steps per schema version");

const char *hk_store_migration(int version) {
  return version >= 1 && version <= SCHEMA_VERSION ? migrations[version - 1]
                                                    : NULL;
}

double hk_store_now(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void db_error(sqlite3 *db, const char *path, const char *what,
                     char *err, size_t errlen) {
  snprintf(err, errlen, "store %s: %s: %s", path, what, sqlite3_errmsg(db));
}

/* Reads one integer pragma. Returns 0, or -1 with err. */
static int pragma_int(sqlite3 *db, const char *path, const char *sql,
                      long *out, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT)
      snprintf(err, errlen,
               "store %s: the file is not a usable SQLite database (%s); "
               "hookd leaves it alone: move it aside or restore a backup",
               path, sqlite3_errstr(rc));
    else
      db_error(db, path, sql, err, errlen);
    sqlite3_finalize(st);
    return -1;
  }
  *out = (long)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return 0;
}

/* Refuses a database that is not ours or is newer than this build.
 * Sets *version to the schema version found (0 for a new file). */
static int check_identity(sqlite3 *db, const char *path, long *version,
                          char *err, size_t errlen) {
  long app_id, tables;

  if (pragma_int(db, path, "PRAGMA application_id", &app_id, err, errlen) ||
      pragma_int(db, path, "PRAGMA user_version", version, err, errlen) ||
      pragma_int(db, path, "SELECT count(*) FROM sqlite_master", &tables, err,
                 errlen))
    return -1;
  if (app_id == 0 && tables == 0 && *version == 0) return 0; /* new, empty */
  if (app_id != STORE_APPLICATION_ID) {
    snprintf(err, errlen,
             "store %s: this SQLite database belongs to another program "
             "(application_id %ld); hookd leaves it alone: point data_dir "
             "elsewhere or move the file aside",
             path, app_id);
    return -1;
  }
  if (*version > SCHEMA_VERSION) {
    snprintf(err, errlen,
             "store %s: made by a newer hookd (schema %ld; this build knows "
             "up to %d); hookd leaves it alone",
             path, *version, SCHEMA_VERSION);
    return -1;
  }
  return 0;
}

/* Applies the migrations after version in one transaction. */
static int migrate(sqlite3 *db, const char *path, long version, char *err,
                   size_t errlen) {
  char sql[96], why[200] = "";

  if (version == SCHEMA_VERSION) return 0;
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    goto fail;
  for (long v = version; v < SCHEMA_VERSION; v++)
    if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
        (migration_steps[v] != NULL &&
         migration_steps[v](db, why, sizeof why) != 0))
      goto fail;
  snprintf(sql, sizeof sql, "PRAGMA application_id=%d; PRAGMA user_version=%d",
           STORE_APPLICATION_ID, SCHEMA_VERSION);
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    goto fail;
  hk_info("store", "path=%s migrated_from=%ld schema=%d", path, version,
          SCHEMA_VERSION);
  return 0;
fail:
  if (why[0]) snprintf(err, errlen, "store %s: migration: %s", path, why);
  else db_error(db, path, "migration", err, errlen);
  sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

/* WAL lets the loop read while the writer commits; synchronous=FULL
 * makes each commit durable across a power cut (one fsync per group).
 * secure_delete=FAST still zeroes what is deleted inside a page (profiles
 * and content deleted through the API do not linger in the file) but no
 * longer writes zeroes over whole freed pages: Debian's SQLite defaults to
 * the full mode, which made every delivered message cost a page write. */
static int tune(sqlite3 *db, const char *path, int writer, char *err,
                size_t errlen) {
  sqlite3_busy_timeout(db, 5000);
  /* A new store gets pages of 16 KiB (an existing one keeps its size: it
   * cannot change in WAL mode). When a request's history was still a row
   * of about 750 KB (before history files), 4 KiB pages made it some 180
   * pages, each a WAL frame of its own: two write calls and the kernel's
   * work per page, twice (the checkpoint copies it again). With 16 KiB
   * pages the writer thread used about a fifth less CPU (bench/README.md).
   */
  if (writer && sqlite3_exec(db, "PRAGMA page_size=16384", NULL, NULL,
                             NULL) != SQLITE_OK) {
    db_error(db, path, "page_size", err, errlen);
    return -1;
  }
  if (writer && sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL,
                             NULL) != SQLITE_OK) {
    db_error(db, path, "journal_mode=WAL", err, errlen);
    return -1;
  }
  /* 8 MiB of page cache per connection: the history's texts are not in
   * the database, and the outbox is written and read at its ends. With
   * 16 MiB ten hooks held 16 MB more resident for the same throughput. */
  if (sqlite3_exec(db, "PRAGMA synchronous=FULL; PRAGMA cache_size=-8192; "
                   "PRAGMA secure_delete=FAST",
                   NULL, NULL, NULL) != SQLITE_OK) {
    db_error(db, path, "pragmas", err, errlen);
    return -1;
  }
  return 0;
}

/* One hookd per store: a second one would deliver everything twice. The
 * lock is an flock on the database file itself, which cannot be deleted
 * away like a lock file, and which does not disturb SQLite's own POSIX
 * locks as long as this descriptor stays open while SQLite uses the file.
 * Creating the file here also gives it owner-only permissions, which
 * SQLite passes on to the -wal and -shm files. */
static int lock_store(hk_store *s, const char *data_dir, char *err,
                      size_t errlen) {
  if (mkdir(data_dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "store: cannot create data_dir %s: %s", data_dir,
             strerror(errno));
    return -1;
  }
  s->lock_fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->lock_fd < 0) {
    snprintf(err, errlen, "store: cannot open %s: %s", s->path,
             strerror(errno));
    return -1;
  }
  if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(err, errlen,
             "store: %s is in use by another hookd (its lock is held)",
             s->path);
    return -1;
  }
  return 0;
}

/* Every table a store of schema version has (this build's version once
 * migrated): a missing one means the file was damaged or edited. */
static int check_tables(sqlite3 *db, const char *path, long version,
                        char *err, size_t errlen) {
  static const struct {
    const char *name;
    long since, until; /* until 0: still there */
  } tables[] = {{"events", 1, 5},     {"outbox", 1, 0},
                {"dead_letters", 1, 0}, {"content", 1, 0},
                {"profiles", 1, 0},   {"catalog", 1, 0},
                {"hook_state", 1, 0}, {"exports", 3, 0},
                {"profile_tombstones", 3, 0}, {"history", 6, 0},
                {"hook_slots", 7, 0}, {"history_files", 8, 0}};
  char sql[160];
  long n;

  for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
    if (tables[i].since > version ||
        (tables[i].until > 0 && tables[i].until < version))
      continue;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM sqlite_master WHERE "
             "type = 'table' AND name = '%s'", tables[i].name);
    if (pragma_int(db, path, sql, &n, err, errlen) != 0) return -1;
    if (n == 0) {
      snprintf(err, errlen, "store %s: damaged: table %s is missing; "
               "hookd leaves it alone: restore a backup or move it aside",
               path, tables[i].name);
      return -1;
    }
  }
  return 0;
}

static int open_db(hk_store *s, sqlite3 **db, int writer, char *err,
                   size_t errlen) {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
              SQLITE_OPEN_NOMUTEX;

  if (sqlite3_open_v2(s->path, db, flags, NULL) != SQLITE_OK) {
    db_error(*db, s->path, "open", err, errlen);
    return -1;
  }
  sqlite3_extended_result_codes(*db, 1);
  (void)writer;
  return 0;
}

static void writer_main(void *arg);
static void async_cb(uv_async_t *a);

static int open_files(hk_store *s, const char *data_dir, char *err,
                      size_t errlen) {
  long version = 0;

  if (asprintf(&s->path, "%s/hookd.db", data_dir) < 0 ||
      hk_history_files_init(&s->files, data_dir) != 0)
    return -1;
  if (lock_store(s, data_dir, err, errlen) != 0) return -1;
  /* An existing store is checked before anything is written to it (every
   * version so far has all the tables). */
  if (open_db(s, &s->wdb, 1, err, errlen) != 0 ||
      check_identity(s->wdb, s->path, &version, err, errlen) != 0 ||
      (version > 0 &&
       check_tables(s->wdb, s->path, version, err, errlen) != 0) ||
      (version == SCHEMA_VERSION && hk_store_check_all(s, err, errlen) != 0) ||
      tune(s->wdb, s->path, 1, err, errlen) != 0 ||
      migrate(s->wdb, s->path, version, err, errlen) != 0 ||
      check_tables(s->wdb, s->path, SCHEMA_VERSION, err, errlen) != 0 ||
      hk_store_check_all(s, err, errlen) != 0 ||
      hk_store_slots_load(s, err, errlen) != 0 ||
      hk_history_files_open(&s->files, s->wdb, version == 0, err,
                            errlen) != 0 ||
      open_db(s, &s->rdb, 0, err, errlen) != 0 ||
      tune(s->rdb, s->path, 0, err, errlen) != 0)
    return -1;
  return 0;
}

hk_store *hk_store_open(uv_loop_t *loop, const char *data_dir, char *err,
                        size_t errlen) {
  hk_store *s = calloc(1, sizeof *s);

  if (s == NULL) {
    snprintf(err, errlen, "store: out of memory");
    return NULL;
  }
  s->loop = loop;
  s->lock_fd = -1;
  if (open_files(s, data_dir, err, errlen) != 0) {
    hk_store_slots_free(s);
    hk_history_files_close(&s->files);
    sqlite3_close(s->rdb);
    sqlite3_close(s->wdb);
    if (s->lock_fd >= 0) close(s->lock_fd);
    free(s->path);
    free(s);
    return NULL;
  }
  uv_mutex_init(&s->lock);
  uv_cond_init(&s->wake);
  uv_cond_init(&s->done);
  uv_async_init(loop, &s->async, async_cb);
  s->async.data = s;
  uv_unref((uv_handle_t *)&s->async);
  uv_thread_create(&s->thread, writer_main, s);
  hk_info("store", "path=%s schema=%d opened=1", s->path, SCHEMA_VERSION);
  return s;
}

const char *hk_store_path(const hk_store *s) { return s->path; }

long long hk_store_history_bytes(const hk_store *s) {
  return hk_history_files_bytes(&s->files);
}

/* A reader reads only what this build knows exactly: an older store needs
 * migrating, which only the router does, and a newer one may mean
 * something else (check_identity refuses it). */
static int check_readable(sqlite3 *db, const char *path, char *err,
                          size_t errlen) {
  long version = 0;

  if (check_identity(db, path, &version, err, errlen) != 0) return -1;
  if (version == 0) {
    snprintf(err, errlen, "store %s: empty: no router has used it yet",
             path);
    return -1;
  }
  if (version < SCHEMA_VERSION) {
    snprintf(err, errlen,
             "store %s: made by an older hookd (schema %ld; this build "
             "reads schema %d): start the router once to migrate it",
             path, version, SCHEMA_VERSION);
    return -1;
  }
  return check_tables(db, path, version, err, errlen);
}

hk_store *hk_store_open_readonly(const char *data_dir, char *err,
                                 size_t errlen) {
  hk_store *s = calloc(1, sizeof *s);
  struct stat st;

  if (s == NULL || asprintf(&s->path, "%s/hookd.db", data_dir) < 0 ||
      hk_history_files_init(&s->files, data_dir) != 0) {
    snprintf(err, errlen, "store: out of memory");
    if (s) free(s->path);
    free(s);
    return NULL;
  }
  s->lock_fd = -1;
  if (stat(s->path, &st) != 0) {
    snprintf(err, errlen, "store %s: %s", s->path, strerror(errno));
    goto fail;
  }
  /* No flock: the router holds it, and a reader does not compete with
   * it. Read-only, so SQLite never writes, checkpoints or creates. */
  if (sqlite3_open_v2(s->path, &s->rdb,
                      SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK) {
    db_error(s->rdb, s->path, "open", err, errlen);
    goto fail;
  }
  sqlite3_extended_result_codes(s->rdb, 1);
  sqlite3_busy_timeout(s->rdb, 5000);
  if (check_readable(s->rdb, s->path, err, errlen) != 0) goto fail;
  return s;
fail:
  sqlite3_close(s->rdb);
  hk_history_files_close(&s->files);
  free(s->path);
  free(s);
  return NULL;
}

/* A store opened read-only has no writer, lock or loop handle. */
static void close_readonly(hk_store *s) {
  hk_store_finalize_all(s);
  sqlite3_close(s->rdb);
  hk_history_files_close(&s->files);
  hk_buf_free(&s->chunk_text);
  free(s->path);
  free(s);
}

/* ---- the writer thread ---- */

/* Takes every batch that is due. Blocks while there is none; returns NULL
 * when the store is closing and nothing is left. Called with the lock. */
static hk_store_batch *take_due(hk_store *s) {
  for (;;) {
    hk_store_batch *due = NULL, **tail = &due, **pp = &s->queue_head;
    double now = hk_store_now(), soonest = 0;

    s->queue_tail = NULL;
    while (*pp) {
      hk_store_batch *b = *pp;
      if (s->stopping || b->not_before <= now) {
        *pp = b->next;
        b->next = NULL;
        *tail = b;
        tail = &b->next;
      } else {
        if (soonest == 0 || b->not_before < soonest) soonest = b->not_before;
        s->queue_tail = b;
        pp = &b->next;
      }
    }
    if (due) return due;
    if (s->stopping) return NULL;
    if (soonest > 0)
      uv_cond_timedwait(&s->wake, &s->lock,
                        (uint64_t)((soonest - now) * 1e9) + 1000000);
    else
      uv_cond_wait(&s->wake, &s->lock);
  }
}

/* Puts the history files' new chunks on disk before the rows that name
 * them commit. On failure every batch that had succeeded fails with the
 * reason, and the caller rolls the transaction back. Returns 1 or 0. */
static int sync_history(hk_store *s, hk_store_batch *group) {
  int rc = hk_history_files_sync(&s->files);

  if (rc == 0 && !hk_history_files_record(&s->files, s->wdb)) {
    for (hk_store_batch *b = group; b; b = b->next)
      if (b->ok) hk_store_batch_fail(b, s->wdb, "history file number");
    return 0;
  }
  if (rc == 0) return 1;
  hk_error("store", "path=%s history_sync_failed=1 error=\"%s\"",
           s->files.dir, strerror(rc));
  for (hk_store_batch *b = group; b; b = b->next) {
    if (!b->ok) continue;
    s->op_error = strerror(rc);
    s->op_disk_full = rc == ENOSPC || rc == EDQUOT;
    hk_store_batch_failed(s, b, "history sync");
  }
  return 0;
}

/* Runs the group in one transaction. A batch that fails is refused alone:
 * the transaction is rolled back and the group's other batches are run
 * again in a new one, without it. Failures are rare (a full disk, a
 * hook's ids used up), so the others pay for a second pass then rather
 * than a savepoint each time. Each pass decides at least one batch, so
 * this ends. */
static void commit_group(hk_store *s, hk_store_batch *group) {
  hk_history_mark mark = hk_history_files_mark(&s->files);

  for (hk_store_batch *b = group; b; b = b->next) b->refused = 0;
again:
  hk_history_files_rewind(&s->files, mark); /* a new try writes again */
  if (sqlite3_exec(s->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    for (hk_store_batch *b = group; b; b = b->next)
      if (!b->refused) hk_store_batch_fail(b, s->wdb, "begin");
    return;
  }
  for (hk_store_batch *b = group; b; b = b->next) {
    if (b->refused) continue;
    b->ok = hk_store_run_batch(s, b);
    if (b->ok) continue;
    b->refused = 1;
    if (!sqlite3_get_autocommit(s->wdb))
      sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    hk_store_slots_rolled_back(s);
    goto again;
  }
  if (!sync_history(s, group) ||
      sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    for (hk_store_batch *b = group; b; b = b->next)
      if (b->ok) hk_store_batch_fail(b, s->wdb, "commit");
    sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    hk_store_slots_rolled_back(s);
    hk_history_files_rewind(&s->files, mark);
  } else {
    hk_store_slots_committed(s);
    hk_history_files_recorded(&s->files);
  }
  if (s->files.n_freed > 0) hk_history_files_sweep(&s->files, s->wdb);
}

/* Sends finished batches to the loop; a failed persistent batch goes back
 * to the queue for another try in a second (unless closing). */
static void hand_back(hk_store *s, hk_store_batch *group) {
  static double warned_at;

  uv_mutex_lock(&s->lock);
  while (group) {
    hk_store_batch *b = group;

    group = b->next;
    b->next = NULL;
    if (!b->ok && b->persistent && !s->stopping) {
      if (hk_store_now() - warned_at > 10) {
        hk_error("store", "path=%s delivery_bookkeeping_delayed=1 "
                 "retry_in=1s reason=\"%s\"", s->path, b->error);
        warned_at = hk_store_now();
      }
      b->not_before = hk_store_now() + 1.0;
      if (s->queue_tail) s->queue_tail->next = b;
      else s->queue_head = b;
      s->queue_tail = b;
      continue;
    }
    b->finished = 1;
    if (b->waited) continue; /* hk_store_submit_wait takes it back */
    if (s->done_tail) s->done_tail->next = b;
    else s->done_head = b;
    s->done_tail = b;
  }
  uv_cond_broadcast(&s->done);
  uv_mutex_unlock(&s->lock);
  uv_async_send(&s->async);
}

static void writer_main(void *arg) {
  hk_store *s = arg;

  /* Named so operators (top -H) and the benchmark can tell it apart. */
  pthread_setname_np(pthread_self(), "hookd-store");
  for (;;) {
    hk_store_batch *group;

    uv_mutex_lock(&s->lock);
    group = take_due(s);
    uv_mutex_unlock(&s->lock);
    if (group == NULL) break;
    commit_group(s, group);
    hand_back(s, group);
  }
}

/* ---- the loop side ---- */

static void run_done(hk_store *s) {
  hk_store_batch *list;

  uv_mutex_lock(&s->lock);
  list = s->done_head;
  s->done_head = s->done_tail = NULL;
  uv_mutex_unlock(&s->lock);
  while (list) {
    hk_store_batch *b = list;

    list = b->next;
    s->pending--;
    if (b->cb) b->cb(b, b->ok, b->ctx);
    hk_store_batch_free(b);
  }
}

static void async_cb(uv_async_t *a) { run_done(a->data); }

static void enqueue(hk_store *s, hk_store_batch *b) {
  b->next = NULL;
  uv_mutex_lock(&s->lock);
  if (s->queue_tail) s->queue_tail->next = b;
  else s->queue_head = b;
  s->queue_tail = b;
  uv_cond_signal(&s->wake);
  uv_mutex_unlock(&s->lock);
}

void hk_store_submit(hk_store *s, hk_store_batch *b, hk_store_done_cb cb,
                     void *ctx) {
  b->cb = cb;
  b->ctx = ctx;
  s->pending++;
  enqueue(s, b);
}

int hk_store_submit_wait(hk_store *s, hk_store_batch *b, char *err,
                         size_t errlen) {
  int ok;

  b->waited = 1;
  enqueue(s, b);
  uv_mutex_lock(&s->lock);
  while (!b->finished) uv_cond_wait(&s->done, &s->lock);
  uv_mutex_unlock(&s->lock);
  ok = b->ok;
  if (!ok) snprintf(err, errlen, "%s", b->error);
  hk_store_batch_free(b);
  return ok ? 0 : -1;
}

size_t hk_store_pending(hk_store *s) { return s->pending; }

static void close_async(uv_handle_t *h) { free(h->data); }

void hk_store_close(hk_store *s) {
  if (s == NULL) return;
  if (s->wdb == NULL) {
    close_readonly(s);
    return;
  }
  uv_mutex_lock(&s->lock);
  s->stopping = 1;
  uv_cond_signal(&s->wake);
  uv_mutex_unlock(&s->lock);
  uv_thread_join(&s->thread);
  run_done(s);
  hk_store_finalize_all(s);
  hk_history_chunk_free(&s->chunk);
  hk_history_files_close(&s->files);
  hk_buf_free(&s->chunk_text);
  hk_store_slots_free(s);
  sqlite3_close(s->rdb);
  sqlite3_close(s->wdb);
  close(s->lock_fd);
  uv_mutex_destroy(&s->lock);
  uv_cond_destroy(&s->wake);
  uv_cond_destroy(&s->done);
  hk_info("store", "path=%s closed=1", s->path);
  free(s->path);
  s->async.data = s;
  uv_close((uv_handle_t *)&s->async, close_async);
}
