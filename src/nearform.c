/*
 * nearform.c -- the near form of a text (nearform.h): casefold, words,
 * contractions written out, digits alike, repeated characters once. Owns
 * the word lists below; writes only to the caller's buffers and never
 * decides whether two texts are similar (minhash.c does).
 */
#include "nearform.h"

#include <stdint.h>
#include <string.h>
#include <utf8proc.h>

#include "normalize.h"
#include "utf8.h"

size_t cp_nearform_next(const char *s, size_t len, uint32_t *cp) {
  if ((unsigned char)s[0] < 0x80) {
    *cp = (unsigned char)s[0];
    return 1;
  }
  cp_utf8_err err;
  size_t k = cp_utf8_decode(s, len, cp, &err);
  if (err) {
    *cp = 0x110000u + (unsigned char)s[0];
    return 1;
  }
  return k;
}

/* Letters, marks and digits; ill-formed bytes too (see cp_nearform_next). */
static int is_word(uint32_t cp) {
  if (cp < 0x80)
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
           (cp >= '0' && cp <= '9');
  if (cp > 0x10FFFF) return 1;
  utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
  return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_NO;
}

static int is_digit(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  if (cp > 0x10FFFF) return 0;
  return utf8proc_category((utf8proc_int32_t)cp) == UTF8PROC_CATEGORY_ND;
}

/* U+0027 and U+2019, the apostrophes people type (the second is what
 * phones put in "don’t"). */
static size_t apostrophe_at(const char *s, size_t len) {
  if (s[0] == '\'') return 1;
  if (len >= 3 && memcmp(s, "\xE2\x80\x99", 3) == 0) return 3;
  return 0;
}

typedef struct span {
  const char *p;
  size_t n;
} span;

static int is(span w, const char *lit) {
  /* the first byte first: most words differ there, and strlen is dear */
  return w.n > 0 && w.p[0] == lit[0] && w.n == strlen(lit) &&
         memcmp(w.p, lit, w.n) == 0;
}

static const char *lookup(span w, const char *const table[][2]) {
  for (size_t i = 0; table[i][0]; i++)
    if (is(w, table[i][0])) return table[i][1];
  return NULL;
}

/* X's = "X is" for these (otherwise 's is a possessive, or "has"). */
static const char *const s_is[][2] = {
    {"what", ""},     {"that", ""},       {"it", ""},        {"there", ""},
    {"where", ""},    {"who", ""},        {"how", ""},       {"here", ""},
    {"he", ""},       {"she", ""},        {"when", ""},      {"why", ""},
    {"which", ""},    {"everything", ""}, {"nothing", ""},   {"someone", ""},
    {"somebody", ""}, {"everyone", ""},   {"everybody", ""}, {NULL, NULL}};

/* X'suffix = "X word" */
static const char *const suffixes[][2] = {{"re", "are"},  {"m", "am"},
                                          {"ve", "have"}, {"ll", "will"},
                                          {"d", "would"}, {NULL, NULL}};

/* Xn't = "X not", but for these X */
static const char *const not_heads[][2] = {{"ca", "can"},
                                           {"wo", "will"},
                                           {"sha", "shall"},
                                           {"ai", "is"},
                                           {NULL, NULL}};

/* Contractions typed without their apostrophe, and the informal ones.
 * Left out on purpose: words of their own ("its", "ill", "were", "well",
 * "id", "lets", "hell", "shell", "wed", "hes", "shes"). */
static const char *const bare[][2] = {{"dont", "do not"},
                                      {"doesnt", "does not"},
                                      {"didnt", "did not"},
                                      {"cant", "can not"},
                                      {"cannot", "can not"},
                                      {"wont", "will not"},
                                      {"isnt", "is not"},
                                      {"arent", "are not"},
                                      {"wasnt", "was not"},
                                      {"werent", "were not"},
                                      {"havent", "have not"},
                                      {"hasnt", "has not"},
                                      {"hadnt", "had not"},
                                      {"wouldnt", "would not"},
                                      {"shouldnt", "should not"},
                                      {"couldnt", "could not"},
                                      {"mustnt", "must not"},
                                      {"neednt", "need not"},
                                      {"whats", "what is"},
                                      {"thats", "that is"},
                                      {"wheres", "where is"},
                                      {"whos", "who is"},
                                      {"hows", "how is"},
                                      {"theres", "there is"},
                                      {"heres", "here is"},
                                      {"im", "i am"},
                                      {"ive", "i have"},
                                      {"youre", "you are"},
                                      {"youve", "you have"},
                                      {"youll", "you will"},
                                      {"youd", "you would"},
                                      {"theyre", "they are"},
                                      {"theyve", "they have"},
                                      {"theyll", "they will"},
                                      {"weve", "we have"},
                                      {"gonna", "going to"},
                                      {"wanna", "want to"},
                                      {"gotta", "got to"},
                                      {NULL, NULL}};

/* Appends one word to out: a space first unless it is the first, every run
 * of digits as one "0", every run of one repeated character once. */
static void emit(cp_buf *out, const char *w, size_t n) {
  if (n == 0) return;
  if (out->len) cp_buf_addc(out, ' ');
  uint32_t prev = UINT32_MAX;
  const uint32_t digit = UINT32_MAX - 1;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    size_t k = cp_nearform_next(w + i, n - i, &cp);
    if (is_digit(cp)) {
      if (prev != digit) cp_buf_addc(out, '0');
      prev = digit;
    } else if (cp != prev) {
      cp_buf_add(out, w + i, k);
      prev = cp;
    }
    i += k;
  }
}

static void emit_words(cp_buf *out, const char *words) {
  const char *sp = strchr(words, ' ');
  if (!sp) {
    emit(out, words, strlen(words));
    return;
  }
  emit(out, words, (size_t)(sp - words));
  emit(out, sp + 1, strlen(sp + 1));
}

/* One token: word characters with apostrophes inside, as segs[0..n). */
static void emit_token(cp_buf *out, const span *segs, size_t n) {
  if (n == 1) {
    const char *full = lookup(segs[0], bare);
    if (full)
      emit_words(out, full);
    else
      emit(out, segs[0].p, segs[0].n);
    return;
  }
  if (n == 2) {
    span head = segs[0], tail = segs[1];
    const char *word;
    if (is(tail, "t") && head.n > 1 && head.p[head.n - 1] == 'n') {
      span h = {head.p, head.n - 1};
      const char *full = lookup(h, not_heads);
      if (full)
        emit_words(out, full);
      else
        emit(out, h.p, h.n);
      emit_words(out, "not");
      return;
    }
    if ((word = lookup(tail, suffixes)) != NULL) {
      emit(out, head.p, head.n);
      emit_words(out, word);
      return;
    }
    if (is(tail, "s") && lookup(head, s_is)) {
      emit(out, head.p, head.n);
      emit_words(out, "is");
      return;
    }
    if (is(tail, "s") && is(head, "let")) {
      emit_words(out, "let us");
      return;
    }
  }
  for (size_t i = 0; i < n; i++)
    emit(out, segs[i].p, segs[i].n);
}

#define MAX_SEGS 8

void cp_nearform(const char *s, size_t len, cp_buf *scratch, cp_buf *out) {
  const char *n;
  size_t nlen;
  cp_normalize(CP_NORM_CASEFOLD, s, len, scratch, &n, &nlen);
  cp_buf_reset(out);
  if (!cp_buf_ok(scratch)) { /* memory ran out: out fails too */
    out->failed = 1;
    return;
  }
  if (cp_buf_reserve(out, nlen + 1)) return;
  for (size_t i = 0; i < nlen;) {
    uint32_t cp;
    size_t k = cp_nearform_next(n + i, nlen - i, &cp);
    if (!is_word(cp)) {
      i += k;
      continue;
    }
    /* a token: runs of word characters joined by single apostrophes (a
     * token of more runs than MAX_SEGS goes on as a new one) */
    span segs[MAX_SEGS];
    size_t nsegs = 0;
    for (;;) {
      size_t from = i;
      while (i < nlen) {
        k = cp_nearform_next(n + i, nlen - i, &cp);
        if (!is_word(cp)) break;
        i += k;
      }
      segs[nsegs++] = (span){n + from, i - from};
      size_t ak = i < nlen ? apostrophe_at(n + i, nlen - i) : 0;
      if (!ak || i + ak >= nlen || nsegs == MAX_SEGS) break;
      cp_nearform_next(n + i + ak, nlen - i - ak, &cp);
      if (!is_word(cp)) break;
      i += ak;
    }
    emit_token(out, segs, nsegs);
  }
}
