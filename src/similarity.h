/*
 * similarity.h -- semantic duplicates (DESIGN §4.2, §5): sets of embedding
 * vectors, normalised once to unit length in float32, and cosine search
 * over them -- top-k of each query against a corpus, and the in-run filter
 * that accepts a new vector only if nothing existing or already accepted is
 * at least `threshold` similar. Pure C: it neither fetches vectors (the
 * embeddings provider does, in Lua) nor reads files (vecfile.h).
 *
 * The products run through cblas_sgemm when built with a BLAS
 * (CP_HAVE_CBLAS, see cmake/blas.cmake) and the library loads on first use,
 * else through a blocked kernel of its own on every thread.
 */
#ifndef CP_SIMILARITY_H
#define CP_SIMILARITY_H

#include <stddef.h>

/* Rows of unit vectors, each with a text and an optional intent. Reference
 * counted so that work running off the loop thread can hold a set that the
 * Lua side has let go of. */
typedef struct cp_vecset cp_vecset;

/* A new set holding one reference; dim 0 lets the first row decide. NULL
 * when out of memory. */
cp_vecset *cp_vecset_new(size_t dim);
cp_vecset *cp_vecset_ref(cp_vecset *s);
void cp_vecset_unref(cp_vecset *s); /* frees on the last reference */

/* A reader off the loop thread (a search on the thread pool) holds the set
 * with hold and lets go with release; the set must not change meanwhile,
 * which callers check with busy before adding rows. */
cp_vecset *cp_vecset_hold(cp_vecset *s); /* also takes a reference */
void cp_vecset_release(cp_vecset *s);    /* also drops it */
int cp_vecset_busy(const cp_vecset *s);

/* Appends a row: v[0..dim) scaled to unit length, text and intent (NULL:
 * none) copied. Returns the row, or -1 with *why set to a static message
 * ("dimension 8 expected" style messages are the caller's: *why says
 * "dimension", "zero", "not finite", "too many rows" or "memory"; the set
 * is unchanged then). Not while a search reads s. */
long cp_vecset_add(cp_vecset *s, const float *v, size_t dim, const char *text,
                   size_t tlen, const char *intent, size_t ilen,
                   const char **why);
/* Same, from doubles (as JSON and Lua give them). */
long cp_vecset_add_double(cp_vecset *s, const double *v, size_t dim,
                          const char *text, size_t tlen, const char *intent,
                          size_t ilen, const char **why);

/* Appends row i of src to dst as it is (already unit length), with its
 * text and the given intent (NULL: src's). Returns the row, or -1 when the
 * dimensions differ, -2 when out of memory. */
long cp_vecset_add_from(cp_vecset *dst, const cp_vecset *src, size_t i,
                        const char *intent, size_t ilen);

/* Drops the rows from n on: undoes adds of which not all could be made. */
void cp_vecset_truncate(cp_vecset *s, size_t n);

size_t cp_vecset_count(const cp_vecset *s);
size_t cp_vecset_dim(const cp_vecset *s);
const float *cp_vecset_row(const cp_vecset *s, size_t i);
const char *cp_vecset_text(const cp_vecset *s, size_t i, size_t *len);
/* NULL when the row has no intent. */
const char *cp_vecset_intent(const cp_vecset *s, size_t i, size_t *len);
/* The first row whose text is text[0..len), or -1. */
long cp_vecset_find(const cp_vecset *s, const char *text, size_t len);

typedef struct cp_sim_hit {
  long row;    /* -1: no such neighbour */
  float score; /* cosine, in [-1, 1] */
} cp_sim_hit;

/* For each row of q, its k most similar rows of c, best first (equal
 * scores: lower row first), written to out[i * k .. i * k + k). Rows of q
 * and c must have the same dimension. Returns 0, or -1 when memory ran out
 * (out is then not a result). */
int cp_sim_topk(const cp_vecset *q, const cp_vecset *c, size_t k,
                 cp_sim_hit *out, int threads);

typedef struct cp_sim_verdict {
  int accepted;
  int from_new; /* the nearest is a row of fresh (accepted earlier), not of
                   existing */
  long row;     /* the nearest: in existing or fresh; -1 when there is none */
  float score;  /* its cosine */
} cp_sim_verdict;

/* Decides the rows of fresh in order: row i is accepted when its best
 * cosine against every row of existing (may be NULL) and every row of
 * fresh accepted before it is below threshold. out[i] names that nearest
 * row (for rejected rows: the reason; for accepted ones: the closest call),
 * preferring existing rows, then lower rows, on equal scores. Returns 0, or
 * -1 when memory ran out (out is then not a verdict). */
int cp_sim_filter(const cp_vecset *existing, const cp_vecset *fresh,
                   double threshold, cp_sim_verdict *out, int threads);

/* Which kernel the products use: "openblas", "blas" or "builtin" (when
 * the BLAS is missing, could not be loaded, or the address space it would
 * take could not be had when it was first needed: OpenBLAS does not
 * survive running out of memory). Loads the BLAS if the build has one and
 * it is not loaded yet. */
const char *cp_sim_backend(void);

#endif
