/*
 * normalize.c -- the normalisation modes of DESIGN §5 (see normalize.h).
 * Pure-ASCII text takes byte loops that write nothing for trim and at most
 * one copy otherwise; only other text goes through utf8proc. Never decides
 * validity and never allocates beyond the caller's scratch buffer (and
 * utf8proc's own result, freed before returning).
 */
#include "normalize.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "utf8.h"

int cp_norm_mode_parse(const char *name, cp_norm_mode *mode) {
  static const char *const names[] = {"none", "trim", "collapse", "casefold"};
  for (int i = 0; i < 4; i++)
    if (strcmp(name, names[i]) == 0) {
      *mode = (cp_norm_mode)i;
      return 0;
    }
  return -1;
}

const char *cp_norm_mode_name(cp_norm_mode mode) {
  switch (mode) {
  case CP_NORM_NONE: return "none";
  case CP_NORM_TRIM: return "trim";
  case CP_NORM_COLLAPSE: return "collapse";
  case CP_NORM_CASEFOLD: return "casefold";
  }
  return "?";
}

/* Decodes one code point for white-space tests; ill-formed bytes come back
 * as a value that is never white space. */
static size_t next_cp(const char *s, size_t len, uint32_t *cp) {
  cp_utf8_err err;
  size_t k = cp_utf8_decode(s, len, cp, &err);
  if (err) *cp = 0xFFFFFFFFu;
  return k;
}

/* Length of the white-space character ending at s[end-1], or 0. */
static size_t space_before(const char *s, size_t start, size_t end) {
  unsigned char c = (unsigned char)s[end - 1];
  if (c < 0x80) return cp_utf8_is_space(c) ? 1 : 0;
  size_t b = end - 1;
  while (b > start && end - b < 4 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
  uint32_t cp;
  size_t k = next_cp(s + b, end - b, &cp);
  return (b + k == end && cp_utf8_is_space(cp)) ? k : 0;
}

void cp_trim_span(const char *s, size_t len, size_t *start, size_t *end) {
  size_t a = 0, b = len;
  while (a < b) {
    unsigned char c = (unsigned char)s[a];
    if (c == ' ') {
      a++;
      continue;
    }
    if (c < 0x80 && c > ' ') break;
    uint32_t cp;
    size_t k = next_cp(s + a, b - a, &cp);
    if (!cp_utf8_is_space(cp)) break;
    a += k;
  }
  while (b > a) {
    size_t k = space_before(s, a, b);
    if (!k) break;
    b -= k;
  }
  *start = a;
  *end = b;
}

int cp_is_blank(const char *s, size_t len) {
  size_t a, b;
  cp_trim_span(s, len, &a, &b);
  return a == b;
}

/* Trim + inner runs of white space to one space, from src into dst (which
 * has room for len bytes: the result is never longer). Lower-cases ASCII
 * letters when fold is set. Returns the length written. */
static size_t collapse_into(const char *s, size_t len, char *dst, int fold) {
  size_t i = 0, n = 0;
  int pending = 0; /* a space to write before the next non-space */
  while (i < len) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) {
      if (c == ' ' || (c >= 0x09 && c <= 0x0D)) {
        pending = n > 0;
        i++;
        continue;
      }
      if (pending) dst[n++] = ' ', pending = 0;
      dst[n++] = (char)(fold && c >= 'A' && c <= 'Z' ? c + 32 : c);
      i++;
      continue;
    }
    uint32_t cp;
    size_t k = next_cp(s + i, len - i, &cp);
    if (cp_utf8_is_space(cp)) {
      pending = n > 0;
    } else {
      if (pending) dst[n++] = ' ', pending = 0;
      memcpy(dst + n, s + i, k);
      n += k;
    }
    i += k;
  }
  return n;
}

/* 1 when s (printable ASCII, trimmed) has no run of two spaces: collapse
 * is then a plain trim. */
static int single_spaced(const char *s, size_t len) {
  size_t i = 0;
#if defined(__SSE2__)
  const __m128i sp = _mm_set1_epi8(' ');
  for (; i + 17 <= len; i += 16) {
    __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
    __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + i + 1));
    __m128i both = _mm_and_si128(_mm_cmpeq_epi8(a, sp), _mm_cmpeq_epi8(b, sp));
    if (_mm_movemask_epi8(both)) return 0;
  }
#endif
  for (; i + 1 < len; i++)
    if (s[i] == ' ' && s[i + 1] == ' ') return 0;
  return 1;
}

/* Copies s lower-casing ASCII letters; the result has the same length. */
static void ascii_lower(const char *s, size_t len, char *dst) {
  size_t i = 0;
#if defined(__SSE2__)
  /* Signed compares: 'A'-1 < c < 'Z'+1 picks the capitals, which get 0x20. */
  const __m128i lo = _mm_set1_epi8('A' - 1), hi = _mm_set1_epi8('Z' + 1);
  const __m128i bit = _mm_set1_epi8(0x20);
  for (; i + 16 <= len; i += 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
    __m128i up = _mm_and_si128(_mm_cmpgt_epi8(v, lo), _mm_cmplt_epi8(v, hi));
    _mm_storeu_si128((__m128i *)(void *)(dst + i),
                     _mm_or_si128(v, _mm_and_si128(up, bit)));
  }
#endif
  for (; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    dst[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
}

static int plain_single_spaced(const char *s, size_t len) {
  return cp_utf8_plain_prefix(s, len) == len && single_spaced(s, len);
}

static int ascii_only(const char *s, size_t len) {
  size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= len; i += 16)
    if (_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(const void *)(s + i))))
      return 0;
#endif
  for (; i < len; i++)
    if ((unsigned char)s[i] >= 0x80) return 0;
  return 1;
}

/* Empties scratch and makes room for n bytes and a NUL; -1 (scratch
 * failed) when memory runs out. */
static int room(cp_buf *scratch, size_t n) {
  cp_buf_reset(scratch);
  return cp_buf_reserve(scratch, n + 1);
}

static void fold_utf8proc(const char *s, size_t len, cp_buf *scratch,
                          int collapse) {
  utf8proc_uint8_t *mapped = NULL;
  utf8proc_ssize_t n = utf8proc_map(
      (const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &mapped,
      (utf8proc_option_t)(UTF8PROC_COMPOSE | UTF8PROC_COMPAT |
                          UTF8PROC_CASEFOLD | UTF8PROC_STABLE));
  cp_buf_reset(scratch);
  if (n == UTF8PROC_ERROR_NOMEM) { /* not ill-formed: no result at all */
    free(mapped);
    cp_alloc_note_failure();
    scratch->failed = 1;
    return;
  }
  if (n < 0) {
    /* Ill-formed input: keep the bytes, fold what is ASCII. */
    free(mapped);
    if (room(scratch, len)) return;
    if (collapse) {
      scratch->len = collapse_into(s, len, scratch->data, 1);
    } else {
      for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        scratch->data[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
      }
      scratch->len = len;
    }
  } else if (collapse) {
    if (room(scratch, (size_t)n)) {
      free(mapped);
      return;
    }
    scratch->len = collapse_into((const char *)mapped, (size_t)n,
                                 scratch->data, 0);
    free(mapped);
  } else {
    cp_buf_add(scratch, mapped, (size_t)n);
    free(mapped);
    if (!cp_buf_ok(scratch)) return;
  }
  scratch->data[scratch->len] = '\0';
}

/* The result of a normalisation written to scratch; empty when it failed. */
static void result(cp_buf *scratch, const char **out, size_t *out_len) {
  *out = cp_buf_ok(scratch) && scratch->data ? scratch->data : "";
  *out_len = cp_buf_ok(scratch) ? scratch->len : 0;
}

void cp_casefold(const char *s, size_t len, cp_buf *scratch,
                 const char **out, size_t *out_len) {
  if (cp_utf8_plain_prefix(s, len) == len) {
    if (room(scratch, len) == 0) {
      ascii_lower(s, len, scratch->data);
      scratch->len = len;
      scratch->data[len] = '\0';
    }
  } else {
    fold_utf8proc(s, len, scratch, 0);
  }
  result(scratch, out, out_len);
}

/* 1 when printable ASCII s is already case-folded and collapsed: no
 * upper-case letter and no two spaces in a row; one pass for both. */
static int plain_folded(const char *s, size_t len) {
  size_t i = 0;
#if defined(__SSE2__)
  /* Printable ASCII is below 0x80, so signed compares order it. */
  const __m128i sp = _mm_set1_epi8(' '), lo = _mm_set1_epi8('A' - 1),
                hi = _mm_set1_epi8('Z' + 1);
  for (; i + 17 <= len; i += 16) {
    __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
    __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + i + 1));
    __m128i runs = _mm_and_si128(_mm_cmpeq_epi8(a, sp), _mm_cmpeq_epi8(b, sp));
    __m128i upper = _mm_and_si128(_mm_cmpgt_epi8(a, lo), _mm_cmplt_epi8(a, hi));
    if (_mm_movemask_epi8(_mm_or_si128(runs, upper))) return 0;
  }
#endif
  for (; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((unsigned)(c - 'A') < 26u) return 0;
    if (c == ' ' && i + 1 < len && s[i + 1] == ' ') return 0;
  }
  return 1;
}

void cp_normalize_plain(cp_norm_mode mode, const char *s, size_t len,
                        cp_buf *scratch, const char **out, size_t *out_len) {
  /* Printable ASCII has one white-space character: the space. */
  size_t a = 0, b = len;
  if (mode == CP_NORM_NONE) {
    *out = s;
    *out_len = len;
    return;
  }
  while (a < b && s[a] == ' ') a++;
  while (b > a && s[b - 1] == ' ') b--;
  if (mode == CP_NORM_TRIM ||
      (mode == CP_NORM_CASEFOLD ? plain_folded : single_spaced)(s + a, b - a)) {
    *out = s + a; /* nothing to change: the text is its own normal form */
    *out_len = b - a;
    return;
  }
  int single = mode == CP_NORM_CASEFOLD && single_spaced(s + a, b - a);
  if (room(scratch, len) == 0) {
    if (single) {
      ascii_lower(s + a, b - a, scratch->data);
      scratch->len = b - a;
    } else {
      scratch->len = collapse_into(s + a, b - a, scratch->data,
                                   mode == CP_NORM_CASEFOLD);
    }
    scratch->data[scratch->len] = '\0';
  }
  result(scratch, out, out_len);
}

void cp_normalize(cp_norm_mode mode, const char *s, size_t len,
                  cp_buf *scratch, const char **out, size_t *out_len) {
  size_t a, b;
  switch (mode) {
  case CP_NORM_NONE:
    *out = s;
    *out_len = len;
    return;
  case CP_NORM_TRIM:
    cp_trim_span(s, len, &a, &b);
    *out = s + a;
    *out_len = b - a;
    return;
  case CP_NORM_COLLAPSE:
    cp_trim_span(s, len, &a, &b);
    if (plain_single_spaced(s + a, b - a)) {
      *out = s + a;
      *out_len = b - a;
      return;
    }
    if (room(scratch, len) == 0) {
      scratch->len = collapse_into(s, len, scratch->data, 0);
      scratch->data[scratch->len] = '\0';
    }
    break;
  case CP_NORM_CASEFOLD:
    if (cp_utf8_plain_prefix(s, len) == len) {
      cp_normalize_plain(mode, s, len, scratch, out, out_len);
      return;
    }
    if (ascii_only(s, len)) {
      /* Tabs and other ASCII controls: NFKC leaves ASCII alone, so folding
       * is lower-casing and the rest is collapsing. */
      if (room(scratch, len) == 0) {
        scratch->len = collapse_into(s, len, scratch->data, 1);
        scratch->data[scratch->len] = '\0';
      }
    } else {
      fold_utf8proc(s, len, scratch, 1);
    }
    break;
  }
  result(scratch, out, out_len);
}
