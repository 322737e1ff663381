/*
 * utf8.h -- UTF-8 decoding and the character classes the validators and
 * normalisers share (white space, control characters), plus a fast scan for
 * runs of printable ASCII. Pure functions over byte spans: no allocation, no
 * knowledge of lines, files or normalisation modes.
 */
#ifndef CP_UTF8_H
#define CP_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Why a byte sequence is not UTF-8 (RFC 3629). */
typedef enum cp_utf8_err {
  CP_UTF8_OK = 0,
  CP_UTF8_BAD_BYTE,     /* 0x80..0xBF without a lead, or 0xC0, 0xC1, 0xF5..0xFF */
  CP_UTF8_TRUNCATED,    /* a lead byte not followed by enough continuations */
  CP_UTF8_OVERLONG,     /* a longer encoding than needed */
  CP_UTF8_SURROGATE,    /* U+D800..U+DFFF */
  CP_UTF8_TOO_LARGE     /* above U+10FFFF */
} cp_utf8_err;

/* Decodes the code point at s[0..len) (len > 0). Returns the bytes consumed
 * (1..4) and sets *cp, or on error sets *err, *cp to the first byte, and
 * returns the length of the maximal ill-formed subpart (at least 1), the
 * amount a decoder skips per Unicode's "U+FFFD substitution" practice. */
size_t cp_utf8_decode(const char *s, size_t len, uint32_t *cp,
                      cp_utf8_err *err);
const char *cp_utf8_err_text(cp_utf8_err err);

/* Code points in s; each byte of an ill-formed sequence counts as one, so a
 * column computed with it still points at a visible position. */
size_t cp_utf8_count(const char *s, size_t len);
/* 1 when s is entirely well-formed UTF-8. */
int cp_utf8_valid(const char *s, size_t len);
/* Writes cp (<= U+10FFFF, not a surrogate) as UTF-8; returns 1..4. */
size_t cp_utf8_encode(uint32_t cp, char out[4]);
/* Byte offset of the n-th code point (0-based), or len when s is shorter. */
size_t cp_utf8_offset(const char *s, size_t len, size_t n);

/* Unicode White_Space property (tab, LF, VT, FF, CR, space, NEL, NBSP,
 * U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000). */
int cp_utf8_is_space(uint32_t cp);
/* C0 controls, DEL and C1 controls (the caller decides about tab). */
int cp_utf8_is_control(uint32_t cp);

/* Length of the longest prefix of s made only of printable ASCII
 * (0x20..0x7E). Vectorised: this is the hot loop of `cogpipe check`, which
 * takes the slow, decoding path only for the bytes after it. */
size_t cp_utf8_plain_prefix(const char *s, size_t len);

#endif
