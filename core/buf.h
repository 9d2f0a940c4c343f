/* A growable byte buffer. The buffer owns data; hk_buf_free releases it.
 * Append functions return 0, or -1 when memory runs out (the buffer is then
 * unchanged). data is not NUL-terminated unless hk_buf_cstr is called. */
#ifndef HOOKD_BUF_H
#define HOOKD_BUF_H

#include <stddef.h>

typedef struct hk_buf {
  char *data;
  size_t len;
  size_t cap;
} hk_buf;

#define HK_BUF_INIT {NULL, 0, 0}

int hk_buf_reserve(hk_buf *b, size_t extra);
int hk_buf_append(hk_buf *b, const void *p, size_t n);
int hk_buf_putc(hk_buf *b, char c);
int hk_buf_printf(hk_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Ensures a NUL after the content and returns data ("" when empty). */
const char *hk_buf_cstr(hk_buf *b);
/* Hands the data to the caller (who frees it) and resets the buffer. */
char *hk_buf_steal(hk_buf *b, size_t *len);
void hk_buf_reset(hk_buf *b);
void hk_buf_free(hk_buf *b);

#endif
