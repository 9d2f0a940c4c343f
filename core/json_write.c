/* Writing JSON strings from C with escaping and UTF-8 repair. */
#include "json_write.h"

#include <string.h>
#include <time.h>

#include "utf8.h"

void hk_json_write_string(hk_buf *out, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;

  hk_buf_putc(out, '"');
  while (i < len) {
    unsigned char c = p[i];
    size_t n = c < 0x80 ? 1 : hk_utf8_seq_len(p + i, len - i);

    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      hk_buf_append(out, esc, 2);
      i++;
    } else if (c < 0x20) {
      char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      hk_buf_append(out, esc, 6);
      i++;
    } else if (n == 0) {
      hk_buf_append(out, "\xef\xbf\xbd", 3);
      i++;
    } else {
      hk_buf_append(out, p + i, n);
      i += n;
    }
  }
  hk_buf_putc(out, '"');
}

void hk_json_write_cstr(hk_buf *out, const char *s) {
  if (s == NULL)
    hk_buf_append(out, "null", 4);
  else
    hk_json_write_string(out, s, strlen(s));
}

void hk_json_write_time(hk_buf *out, double t, int millis) {
  time_t sec = (time_t)t;
  struct tm tm;

  if (t <= 0) {
    hk_buf_append(out, "null", 4);
    return;
  }
  gmtime_r(&sec, &tm);
  hk_buf_printf(out, "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (millis) hk_buf_printf(out, ".%03d", (int)((t - (double)sec) * 1000));
  hk_buf_append(out, "Z\"", 2);
}
