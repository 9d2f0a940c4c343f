/* UTF-8 sequence validation and sequence-safe cutting (see utf8.h). */
#include "utf8.h"

size_t hk_utf8_seq_len(const unsigned char *p, size_t left) {
  unsigned c = p[0], lo = 0x80, hi = 0xBF;
  size_t n;

  if (c < 0x80) return 1;
  if (c < 0xC2 || c > 0xF4) return 0;
  n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (left < n) return 0;
  if (c == 0xE0) lo = 0xA0;      /* overlong 3-byte forms */
  else if (c == 0xED) hi = 0x9F; /* surrogates U+D800-U+DFFF */
  else if (c == 0xF0) lo = 0x90; /* overlong 4-byte forms */
  else if (c == 0xF4) hi = 0x8F; /* beyond U+10FFFF */
  if (p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  return n;
}

size_t hk_utf8_prefix_len(const char *s, size_t len, size_t max) {
  if (len <= max) return len;
  while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
  return max;
}
