/*
 * minhash.h -- near-duplicate detection for short texts (DESIGN §5): each
 * text becomes a set of features -- the character shingles and the words
 * of its near form --, MinHash signatures and LSH banding propose
 * candidate pairs, and every candidate is then checked with the true
 * Jaccard similarity of the two feature sets, so a reported pair is never
 * an estimate. Pure C: knows nothing of Lua, files or reports (lua_near.c
 * binds it).
 *
 * Near form: see nearform.h -- casefold, words only (punctuation and
 * spacing separate them), English contractions written out, every number
 * "0", repeated characters once ("What's the score??" and "whats the
 * scoore" have the same form). Shingles: `shingle` consecutive code points
 * of the form padded with one space on each side, so that word boundaries
 * take part (the whole padded form when it is shorter). Up to 3 code points
 * a shingle is kept exactly; longer ones, and words, are represented by a
 * 64-bit hash (XXH3, seeded). With `words`, every word of the form is a
 * feature beside the shingles: a moved clause or a word put in or left out
 * changes few of them, where it breaks the shingles around it.
 *
 * Texts with the same near form are collapsed when added, so the MinHash
 * work is done once per distinct form; a text with no letter or digit has
 * no features and is never a near-duplicate of anything.
 */
#ifndef CP_MINHASH_H
#define CP_MINHASH_H

#include <stddef.h>
#include <stdint.h>

/* Measured on rewrites of real utterances (docs/near-and-semantic-dedupe.md,
 * tests/e2e/test_near_quality.py): the lowest threshold at which the pairs
 * reported are still 98% or more true ones. */
#define CP_MINHASH_DEFAULT_THRESHOLD 0.65

typedef struct cp_minhash_opts {
  double threshold; /* Jaccard at or above which texts are near-duplicates */
  int shingle;      /* code points a shingle */
  int words;        /* 1: the words of the form are features too */
  int perms;        /* MinHash permutations (signature length) */
  int bands, rows;  /* LSH split of the signature; 0: derived (see check) */
  int min_bands;    /* bands two texts must agree on to be compared; 0:
                       derived (see check) */
  uint64_t seed;    /* every hash is seeded with it: same seed, same result */
  int threads;      /* 0: cp_parallel_threads() */
} cp_minhash_opts;

/* threshold CP_MINHASH_DEFAULT_THRESHOLD, shingle 3, words 1, perms 128,
 * bands/rows derived, seed 0. */
void cp_minhash_opts_default(cp_minhash_opts *o);

/* Checks o and fills in bands, rows and min_bands when they are 0: rows is
 * the largest value for which a pair exactly at the threshold still agrees
 * on a band with probability >= 0.98, bands = perms / rows, and min_bands
 * the most bands such a pair still agrees on with probability >= 0.98 (32
 * bands of 4 rows, 2 of them to agree, for 0.65; 18 x 7 and 1 for 0.8; with
 * 128 permutations). Asking for two bands where one would do keeps the
 * recall at the threshold and spares most of the exact comparisons of
 * pairs far below it. Returns NULL, or a static message naming the bad
 * field. */
const char *cp_minhash_opts_check(cp_minhash_opts *o);

/* Probability that a pair of Jaccard similarity j becomes a candidate: that
 * at least min_bands of the bands agree, each with probability j^rows. */
double cp_minhash_candidate_prob(const cp_minhash_opts *o, double j);

typedef struct cp_minhash cp_minhash;

/* A new, empty index; o must have passed cp_minhash_opts_check. The caller
 * owns the index and frees it with cp_minhash_free. NULL when out of
 * memory. */
cp_minhash *cp_minhash_new(const cp_minhash_opts *o);
void cp_minhash_free(cp_minhash *m);
const cp_minhash_opts *cp_minhash_options(const cp_minhash *m);

/* 1 once memory ran out inside the index (on any thread): its answers are
 * incomplete from then on, so every call after that does nothing and
 * finds nothing (add returns CP_MINHASH_NONE, jaccard -1), and a caller
 * checks this before trusting a result. Only freeing is left. */
int cp_minhash_failed(const cp_minhash *m);

#define CP_MINHASH_NONE UINT32_MAX

/* Adds a text (copied) as the next item and returns its number (0-based),
 * or CP_MINHASH_NONE when memory runs out (nothing is added).
 * *same_as (may be NULL) is set to the first earlier item with the same
 * near form, or CP_MINHASH_NONE. Signatures are computed lazily, in bulk
 * and in parallel, by the next query or find. */
uint32_t cp_minhash_add(cp_minhash *m, const char *text, size_t len,
                        uint32_t *same_as);
size_t cp_minhash_count(const cp_minhash *m);
/* Distinct near forms among the items. */
size_t cp_minhash_distinct(const cp_minhash *m);
/* Forms whose sets and signatures are still to be built, and building them
 * now (queries and find_all do it themselves; a caller that wants that
 * work off its thread runs flush there first). */
size_t cp_minhash_pending(const cp_minhash *m);
void cp_minhash_flush(cp_minhash *m);
/* The text of an item, as added (not NUL-terminated; valid until the next
 * add). */
const char *cp_minhash_text(const cp_minhash *m, uint32_t item, size_t *len);

/* The Jaccard similarity of the feature sets of two texts (no index
 * involved): the number every reported score is. */
double cp_minhash_jaccard(cp_minhash *m, const char *a, size_t alen,
                          const char *b, size_t blen);

typedef struct cp_minhash_pair {
  uint32_t a, b; /* items, a < b (for a query, b is the item found) */
  double score;  /* Jaccard of their feature sets, >= the threshold */
} cp_minhash_pair;

/* Up to k items whose feature sets are at least `threshold` similar to
 * text's, best first (equal scores: earlier item first). Each distinct form
 * is represented by its first item. Writes out[0..n) and returns n. The
 * text is not added. */
size_t cp_minhash_query(cp_minhash *m, const char *text, size_t len, size_t k,
                        cp_minhash_pair *out);

/* Near-duplicate pairs among all items, sorted by b then a:
 *  - nearest = 0: every pair of distinct forms with Jaccard >= threshold
 *    (reported by the forms' first items), and every later item with the
 *    same form as an earlier one paired with that form's first item (1.0);
 *  - nearest = 1: for each item with a near-duplicate before it, one pair:
 *    the earlier item with the highest score (first one on ties).
 * *out is malloc'd (the caller frees it; NULL when *n is 0). Runs on
 * opts.threads threads; the result does not depend on their number. */
void cp_minhash_find_all(cp_minhash *m, int nearest, cp_minhash_pair **out,
                         size_t *n);

#endif
