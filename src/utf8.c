/*
 * utf8.c -- UTF-8 decoding and character classes (see utf8.h). Owns the
 * SSE2 scan for printable ASCII; must stay free of allocation and of any
 * notion of lines or files.
 */
#include "utf8.h"

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

size_t cp_utf8_decode(const char *s, size_t len, uint32_t *cp,
                      cp_utf8_err *err) {
  const unsigned char *u = (const unsigned char *)s;
  unsigned c = u[0];
  *err = CP_UTF8_OK;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t need;
  uint32_t v;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1, v = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2, v = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3, v = c & 0x07;
  } else {
    /* 0xC0/0xC1 can only start overlong forms; name them so. */
    *err = (c == 0xC0 || c == 0xC1) ? CP_UTF8_OVERLONG : CP_UTF8_BAD_BYTE;
    *cp = c;
    return 1;
  }
  size_t i = 1;
  for (; i <= need; i++) {
    if (i >= len || (u[i] & 0xC0) != 0x80) {
      *err = CP_UTF8_TRUNCATED;
      *cp = c;
      return i;
    }
    /* The second byte already tells overlong, surrogate and too-large
     * forms apart; stopping there gives the maximal ill-formed subpart. */
    if (i == 1) {
      unsigned b = u[1];
      cp_utf8_err e = CP_UTF8_OK;
      if (c == 0xE0 && b < 0xA0) e = CP_UTF8_OVERLONG;
      else if (c == 0xED && b > 0x9F) e = CP_UTF8_SURROGATE;
      else if (c == 0xF0 && b < 0x90) e = CP_UTF8_OVERLONG;
      else if (c == 0xF4 && b > 0x8F) e = CP_UTF8_TOO_LARGE;
      if (e) {
        *err = e;
        *cp = c;
        return 1;
      }
    }
    v = (v << 6) | (u[i] & 0x3Fu);
  }
  *cp = v;
  return need + 1;
}

const char *cp_utf8_err_text(cp_utf8_err err) {
  switch (err) {
  case CP_UTF8_OK: return "valid";
  case CP_UTF8_BAD_BYTE: return "byte that cannot start a character";
  case CP_UTF8_TRUNCATED: return "truncated multi-byte sequence";
  case CP_UTF8_OVERLONG: return "overlong encoding";
  case CP_UTF8_SURROGATE: return "encoded surrogate (U+D800..U+DFFF)";
  case CP_UTF8_TOO_LARGE: return "code point above U+10FFFF";
  }
  return "?";
}

size_t cp_utf8_count(const char *s, size_t len) {
  size_t n = 0, i = 0;
  while (i < len) {
    size_t plain = cp_utf8_plain_prefix(s + i, len - i);
    n += plain;
    i += plain;
    if (i >= len) break;
    uint32_t cp;
    cp_utf8_err err;
    size_t k = cp_utf8_decode(s + i, len - i, &cp, &err);
    /* An ill-formed subpart counts one column per byte. */
    n += err ? k : 1;
    i += k;
  }
  return n;
}

int cp_utf8_valid(const char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    if ((unsigned char)s[i] < 0x80) {
      i++;
      continue;
    }
    uint32_t cp;
    cp_utf8_err err;
    i += cp_utf8_decode(s + i, len - i, &cp, &err);
    if (err) return 0;
  }
  return 1;
}

size_t cp_utf8_encode(uint32_t cp, char out[4]) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

size_t cp_utf8_offset(const char *s, size_t len, size_t n) {
  size_t i = 0;
  while (n && i < len) {
    uint32_t cp;
    cp_utf8_err err;
    i += cp_utf8_decode(s + i, len - i, &cp, &err);
    n--;
  }
  return i < len ? i : len;
}

int cp_utf8_is_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return 0;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int cp_utf8_is_control(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CP_HAVE_AVX2_PATH 1
#include <immintrin.h>

/* 32 bytes a step where the CPU has AVX2 (checked once per call: the
 * check is a load of a flag libgcc filled at start-up). */
__attribute__((target("avx2"))) static size_t plain_prefix_avx2(const char *s,
                                                                size_t len) {
  size_t i = 0;
  const __m256i lo = _mm256_set1_epi8(0x20), del = _mm256_set1_epi8(0x7F);
  for (; i + 32 <= len; i += 32) {
    __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(s + i));
    __m256i bad = _mm256_or_si256(_mm256_cmpgt_epi8(lo, v),
                                  _mm256_cmpeq_epi8(v, del));
    unsigned m = (unsigned)_mm256_movemask_epi8(bad);
    if (m) return i + (size_t)__builtin_ctz(m);
  }
  return i;
}
#endif

size_t cp_utf8_plain_prefix(const char *s, size_t len) {
  size_t i = 0;
#if defined(CP_HAVE_AVX2_PATH)
  if (len >= 32 && __builtin_cpu_supports("avx2")) {
    i = plain_prefix_avx2(s, len);
    if (i + 32 <= len) return i;
  }
#endif
#if defined(__SSE2__)
  /* Signed compare: bytes >= 0x80 are negative, so one "less than 0x20"
   * catches both controls and non-ASCII; DEL is the only other case. */
  const __m128i lo = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7F);
  for (; i + 16 <= len; i += 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
    __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, lo), _mm_cmpeq_epi8(v, del));
    unsigned m = (unsigned)_mm_movemask_epi8(bad);
    if (m) return i + (size_t)__builtin_ctz(m);
  }
#else
  /* Eight bytes at a time: a byte is special when its high bit is set, when
   * it is below 0x20, or when it is 0x7F. */
  const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    uint64_t below = (w - ones * 0x20) & ~w;
    uint64_t del = ((w ^ (ones * 0x7F)) - ones) & ~(w ^ (ones * 0x7F));
    if ((below | del | w) & highs) break;
  }
#endif
  for (; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c >= 0x7F) return i;
  }
  return len;
}
