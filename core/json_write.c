/* Writing JSON strings from C with escaping and UTF-8 repair. */
#include "json_write.h"

#include <string.h>

/* Length of the valid UTF-8 sequence at p (1-4), or 0 when invalid. */
static size_t utf8_valid_len(const unsigned char *p, size_t left) {
  unsigned c = p[0];

  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf)
    return left >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (left < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && p[1] < 0xa0) return 0;
    if (c == 0xed && p[1] >= 0xa0) return 0;
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (left < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
        (p[3] & 0xc0) != 0x80)
      return 0;
    if (c == 0xf0 && p[1] < 0x90) return 0;
    if (c == 0xf4 && p[1] >= 0x90) return 0;
    return 4;
  }
  return 0;
}

void hk_json_write_string(hk_buf *out, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;

  hk_buf_putc(out, '"');
  while (i < len) {
    unsigned char c = p[i];
    size_t n;

    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      hk_buf_append(out, esc, 2);
      i++;
    } else if (c < 0x20) {
      char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      hk_buf_append(out, esc, 6);
      i++;
    } else if ((n = utf8_valid_len(p + i, len - i)) == 0) {
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
