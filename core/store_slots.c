/* Outbox ids, on the writer thread. Each hook has a slot (table
 * hook_slots) and its messages the ids slot << OUTBOX_SEQ_BITS | seq, so
 * that every per-hook query of the outbox is a rowid range. The writer
 * keeps, per hook, its slot and the next seq in a small hash map.
 *
 * Within one run a hook's ids only ever grow: its dispatcher skips any id
 * at or below the last one it has seen (also after the hook was deleted
 * and made again), so neither a rollback nor a deleted hook takes ids
 * back, and a slot, once committed, is never given up. Each hook's seq
 * continues after the largest id its range holds when the store opens,
 * before anything is delivered: looked up later, once a dispatcher has
 * emptied the range, it would start again below ids that dispatcher has
 * seen, and it would skip the new messages. */
#include "store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct outbox_slot {
  char *hook;    /* NULL: a free entry */
  int64_t slot;  /* 0 until looked up */
  int64_t next;  /* the next seq */
  int known;     /* slot is what hook_slots says */
  int unsettled; /* looked up or made since the last commit */
};

enum { SLOT_FIND, SLOT_MAKE, SLOT_LAST_ID, SLOT_ALL, SLOT_STATEMENTS };

static const char *const slot_sql[SLOT_STATEMENTS] = {
    [SLOT_FIND] = "SELECT slot FROM hook_slots WHERE hook = ?1",
    [SLOT_MAKE] = "INSERT INTO hook_slots(hook, slot) SELECT ?1, "
                  "coalesce(max(slot), 0) + 1 FROM hook_slots",
    [SLOT_LAST_ID] = "SELECT id FROM outbox WHERE id BETWEEN ?1 AND ?2 "
                     "ORDER BY id DESC LIMIT 1",
    [SLOT_ALL] = "SELECT hook, slot FROM hook_slots",
};

_Static_assert(SLOT_STATEMENTS <= sizeof ((hk_store *)0)->slot_stmt /
                                       sizeof(sqlite3_stmt *),
               "hk_store.slot_stmt is too small");

/* FNV-1a: hook names are short and few. */
static size_t hash_of(const char *hook) {
  uint64_t h = 14695981039346656037ULL;

  for (const unsigned char *p = (const unsigned char *)hook; *p; p++)
    h = (h ^ *p) * 1099511628211ULL;
  return (size_t)h;
}

/* The entry of hook, or the free entry where it belongs. */
static struct outbox_slot *probe(struct outbox_slot *tab, size_t cap,
                                 const char *hook) {
  size_t i = hash_of(hook) & (cap - 1);

  while (tab[i].hook && strcmp(tab[i].hook, hook) != 0)
    i = (i + 1) & (cap - 1);
  return &tab[i];
}

/* Doubles the table (entries are never removed, so no tombstones). */
static void grow(hk_store *s) {
  size_t cap = s->slots_cap ? s->slots_cap * 2 : 32;
  struct outbox_slot *tab = calloc(cap, sizeof *tab);

  if (tab == NULL) abort(); /* the writer cannot work without memory */
  for (size_t i = 0; i < s->slots_cap; i++)
    if (s->slots[i].hook) *probe(tab, cap, s->slots[i].hook) = s->slots[i];
  free(s->slots);
  s->slots = tab;
  s->slots_cap = cap;
}

static struct outbox_slot *entry_of(hk_store *s, const char *hook) {
  struct outbox_slot *e;

  if ((s->slots_used + 1) * 2 > s->slots_cap) grow(s);
  e = probe(s->slots, s->slots_cap, hook);
  if (e->hook == NULL) {
    if ((e->hook = strdup(hook)) == NULL) abort();
    s->slots_used++;
  }
  return e;
}

static sqlite3_stmt *slot_stmt(hk_store *s, int which) {
  sqlite3_stmt **st = &s->slot_stmt[which];

  if (*st == NULL &&
      sqlite3_prepare_v3(s->wdb, slot_sql[which], -1,
                         SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
    return NULL;
  sqlite3_reset(*st);
  sqlite3_clear_bindings(*st);
  return *st;
}

/* Runs statement which with hook bound (and lo, hi when hi > 0) and
 * gives its single integer: *v stays as it was for no row or NULL.
 * Returns 1, or 0 on an error. */
static int slot_int(hk_store *s, int which, const char *hook, int64_t lo,
                    int64_t hi, int64_t *v) {
  sqlite3_stmt *st = slot_stmt(s, which);
  int rc;

  if (st == NULL) return 0;
  if (hook) sqlite3_bind_text(st, 1, hook, -1, SQLITE_STATIC);
  if (hi > 0) {
    sqlite3_bind_int64(st, 1, lo);
    sqlite3_bind_int64(st, 2, hi);
  }
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
    *v = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE;
}

/* The next seq of slot: after the largest id of its range, or 1. */
static int next_seq(hk_store *s, int64_t slot, int64_t *next) {
  int64_t first = slot << OUTBOX_SEQ_BITS, last = 0;

  if (!slot_int(s, SLOT_LAST_ID, NULL, first, first + OUTBOX_SEQ_MAX, &last))
    return 0;
  *next = (last > first ? last - first : 0) + 1;
  return 1;
}

/* Finds e's slot, making it when the hook has none (it had none when
 * the store opened), and moves its next seq past what its range holds.
 * Returns 1, or 0. */
static int look_up(hk_store *s, struct outbox_slot *e) {
  int64_t slot = 0, next = 1;

  if (!slot_int(s, SLOT_FIND, e->hook, 0, 0, &slot)) return 0;
  if (slot == 0 && (!slot_int(s, SLOT_MAKE, e->hook, 0, 0, &slot) ||
                    !slot_int(s, SLOT_FIND, e->hook, 0, 0, &slot)))
    return 0;
  if (slot < 1 || slot > OUTBOX_SLOT_MAX) {
    s->op_error = "no outbox slot is left for a new hook";
    return 0;
  }
  if (!next_seq(s, slot, &next)) return 0;
  if (slot != e->slot) e->next = 1; /* a slot made again after a rollback */
  if (e->next < next) e->next = next;
  e->slot = slot;
  e->known = 1;
  if (!e->unsettled) s->slots_unsettled++;
  e->unsettled = 1;
  return 1;
}

int hk_store_slots_load(hk_store *s, char *err, size_t errlen) {
  sqlite3_stmt *st = slot_stmt(s, SLOT_ALL);
  int rc = SQLITE_ERROR;

  while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct outbox_slot *e =
        entry_of(s, (const char *)sqlite3_column_text(st, 0));

    e->slot = sqlite3_column_int64(st, 1);
    e->known = 1;
    if (e->slot < 1 || e->slot > OUTBOX_SLOT_MAX) {
      snprintf(err, errlen, "store %s: damaged: hook %s has outbox slot "
               "%lld; hookd leaves it alone: restore a backup or move it "
               "aside", s->path, e->hook, (long long)e->slot);
      sqlite3_reset(st);
      return -1;
    }
    if (!next_seq(s, e->slot, &e->next)) break;
  }
  if (st) sqlite3_reset(st);
  if (rc == SQLITE_DONE) return 0;
  snprintf(err, errlen, "store %s: hook_slots cannot be read: %s", s->path,
           sqlite3_errmsg(s->wdb));
  return -1;
}

int hk_store_outbox_id(hk_store *s, const char *hook, int64_t *id) {
  struct outbox_slot *e;

  if (hook == NULL) {
    s->op_error = "a message without a hook";
    return 0;
  }
  e = entry_of(s, hook);
  if (!e->known && !look_up(s, e)) return 0;
  if (e->next > OUTBOX_SEQ_MAX) {
    s->op_error = "the hook's range of outbox ids is used up (it starts "
                  "again after a restart with its outbox empty)";
    return 0;
  }
  *id = e->slot << OUTBOX_SEQ_BITS | e->next++;
  return 1;
}

void hk_store_slots_committed(hk_store *s) {
  for (size_t i = 0; s->slots_unsettled && i < s->slots_cap; i++)
    if (s->slots[i].unsettled) {
      s->slots[i].unsettled = 0;
      s->slots_unsettled--;
    }
}

void hk_store_slots_rolled_back(hk_store *s) {
  for (size_t i = 0; s->slots_unsettled && i < s->slots_cap; i++)
    if (s->slots[i].unsettled) {
      s->slots[i].unsettled = 0;
      s->slots[i].known = 0;
      s->slots_unsettled--;
    }
}

void hk_store_slots_free(hk_store *s) {
  for (size_t i = 0; i < s->slots_cap; i++) free(s->slots[i].hook);
  free(s->slots);
  s->slots = NULL;
  s->slots_cap = s->slots_used = s->slots_unsettled = 0;
  for (int i = 0; i < SLOT_STATEMENTS; i++) {
    sqlite3_finalize(s->slot_stmt[i]);
    s->slot_stmt[i] = NULL;
  }
}

const char *hk_store_slots_sql(size_t i) {
  return i < SLOT_STATEMENTS ? slot_sql[i] : NULL;
}
