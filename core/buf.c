/* Growable byte buffer used for JSON output, HTTP bodies and batches. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int hk_buf_reserve(hk_buf *b, size_t extra) {
  size_t need = b->len + extra + 1;
  size_t cap;
  char *p;

  if (need <= b->cap) return 0;
  cap = b->cap ? b->cap : 64;
  while (cap < need) cap *= 2;
  p = realloc(b->data, cap);
  if (p == NULL) return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

int hk_buf_append(hk_buf *b, const void *p, size_t n) {
  if (hk_buf_reserve(b, n) != 0) return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int hk_buf_putc(hk_buf *b, char c) {
  if (b->len + 1 >= b->cap && hk_buf_reserve(b, 1) != 0) return -1;
  b->data[b->len++] = c;
  return 0;
}

int hk_buf_printf(hk_buf *b, const char *fmt, ...) {
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || hk_buf_reserve(b, (size_t)n) != 0) return -1;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

const char *hk_buf_cstr(hk_buf *b) {
  if (hk_buf_reserve(b, 0) != 0) return "";
  b->data[b->len] = '\0';
  return b->data;
}

char *hk_buf_steal(hk_buf *b, size_t *len) {
  char *p = b->data;

  if (len) *len = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return p;
}

void hk_buf_reset(hk_buf *b) { b->len = 0; }

void hk_buf_free(hk_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
