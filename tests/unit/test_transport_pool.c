/* Tests of the pool of broker connections (core/transport/pool.c) over
 * fake connections whose answers the test gives, in any order. */
#include <stdio.h>
#include <string.h>

#include "test_util.h"
#include "transport/pool.h"

#define FAKES 3
#define HELD 16

/* A fake connection: it keeps each send's callback until the test
 * answers it, and can be told to refuse sends. */
typedef struct fake {
  hk_tx_target base;
  int refuse, destroyed;
  size_t n_held;
  struct held {
    hk_tx_batch_cb cb;
    void *ctx;
    size_t n;
    char first[32]; /* the first message of the send */
  } held[HELD];
} fake;

static int fake_send(hk_tx_target *t, const hk_tx_msg *msgs, size_t n,
                     hk_tx_batch_cb cb, void *ctx) {
  fake *f = (fake *)t;
  struct held *h;

  if (f->refuse || f->n_held == HELD) return -1;
  h = &f->held[f->n_held++];
  h->cb = cb;
  h->ctx = ctx;
  h->n = n;
  snprintf(h->first, sizeof h->first, "%.*s", (int)msgs[0].len, msgs[0].data);
  return 0;
}

static void fake_destroy(hk_tx_target *t) { ((fake *)t)->destroyed = 1; }

static const char *fake_describe(const hk_tx_target *t) {
  (void)t;
  return "fake://broker queue=q";
}

static const hk_tx_ops fake_ops = {fake_send, fake_destroy, fake_describe};

/* Answers the fake's held send i: every message gets status st and a
 * reason naming the send's first message. */
static void answer(fake *f, size_t i, hk_tx_status st) {
  hk_tx_result res[4];
  struct held h = f->held[i];

  memset(res, 0, sizeof res);
  for (size_t k = 0; k < h.n && k < 4; k++) {
    res[k].status = st;
    snprintf(res[k].reason, sizeof res[k].reason, "%s/%zu", h.first, k);
  }
  memmove(&f->held[i], &f->held[i + 1], (f->n_held - i - 1) * sizeof h);
  f->n_held--;
  h.cb(h.ctx, res, h.n);
}

/* What the hook saw of one send. */
typedef struct seen {
  int order; /* 1 for the first answer the hook got, and so on */
  size_t n;
  hk_tx_status status;
  char reason[512];
} seen;

static int answers;

static void on_batch(void *ctx, const hk_tx_result *res, size_t n) {
  seen *s = ctx;

  s->order = ++answers;
  s->n = n;
  s->status = res[n - 1].status;
  snprintf(s->reason, sizeof s->reason, "%s", res[n - 1].reason);
}

static fake fakes[FAKES];

/* Answers every held send, oldest connection first. */
static void answer_all(void) {
  for (int i = 0; i < FAKES; i++)
    while (fakes[i].n_held > 0) answer(&fakes[i], 0, HK_TX_OK);
}

static hk_tx_target *make_pool(size_t n) {
  hk_tx_target *subs[FAKES];

  memset(fakes, 0, sizeof fakes);
  for (size_t i = 0; i < n; i++) {
    fakes[i].base.ops = &fake_ops;
    subs[i] = &fakes[i].base;
  }
  answers = 0;
  return hk_tx_pool_create(subs, n, "fake://broker queue=q connections=2");
}

static int send_one(hk_tx_target *p, const char *body, size_t n, seen *s) {
  hk_tx_msg m[4];

  for (size_t i = 0; i < n; i++) {
    m[i].data = body;
    m[i].len = strlen(body);
    m[i].route = "q";
    m[i].key = NULL;
    m[i].key_len = 0;
  }
  return p->ops->send(p, m, n, on_batch, s);
}

/* Sends go to the connections in turn; answers that come in any order
 * reach the hook in the order the sends were made, each with its own
 * results. */
static void test_answers_in_order(void) {
  hk_tx_target *p = make_pool(2);
  seen s[4];
  const char *body[4] = {"{\"a\":0}", "{\"a\":1}", "{\"a\":2}", "{\"a\":3}"};

  memset(s, 0, sizeof s);
  REQUIRE(p != NULL);
  CHECK(strcmp(p->ops->describe(p), "fake://broker queue=q connections=2")
        == 0);
  for (int i = 0; i < 4; i++) CHECK(send_one(p, body[i], 2, &s[i]) == 0);
  REQUIRE(fakes[0].n_held == 2 && fakes[1].n_held == 2);
  CHECK(strcmp(fakes[0].held[0].first, body[0]) == 0);
  CHECK(strcmp(fakes[1].held[0].first, body[1]) == 0);
  CHECK(strcmp(fakes[0].held[1].first, body[2]) == 0);
  answer(&fakes[1], 1, HK_TX_FAIL); /* send 3 */
  answer(&fakes[1], 0, HK_TX_OK);   /* send 1 */
  CHECK(answers == 0);              /* both wait for send 0 */
  answer(&fakes[0], 0, HK_TX_RETRY); /* send 0: 0 and 1 go */
  CHECK(answers == 2);
  CHECK(s[0].order == 1 && s[0].status == HK_TX_RETRY);
  CHECK(s[1].order == 2 && s[1].status == HK_TX_OK && s[1].n == 2);
  CHECK(strcmp(s[1].reason, "{\"a\":1}/1") == 0);
  answer(&fakes[0], 0, HK_TX_OK); /* send 2, then the waiting 3 */
  CHECK(s[2].order == 3 && s[3].order == 4);
  CHECK(s[3].status == HK_TX_FAIL);
  CHECK(strcmp(s[3].reason, "{\"a\":3}/1") == 0);
done:
  if (p != NULL) p->ops->destroy(p);
  for (int i = 0; i < 2; i++) CHECK(fakes[i].destroyed);
}

/* A connection that refuses a send passes it to the next; when every
 * one refuses, so does the pool; no more than HK_TX_SENDS_MAX sends are
 * in flight. */
static void test_refusals(void) {
  hk_tx_target *p = make_pool(3);
  seen s[HK_TX_SENDS_MAX + 1];
  int taken = 0;

  memset(s, 0, sizeof s);
  REQUIRE(p != NULL);
  fakes[0].refuse = 1;
  CHECK(send_one(p, "{}", 1, &s[0]) == 0);
  CHECK(fakes[0].n_held == 0 && fakes[1].n_held == 1);
  fakes[1].refuse = fakes[2].refuse = 1;
  CHECK(send_one(p, "{}", 1, &s[1]) == -1);
  fakes[0].refuse = fakes[1].refuse = fakes[2].refuse = 0;
  for (int i = 1; i <= HK_TX_SENDS_MAX; i++)
    taken += send_one(p, "{}", 1, &s[i]) == 0;
  CHECK(taken == HK_TX_SENDS_MAX - 1);
  CHECK(answers == 0);
done:
  if (p != NULL) p->ops->destroy(p);
  answer_all(); /* the pool goes with the last answer */
  CHECK(answers == HK_TX_SENDS_MAX);
}

static int resend_left;
static hk_tx_target *resend_pool;
static seen resend_seen[2];

/* A hook's callback that makes its next send from inside the answer. */
static void on_batch_resend(void *ctx, const hk_tx_result *res, size_t n) {
  on_batch(ctx, res, n);
  if (resend_left-- > 0)
    CHECK(send_one(resend_pool, "{\"again\":1}", 1, &resend_seen[1]) == 0);
}

/* A send made inside an answer queues behind those in flight, and a pool
 * destroyed with sends in flight still answers them. */
static void test_send_from_answer_and_destroy(void) {
  hk_tx_target *p = make_pool(2);
  hk_tx_msg m = {"{\"b\":0}", 7, "q", NULL, 0};
  seen first;

  memset(&first, 0, sizeof first);
  memset(resend_seen, 0, sizeof resend_seen);
  REQUIRE(p != NULL);
  resend_pool = p;
  resend_left = 1;
  CHECK(p->ops->send(p, &m, 1, on_batch_resend, &first) == 0);
  CHECK(send_one(p, "{\"b\":1}", 1, &resend_seen[0]) == 0);
  answer(&fakes[1], 0, HK_TX_OK); /* the second, held for the first */
  answer(&fakes[0], 0, HK_TX_OK); /* the first: it sends once more */
  CHECK(first.order == 1 && resend_seen[0].order == 2);
  CHECK(fakes[0].n_held == 1 &&
        strcmp(fakes[0].held[0].first, "{\"again\":1}") == 0);
  p->ops->destroy(p);
  CHECK(fakes[0].destroyed && fakes[1].destroyed);
  answer(&fakes[0], 0, HK_TX_RETRY); /* answered after destroy */
  CHECK(resend_seen[1].order == 3 && resend_seen[1].status == HK_TX_RETRY);
  p = NULL; /* freed with its last answer */
done:
  if (p != NULL) p->ops->destroy(p);
}

int main(void) {
  test_answers_in_order();
  test_refusals();
  test_send_from_answer_and_destroy();
  return test_finish("test_transport_pool");
}
