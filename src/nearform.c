/*
 * nearform.c -- the near form of a text (nearform.h): casefold, words,
 * contractions written out, digits alike, repeated characters once. Owns
 * the word lists below; writes only to the caller's buffers and never
 * decides whether two texts are similar (minhash.c does).
 */
#include "nearform.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <utf8proc.h>

#include "normalize.h"
#include "utf8.h"

size_t cp_nearform_next_utf8(const char *s, size_t len, uint32_t *cp) {
  cp_utf8_err err;
  size_t k = cp_utf8_decode(s, len, cp, &err);
  if (err) {
    *cp = 0x110000u + (unsigned char)s[0];
    return 1;
  }
  return k;
}

static int is_word_beyond_ascii(uint32_t cp) {
  if (cp > 0x10FFFF) return 1;
  utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
  return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_NO;
}

/* Letters, marks and digits; ill-formed bytes too (see cp_nearform_next). */
static inline int is_word(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) - 'a' < 26u || cp - '0' < 10u;
  return is_word_beyond_ascii(cp);
}

static inline int is_digit(uint32_t cp) {
  if (cp < 0x80) return cp - '0' < 10u;
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

/* A word and what it stands for, its length beside it: the tables are
 * read for every word of every text, most of which are in none of them. */
typedef struct entry {
  const char *word;
  size_t n;
  const char *full;
} entry;

#define E(word, full)                                                          \
  { word, sizeof word - 1, full }

static int is(span w, const char *lit, size_t n) {
  return w.n == n && w.p[0] == lit[0] && memcmp(w.p, lit, n) == 0;
}

#define IS(w, lit) is(w, lit, sizeof lit - 1)

/* A table's entries chained by their first byte (entry number + 1; 0
 * ends a chain), so that a word meets only the few that begin as it does:
 * built once, read from any thread. */
#define MAX_ENTRIES 64
typedef struct table {
  const entry *e;
  uint8_t head[256];
  uint8_t next[MAX_ENTRIES];
} table;

static const char *lookup(span w, const table *t) {
  if (w.n == 0) return NULL;
  for (unsigned k = t->head[(unsigned char)w.p[0]]; k; k = t->next[k - 1])
    if (is(w, t->e[k - 1].word, t->e[k - 1].n)) return t->e[k - 1].full;
  return NULL;
}

static void chain(table *t) {
  size_t n = 0;
  while (t->e[n].word)
    n++;
  for (size_t i = n; i-- > 0;) {
    unsigned char c = (unsigned char)t->e[i].word[0];
    t->next[i] = t->head[c];
    t->head[c] = (uint8_t)(i + 1);
  }
}

/* X's = "X is" for these (otherwise 's is a possessive, or "has"). */
static const entry s_is[] = {
    E("what", ""),      E("that", ""),       E("it", ""),
    E("there", ""),     E("where", ""),      E("who", ""),
    E("how", ""),       E("here", ""),       E("he", ""),
    E("she", ""),       E("when", ""),       E("why", ""),
    E("which", ""),     E("everything", ""), E("nothing", ""),
    E("someone", ""),   E("somebody", ""),   E("everyone", ""),
    E("everybody", ""), {NULL, 0, NULL}};

/* X'suffix = "X word" */
static const entry suffixes[] = {E("re", "are"),  E("m", "am"),
                                 E("ve", "have"), E("ll", "will"),
                                 E("d", "would"), {NULL, 0, NULL}};

/* Xn't = "X not", but for these X */
static const entry not_heads[] = {E("ca", "can"),
                                  E("wo", "will"),
                                  E("sha", "shall"),
                                  E("ai", "is"),
                                  {NULL, 0, NULL}};

/* Contractions typed without their apostrophe, and the informal ones.
 * Left out on purpose: words of their own ("its", "ill", "were", "well",
 * "id", "lets", "hell", "shell", "wed", "hes", "shes"). */
static const entry bare[] = {E("dont", "do not"),
                             E("doesnt", "does not"),
                             E("didnt", "did not"),
                             E("cant", "can not"),
                             E("cannot", "can not"),
                             E("wont", "will not"),
                             E("isnt", "is not"),
                             E("arent", "are not"),
                             E("wasnt", "was not"),
                             E("werent", "were not"),
                             E("havent", "have not"),
                             E("hasnt", "has not"),
                             E("hadnt", "had not"),
                             E("wouldnt", "would not"),
                             E("shouldnt", "should not"),
                             E("couldnt", "could not"),
                             E("mustnt", "must not"),
                             E("neednt", "need not"),
                             E("whats", "what is"),
                             E("thats", "that is"),
                             E("wheres", "where is"),
                             E("whos", "who is"),
                             E("hows", "how is"),
                             E("theres", "there is"),
                             E("heres", "here is"),
                             E("im", "i am"),
                             E("ive", "i have"),
                             E("youre", "you are"),
                             E("youve", "you have"),
                             E("youll", "you will"),
                             E("youd", "you would"),
                             E("theyre", "they are"),
                             E("theyve", "they have"),
                             E("theyll", "they will"),
                             E("weve", "we have"),
                             E("gonna", "going to"),
                             E("wanna", "want to"),
                             E("gotta", "got to"),
                             {NULL, 0, NULL}};

#define ENTRIES(a) (sizeof a / sizeof *a - 1)
_Static_assert(ENTRIES(s_is) <= MAX_ENTRIES &&
                   ENTRIES(suffixes) <= MAX_ENTRIES &&
                   ENTRIES(not_heads) <= MAX_ENTRIES &&
                   ENTRIES(bare) <= MAX_ENTRIES,
               "a table has more entries than its chains can number");

static table t_s_is = {s_is, {0}, {0}}, t_suffixes = {suffixes, {0}, {0}},
             t_not_heads = {not_heads, {0}, {0}}, t_bare = {bare, {0}, {0}};
static pthread_once_t chained = PTHREAD_ONCE_INIT;

static void chain_all(void) {
  chain(&t_s_is);
  chain(&t_suffixes);
  chain(&t_not_heads);
  chain(&t_bare);
}

/* Where the form is written: room for all of it is made first (see
 * cp_nearform), so that a character costs a store, not a call. */
typedef struct sink {
  char *start, *at;
} sink;

/* Appends one word: a space first unless it is the first, every run of
 * digits as one "0", every run of one repeated character once. */
static void emit(sink *o, const char *w, size_t n) {
  if (n == 0) return;
  if (o->at != o->start) *o->at++ = ' ';
  uint32_t prev = UINT32_MAX;
  const uint32_t digit = UINT32_MAX - 1;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    size_t k = cp_nearform_next(w + i, n - i, &cp);
    if (is_digit(cp)) {
      if (prev != digit) *o->at++ = '0';
      prev = digit;
    } else if (cp != prev) {
      memcpy(o->at, w + i, k);
      o->at += k;
      prev = cp;
    }
    i += k;
  }
}

/* One word, or two with a space between. */
static void emit_words(sink *o, const char *words) {
  const char *sp = strchr(words, ' ');
  if (!sp) {
    emit(o, words, strlen(words));
    return;
  }
  emit(o, words, (size_t)(sp - words));
  emit(o, sp + 1, strlen(sp + 1));
}

/* One token: word characters with apostrophes inside, as segs[0..n). */
static void emit_token(sink *o, const span *segs, size_t n) {
  if (n == 1) {
    const char *full = lookup(segs[0], &t_bare);
    if (full)
      emit_words(o, full);
    else
      emit(o, segs[0].p, segs[0].n);
    return;
  }
  if (n == 2) {
    span head = segs[0], tail = segs[1];
    const char *word;
    if (IS(tail, "t") && head.n > 1 && head.p[head.n - 1] == 'n') {
      span h = {head.p, head.n - 1};
      const char *full = lookup(h, &t_not_heads);
      if (full)
        emit_words(o, full);
      else
        emit(o, h.p, h.n);
      emit_words(o, "not");
      return;
    }
    if ((word = lookup(tail, &t_suffixes)) != NULL) {
      emit(o, head.p, head.n);
      emit_words(o, word);
      return;
    }
    if (IS(tail, "s") && lookup(head, &t_s_is)) {
      emit(o, head.p, head.n);
      emit_words(o, "is");
      return;
    }
    if (IS(tail, "s") && IS(head, "let")) {
      emit_words(o, "let us");
      return;
    }
  }
  for (size_t i = 0; i < n; i++)
    emit(o, segs[i].p, segs[i].n);
}

#define MAX_SEGS 8

void cp_nearform(const char *s, size_t len, cp_buf *scratch, cp_buf *out) {
  const char *n;
  size_t nlen;
  pthread_once(&chained, chain_all);
  cp_normalize(CP_NORM_CASEFOLD, s, len, scratch, &n, &nlen);
  cp_buf_reset(out);
  if (!cp_buf_ok(scratch)) { /* memory ran out: out fails too */
    out->failed = 1;
    return;
  }
  /* A word grows at most to three times its bytes with the space before
   * it ("i'd" is "i would"), and words are apart in the text by at least
   * one byte: 3 * nlen bounds the form, and its terminating NUL fits. */
  if (nlen > SIZE_MAX / 3 || cp_buf_reserve(out, 3 * nlen)) {
    out->failed = 1;
    return;
  }
  sink o = {out->data, out->data};
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
    emit_token(&o, segs, nsegs);
  }
  out->len = (size_t)(o.at - o.start);
  out->data[out->len] = '\0';
}
