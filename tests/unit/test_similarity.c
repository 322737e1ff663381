/*
 * test_similarity.c -- vector sets and cosine search: unit-length rows,
 * top-k against a brute force in double precision, and the in-run filter
 * against a plain sequential reference, across block boundaries.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "similarity.h"

static unsigned long long rng = 12345;
static double unif(void) {
  rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(rng >> 11) / 9007199254740992.0;
}

static void add(cp_vecset *s, const double *v, size_t dim, const char *text,
                const char *intent) {
  const char *why = NULL;
  long r = cp_vecset_add_double(s, v, dim, text, strlen(text), intent,
                                intent ? strlen(intent) : 0, &why);
  CHECK(r >= 0);
}

static void test_rows(void) {
  cp_vecset *s = cp_vecset_new(0);
  double a[3] = {3, 4, 0}, z[3] = {0, 0, 0}, b[2] = {1, 1};
  double nan[3] = {1, NAN, 0};
  add(s, a, 3, "a", "intent-a");
  CHECK_INT(cp_vecset_dim(s), 3);
  const float *r = cp_vecset_row(s, 0);
  CHECK(fabs(r[0] - 0.6) < 1e-7 && fabs(r[1] - 0.8) < 1e-7 && r[2] == 0);
  const char *why;
  CHECK(cp_vecset_add_double(s, z, 3, "z", 1, NULL, 0, &why) < 0);
  CHECK_STR(why, "zero");
  CHECK(cp_vecset_add_double(s, b, 2, "b", 1, NULL, 0, &why) < 0);
  CHECK_STR(why, "dimension");
  CHECK(cp_vecset_add_double(s, nan, 3, "n", 1, NULL, 0, &why) < 0);
  CHECK_STR(why, "not finite");
  add(s, a, 3, "a", NULL); /* a second row with the same text */
  CHECK(cp_vecset_add_double(s, z, 0, "x", 1, NULL, 0, &why) < 0);
  CHECK_INT(cp_vecset_count(s), 2);
  size_t len;
  CHECK(strncmp(cp_vecset_text(s, 1, &len), "a", len) == 0 && len == 1);
  CHECK(cp_vecset_intent(s, 1, &len) == NULL);
  CHECK(strncmp(cp_vecset_intent(s, 0, &len), "intent-a", len) == 0);
  CHECK_INT(cp_vecset_find(s, "a", 1), 0);
  CHECK_INT(cp_vecset_find(s, "b", 1), -1);

  cp_vecset *c = cp_vecset_new(3);
  CHECK_INT(cp_vecset_add_from(c, s, 0, "other", 5), 0);
  CHECK(memcmp(cp_vecset_row(c, 0), cp_vecset_row(s, 0), 3 * sizeof(float)) ==
        0);
  CHECK(strncmp(cp_vecset_intent(c, 0, &len), "other", len) == 0);
  CHECK(!cp_vecset_busy(c));
  cp_vecset_hold(c);
  CHECK(cp_vecset_busy(c));
  cp_vecset_release(c);
  CHECK(!cp_vecset_busy(c));
  cp_vecset_unref(c);
  cp_vecset_unref(s);
}

static cp_vecset *random_set(size_t n, size_t dim) {
  cp_vecset *s = cp_vecset_new(dim);
  double *v = malloc(dim * sizeof *v);
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < dim; k++)
      v[k] = unif() - 0.5;
    char t[32];
    snprintf(t, sizeof t, "row %zu", i);
    add(s, v, dim, t, NULL);
  }
  free(v);
  return s;
}

static double dot(const cp_vecset *a, size_t i, const cp_vecset *b, size_t j) {
  size_t d = cp_vecset_dim(a);
  const float *x = cp_vecset_row(a, i), *y = cp_vecset_row(b, j);
  double s = 0;
  for (size_t k = 0; k < d; k++)
    s += (double)x[k] * (double)y[k];
  return s;
}

/* Sizes that cross the kernels' blocks (512 x 512 rows) and a
 * dimension that is not a multiple of the vector width. */
static void test_topk_matches_brute_force(void) {
  size_t nq = 600, nc = 2500, dim = 37, k = 3;
  cp_vecset *q = random_set(nq, dim), *c = random_set(nc, dim);
  cp_sim_hit *hits = malloc(nq * k * sizeof *hits);
  cp_sim_topk(q, c, k, hits, 2);
  size_t wrong = 0;
  for (size_t i = 0; i < nq; i++) {
    double best[3] = {-9, -9, -9};
    for (size_t j = 0; j < nc; j++) {
      double s = dot(q, i, c, j);
      if (s > best[0]) {
        best[2] = best[1];
        best[1] = best[0];
        best[0] = s;
      } else if (s > best[1]) {
        best[2] = best[1];
        best[1] = s;
      } else if (s > best[2]) {
        best[2] = s;
      }
    }
    for (size_t x = 0; x < k; x++) {
      cp_sim_hit h = hits[i * k + x];
      /* float products may order near-equal scores differently; the score
       * found must be the x-th best to float precision */
      if (h.row < 0 || fabs(h.score - best[x]) > 1e-5 ||
          fabs(dot(q, i, c, (size_t)h.row) - h.score) > 1e-5)
        wrong++;
    }
  }
  CHECK_INT(wrong, 0);
  /* one thread gives the same answer */
  cp_sim_hit *one = malloc(nq * k * sizeof *one);
  cp_sim_topk(q, c, k, one, 1);
  /* field by field: a cp_sim_hit has padding that memcmp would read */
  int differ = 0;
  for (size_t i = 0; i < nq * k; i++)
    differ += one[i].row != hits[i].row || one[i].score != hits[i].score;
  CHECK_INT(differ, 0);
  /* k beyond the corpus: the rest is empty */
  cp_vecset *tiny = random_set(2, dim);
  cp_sim_topk(q, tiny, 3, one, 2);
  CHECK(one[0].row >= 0 && one[1].row >= 0 && one[2].row == -1);
  free(one);
  free(hits);
  cp_vecset_unref(q);
  cp_vecset_unref(c);
  cp_vecset_unref(tiny);
}

static void test_ties_prefer_lower_rows(void) {
  cp_vecset *c = cp_vecset_new(2), *q = cp_vecset_new(2);
  double x[2] = {1, 0}, y[2] = {0, 1};
  add(c, y, 2, "y", NULL);
  add(c, x, 2, "x1", NULL);
  add(c, x, 2, "x2", NULL);
  add(q, x, 2, "q", NULL);
  cp_sim_hit h[2];
  cp_sim_topk(q, c, 2, h, 1);
  CHECK_INT(h[0].row, 1);
  CHECK_INT(h[1].row, 2);
  CHECK(h[0].score == 1.0f);
  cp_vecset_unref(c);
  cp_vecset_unref(q);
}

/* The filter against the definition: in order, accept a row when its best
 * cosine with existing rows and rows accepted before it is below t. */
static void reference_filter(const cp_vecset *e, const cp_vecset *f, double t,
                             int *accepted, double *best) {
  size_t n = cp_vecset_count(f);
  for (size_t i = 0; i < n; i++) {
    double b = -2;
    for (size_t j = 0; e && j < cp_vecset_count(e); j++) {
      double s = dot(f, i, e, j);
      if (s > b) b = s;
    }
    for (size_t j = 0; j < i; j++)
      if (accepted[j]) {
        double s = dot(f, i, f, j);
        if (s > b) b = s;
      }
    best[i] = b;
    accepted[i] = b < t;
  }
}

static void test_filter_in_run(void) {
  /* clusters: each fresh row is a noisy copy of one of 300 centres, so
   * many rows are paraphrases of rows before them, across blocks of 512 */
  size_t dim = 24, centres = 300, n = 1300;
  double *cen = malloc(centres * dim * sizeof *cen),
         *v = malloc(dim * sizeof *v);
  for (size_t i = 0; i < centres * dim; i++)
    cen[i] = unif() - 0.5;
  cp_vecset *e = cp_vecset_new(dim), *f = cp_vecset_new(dim);
  for (size_t i = 0; i < 100; i++) {
    for (size_t k = 0; k < dim; k++)
      v[k] = cen[(i * 7 % centres) * dim + k] + 0.1 * (unif() - 0.5);
    add(e, v, dim, "existing", "intent-e");
  }
  for (size_t i = 0; i < n; i++) {
    size_t c = (size_t)(unif() * (double)centres);
    for (size_t k = 0; k < dim; k++)
      v[k] = cen[c * dim + k] + 0.25 * (unif() - 0.5);
    add(f, v, dim, "fresh", NULL);
  }
  int *acc = malloc(n * sizeof *acc);
  double *best = malloc(n * sizeof *best);
  reference_filter(e, f, 0.85, acc, best);
  cp_sim_verdict *out = malloc(n * sizeof *out);
  cp_sim_filter(e, f, 0.85, out, 2);
  size_t n_acc = 0, disagree = 0, from_new = 0, from_old = 0;
  for (size_t i = 0; i < n; i++) {
    /* rows within float error of the threshold may go either way */
    if (fabs(best[i] - 0.85) < 1e-5) continue;
    if (out[i].accepted != acc[i] || fabs(out[i].score - best[i]) > 1e-5)
      disagree++;
    double s = out[i].from_new ? dot(f, i, f, (size_t)out[i].row)
                               : dot(f, i, e, (size_t)out[i].row);
    if (fabs(s - out[i].score) > 1e-5) disagree++;
    if (out[i].from_new && (size_t)out[i].row >= i) disagree++;
    if (out[i].from_new && !out[i].accepted) from_new++;
    if (!out[i].from_new && !out[i].accepted) from_old++;
    n_acc += out[i].accepted;
  }
  fprintf(stderr,
          "# %zu of %zu accepted; rejected for an existing row %zu, for an "
          "earlier new one %zu\n",
          n_acc, n, from_old, from_new);
  CHECK_INT(disagree, 0);
  CHECK(from_new > 100 && from_old > 100 && n_acc > 100);

  /* without existing rows; and one thread */
  cp_sim_verdict *one = malloc(n * sizeof *one);
  reference_filter(NULL, f, 0.85, acc, best);
  cp_sim_filter(NULL, f, 0.85, one, 1);
  disagree = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs(best[i] - 0.85) > 1e-5 && one[i].accepted != acc[i]) disagree++;
  CHECK_INT(disagree, 0);
  CHECK(one[0].accepted && one[0].row == -1);
  free(one);
  free(out);
  free(acc);
  free(best);
  free(cen);
  free(v);
  cp_vecset_unref(e);
  cp_vecset_unref(f);
}

/* Two paraphrases new in the same run: only the first passes, and the
 * second names it. */
static void test_two_new_paraphrases(void) {
  cp_vecset *e = cp_vecset_new(3), *f = cp_vecset_new(3);
  double old[3] = {0, 0, 1}, p1[3] = {1, 0.1, 0}, p2[3] = {1, 0.15, 0.05},
         other[3] = {0, 1, 0};
  add(e, old, 3, "old", "i0");
  add(f, p1, 3, "p1", "i1");
  add(f, other, 3, "other", "i2");
  add(f, p2, 3, "p2", "i1");
  cp_sim_verdict v[3];
  cp_sim_filter(e, f, 0.85, v, 2);
  CHECK(v[0].accepted && v[1].accepted && !v[2].accepted);
  CHECK(v[2].from_new && v[2].row == 0);
  /* cos(p1, p2) by hand: (1 + 0.015) / (|p1| |p2|) */
  double want = 1.015 / (sqrt(1.01) * sqrt(1 + 0.0225 + 0.0025));
  CHECK(fabs(v[2].score - want) < 1e-6);
  /* the first is compared with the existing row (cosine 0) */
  CHECK(!v[0].from_new && v[0].row == 0 && fabs(v[0].score) < 1e-7);
  cp_vecset_unref(e);
  cp_vecset_unref(f);
}

int main(void) {
  fprintf(stderr, "# kernel: %s\n", cp_sim_backend());
  RUN(test_rows);
  RUN(test_topk_matches_brute_force);
  RUN(test_ties_prefer_lower_rows);
  RUN(test_filter_in_run);
  RUN(test_two_new_paraphrases);
  DONE();
}
