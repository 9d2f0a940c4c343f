/* A broker target made of several connections to the same destination.
 * One connection to a RabbitMQ queue is limited by the broker's
 * per-connection processes long before the queue itself is, so a hook may
 * ask for more: each send goes whole to the next connection in turn, and
 * the answers still reach the hook in the order its sends were made
 * (an answer that comes early waits, copied, for the ones before it).
 * Messages of different sends may reach the broker in either order. */
#include "transport/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One send in flight, oldest first. */
typedef struct pool_send {
  struct pool_send *next;
  struct hk_tx_pool *pool;
  hk_tx_batch_cb cb;
  void *ctx;
  hk_tx_result *res; /* the answer, copied, when it came out of order */
  size_t n;
  int answered;
} pool_send;

typedef struct hk_tx_pool {
  hk_tx_target base;
  hk_tx_target **subs;
  size_t n_subs, turn;      /* turn: the connection of the next send */
  pool_send *head, *tail;   /* sends in flight, in the order made */
  size_t n_flight;
  int destroyed;
  int busy; /* inside answer_ready or pool_destroy: not to be freed yet */
  char desc[1024];
} hk_tx_pool;

/* Frees a destroyed pool once nothing is in flight or running. */
static void pool_release(hk_tx_pool *p) {
  if (!p->destroyed || p->busy || p->head != NULL) return;
  free(p->subs);
  free(p);
}

static pool_send *pop_head(hk_tx_pool *p) {
  pool_send *s = p->head;

  p->head = s->next;
  if (p->head == NULL) p->tail = NULL;
  p->n_flight--;
  return s;
}

/* Hands the oldest sends that have their answers to the hook, in order.
 * The hook's callback may make new sends; they queue behind. */
static void answer_ready(hk_tx_pool *p) {
  p->busy++;
  while (p->head != NULL && p->head->answered) {
    pool_send *s = pop_head(p);

    s->cb(s->ctx, s->res, s->n);
    free(s->res);
    free(s);
  }
  p->busy--;
  pool_release(p);
}

/* A connection answered one send. The oldest send in flight is answered
 * at once; a later one keeps a copy until those before it are in. */
static void sub_done(void *ctx, const hk_tx_result *res, size_t n) {
  pool_send *s = ctx;
  hk_tx_pool *p = s->pool;
  hk_tx_result *copy;

  if (s == p->head && !p->busy) {
    p->busy++;
    pop_head(p);
    s->cb(s->ctx, res, n);
    free(s);
    p->busy--;
    answer_ready(p);
    return;
  }
  copy = malloc((n ? n : 1) * sizeof *copy);
  if (copy == NULL) abort(); /* the answer cannot be dropped or made up */
  memcpy(copy, res, n * sizeof *copy);
  s->res = copy;
  s->n = n;
  s->answered = 1;
  if (!p->busy) answer_ready(p);
}

/* Gives the send to the next connection in turn that takes it. */
static int pool_send_msgs(hk_tx_target *t, const hk_tx_msg *msgs, size_t n,
                          hk_tx_batch_cb cb, void *ctx) {
  hk_tx_pool *p = (hk_tx_pool *)t;
  pool_send *s;

  if (p->destroyed || p->n_flight >= HK_TX_SENDS_MAX) return -1;
  s = calloc(1, sizeof *s);
  if (s == NULL) return -1;
  s->pool = p;
  s->cb = cb;
  s->ctx = ctx;
  for (size_t tries = 0; tries < p->n_subs; tries++) {
    hk_tx_target *sub = p->subs[p->turn];

    p->turn = (p->turn + 1) % p->n_subs;
    if (sub->ops->send(sub, msgs, n, sub_done, s) == 0) {
      if (p->tail != NULL) p->tail->next = s;
      else p->head = s;
      p->tail = s;
      p->n_flight++;
      return 0;
    }
  }
  free(s);
  return -1;
}

/* Every connection finishes or gives back its sends on its own; the pool
 * goes once the last of them is answered. */
static void pool_destroy(hk_tx_target *t) {
  hk_tx_pool *p = (hk_tx_pool *)t;

  p->destroyed = 1;
  p->busy++;
  for (size_t i = 0; i < p->n_subs; i++)
    p->subs[i]->ops->destroy(p->subs[i]);
  p->busy--;
  answer_ready(p); /* any answer a connection gave while closing */
}

static const char *pool_describe(const hk_tx_target *t) {
  return ((const hk_tx_pool *)t)->desc;
}

static const hk_tx_ops pool_ops = {pool_send_msgs, pool_destroy,
                                   pool_describe};

hk_tx_target *hk_tx_pool_create(hk_tx_target **subs, size_t n,
                                const char *desc) {
  hk_tx_pool *p = calloc(1, sizeof *p);

  if (p == NULL) return NULL;
  p->subs = malloc(n * sizeof *p->subs);
  if (p->subs == NULL) {
    free(p);
    return NULL;
  }
  memcpy(p->subs, subs, n * sizeof *subs);
  p->n_subs = n;
  p->base.ops = &pool_ops;
  snprintf(p->desc, sizeof p->desc, "%s", desc);
  return &p->base;
}
