/*
 * minhash.c -- the near-duplicate index of minhash.h: shingle forms and
 * sets, MinHash signatures, LSH band tables and the exact Jaccard check.
 * Owns all of its memory; never calls into Lua and never reports a pair it
 * has not verified on the shingle sets themselves.
 *
 * Layout: every added text is an item; items with the same shingle form
 * share one form (u below), which owns the sorted set of its shingle codes.
 * Adding a text only normalises it and looks its form up; shingling,
 * signing and banding of new forms happen in bulk, on every thread, at the
 * next query or find ("flush"): each chunk of forms is shingled into a
 * block of its own, which holds their sets from then on, and its band
 * entries are written straight into their places. A band table is an
 * array of (band key << 32 | form) sorted by value, with an unsorted tail
 * of recent forms that is merged by a radix sort once it grows past an
 * eighth of the table.
 */
#include "minhash.h"
#include "clones.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "buf.h"
#include "nearform.h"
#include "parallel.h"
#include "utf8.h"

#define RECALL_AT_THRESHOLD 0.98
#define FLUSH_CHUNK 1024  /* forms shingled and signed per parallel chunk */
#define VERIFY_CHUNK 2048 /* forms verified per parallel chunk */
#define PREFETCH 16       /* candidates whose sets are fetched ahead */
#define AHEAD 2           /* forms whose band entries are fetched ahead */
#define NO_ID UINT32_MAX
/* seeds the hash of a word feature, so that a word and a shingle of the
 * same characters are different features */
#define WORD_SEED 0x776f7264756e6974ULL

/* Per-thread buffers for shingling and signing one form at a time. */
typedef struct scratch {
  uint32_t *cps; /* the padded form's code points */
  size_t cps_cap;
  uint32_t *codes; /* shingle codes (see shingle_codes) */
  uint64_t *vals;  /* values of rare shingles the dictionary lacks */
  uint32_t *h;     /* hashes entering the permutations */
  size_t cap;      /* of codes, vals and h */
  uint32_t *sig;   /* o.perms */
  uint32_t *bkeys; /* o.bands: the band keys of sig */
} scratch;

/* A form's set: its codes (see shingle_codes), in a block of the index. */
typedef struct set {
  const uint32_t *codes;
  size_t n;
} set;

struct cp_minhash {
  cp_minhash_opts o;
  uint32_t *perm_keys; /* o.perms */

  /* items */
  size_t n_items, cap_items;
  uint32_t *item_form;
  size_t *text_off; /* n_items + 1 offsets into texts */
  cp_buf texts;

  /* forms; sets and band entries exist for [0, n_signed) */
  size_t n_forms, cap_forms;
  uint32_t *form_item; /* its first item */
  uint64_t *form_hash; /* of the shingle form's bytes */
  size_t *form_off;    /* n_forms + 1 offsets into forms */
  cp_buf forms;
  set *sets;         /* each form's shingle codes, sorted */
  uint32_t **blocks; /* where the codes are: one block a flushed chunk */
  size_t n_blocks, cap_blocks;
  size_t n_signed;

  /* forms by hash (open addressing, form + 1; 0 is empty) */
  uint32_t *exact;
  size_t exact_cap;

  /* rare shingles: value -> id (open addressing, id + 1; 0 is empty) */
  uint64_t *dict_key;
  uint32_t *dict_slot;
  size_t dict_cap;
  uint64_t *shingle_val; /* by id */
  size_t n_shingles, val_cap;

  /* LSH */
  uint64_t **band;    /* o.bands arrays */
  size_t band_n;      /* entries in each band array */
  size_t band_sorted; /* entries [0, band_sorted) are sorted */
  size_t band_cap;

  /* the caller's thread: one text at a time */
  cp_buf norm, form;
  scratch scr;

  /* memory ran out (on any thread): the index is unusable for good */
  atomic_int failed;
};

static void fail(cp_minhash *m) { atomic_store(&m->failed, 1); }
int cp_minhash_failed(const cp_minhash *m) {
  return atomic_load(&((cp_minhash *)m)->failed);
}

/* ---- hashing ------------------------------------------------------------ */

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/* The 32-bit value a shingle enters the permutations as. */
static uint32_t shingle_hash(uint64_t val, uint64_t seed) {
  return (uint32_t)mix64(val ^ seed ^ 0x9e3779b97f4a7c15ULL);
}

/* One MinHash permutation: xor with its key, one odd multiplication and
 * a shift back down, a bijection on 32 bits. The inputs are already
 * well-mixed hashes (shingle_hash), so one round orders a set as randomly
 * as murmur3's two-round fmix32 did, at half the multiplications. */
static inline uint32_t perm32(uint32_t x, uint32_t key) {
  x ^= key;
  x *= 0x9e3779b1U;
  x ^= x >> 15;
  return x;
}

/* The hot loop: signing is most of the index's time, and this form
 * vectorises over the permutations. Builds that can, pick a wider version
 * at load time. */
#define SIGN_BLOCK 64 /* permutations whose minima stay in registers */

CP_CLONES
static void sign_hashes(const uint32_t *h, size_t n, const uint32_t *keys,
                        int perms, uint32_t *sig) {
  for (int p0 = 0; p0 < perms; p0 += SIGN_BLOCK) {
    int w = perms - p0 < SIGN_BLOCK ? perms - p0 : SIGN_BLOCK;
    uint32_t acc[SIGN_BLOCK], key[SIGN_BLOCK];
    for (int p = 0; p < SIGN_BLOCK; p++) {
      acc[p] = UINT32_MAX;
      key[p] = p < w ? keys[p0 + p] : 0;
    }
    for (size_t i = 0; i < n; i++) {
      uint32_t x = h[i];
      for (int p = 0; p < SIGN_BLOCK; p++) {
        uint32_t v = perm32(x, key[p]);
        acc[p] = v < acc[p] ? v : acc[p];
      }
    }
    memcpy(sig + p0, acc, (size_t)w * sizeof *acc);
  }
}

static void band_keys(const cp_minhash_opts *o, const uint32_t *sig,
                      uint32_t *keys) {
  for (int b = 0; b < o->bands; b++) {
    uint64_t h = XXH3_64bits_withSeed(sig + (size_t)b * (size_t)o->rows,
                                      (size_t)o->rows * sizeof *sig,
                                      o->seed + (uint64_t)b);
    keys[b] = (uint32_t)(h ^ (h >> 32));
  }
}

/* ---- options ------------------------------------------------------------ */

void cp_minhash_opts_default(cp_minhash_opts *o) {
  memset(o, 0, sizeof *o);
  o->threshold = CP_MINHASH_DEFAULT_THRESHOLD;
  o->shingle = 3;
  o->perms = 256;
  o->words = 1;
}

/* P(at least m of n independent events of probability p). */
static double at_least(int n, double p, int m) {
  if (m <= 0) return 1.0;
  if (p >= 1.0) return 1.0;
  if (p <= 0.0) return 0.0;
  /* 1 - P(fewer than m), the binomial terms built one from the other */
  double term = pow(1.0 - p, n), below = 0.0;
  for (int k = 0; k < m && k <= n; k++) {
    below += term;
    term *= (double)(n - k) / (double)(k + 1) * p / (1.0 - p);
  }
  return below >= 1.0 ? 0.0 : 1.0 - below;
}

double cp_minhash_candidate_prob(const cp_minhash_opts *o, double j) {
  return at_least(o->bands, pow(j, o->rows),
                  o->min_bands > 0 ? o->min_bands : 1);
}

const char *cp_minhash_opts_check(cp_minhash_opts *o) {
  if (!(o->threshold > 0.0 && o->threshold <= 1.0))
    return "threshold must be in (0, 1]";
  if (o->shingle < 1 || o->shingle > 32) return "shingle must be 1..32";
  if (o->perms < 1 || o->perms > 1024) return "perms must be 1..1024";
  if (o->bands < 0 || o->rows < 0) return "bands and rows must be positive";
  if (o->threads < 0) return "threads must be >= 0";
  if (o->words != 0 && o->words != 1) return "words must be 0 or 1";
  if (o->min_bands < 0) return "min_bands must be positive";
  if (o->bands && o->rows) {
    if (o->bands * o->rows > o->perms) return "bands x rows exceeds perms";
  } else if (o->bands) {
    if (o->bands > o->perms) return "bands exceeds perms";
    o->rows = o->perms / o->bands;
  } else if (o->rows) {
    if (o->rows > o->perms) return "rows exceeds perms";
    o->bands = o->perms / o->rows;
  } else {
    o->rows = 1;
    o->bands = o->perms;
    for (int r = 2; r <= o->perms; r++) {
      cp_minhash_opts t = *o;
      t.rows = r;
      t.bands = o->perms / r;
      t.min_bands = 1;
      if (cp_minhash_candidate_prob(&t, o->threshold) < RECALL_AT_THRESHOLD)
        break;
      o->rows = t.rows;
      o->bands = t.bands;
    }
  }
  if (o->min_bands > o->bands) return "min_bands exceeds bands";
  if (o->min_bands == 0) {
    o->min_bands = 1;
    while (o->min_bands < o->bands) {
      cp_minhash_opts t = *o;
      t.min_bands = o->min_bands + 1;
      if (cp_minhash_candidate_prob(&t, o->threshold) < RECALL_AT_THRESHOLD)
        break;
      o->min_bands = t.min_bands;
    }
  }
  return NULL;
}

/* ---- growth ------------------------------------------------------------- */

/* 0, or -1 when out of memory (*p and *cap as they were). */
static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 64;
  while (n < need)
    n *= 2;
  void *q = cp_reallocarray(*p, n, elem);
  if (!q) return -1;
  *p = q;
  *cap = n;
  return 0;
}

/* 0, or -1 when out of memory (each array that grew is kept). */
static int scratch_reserve(scratch *s, size_t n) {
  if (n <= s->cap) return 0;
  size_t cap = s->cap ? s->cap : 64;
  while (cap < n)
    cap *= 2;
  uint32_t *codes = cp_reallocarray(s->codes, cap, sizeof *codes);
  if (!codes) return -1;
  s->codes = codes;
  uint64_t *vals = cp_reallocarray(s->vals, cap, sizeof *vals);
  if (!vals) return -1;
  s->vals = vals;
  uint32_t *h = cp_reallocarray(s->h, cap, sizeof *h);
  if (!h) return -1;
  s->h = h;
  s->cap = cap;
  return 0;
}

static void scratch_free(scratch *s) {
  free(s->cps);
  free(s->codes);
  free(s->vals);
  free(s->h);
  free(s->sig);
  free(s->bkeys);
}

/* ---- creation ----------------------------------------------------------- */

cp_minhash *cp_minhash_new(const cp_minhash_opts *o) {
  cp_minhash *m = cp_calloc(1, sizeof *m);
  if (!m) return NULL;
  m->o = *o;
  atomic_init(&m->failed, 0);
  if (m->o.threads == 0) m->o.threads = cp_parallel_threads();
  m->perm_keys = cp_reallocarray(NULL, (size_t)o->perms, sizeof *m->perm_keys);
  m->text_off = cp_calloc(1, sizeof *m->text_off);
  m->form_off = cp_calloc(1, sizeof *m->form_off);
  m->band = cp_calloc((size_t)o->bands, sizeof *m->band);
  m->scr.sig = cp_reallocarray(NULL, (size_t)o->perms, sizeof *m->scr.sig);
  if (!m->perm_keys || !m->text_off || !m->form_off || !m->band ||
      !m->scr.sig) {
    cp_minhash_free(m);
    return NULL;
  }
  uint64_t s = o->seed;
  for (int p = 0; p < o->perms; p++) {
    s += 0x9e3779b97f4a7c15ULL;
    m->perm_keys[p] = (uint32_t)(mix64(s) >> 32);
  }
  return m;
}

void cp_minhash_free(cp_minhash *m) {
  if (!m) return;
  free(m->perm_keys);
  free(m->item_form);
  free(m->text_off);
  cp_buf_free(&m->texts);
  free(m->form_item);
  free(m->form_hash);
  free(m->form_off);
  cp_buf_free(&m->forms);
  free(m->sets);
  for (size_t i = 0; i < m->n_blocks; i++)
    free(m->blocks[i]);
  free(m->blocks);
  free(m->exact);
  free(m->dict_key);
  free(m->dict_slot);
  free(m->shingle_val);
  for (int b = 0; m->band && b < m->o.bands; b++)
    free(m->band[b]);
  free(m->band);
  cp_buf_free(&m->norm);
  cp_buf_free(&m->form);
  scratch_free(&m->scr);
  free(m);
}

const cp_minhash_opts *cp_minhash_options(const cp_minhash *m) { return &m->o; }
size_t cp_minhash_count(const cp_minhash *m) { return m->n_items; }
size_t cp_minhash_distinct(const cp_minhash *m) { return m->n_forms; }

const char *cp_minhash_text(const cp_minhash *m, uint32_t item, size_t *len) {
  *len = m->text_off[item + 1] - m->text_off[item];
  return m->texts.data + m->text_off[item];
}

/* ---- shingling ---------------------------------------------------------- */

/* Builds m->form, the near form of s (nearform.h), which is the shingle
 * form without its padding; an empty one, with m failed, when memory runs
 * out. */
static void make_form(cp_minhash *m, const char *s, size_t len) {
  cp_nearform(s, len, &m->norm, &m->form);
  if (!cp_buf_ok(&m->form)) {
    fail(m);
    cp_buf_reset(&m->form);
  }
}

/* Sorts for the short arrays of one text's shingles (tens of values), where
 * qsort's indirect comparisons cost more than the shingling itself:
 * quicksort down to small ranges, then insertion sort. One definition,
 * made for each element type (as klib's ksort does). */
#define SMALL_SORT 24

#define DEFINE_SORT(name, T)                                                   \
  static void name(T *a, size_t n) {                                           \
    while (n > SMALL_SORT) {                                                   \
      T x = a[0], y = a[n / 2], z = a[n - 1];                                  \
      T piv = x < y ? (y < z ? y : (x < z ? z : x))                            \
                    : (x < z ? x : (y < z ? z : y));                           \
      size_t i = 0, j = n - 1;                                                 \
      for (;;) {                                                               \
        while (a[i] < piv)                                                     \
          i++;                                                                 \
        while (a[j] > piv)                                                     \
          j--;                                                                 \
        if (i >= j) break;                                                     \
        T t = a[i];                                                            \
        a[i++] = a[j];                                                         \
        a[j--] = t;                                                            \
      }                                                                        \
      /* recurse into the smaller side, loop on the larger */                  \
      if (j + 1 < n - j - 1) {                                                 \
        name(a, j + 1);                                                        \
        a += j + 1;                                                            \
        n -= j + 1;                                                            \
      } else {                                                                 \
        name(a + j + 1, n - j - 1);                                            \
        n = j + 1;                                                             \
      }                                                                        \
    }                                                                          \
    for (size_t i = 1; i < n; i++) {                                           \
      T v = a[i];                                                              \
      size_t k = i;                                                            \
      while (k > 0 && a[k - 1] > v) {                                          \
        a[k] = a[k - 1];                                                       \
        k--;                                                                   \
      }                                                                        \
      a[k] = v;                                                                \
    }                                                                          \
  }

DEFINE_SORT(sort_u64, uint64_t)
DEFINE_SORT(sort_u32, uint32_t)

/* Shingles are kept as 32-bit codes. A shingle of up to 3 code points
 * below U+03FF (Latin, Greek, digits, punctuation) packs exactly into 30
 * bits, 10 a code point (plus one, so that shorter shingles differ). Any
 * other shingle is "rare": it has a 64-bit value (21 bits a code point, or
 * XXH3 of its bytes when longer than 3 code points) and its code, with the
 * top bit set, is its id in the dictionary. Either way, equal codes mean
 * equal shingles. */
#define RARE 0x80000000u

/* The id of rare shingle value v, or NO_ID. Read-only: safe from every
 * thread while no insert runs. */
static uint32_t dict_find(const cp_minhash *m, uint64_t v) {
  if (!m->dict_cap) return NO_ID;
  size_t mask = m->dict_cap - 1, j = mix64(v) & mask;
  while (m->dict_slot[j]) {
    if (m->dict_key[j] == v) return m->dict_slot[j] - 1;
    j = (j + 1) & mask;
  }
  return NO_ID;
}

/* 0, or -1 when out of memory (the dictionary as it was). */
static int dict_grow(cp_minhash *m) {
  size_t ncap = m->dict_cap ? m->dict_cap * 2 : 1024;
  uint64_t *keys = cp_reallocarray(NULL, ncap, sizeof *keys);
  uint32_t *slots = cp_calloc(ncap, sizeof *slots);
  if (!keys || !slots) {
    free(keys);
    free(slots);
    return -1;
  }
  for (size_t i = 0; i < m->dict_cap; i++) {
    if (!m->dict_slot[i]) continue;
    size_t j = mix64(m->dict_key[i]) & (ncap - 1);
    while (slots[j])
      j = (j + 1) & (ncap - 1);
    keys[j] = m->dict_key[i];
    slots[j] = m->dict_slot[i];
  }
  free(m->dict_key);
  free(m->dict_slot);
  m->dict_key = keys;
  m->dict_slot = slots;
  m->dict_cap = ncap;
  return 0;
}

/* The id of v, entering it when new (the caller's thread only). NO_ID once
 * 2^31 distinct rare shingles are known, or when memory runs out (m is
 * failed then). */
static uint32_t dict_insert(cp_minhash *m, uint64_t v) {
  uint32_t id = dict_find(m, v);
  if (id != NO_ID) return id;
  if (m->n_shingles >= RARE - 1) return NO_ID;
  if (((m->n_shingles + 1) * 2 > m->dict_cap && dict_grow(m)) ||
      grow((void **)&m->shingle_val, &m->val_cap, m->n_shingles + 1,
           sizeof *m->shingle_val)) {
    fail(m);
    return NO_ID;
  }
  size_t mask = m->dict_cap - 1, j = mix64(v) & mask;
  while (m->dict_slot[j])
    j = (j + 1) & mask;
  id = (uint32_t)m->n_shingles++;
  m->dict_key[j] = v;
  m->dict_slot[j] = id + 1;
  m->shingle_val[id] = v;
  return id;
}

/* The 32-bit value a shingle enters the permutations as: the same for a
 * rare shingle whether it is known by its code or only by its value. */
static uint32_t code_hash(const cp_minhash *m, uint32_t code) {
  if (code & RARE) return shingle_hash(m->shingle_val[code & ~RARE], m->o.seed);
  return shingle_hash(code, m->o.seed);
}

/* Shingles the form f[0..flen). Fills s->codes[0..n) with the sorted
 * distinct codes of the shingles that have one and returns n; rare
 * shingles missing from the dictionary go, sorted and distinct, to
 * s->vals[0..*n_rare). Reads the index only (but marks it failed, and
 * returns nothing, when its scratch cannot grow). */
static size_t shingle_codes(cp_minhash *m, scratch *s, const char *f,
                            size_t flen, size_t *n_rare) {
  *n_rare = 0;
  if (flen == 0) return 0;
  /* padded code points: ' ' form ' ' */
  if (grow((void **)&s->cps, &s->cps_cap, flen + 2, sizeof *s->cps)) {
    fail(m);
    return 0;
  }
  size_t n = 0;
  s->cps[n++] = ' ';
  for (size_t i = 0; i < flen;) {
    uint32_t cp;
    i += cp_nearform_next(f + i, flen - i, &cp);
    s->cps[n++] = cp;
  }
  s->cps[n++] = ' ';
  size_t k = (size_t)m->o.shingle;
  size_t windows = n >= k ? n - k + 1 : 1;
  size_t width = n >= k ? k : n;
  size_t words = 0;
  if (m->o.words) {
    words = 1;
    for (size_t i = 0; i < flen; i++)
      words += f[i] == ' ';
  }
  if (scratch_reserve(s, windows + words)) {
    fail(m);
    return 0;
  }
  size_t nc = 0, nr = 0;
  char bytes[32 * 4];
  for (size_t w = 0; w < windows; w++) {
    const uint32_t *c = s->cps + w;
    if (width <= 3) {
      uint32_t small = 0;
      int fits = 1;
      for (size_t j = 0; j < width; j++) {
        if (c[j] >= 0x3FF) fits = 0;
        small |= (c[j] + 1) << (10 * j);
      }
      if (fits) {
        s->codes[nc++] = small;
        continue;
      }
    }
    uint64_t v = 0;
    if (width <= 3) {
      for (size_t j = 0; j < width; j++)
        v |= (uint64_t)(c[j] + 1) << (21 * j);
    } else {
      size_t bl = 0;
      for (size_t j = 0; j < width; j++) {
        if (c[j] > 0x10FFFF)
          bytes[bl++] = (char)(c[j] - 0x110000u);
        else
          bl += cp_utf8_encode(c[j], bytes + bl);
      }
      v = XXH3_64bits_withSeed(bytes, bl, m->o.seed);
    }
    uint32_t id = dict_find(m, v);
    if (id != NO_ID)
      s->codes[nc++] = RARE | id;
    else
      s->vals[nr++] = v;
  }
  /* each word of the form is a feature too, a rare one by its hash: a
   * moved clause or an inserted word then still leaves most of them */
  for (size_t a = 0; words && a < flen;) {
    size_t b = a;
    while (b < flen && f[b] != ' ')
      b++;
    uint64_t v = XXH3_64bits_withSeed(f + a, b - a, m->o.seed ^ WORD_SEED);
    uint32_t id = dict_find(m, v);
    if (id != NO_ID)
      s->codes[nc++] = RARE | id;
    else
      s->vals[nr++] = v;
    a = b + 1;
  }
  sort_u32(s->codes, nc);
  size_t u = 0;
  for (size_t i = 0; i < nc; i++)
    if (u == 0 || s->codes[u - 1] != s->codes[i]) s->codes[u++] = s->codes[i];
  if (nr) {
    sort_u64(s->vals, nr);
    size_t d = 0;
    for (size_t i = 0; i < nr; i++)
      if (d == 0 || s->vals[d - 1] != s->vals[i]) s->vals[d++] = s->vals[i];
    *n_rare = d;
  }
  return u;
}

/* MinHash signature of the shingles in s (codes[0..nc), vals[0..nr)) into
 * s->sig, and its band keys into keys. */
static void sign_scratch(const cp_minhash *m, scratch *s, size_t nc, size_t nr,
                         uint32_t *keys) {
  for (size_t i = 0; i < nc; i++)
    s->h[i] = code_hash(m, s->codes[i]);
  for (size_t i = 0; i < nr; i++)
    s->h[nc + i] = shingle_hash(s->vals[i], m->o.seed);
  sign_hashes(s->h, nc + nr, m->perm_keys, m->o.perms, s->sig);
  band_keys(&m->o, s->sig, keys);
}

/* ---- forms by hash --------------------------------------------------------
 */

/* 0, or -1 when out of memory (the table as it was). */
static int exact_grow(cp_minhash *m) {
  size_t ncap = m->exact_cap ? m->exact_cap * 2 : 1024;
  uint32_t *t = cp_calloc(ncap, sizeof *t);
  if (!t) return -1;
  for (size_t i = 0; i < m->exact_cap; i++) {
    uint32_t u = m->exact[i];
    if (!u) continue;
    size_t j = m->form_hash[u - 1] & (ncap - 1);
    while (t[j])
      j = (j + 1) & (ncap - 1);
    t[j] = u;
  }
  free(m->exact);
  m->exact = t;
  m->exact_cap = ncap;
  return 0;
}

/* The form equal to m->form, or NO_ID; *slot is where a new one goes. */
static uint32_t exact_find(cp_minhash *m, uint64_t h, size_t *slot) {
  size_t mask = m->exact_cap - 1, j = h & mask;
  while (m->exact[j]) {
    uint32_t u = m->exact[j] - 1;
    size_t len = m->form_off[u + 1] - m->form_off[u];
    if (m->form_hash[u] == h && len == m->form.len &&
        memcmp(m->forms.data + m->form_off[u], m->form.data, len) == 0)
      return u;
    j = (j + 1) & mask;
  }
  *slot = j;
  return NO_ID;
}

/* ---- adding ---------------------------------------------------------------
 */

/* Room for one more form and for m->form's bytes: 0, or -1 when out of
 * memory (arrays that grew are kept; they are only larger). */
static int form_room(cp_minhash *m) {
  if (m->n_forms + 1 > m->cap_forms) {
    size_t cap = m->cap_forms;
    if (grow((void **)&m->form_item, &cap, m->n_forms + 1,
             sizeof *m->form_item))
      return -1;
    uint64_t *fh = cp_reallocarray(m->form_hash, cap, sizeof *fh);
    if (!fh) return -1;
    m->form_hash = fh;
    size_t *fo = cp_reallocarray(m->form_off, cap + 1, sizeof *fo);
    if (!fo) return -1;
    m->form_off = fo;
    set *sets = cp_reallocarray(m->sets, cap, sizeof *sets);
    if (!sets) return -1;
    m->sets = sets;
    m->cap_forms = cap;
  }
  return cp_buf_reserve(&m->forms, m->form.len);
}

/* After form_room: cannot fail. */
static uint32_t new_form(cp_minhash *m, uint64_t h, uint32_t item) {
  uint32_t u = (uint32_t)m->n_forms++;
  m->form_item[u] = item;
  m->form_hash[u] = h;
  cp_buf_add(&m->forms, m->form.data ? m->form.data : "", m->form.len);
  m->form_off[u + 1] = m->forms.len;
  return u;
}

uint32_t cp_minhash_add(cp_minhash *m, const char *text, size_t len,
                        uint32_t *same_as) {
  if (same_as) *same_as = CP_MINHASH_NONE;
  if (cp_minhash_failed(m)) return CP_MINHASH_NONE;
  uint32_t item = (uint32_t)m->n_items;
  /* everything that can run out of memory first, so that an item is added
   * whole or not at all */
  if (m->n_items + 1 > m->cap_items) {
    size_t cap = m->cap_items;
    if (grow((void **)&m->item_form, &cap, m->n_items + 1,
             sizeof *m->item_form))
      goto nomem;
    size_t *to = cp_reallocarray(m->text_off, cap + 1, sizeof *to);
    if (!to) goto nomem;
    m->text_off = to;
    m->cap_items = cap;
  }
  if (cp_buf_reserve(&m->texts, len)) goto nomem;
  make_form(m, text, len);
  if (cp_minhash_failed(m) || form_room(m) ||
      (m->form.len && (m->n_forms + 1) * 2 > m->exact_cap && exact_grow(m)))
    goto nomem;

  cp_buf_add(&m->texts, text, len);
  m->text_off[item + 1] = m->texts.len;
  m->n_items++;
  uint32_t u = NO_ID;
  if (m->form.len == 0) {
    /* no shingles: its own form, never collapsed with other such texts */
    u = new_form(m, 0, item);
  } else {
    uint64_t h = XXH3_64bits(m->form.data, m->form.len);
    size_t slot = 0;
    u = exact_find(m, h, &slot);
    if (u == NO_ID) {
      u = new_form(m, h, item);
      m->exact[slot] = u + 1;
    }
  }
  m->item_form[item] = u;
  if (same_as)
    *same_as = m->form_item[u] == item ? CP_MINHASH_NONE : m->form_item[u];
  return item;
nomem:
  fail(m);
  return CP_MINHASH_NONE;
}

/* ---- flushing: sets, signatures, band tables -------------------------------
 */

/* What one chunk of new forms produced: each form's codes followed by
 * room for the ids of its rare shingles the dictionary did not know yet
 * (their values in rare), back to back, with per-form counts. The codes
 * become a block of the index. */
typedef struct chunk_sets {
  uint32_t *codes;
  size_t n_codes, cap_codes;
  uint64_t *rare;
  size_t n_rare, cap_rare;
  uint32_t *count; /* 2 per form: codes, rare */
} chunk_sets;

/* The forms of chunk c of a flush of [from, to): [*cf, *ct). */
static void chunk_span(size_t from, size_t to, size_t c, size_t *cf,
                       size_t *ct) {
  *cf = from + c * FLUSH_CHUNK;
  *ct = *cf + FLUSH_CHUNK < to ? *cf + FLUSH_CHUNK : to;
}

typedef struct flush_job {
  cp_minhash *m;
  size_t from, to;
  size_t wave;     /* the first chunk of the wave running */
  chunk_sets *out; /* per chunk */
  size_t *band_at; /* per chunk: where its first entry goes in each band */
  scratch *scr;    /* per worker */
} flush_job;

static void flush_chunk(void *ctx, size_t wave_chunk, int w) {
  flush_job *j = ctx;
  cp_minhash *m = j->m;
  scratch *s = &j->scr[w];
  size_t chunk = j->wave + wave_chunk;
  if (cp_minhash_failed(m)) return;
  if (!s->sig)
    s->sig = cp_reallocarray(NULL, (size_t)m->o.perms, sizeof *s->sig);
  if (!s->bkeys)
    s->bkeys = cp_reallocarray(NULL, (size_t)m->o.bands, sizeof *s->bkeys);
  size_t from, to;
  chunk_span(j->from, j->to, chunk, &from, &to);
  chunk_sets *out = &j->out[chunk];
  out->count = cp_reallocarray(NULL, 2 * (to - from), sizeof *out->count);
  /* room for the most features the chunk's forms can have (a shingle a
   * byte and a word every other byte, and the padding), so that the
   * arrays are not grown and copied form by form */
  size_t most = 0;
  for (size_t u = from; u < to; u++)
    most += (m->form_off[u + 1] - m->form_off[u]) * 3 / 2 + 4;
  if (!s->sig || !s->bkeys || !out->count ||
      grow((void **)&out->codes, &out->cap_codes, most, sizeof *out->codes) ||
      grow((void **)&out->rare, &out->cap_rare, most, sizeof *out->rare)) {
    fail(m);
    return;
  }
  size_t at = j->band_at[chunk];
  for (size_t u = from; u < to; u++) {
    size_t nr, flen = m->form_off[u + 1] - m->form_off[u];
    size_t nc = shingle_codes(m, s, m->forms.data + m->form_off[u], flen, &nr);
    if (cp_minhash_failed(m)) return;
    if (flen) { /* an empty form has no shingles and is in no band */
      sign_scratch(m, s, nc, nr, s->bkeys);
      for (int b = 0; b < m->o.bands; b++)
        m->band[b][at] = (uint64_t)s->bkeys[b] << 32 | u;
      at++;
    }
    if (grow((void **)&out->codes, &out->cap_codes, out->n_codes + nc + nr,
             sizeof *out->codes)) {
      fail(m);
      return;
    }
    if (nc) memcpy(out->codes + out->n_codes, s->codes, nc * sizeof *s->codes);
    out->n_codes += nc + nr;
    if (nr) {
      if (grow((void **)&out->rare, &out->cap_rare, out->n_rare + nr,
               sizeof *out->rare)) {
        fail(m);
        return;
      }
      memcpy(out->rare + out->n_rare, s->vals, nr * sizeof *s->vals);
      out->n_rare += nr;
    }
    out->count[2 * (u - from)] = (uint32_t)nc;
    out->count[2 * (u - from) + 1] = (uint32_t)nr;
  }
}

/* Makes a chunk's codes the sets of its forms, giving the rare shingles
 * first seen there their ids (in form order, so the ids do not depend on
 * the threads). The index takes the block of codes from c. */
static void store_chunk(cp_minhash *m, chunk_sets *c, size_t from, size_t to) {
  if (grow((void **)&m->blocks, &m->cap_blocks, m->n_blocks + 1,
           sizeof *m->blocks)) {
    fail(m);
    return;
  }
  uint32_t *block = c->codes;
  if (c->n_codes && c->n_codes < c->cap_codes) { /* the slack back */
    uint32_t *fit = cp_reallocarray(block, c->n_codes, sizeof *block);
    if (fit) block = fit;
  }
  c->codes = NULL;
  m->blocks[m->n_blocks++] = block;
  size_t off = 0, ri = 0;
  for (size_t u = from; u < to; u++) {
    size_t nc = c->count[2 * (u - from)], nr = c->count[2 * (u - from) + 1];
    uint32_t *dst = block + off;
    size_t n = nc;
    if (nr) {
      for (size_t i = 0; i < nr; i++) {
        uint32_t id = dict_insert(m, c->rare[ri + i]);
        if (id != NO_ID) dst[n++] = RARE | id;
      }
      /* the known codes are sorted already: sort the few new ids and
       * merge them in from the back */
      size_t added = n - nc;
      sort_u32(dst + nc, added);
      uint32_t tail[64], *t = added <= 64 ? tail : cp_malloc(added * sizeof *t);
      if (!t) {
        fail(m);
        return;
      }
      memcpy(t, dst + nc, added * sizeof *t);
      size_t i = nc, k = added, o = n;
      while (k > 0) {
        if (i > 0 && dst[i - 1] > t[k - 1])
          dst[--o] = dst[--i];
        else
          dst[--o] = t[--k];
      }
      if (t != tail) free(t);
    }
    m->sets[u] = (set){n ? dst : NULL, n};
    off += nc + nr;
    ri += nr;
  }
}

/* LSD radix sort on 16-bit digits; tmp has room for n. */
static void radix_sort(uint64_t *a, uint64_t *tmp, size_t n, size_t *count) {
  for (int shift = 0; shift < 64; shift += 16) {
    memset(count, 0, 65537 * sizeof *count);
    for (size_t i = 0; i < n; i++)
      count[((a[i] >> shift) & 0xFFFF) + 1]++;
    for (size_t d = 1; d <= 65536; d++)
      count[d] += count[d - 1];
    for (size_t i = 0; i < n; i++)
      tmp[count[(a[i] >> shift) & 0xFFFF]++] = a[i];
    uint64_t *t = a;
    a = tmp;
    tmp = t;
  }
  /* four passes: the result is back in the caller's array */
}

typedef struct sort_job {
  cp_minhash *m;
  uint64_t **tmp;
  size_t **count;
} sort_job;

static void sort_band(void *ctx, size_t b, int w) {
  sort_job *j = ctx;
  if (cp_minhash_failed(j->m)) return;
  if (!j->tmp[w])
    j->tmp[w] = cp_reallocarray(NULL, j->m->band_n, sizeof *j->tmp[w]);
  if (!j->count[w])
    j->count[w] = cp_reallocarray(NULL, 65537, sizeof *j->count[w]);
  if (!j->tmp[w] || !j->count[w]) {
    fail(j->m);
    return;
  }
  radix_sort(j->m->band[b], j->tmp[w], j->m->band_n, j->count[w]);
}

static void sort_bands(cp_minhash *m) {
  if (m->band_sorted == m->band_n || cp_minhash_failed(m)) return;
  int t = m->o.threads;
  uint64_t **tmp = cp_calloc((size_t)t, sizeof *tmp);
  size_t **count = cp_calloc((size_t)t, sizeof *count);
  if (!tmp || !count) {
    free(tmp);
    free(count);
    fail(m);
    return;
  }
  sort_job j = {m, tmp, count};
  cp_parallel_run(m->band_n > 4096 ? t : 1, (size_t)m->o.bands, sort_band, &j);
  for (int i = 0; i < t; i++) {
    free(tmp[i]);
    free(count[i]);
  }
  free(tmp);
  free(count);
  m->band_sorted = m->band_n;
}

/* Room in every band table for n more entries: 0, or -1 when out of
 * memory (the tables grown so far are only larger). */
static int band_room(cp_minhash *m, size_t n) {
  if (m->band_n + n <= m->band_cap) return 0;
  size_t cap = m->band_cap;
  if (grow((void **)&m->band[0], &cap, m->band_n + n, sizeof(uint64_t)))
    return -1;
  for (int b = 1; b < m->o.bands; b++) {
    uint64_t *grown = cp_reallocarray(m->band[b], cap, sizeof(uint64_t));
    if (!grown) return -1;
    m->band[b] = grown;
  }
  m->band_cap = cap;
  return 0;
}

/* Builds the sets and signatures of the forms added since the last flush
 * and enters them in the band tables. */
static void flush(cp_minhash *m) {
  if (m->n_signed == m->n_forms || cp_minhash_failed(m)) return;
  size_t from = m->n_signed, to = m->n_forms;
  int t = m->o.threads;
  size_t chunks = (to - from + FLUSH_CHUNK - 1) / FLUSH_CHUNK;
  flush_job j = {m,
                 from,
                 to,
                 0,
                 cp_calloc(chunks, sizeof(chunk_sets)),
                 cp_reallocarray(NULL, chunks, sizeof(size_t)),
                 cp_calloc((size_t)t, sizeof(scratch))};
  /* every form with shingles -- every form not empty -- gets an entry in
   * each band, in form order: each chunk knows where its entries go and
   * writes them itself */
  size_t add = 0;
  for (size_t c = 0; j.band_at && c < chunks; c++) {
    j.band_at[c] = m->band_n + add;
    size_t cf, ct;
    chunk_span(from, to, c, &cf, &ct);
    for (size_t u = cf; u < ct; u++)
      add += m->form_off[u + 1] > m->form_off[u];
  }
  if (!j.out || !j.band_at || !j.scr || band_room(m, add)) {
    free(j.out);
    free(j.band_at);
    free(j.scr);
    fail(m);
    return;
  }
  /* In waves of 1, 4, 16... chunks: the rare shingles a wave brings are in
   * the dictionary before the next wave is shingled, so that the later,
   * larger waves find most of theirs there, on every thread, and leave
   * few for store_chunk to enter on this one. */
  for (size_t c0 = 0, n = 1; c0 < chunks; c0 += n, n *= 4) {
    size_t c1 = c0 + n < chunks ? c0 + n : chunks;
    j.wave = c0;
    if (!cp_minhash_failed(m))
      cp_parallel_run(c1 - c0 >= 2 ? t : 1, c1 - c0, flush_chunk, &j);
    for (size_t c = c0; c < c1; c++) {
      size_t cf, ct;
      chunk_span(from, to, c, &cf, &ct);
      if (!cp_minhash_failed(m)) store_chunk(m, &j.out[c], cf, ct);
      free(j.out[c].codes);
      free(j.out[c].rare);
      free(j.out[c].count);
    }
  }
  for (int i = 0; i < t; i++)
    scratch_free(&j.scr[i]);
  free(j.scr);
  free(j.band_at);
  free(j.out);
  if (cp_minhash_failed(m)) return;
  m->band_n += add;
  m->n_signed = to;
  size_t tail = m->band_n - m->band_sorted;
  if (tail > 64 && tail * 8 > m->band_sorted) sort_bands(m);
}

size_t cp_minhash_pending(const cp_minhash *m) {
  return m->n_forms - m->n_signed;
}

void cp_minhash_flush(cp_minhash *m) { flush(m); }

/* First index in a[0..n) whose key (high 32 bits) is >= key. */
static size_t lower_bound(const uint64_t *a, size_t n, uint32_t key) {
  uint64_t x = (uint64_t)key << 32;
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (a[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* ---- verification -----------------------------------------------------------
 */

/* Size of the intersection of two sorted arrays, made for each element
 * type like the sorts above. */
#define DEFINE_INTERSECT(name, T)                                              \
  static size_t name(const T *a, size_t na, const T *b, size_t nb) {           \
    size_t i = 0, j = 0, n = 0;                                                \
    while (i < na && j < nb) {                                                 \
      if (a[i] < b[j])                                                         \
        i++;                                                                   \
      else if (a[i] > b[j])                                                    \
        j++;                                                                   \
      else {                                                                   \
        n++;                                                                   \
        i++;                                                                   \
        j++;                                                                   \
      }                                                                        \
    }                                                                          \
    return n;                                                                  \
  }

DEFINE_INTERSECT(intersect, uint32_t)
DEFINE_INTERSECT(intersect64, uint64_t)

/* The size of the intersection of sorted a and b, or a number below need
 * as soon as what is left of them cannot bring it to need: most candidate
 * pairs are far below the threshold, and the merge stops early for them. */
static size_t intersect_min(const uint32_t *a, size_t na, const uint32_t *b,
                            size_t nb, size_t need) {
  size_t i = 0, j = 0, n = 0;
  /* without branches on the data, which no predictor guesses */
  while (i < na && j < nb) {
    if (n + (na - i < nb - j ? na - i : nb - j) < need) return n;
    uint32_t x = a[i], y = b[j];
    n += x == y;
    i += x <= y;
    j += y <= x;
  }
  return n;
}

/* Jaccard of a set of na features (known ones in a[0..nk), sorted ids)
 * with form v's set; -1 when it cannot reach t. */
static double jaccard_with(const cp_minhash *m, const uint32_t *a, size_t nk,
                           size_t na, uint32_t v, double t) {
  size_t nb = m->sets[v].n;
  size_t lo = na < nb ? na : nb, hi = na < nb ? nb : na;
  if (lo == 0 || (double)lo < t * (double)hi) return -1.0;
  /* J >= t needs an intersection of t (na + nb) / (1 + t); a hair less
   * is asked, so that rounding never turns a pair at t away */
  double want = t * (double)(na + nb) / (1.0 + t) * (1.0 - 1e-9);
  size_t need = want > 0 ? (size_t)want : 0;
  size_t inter = intersect_min(a, nk, m->sets[v].codes, nb, need);
  if (inter < need) return -1.0;
  return (double)inter / (double)(na + nb - inter);
}

double cp_minhash_jaccard(cp_minhash *m, const char *a, size_t alen,
                          const char *b, size_t blen) {
  size_t ra, rb;
  if (cp_minhash_failed(m)) return -1.0;
  make_form(m, a, alen);
  size_t na = shingle_codes(m, &m->scr, m->form.data, m->form.len, &ra);
  uint32_t *ca = cp_reallocarray(NULL, na + 1, sizeof *ca);
  uint64_t *va = cp_reallocarray(NULL, ra + 1, sizeof *va);
  if (!ca || !va) fail(m);
  if (cp_minhash_failed(m)) {
    free(ca);
    free(va);
    return -1.0;
  }
  if (na) memcpy(ca, m->scr.codes, na * sizeof *ca);
  if (ra) memcpy(va, m->scr.vals, ra * sizeof *va);
  make_form(m, b, blen);
  size_t nb = shingle_codes(m, &m->scr, m->form.data, m->form.len, &rb);
  if (cp_minhash_failed(m)) {
    free(ca);
    free(va);
    return -1.0;
  }
  size_t inter = intersect(ca, na, m->scr.codes, nb) +
                 intersect64(va, ra, m->scr.vals, rb);
  free(ca);
  free(va);
  size_t total = na + ra + nb + rb;
  if (total == 0) return 0.0;
  return (double)inter / (double)(total - inter);
}

/* ---- queries
 * ------------------------------------------------------------------ */

static int better(const cp_minhash_pair *x, const cp_minhash_pair *y) {
  return x->score > y->score || (x->score == y->score && x->b < y->b);
}

size_t cp_minhash_query(cp_minhash *m, const char *text, size_t len, size_t k,
                        cp_minhash_pair *out) {
  if (k == 0) return 0;
  flush(m);
  make_form(m, text, len);
  /* the query's set: shingles the index knows by code, the others (which
   * no item has) only counted */
  size_t nr;
  size_t nk = shingle_codes(m, &m->scr, m->form.data, m->form.len, &nr);
  size_t n = nk + nr;
  if (n == 0 || cp_minhash_failed(m)) return 0;
  uint32_t *keys = cp_reallocarray(NULL, (size_t)m->o.bands, sizeof *keys);
  if (!keys) {
    fail(m);
    return 0;
  }
  sign_scratch(m, &m->scr, nk, nr, keys);

  /* every form that agrees on a band, once for each band it agrees on */
  uint32_t *hit = NULL;
  size_t n_hit = 0, hit_cap = 0;
  for (int b = 0; b < m->o.bands; b++) {
    const uint64_t *a = m->band[b];
    size_t i = lower_bound(a, m->band_sorted, keys[b]);
    for (int part = 0; part < 2; part++) {
      size_t end = part == 0 ? m->band_sorted : m->band_n;
      if (part == 1) i = m->band_sorted;
      for (; i < end; i++) {
        if ((uint32_t)(a[i] >> 32) != keys[b]) {
          if (part == 0) break;
          continue;
        }
        if (grow((void **)&hit, &hit_cap, n_hit + 1, sizeof *hit)) {
          fail(m);
          free(hit);
          free(keys);
          return 0;
        }
        hit[n_hit++] = (uint32_t)a[i];
      }
    }
  }
  sort_u32(hit, n_hit);
  size_t found = 0;
  for (size_t i = 0; i < n_hit;) {
    uint32_t v = hit[i];
    size_t run = 0;
    while (i < n_hit && hit[i] == v) {
      run++;
      i++;
    }
    if (run < (size_t)m->o.min_bands) continue;
    double s = jaccard_with(m, m->scr.codes, nk, n, v, m->o.threshold);
    if (s < m->o.threshold) continue;
    cp_minhash_pair p = {CP_MINHASH_NONE, m->form_item[v], s};
    /* keep out[0..found) sorted, best first, at most k */
    size_t at = found;
    while (at > 0 && better(&p, &out[at - 1]))
      at--;
    if (at >= k) continue;
    size_t last = found < k ? found : k - 1;
    memmove(out + at + 1, out + at, (last - at) * sizeof *out);
    out[at] = p;
    if (found < k) found++;
  }
  free(hit);
  free(keys);
  return found;
}

/* ---- all pairs
 * -------------------------------------------------------------------- */

typedef struct pair_vec {
  cp_minhash_pair *p;
  size_t n, cap;
} pair_vec;

/* 0, or -1 when out of memory. */
static int pair_push(pair_vec *v, uint32_t a, uint32_t b, double s) {
  if (grow((void **)&v->p, &v->cap, v->n + 1, sizeof *v->p)) return -1;
  v->p[v->n].a = a;
  v->p[v->n].b = b;
  v->p[v->n].score = s;
  v->n++;
  return 0;
}

typedef struct find_job {
  cp_minhash *m;
  int nearest;
  pair_vec *out;    /* per chunk */
  uint32_t *pos;    /* n_forms x bands: where each form sits in each band */
  uint32_t **stamp; /* per worker, n_forms entries (form + 1 of the last use) */
  uint16_t **agree; /* per worker, n_forms entries: bands agreed on */
  uint32_t **cand;  /* per worker candidate list */
  size_t *cand_cap;
} find_job;

static void locate_band(void *ctx, size_t b, int w) {
  (void)w;
  find_job *j = ctx;
  cp_minhash *m = j->m;
  size_t nb = (size_t)m->o.bands;
  const uint64_t *a = m->band[b];
  /* NO_ID for an entry with no earlier one under its key, as most are:
   * find_chunk then need not read the band there at all */
  for (size_t i = 0; i < m->band_n; i++)
    j->pos[(uint32_t)a[i] * nb + b] =
        i > 0 && (a[i - 1] >> 32) == (a[i] >> 32) ? (uint32_t)i : NO_ID;
}

static void find_chunk(void *ctx, size_t chunk, int w) {
  find_job *j = ctx;
  cp_minhash *m = j->m;
  if (cp_minhash_failed(m)) return;
  if (!j->stamp[w]) {
    j->stamp[w] = cp_calloc(m->n_forms, sizeof(uint32_t));
    j->agree[w] = cp_calloc(m->n_forms, sizeof(uint16_t));
    if (!j->stamp[w] || !j->agree[w]) { /* both freed with the job */
      fail(m);
      return;
    }
  }
  uint32_t *stamp = j->stamp[w];
  uint16_t *agree = j->agree[w];
  size_t from = chunk * VERIFY_CHUNK;
  size_t to =
      from + VERIFY_CHUNK < m->n_forms ? from + VERIFY_CHUNK : m->n_forms;
  size_t nb = (size_t)m->o.bands;
  pair_vec *out = &j->out[chunk];
  for (size_t u = from; u < to; u++) {
    /* the band entries of a form a few ahead, fetched now: reading them at
     * their turn, each from a place of its own, was most of the time */
    if (u + AHEAD < to && m->sets[u + AHEAD].n) {
      const uint32_t *ahead = j->pos + (u + AHEAD) * nb;
      for (size_t b = 0; b < nb; b++)
        if (ahead[b] != NO_ID) __builtin_prefetch(&m->band[b][ahead[b] - 1]);
    }
    const uint32_t *su = m->sets[u].codes;
    size_t nu = m->sets[u].n;
    if (nu == 0) continue;
    size_t nc = 0;
    for (size_t b = 0; b < nb; b++) {
      /* entries are sorted by key, then form: the earlier forms sharing
       * u's key in this band are the ones right before u's own entry */
      uint32_t at = j->pos[u * nb + b];
      if (at == NO_ID) continue;
      const uint64_t *a = m->band[b];
      size_t i = at;
      uint32_t key = (uint32_t)(a[i] >> 32);
      while (i > 0 && (uint32_t)(a[i - 1] >> 32) == key)
        i--;
      if (grow((void **)&j->cand[w], &j->cand_cap[w], nc + (at - i),
               sizeof(uint32_t))) {
        fail(m);
        return;
      }
      uint32_t *cand = j->cand[w];
      for (; i < at; i++) {
        uint32_t v = (uint32_t)a[i];
        if (stamp[v] == u + 1) {
          agree[v]++;
          continue;
        }
        stamp[v] = (uint32_t)u + 1;
        agree[v] = 1;
        cand[nc++] = v;
      }
    }
    /* the candidates that agree on enough bands, their sets fetched from
     * memory a few ahead of their turn: most of the time here is waiting
     * for them */
    uint32_t *cand = j->cand[w];
    size_t nv = 0;
    for (size_t c = 0; c < nc; c++)
      if (agree[cand[c]] >= m->o.min_bands) cand[nv++] = cand[c];
    for (size_t c = 0; c < nv && c < PREFETCH; c++)
      __builtin_prefetch(&m->sets[cand[c]]);
    cp_minhash_pair best = {0, 0, -1.0};
    for (size_t c = 0; c < nv; c++) {
      uint32_t v = cand[c];
      if (c + PREFETCH < nv) __builtin_prefetch(&m->sets[cand[c + PREFETCH]]);
      if (c + PREFETCH / 2 < nv)
        __builtin_prefetch(m->sets[cand[c + PREFETCH / 2]].codes);
      double s = jaccard_with(m, su, nu, nu, v, m->o.threshold);
      if (s < m->o.threshold) continue;
      uint32_t ia = m->form_item[v], ib = m->form_item[u];
      if (!j->nearest) {
        if (pair_push(out, ia, ib, s)) {
          fail(m);
          return;
        }
      } else if (s > best.score || (s == best.score && ia < best.a))
        best = (cp_minhash_pair){ia, ib, s};
    }
    if (j->nearest && best.score >= 0 &&
        pair_push(out, best.a, best.b, best.score)) {
      fail(m);
      return;
    }
  }
}

static int cmp_pair(const void *x, const void *y) {
  const cp_minhash_pair *a = x, *b = y;
  if (a->b != b->b) return (a->b > b->b) - (a->b < b->b);
  return (a->a > b->a) - (a->a < b->a);
}

void cp_minhash_find_all(cp_minhash *m, int nearest, cp_minhash_pair **out,
                         size_t *n) {
  *out = NULL;
  *n = 0;
  flush(m);
  sort_bands(m);
  if (cp_minhash_failed(m)) return;
  size_t chunks = (m->n_forms + VERIFY_CHUNK - 1) / VERIFY_CHUNK;
  int t = m->o.threads;
  find_job j = {m,
                nearest,
                cp_calloc(chunks, sizeof(pair_vec)),
                cp_reallocarray(NULL, m->n_forms ? m->n_forms : 1,
                                (size_t)m->o.bands * sizeof(uint32_t)),
                cp_calloc((size_t)t, sizeof(uint32_t *)),
                cp_calloc((size_t)t, sizeof(uint16_t *)),
                cp_calloc((size_t)t, sizeof(uint32_t *)),
                cp_calloc((size_t)t, sizeof(size_t))};
  if (!j.out || !j.pos || !j.stamp || !j.agree || !j.cand || !j.cand_cap) {
    fail(m);
  } else {
    cp_parallel_run(m->band_n > 4096 ? t : 1, (size_t)m->o.bands, locate_band,
                    &j);
    cp_parallel_run(chunks > 1 ? t : 1, chunks, find_chunk, &j);
  }
  free(j.pos);
  for (int i = 0; i < t && j.stamp && j.agree && j.cand; i++) {
    free(j.stamp[i]);
    free(j.agree[i]);
    free(j.cand[i]);
  }
  free(j.stamp);
  free(j.agree);
  free(j.cand);
  free(j.cand_cap);

  pair_vec all = {NULL, 0, 0};
  for (size_t c = 0; j.out && c < chunks; c++) {
    pair_vec *v = &j.out[c];
    if (v->n && !cp_minhash_failed(m)) {
      if (grow((void **)&all.p, &all.cap, all.n + v->n, sizeof *all.p)) {
        fail(m);
      } else {
        memcpy(all.p + all.n, v->p, v->n * sizeof *v->p);
        all.n += v->n;
      }
    }
    free(v->p);
  }
  free(j.out);
  /* later items with the form of an earlier one */
  for (size_t i = 0; i < m->n_items && !cp_minhash_failed(m); i++) {
    uint32_t first = m->form_item[m->item_form[i]];
    if (first != i && pair_push(&all, first, (uint32_t)i, 1.0)) fail(m);
  }
  if (cp_minhash_failed(m)) {
    free(all.p);
    return;
  }
  if (all.n > 1) qsort(all.p, all.n, sizeof *all.p, cmp_pair);
  *out = all.p;
  *n = all.n;
}
