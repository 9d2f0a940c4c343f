/* UTF-8 checks shared by the JSON scanner, the Lua JSON codec, the JSON
 * writer and message snippets: the length of one valid sequence, and where
 * to cut a string without splitting a sequence. */
#ifndef HOOKD_UTF8_H
#define HOOKD_UTF8_H

#include <stddef.h>

/* Length (1-4) of the valid UTF-8 sequence at p, which has left >= 1 bytes;
 * 0 for a stray continuation byte, an overlong form, a surrogate, a code
 * point beyond U+10FFFF or a sequence cut short by left. Hot loops test
 * for ASCII themselves and call this only for bytes >= 0x80. */
size_t hk_utf8_seq_len(const unsigned char *p, size_t left);

/* Bytes of s (len bytes) to keep when cutting it to at most max bytes: len
 * when it fits, else max moved back so no sequence is split. */
size_t hk_utf8_prefix_len(const char *s, size_t len, size_t max);

#endif
