/*
 * dedupe.c -- the in-memory dedupe set (cp.dedupe.new; see dedupe.h) and
 * the hash that both front ends of the table use. Owns what counts as "the
 * same text" for the set, normalised bytes equal: must not answer
 * DUPLICATE or CONFLICT for bytes it did not compare. Unlike the check
 * (check.c), it keeps a copy of each unique text.
 */
#include "dedupe.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "buf.h"
#include "dtable.h"

uint64_t cp_dedupe_hash(const char *s, size_t len) {
  return XXH3_64bits(s, len);
}

/* ---- in-memory set ---------------------------------------------------------- */

struct cp_dedupe_set {
  cp_norm_mode mode;
  table t;
  cp_buf texts;   /* normalised unique texts, back to back */
  cp_buf names;   /* intent names, back to back */
  size_t *name_at; /* intent id - 1 -> offset in names; one more at the end */
  size_t nnames;
  cp_dedupe_set *name_ids; /* intent name -> id, a set in mode none */
  cp_buf scratch;
  uint64_t mask;
  int failed; /* memory ran out: a text may have gone unstored */
};

cp_dedupe_set *cp_dedupe_set_new(cp_norm_mode mode) {
  cp_dedupe_set *s = cp_calloc(1, sizeof *s);
  if (!s) return NULL;
  s->mode = mode;
  s->mask = ~UINT64_C(0);
  if (cp_dtable_init(&s->t, 10)) {
    free(s);
    return NULL;
  }
  return s;
}

int cp_dedupe_set_failed(const cp_dedupe_set *s) { return s->failed; }

void cp_dedupe_set_free(cp_dedupe_set *s) {
  if (!s) return;
  cp_dtable_free(&s->t);
  cp_buf_free(&s->texts);
  cp_buf_free(&s->names);
  cp_buf_free(&s->scratch);
  free(s->name_at);
  cp_dedupe_set_free(s->name_ids);
  free(s);
}

cp_norm_mode cp_dedupe_set_mode(const cp_dedupe_set *s) { return s->mode; }
size_t cp_dedupe_set_count(const cp_dedupe_set *s) { return s->t.nents; }
void cp_dedupe_set_test_mask(cp_dedupe_set *s, uint64_t mask) { s->mask = mask; }

/* Finds the normalised text p[0..n) with hash h; returns its index or -1,
 * leaving in *empty the slot where it would go. */
static long set_lookup(cp_dedupe_set *s, const char *p, size_t n, uint64_t h,
                       size_t *empty) {
  size_t pos = tab_home(&s->t, h);
  uint32_t idx;
  while (tab_next(&s->t, h, &pos, &idx)) {
    const entry *e = ent(&s->t, idx);
    if (at_len(e->at) == n &&
        memcmp(s->texts.data + at_where(e->at), p, n) == 0)
      return (long)idx;
  }
  *empty = pos;
  return -1;
}

/* Intent names get small ids so that entries compare them as numbers.
 * Memory running out marks s failed (and gives 0). */
static uint32_t intern_intent(cp_dedupe_set *s, const char *name, size_t n) {
  if (!name) return 0;
  if (!s->name_ids) s->name_ids = cp_dedupe_set_new(CP_NORM_NONE);
  if (!s->name_ids) goto nomem;
  if (s->nnames >= INTENT_MAX) return 0; /* beyond 16M names: not told apart */
  cp_dedupe_hit hit;
  uint64_t id = s->nnames + 1;
  size_t *at = cp_reallocarray(s->name_at, s->nnames + 2, sizeof *at);
  if (!at || cp_buf_reserve(&s->names, n)) {
    if (at) s->name_at = at;
    goto nomem;
  }
  s->name_at = at;
  if (cp_dedupe_set_add(s->name_ids, name, n, NULL, 0, id, &hit) !=
      CP_DEDUPE_NEW)
    return (uint32_t)hit.line;
  if (cp_dedupe_set_failed(s->name_ids)) goto nomem;
  s->name_at[s->nnames] = s->names.len;
  cp_buf_add(&s->names, name, n);
  s->nnames++;
  s->name_at[s->nnames] = s->names.len;
  return (uint32_t)id;
nomem:
  s->failed = 1;
  return 0;
}

static void fill_hit(const cp_dedupe_set *s, const entry *e,
                     cp_dedupe_hit *first) {
  uint32_t id = intent_of(e->line);
  first->line = line_of(e->line);
  first->intent = id ? s->names.data + s->name_at[id - 1] : NULL;
  first->intent_len = id ? s->name_at[id] - s->name_at[id - 1] : 0;
}

int cp_dedupe_set_find(cp_dedupe_set *s, const char *text, size_t len,
                       cp_dedupe_hit *first) {
  const char *p;
  size_t n, empty;
  cp_normalize(s->mode, text, len, &s->scratch, &p, &n);
  if (!cp_buf_ok(&s->scratch)) s->failed = 1;
  if (n > CP_DEDUPE_MAX_TEXT || s->failed) return 0;
  long idx = set_lookup(s, p, n, cp_dedupe_hash(p, n) & s->mask, &empty);
  if (idx < 0) return 0;
  fill_hit(s, ent(&s->t, (uint32_t)idx), first);
  return 1;
}

cp_dedupe_result cp_dedupe_set_add(cp_dedupe_set *s, const char *text,
                                   size_t len, const char *intent,
                                   size_t intent_len, uint64_t line,
                                   cp_dedupe_hit *first) {
  const char *p;
  size_t n, empty;
  cp_normalize(s->mode, text, len, &s->scratch, &p, &n);
  if (!cp_buf_ok(&s->scratch)) s->failed = 1;
  if (s->failed || n > CP_DEDUPE_MAX_TEXT || s->texts.len + n > WHERE_MASK) {
    /* Refused by contract (the caller checks the length first). */
    memset(first, 0, sizeof *first);
    return CP_DEDUPE_NEW;
  }
  uint64_t h = cp_dedupe_hash(p, n) & s->mask;
  uint32_t iid = intern_intent(s, intent, intent_len);
  long idx = set_lookup(s, p, n, h, &empty);
  if (idx >= 0) {
    const entry *e = ent(&s->t, (uint32_t)idx);
    fill_hit(s, e, first);
    uint32_t fid = intent_of(e->line);
    return (iid && fid && iid != fid) ? CP_DEDUPE_CONFLICT : CP_DEDUPE_DUPLICATE;
  }
  if (s->failed) { /* intern_intent ran out */
    memset(first, 0, sizeof *first);
    return CP_DEDUPE_NEW;
  }
  entry e = {h, pack_at(s->texts.len, n, CP_TEXT_RAW), pack_line(line, iid)};
  unsigned bits = s->t.bits;
  /* p may point into scratch, which the copy below does not disturb. */
  if (cp_buf_reserve(&s->texts, n) || tab_reserve(&s->t, 1)) {
    s->failed = 1;
    memset(first, 0, sizeof *first);
    return CP_DEDUPE_NEW;
  }
  if (s->t.bits != bits) set_lookup(s, p, n, h, &empty);
  if (tab_insert(&s->t, empty, &e) == NO_ENTRY) {
    s->failed = 1;
    memset(first, 0, sizeof *first);
    return CP_DEDUPE_NEW;
  }
  cp_buf_add(&s->texts, p, n);
  return CP_DEDUPE_NEW;
}
