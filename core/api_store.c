/* The API endpoints backed by the store: dead letters (list, send again,
 * delete), message content, profiles and the catalog of names. A write is
 * answered only once the store has committed it. */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "json_write.h"
#include "log.h"
#include "utf8.h"

#define KEY_MAX 256

/* A request waiting for its store batch. */
typedef struct store_call {
  hk_api *api;
  hk_http_request *req;
  size_t op;          /* the operation whose result answers the request */
  size_t count;       /* items written */
  char key[2][KEY_MAX];
  char *text;         /* a JSON value to echo back, or NULL */
} store_call;

typedef void (*answer_fn)(store_call *call, hk_store_batch *b);

typedef struct call_with_answer {
  store_call call;
  answer_fn answer;
  const char *what;
} call_with_answer;

static void call_done(hk_store_batch *b, int ok, void *ctx) {
  call_with_answer *c = ctx;

  if (ok)
    c->answer(&c->call, b);
  else
    hk_api_store_refused(c->call.req, b, c->what);
  free(c->call.text);
  free(c);
}

/* Submits b, which must be complete: the writer thread may take it at
 * once. answer runs once it is committed, on the loop thread, so the
 * caller may still fill in the returned call's fields. */
static store_call *submit(hk_api *api, hk_http_request *req,
                          hk_store_batch *b, answer_fn answer,
                          const char *what) {
  call_with_answer *c = calloc(1, sizeof *c);

  if (c == NULL) abort();
  c->call.api = api;
  c->call.req = req;
  c->answer = answer;
  c->what = what;
  hk_store_submit(api->store, b, call_done, c);
  return &c->call;
}

static void answer_text(hk_http_request *req, int status, const char *text) {
  hk_http_respond(req, status, NULL, NULL, text, strlen(text));
}

/* Splits the path after prefix into up to n segments (each at most
 * KEY_MAX-1 bytes). Returns the number of segments, -1 when there are
 * more or an empty one, or TOO_LONG. */
#define TOO_LONG (-2)
static int path_segments(const char *path, const char *prefix,
                         char seg[][KEY_MAX], int n) {
  const char *p = path + strlen(prefix);
  int count = 0;

  if (*p == '\0') return 0;
  while (*p == '/') {
    const char *end = strchr(p + 1, '/');
    size_t len = end ? (size_t)(end - p - 1) : strlen(p + 1);

    if (count == n || len == 0) return -1;
    if (len >= KEY_MAX) return TOO_LONG;
    memcpy(seg[count], p + 1, len);
    seg[count++][len] = '\0';
    p += len + 1;
  }
  return *p == '\0' ? count : -1;
}

/* Nonzero when every segment is valid UTF-8: ids are JSON strings in
 * events, so any other bytes would name a record no event can reach. */
static int segments_utf8(char seg[][KEY_MAX], int n) {
  for (int i = 0; i < n; i++) {
    const unsigned char *p = (const unsigned char *)seg[i];
    size_t left = strlen(seg[i]), step;

    for (; left > 0; p += step, left -= step) {
      step = *p < 0x80 ? 1 : hk_utf8_seq_len(p, left);
      if (step == 0) return 0;
    }
  }
  return 1;
}

/* ---- dead letters ---- */

static void list_dead_letters(hk_api *api, hk_http_request *req) {
  char hook[KEY_MAX], after[32], limit[32];
  hk_buf b = HK_BUF_INIT;
  long lim = 100, from = 0;
  int has_hook = hk_api_query(req->query, "hook", hook, sizeof hook) == 0;

  if (hk_api_query(req->query, "limit", limit, sizeof limit) == 0 &&
      ((lim = hk_api_parse_count(limit)) < 1 || lim > 1000)) {
    hk_api_error(req, 400, "limit must be an integer from 1 to 1000", -1);
    return;
  }
  if (hk_api_query(req->query, "after", after, sizeof after) == 0 &&
      (from = hk_api_parse_count(after)) < 0) {
    hk_api_error(req, 400, "after must be a cursor from \"next\"", -1);
    return;
  }
  if (hk_store_dead_letters_render(api->store, &b, has_hook ? hook : NULL,
                                   from, (int)lim) != 0)
    hk_api_error(req, 503, "the store cannot be read now", -1);
  else
    hk_api_json(req, 200, &b);
  hk_buf_free(&b);
}

static void answer_resent(store_call *call, hk_store_batch *b) {
  long n = (long)hk_store_batch_result(b, call->op);
  char text[64];

  if (n == 0 && call->key[0][0] == '\0') {
    hk_api_error(call->req, 404, "no such dead letter", -1);
    return;
  }
  hk_router_resent(call->api->router, call->key[1], n);
  hk_info("api", "dead_letters_resent=%ld hook=%s", n, call->key[1]);
  snprintf(text, sizeof text, "{\"resent\":%ld}", n);
  answer_text(call->req, 200, text);
}

static void answer_forgotten(store_call *call, hk_store_batch *b) {
  if (hk_store_batch_result(b, call->op) == 0)
    hk_api_error(call->req, 404, "no such dead letter", -1);
  else
    answer_text(call->req, 200, "{\"deleted\":1}");
}

/* POST /v1/dead-letters/retry?hook=ID: every letter of the hook. */
static void resend_hook(hk_api *api, hk_http_request *req) {
  char hook[KEY_MAX];
  hk_store_batch *b;
  store_call *call;
  size_t op;

  if (hk_api_query(req->query, "hook", hook, sizeof hook) != 0 || !hook[0]) {
    hk_api_error(req, 400, "hook=ID is required", -1);
    return;
  }
  if (!hk_router_has_hook(api->router, hook)) {
    hk_api_error(req, 409, "that hook is not loaded: its letters would "
                 "have nowhere to go", -1);
    return;
  }
  b = hk_store_batch_new();
  op = hk_store_add_resend(b, -1, hook);
  call = submit(api, req, b, answer_resent, "dead letters");
  call->op = op;
  snprintf(call->key[0], KEY_MAX, "all");
  snprintf(call->key[1], KEY_MAX, "%s", hook);
}

/* POST /v1/dead-letters/{id}/retry and DELETE /v1/dead-letters/{id}. */
static void one_letter(hk_api *api, hk_http_request *req, const char *id_text,
                       int resend) {
  long id = hk_api_parse_count(id_text);
  char hook[KEY_MAX];
  hk_store_batch *b;
  store_call *call;
  size_t op;
  int is_event = 0;

  if (id < 0 || hk_store_dead_letter_hook(api->store, id, hook, sizeof hook,
                                          &is_event) != 0) {
    hk_api_error(req, 404, "no such dead letter", -1);
    return;
  }
  if (resend && is_event) {
    hk_api_error(req, 409, "this letter is an event the hook's code failed "
                 "on, not a message: fix the hook, then post the event "
                 "again or export its day", -1);
    return;
  }
  if (resend && !hk_router_has_hook(api->router, hook)) {
    hk_api_error(req, 409, "that hook is not loaded: the letter would have "
                 "nowhere to go", -1);
    return;
  }
  b = hk_store_batch_new();
  op = resend ? hk_store_add_resend(b, id, NULL) : hk_store_add_forget(b, id);
  call = submit(api, req, b, resend ? answer_resent : answer_forgotten,
                "dead letter change");
  call->op = op;
  snprintf(call->key[1], KEY_MAX, "%s", hook); /* key[0] "": one letter */
}

void hk_api_dead_letters(hk_api *api, hk_http_request *req) {
  char seg[2][KEY_MAX];
  int n = path_segments(req->path, "/v1/dead-letters", seg, 2);
  int get = req->method == HTTP_GET, post = req->method == HTTP_POST;

  if (n == 0 && get)
    list_dead_letters(api, req);
  else if (n == 1 && post && strcmp(seg[0], "retry") == 0)
    resend_hook(api, req);
  else if (n == 2 && post && strcmp(seg[1], "retry") == 0)
    one_letter(api, req, seg[0], 1);
  else if (n == 1 && req->method == HTTP_DELETE)
    one_letter(api, req, seg[0], 0);
  else if (n == 0)
    hk_api_not_allowed(req, "GET, HEAD");
  else if (n == 1 && strcmp(seg[0], "retry") == 0)
    hk_api_not_allowed(req, "POST");
  else if (n == 1)
    hk_api_not_allowed(req, "DELETE");
  else if (n == 2 && strcmp(seg[1], "retry") == 0)
    hk_api_not_allowed(req, "POST");
  else
    hk_api_error(req, 404, "no such endpoint", -1);
}

/* ---- content ---- */

static void answer_stored(store_call *call, hk_store_batch *b) {
  char text[64];

  (void)b;
  snprintf(text, sizeof text, "{\"stored\":%zu}", call->count);
  answer_text(call->req, 200, text);
}

/* POST /v1/content: {"send_message_id", "content"} or a list of them. */
void hk_api_content(hk_api *api, hk_http_request *req) {
  const char *args[1] = {req->body};
  size_t lens[1] = {req->body_len};
  hk_strlist items;
  hk_store_batch *b;
  char err[512];

  if (strcmp(req->path, "/v1/content") != 0) {
    hk_api_error(req, 404, "no such endpoint", -1);
    return;
  }
  if (req->method != HTTP_POST) {
    hk_api_not_allowed(req, "POST");
    return;
  }
  if (hk_bridge_call_strings(api->bridge, "check_content", 1, args, lens,
                             &items, err, sizeof err) != 0) {
    hk_api_error(req, 400, err, items.index);
    return;
  }
  b = hk_store_batch_new();
  for (size_t i = 0; i + 1 < items.n; i += 2)
    hk_store_add_content(b, items.s[i], items.s[i + 1], items.len[i + 1]);
  submit(api, req, b, answer_stored, "content")->count = items.n / 2;
  hk_strlist_free(&items);
}

/* ---- profiles ---- */

static void render_profile(hk_buf *out, const char *list_id,
                           const char *profile_id, const char *fields,
                           size_t len) {
  hk_buf_printf(out, "{\"list_id\":%s,\"profile_id\":", list_id);
  hk_json_write_cstr(out, profile_id);
  hk_buf_append(out, ",\"fields\":", 10);
  hk_buf_append(out, fields, len);
  hk_buf_putc(out, '}');
}

static void answer_profile_put(store_call *call, hk_store_batch *b) {
  hk_buf out = HK_BUF_INIT;

  (void)b;
  render_profile(&out, call->key[0], call->key[1], call->text,
                 strlen(call->text));
  hk_api_json(call->req, 200, &out);
  hk_buf_free(&out);
}

static void answer_profile_deleted(store_call *call, hk_store_batch *b) {
  if (hk_store_batch_result(b, call->op) == 0)
    hk_api_error(call->req, 404, "no such profile", -1);
  else
    answer_text(call->req, 200, "{\"deleted\":1}");
}

static void get_profile(hk_api *api, hk_http_request *req,
                        char seg[][KEY_MAX]) {
  hk_buf out = HK_BUF_INIT;
  size_t len;
  char *fields = hk_store_profile_get(api->store, seg[0], seg[1], &len);

  if (fields == NULL) {
    hk_api_error(req, 404, "no such profile", -1);
    return;
  }
  render_profile(&out, seg[0], seg[1], fields, len);
  hk_api_json(req, 200, &out);
  hk_buf_free(&out);
  free(fields);
}

static void put_profile(hk_api *api, hk_http_request *req,
                        char seg[][KEY_MAX]) {
  const char *args[1] = {req->body};
  size_t lens[1] = {req->body_len};
  hk_strlist fields;
  hk_store_batch *b;
  store_call *call;
  char err[512];

  if (hk_bridge_call_strings(api->bridge, "check_profile", 1, args, lens,
                             &fields, err, sizeof err) != 0) {
    hk_api_error(req, 400, err, -1);
    return;
  }
  b = hk_store_batch_new();
  hk_store_add_profile(b, HK_PROFILE_PUT, seg[0], seg[1], fields.s[0],
                       fields.len[0]);
  call = submit(api, req, b, answer_profile_put, "profile");
  memcpy(call->key, seg, sizeof call->key);
  call->text = fields.s[0];
  fields.s[0] = NULL;
  hk_strlist_free(&fields);
}

/* The list id is a decimal integer (leading zeros dropped). */
static int canonical_list_id(char *s) {
  size_t i = 0, n = strlen(s);

  if (n == 0 || n > 19 || strspn(s, "0123456789") != n) return -1;
  while (s[i] == '0' && i + 1 < n) i++;
  memmove(s, s + i, n - i + 1);
  return n - i == 19 && strcmp(s, "9223372036854775807") > 0 ? -1 : 0;
}

void hk_api_profiles(hk_api *api, hk_http_request *req) {
  char seg[2][KEY_MAX];
  int n = path_segments(req->path, "/v1/profiles", seg, 2);
  hk_store_batch *b;
  size_t op;

  if (n == TOO_LONG) {
    hk_api_error(req, 400, "ids in the path are at most 255 bytes", -1);
  } else if (n != 2) {
    hk_api_error(req, 404, "use /v1/profiles/{list_id}/{profile_id}", -1);
  } else if (!segments_utf8(seg, n)) {
    hk_api_error(req, 400, "profile_id must be valid UTF-8", -1);
  } else if (canonical_list_id(seg[0]) != 0) {
    hk_api_error(req, 400, "list_id must be a non-negative integer", -1);
  } else if (req->method == HTTP_GET) {
    get_profile(api, req, seg);
  } else if (req->method == HTTP_PUT) {
    put_profile(api, req, seg);
  } else if (req->method == HTTP_DELETE) {
    b = hk_store_batch_new();
    op = hk_store_add_profile(b, HK_PROFILE_DELETE, seg[0], seg[1], NULL, 0);
    submit(api, req, b, answer_profile_deleted, "profile deletion")->op = op;
  } else {
    hk_api_not_allowed(req, "GET, HEAD, PUT, DELETE");
  }
}

/* ---- catalog ---- */

static void answer_catalog_put(store_call *call, hk_store_batch *b) {
  const char *args[3] = {call->key[0], call->key[1], call->text};
  size_t lens[3] = {strlen(args[0]), strlen(args[1]), strlen(args[2])};
  hk_buf out = HK_BUF_INIT;
  hk_strlist none;
  char err[512];

  (void)b;
  if (hk_bridge_call_strings(call->api->bridge, "set_catalog_entry", 3, args,
                             lens, &none, err, sizeof err) != 0)
    hk_error("api", "catalog=%s/%s stored=1 applied=0 error=\"%s\"",
             call->key[0], call->key[1], err);
  else
    hk_strlist_free(&none);
  hk_buf_append(&out, "{\"kind\":", 8);
  hk_json_write_cstr(&out, call->key[0]);
  hk_buf_printf(&out, ",\"id\":\"%s\",\"entry\":%s}", call->key[1],
                call->text);
  hk_api_json(call->req, 200, &out);
  hk_buf_free(&out);
}

static void answer_catalog_deleted(store_call *call, hk_store_batch *b) {
  if (hk_store_batch_result(b, call->op) == 0) {
    hk_api_error(call->req, 404, "no such catalog entry", -1);
    return;
  }
  answer_catalog_put(call, b);
}

/* PUT sets an entry; DELETE removes it (its answer shows "entry": null). */
static void put_catalog(hk_api *api, hk_http_request *req,
                        char seg[][KEY_MAX]) {
  int del = req->method == HTTP_DELETE;
  const char *args[3] = {seg[0], seg[1], req->body};
  size_t lens[3] = {strlen(seg[0]), strlen(seg[1]), req->body_len};
  size_t op;
  hk_strlist entry;
  hk_store_batch *b;
  store_call *call;
  char err[512];

  if (hk_bridge_call_strings(api->bridge, del ? "check_catalog_key"
                                             : "check_catalog_entry",
                             del ? 2 : 3, args, lens, &entry, err,
                             sizeof err) != 0) {
    hk_api_error(req, 400, err, -1);
    return;
  }
  b = hk_store_batch_new();
  op = del ? hk_store_add_catalog_delete(b, seg[0], entry.s[0])
           : hk_store_add_catalog(b, seg[0], entry.s[0], entry.s[1],
                                  entry.len[1], 0);
  call = submit(api, req, b, del ? answer_catalog_deleted : answer_catalog_put,
                "catalog entry");
  call->op = op;
  snprintf(call->key[0], KEY_MAX, "%s", seg[0]);
  snprintf(call->key[1], KEY_MAX, "%s", entry.s[0]);
  call->text = del ? strdup("null") : entry.s[1];
  if (!del) entry.s[1] = NULL;
  hk_strlist_free(&entry);
}

void hk_api_catalog(hk_api *api, hk_http_request *req) {
  char seg[2][KEY_MAX];
  int n = path_segments(req->path, "/v1/catalog", seg, 2);
  hk_buf out = HK_BUF_INIT;

  if (n == TOO_LONG) {
    hk_api_error(req, 400, "ids in the path are at most 255 bytes", -1);
  } else if (n == 0 && req->method == HTTP_GET) {
    if (hk_store_catalog_render(api->store, &out) == 0)
      hk_api_json(req, 200, &out);
    else
      hk_api_error(req, 503, "the store cannot be read now", -1);
    hk_buf_free(&out);
  } else if (n == 2 &&
             (req->method == HTTP_PUT || req->method == HTTP_DELETE)) {
    put_catalog(api, req, seg);
  } else if (n == 0) {
    hk_api_not_allowed(req, "GET, HEAD");
  } else if (n == 2) {
    hk_api_not_allowed(req, "PUT, DELETE");
  } else {
    hk_api_error(req, 404, "use /v1/catalog/{kind}/{id}", -1);
  }
}
