/*
 * test_minhash.c -- the near-duplicate index: Jaccard values of hand-made
 * pairs (counted by hand: see the comments), LSH recall against a brute
 * force over every pair, exact-form collapsing, queries, determinism across
 * thread counts, and option checking.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "minhash.h"

static cp_minhash *index_new(double threshold, int threads) {
  cp_minhash_opts o;
  cp_minhash_opts_default(&o);
  o.threshold = threshold;
  o.threads = threads;
  CHECK(cp_minhash_opts_check(&o) == NULL);
  return cp_minhash_new(&o);
}

static double jac(cp_minhash *m, const char *a, const char *b) {
  return cp_minhash_jaccard(m, a, strlen(a), b, strlen(b));
}

#define CHECK_NEAR(a, b)                                                       \
  do {                                                                         \
    double a__ = (a), b__ = (b);                                               \
    if (fabs(a__ - b__) > 1e-12) {                                             \
      fprintf(stderr, "%s:%d: %s == %.6f, expected %.6f\n", __FILE__,          \
              __LINE__, #a, a__, b__);                                         \
      check_failures_++;                                                       \
    }                                                                          \
  } while (0)

static cp_minhash *index_opts(double threshold, int words) {
  cp_minhash_opts o;
  cp_minhash_opts_default(&o);
  o.threshold = threshold;
  o.words = words;
  o.threads = 1;
  CHECK(cp_minhash_opts_check(&o) == NULL);
  return cp_minhash_new(&o);
}

/* Feature sets: the shingles of 3 code points over " <near form> " and the
 * words of the near form. */
static void test_hand_made_pairs(void) {
  cp_minhash *m = index_new(0.8, 1);
  /* " update my credit card details " has 29 shingles and 5 words (34);
   * "please" adds "s p", " pl", "ple", "lea", "eas", "ase", "se " and the
   * word, and drops "ls " (8 new, 1 lost): 34 shared of 42. */
  CHECK_NEAR(jac(m, "Update my credit card details",
                 "update my credit-card details please"),
             34.0 / 42.0);
  /* case, punctuation and spacing make no difference */
  CHECK_NEAR(jac(m, "Update my credit card details",
                 "  update MY credit-card   details!"),
             1.0);
  /* nor do contractions, with or without the apostrophe, numbers, or
   * letters held down */
  CHECK_NEAR(jac(m, "what is my account balance", "whats my account balance"),
             1.0);
  CHECK_NEAR(jac(m, "I don't know", "i do not know"), 1.0);
  CHECK_NEAR(jac(m, "what\xE2\x80\x99s the time", "what is the time"), 1.0);
  CHECK_NEAR(jac(m, "set an alarm for 7 am", "set an alarm for 18 am"), 1.0);
  CHECK_NEAR(jac(m, "pleeease cancel it", "please cancel it!!"), 1.0);
  /* " bok a flight to paris " (both o's are one): 21 shingles and 5
   * words; " please" adds 7 shingles and a word, drops "is ": 26 of 34 */
  CHECK_NEAR(jac(m, "book a flight to paris", "book a flight to paris please"),
             26.0 / 34.0);
  /* 15 shingles and 4 words shared, 34 in the union */
  CHECK_NEAR(jac(m, "book a flight to paris", "book a flight to london"),
             19.0 / 34.0);
  /* one character: " a " and the word "a" */
  CHECK_NEAR(jac(m, "a", "A!"), 1.0);
  /* no letters or digits: no features, never similar */
  CHECK_NEAR(jac(m, "?!", "?!"), 0.0);
  /* non-ASCII case folding (NFKC + fold): STRASSE vs straße */
  CHECK_NEAR(jac(m, "Straße", "STRASSE"), 1.0);
  cp_minhash_free(m);

  /* without word features, shingles alone: 29 of 36 */
  m = index_opts(0.8, 0);
  CHECK_NEAR(jac(m, "Update my credit card details",
                 "update my credit-card details please"),
             29.0 / 36.0);
  CHECK_NEAR(jac(m, "book a flight to paris", "book a flight to london"),
             15.0 / 28.0);
  cp_minhash_free(m);
}

static void test_defaults(void) {
  cp_minhash_opts o;
  cp_minhash_opts_default(&o);
  CHECK(o.threshold == CP_MINHASH_DEFAULT_THRESHOLD);
  CHECK_INT(o.words, 1);
  CHECK(cp_minhash_opts_check(&o) == NULL);
  /* 0.65 over 256 permutations: 51 bands of 5 rows, 2 to agree on */
  CHECK_INT(o.perms, 256);
  CHECK_INT(o.bands, 51);
  CHECK_INT(o.rows, 5);
  CHECK_INT(o.min_bands, 2);
  CHECK(cp_minhash_candidate_prob(&o, o.threshold) >= 0.98);
  /* one band more to agree on would lose more than 2% at the threshold */
  o.min_bands = 3;
  CHECK(cp_minhash_candidate_prob(&o, o.threshold) < 0.98);
  /* and far below it, a pair is seldom compared at all */
  o.min_bands = 2;
  CHECK(cp_minhash_candidate_prob(&o, 0.3) < 0.01);

  cp_minhash_opts_default(&o);
  o.threshold = 0.8;
  o.perms = 128;
  CHECK(cp_minhash_opts_check(&o) == NULL);
  CHECK_INT(o.bands, 18);
  CHECK_INT(o.rows, 7);
  CHECK_INT(o.min_bands, 1);
  CHECK(cp_minhash_candidate_prob(&o, 0.8) >= 0.98);
  o.threshold = 0.9;
  o.bands = o.rows = o.min_bands = 0;
  CHECK(cp_minhash_opts_check(&o) == NULL);
  CHECK_INT(o.bands, 11);
  CHECK_INT(o.rows, 11);

  cp_minhash_opts_default(&o);
  o.threshold = 1.5;
  CHECK(cp_minhash_opts_check(&o) != NULL);
  cp_minhash_opts_default(&o);
  o.bands = 30;
  o.rows = 10;
  CHECK_STR(cp_minhash_opts_check(&o), "bands x rows exceeds perms");
  cp_minhash_opts_default(&o);
  o.bands = 16;
  CHECK(cp_minhash_opts_check(&o) == NULL);
  CHECK_INT(o.rows, 16);
  cp_minhash_opts_default(&o);
  o.bands = 4;
  o.min_bands = 5;
  CHECK_STR(cp_minhash_opts_check(&o), "min_bands exceeds bands");
  cp_minhash_opts_default(&o);
  o.shingle = 0;
  CHECK(cp_minhash_opts_check(&o) != NULL);
  cp_minhash_opts_default(&o);
  o.words = 2;
  CHECK(cp_minhash_opts_check(&o) != NULL);
}

static void add(cp_minhash *m, const char *s, uint32_t want_same_as) {
  uint32_t same;
  cp_minhash_add(m, s, strlen(s), &same);
  CHECK_INT(same, want_same_as);
}

static void test_pairs_and_aliases(void) {
  cp_minhash *m = index_new(0.8, 1);
  add(m, "Update my credit card details", CP_MINHASH_NONE);        /* 0 */
  add(m, "book a flight to paris", CP_MINHASH_NONE);               /* 1 */
  add(m, "update my credit-card details please", CP_MINHASH_NONE); /* 2 */
  add(m, "update my credit card details", 0);                      /* 3 */
  add(m, "book a flight to london", CP_MINHASH_NONE);              /* 4 */
  add(m, "?!", CP_MINHASH_NONE);                                   /* 5 */
  add(m, "?!", CP_MINHASH_NONE); /* 6: no form */
  CHECK_INT(cp_minhash_count(m), 7);
  CHECK_INT(cp_minhash_distinct(m), 6);
  size_t len;
  const char *t = cp_minhash_text(m, 2, &len);
  CHECK(len == strlen("update my credit-card details please") &&
        memcmp(t, "update my credit-card details please", len) == 0);

  cp_minhash_pair *p;
  size_t n;
  cp_minhash_find_all(m, 0, &p, &n);
  CHECK_INT(n, 2);
  if (n == 2) {
    CHECK_INT(p[0].a, 0);
    CHECK_INT(p[0].b, 2);
    CHECK_NEAR(p[0].score, 34.0 / 42.0);
    CHECK_INT(p[1].a, 0);
    CHECK_INT(p[1].b, 3);
    CHECK_NEAR(p[1].score, 1.0);
  }
  free(p);

  cp_minhash_pair q[3];
  const char *s = "UPDATE my credit card details, please";
  size_t k = cp_minhash_query(m, s, strlen(s), 3, q);
  CHECK_INT(k, 2);
  if (k == 2) {
    CHECK_INT(q[0].b, 2); /* same form as item 2 */
    CHECK_NEAR(q[0].score, 1.0);
    CHECK_INT(q[1].b, 0);
    CHECK_NEAR(q[1].score, 34.0 / 42.0);
  }
  CHECK_INT(cp_minhash_query(m, s, strlen(s), 1, q), 1);
  CHECK_INT(q[0].b, 2);
  s = "cancel my subscription";
  CHECK_INT(cp_minhash_query(m, s, strlen(s), 3, q), 0);
  cp_minhash_free(m);

  /* an index whose first texts have no features at all */
  m = index_new(0.8, 1);
  add(m, "?!", CP_MINHASH_NONE);
  add(m, "", CP_MINHASH_NONE);
  CHECK_INT(cp_minhash_query(m, "?!", 2, 1, q), 0);
  add(m, "reset my password", CP_MINHASH_NONE);
  CHECK_INT(cp_minhash_query(m, "Reset my password!", 18, 1, q), 1);
  CHECK_INT(q[0].b, 2);
  cp_minhash_free(m);
}

/* Texts of random words; variants change one word, add or drop one. */
static const char *const words[] = {
    "account", "balance", "card",  "credit",  "transfer", "money",    "flight",
    "paris",   "london",  "book",  "cancel",  "reset",    "password", "please",
    "my",      "the",     "a",     "to",      "for",      "what",     "is",
    "how",     "much",    "can",   "you",     "help",     "me",       "with",
    "order",   "pizza",   "alarm", "weather", "tomorrow", "today",    "play",
    "music",   "jazz",    "set",   "timer",   "call"};
#define NWORDS (sizeof words / sizeof *words)

static unsigned rnd(unsigned long long *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (unsigned)(*s >> 33);
}

static char *random_text(unsigned long long *s, int nw) {
  char buf[512] = "";
  for (int i = 0; i < nw; i++) {
    if (i) strcat(buf, " ");
    strcat(buf, words[rnd(s) % NWORDS]);
  }
  return strdup(buf);
}

static char *variant(unsigned long long *s, const char *base) {
  char buf[600];
  unsigned how = rnd(s) % 3;
  if (how == 0)
    snprintf(buf, sizeof buf, "%s %s", base, words[rnd(s) % NWORDS]);
  else if (how == 1)
    snprintf(buf, sizeof buf, "%s %s", words[rnd(s) % NWORDS], base);
  else {
    const char *sp = strrchr(base, ' ');
    snprintf(buf, sizeof buf, "%.*s %s", (int)(sp ? sp - base : 0), base,
             words[rnd(s) % NWORDS]);
  }
  return strdup(buf);
}

#define NTEXTS 600

/* At the default threshold, where two bands must agree. */
#define T CP_MINHASH_DEFAULT_THRESHOLD

static void test_recall_against_brute_force(void) {
  unsigned long long seed = 42;
  char *texts[NTEXTS];
  for (int i = 0; i < NTEXTS; i++)
    texts[i] =
        (i % 3 == 0 || i == 0)
            ? random_text(&seed, 6 + (int)(rnd(&seed) % 5))
            : variant(&seed,
                      texts[i - 1 - (int)(rnd(&seed) % (i < 2 ? 1 : 2))]);
  cp_minhash *m = index_new(T, 2);
  uint32_t same[NTEXTS];
  for (int i = 0; i < NTEXTS; i++)
    cp_minhash_add(m, texts[i], strlen(texts[i]), &same[i]);
  cp_minhash_pair *p;
  size_t n;
  cp_minhash_find_all(m, 0, &p, &n);

  /* brute force: every pair of first occurrences of distinct forms (a
   * later text with an earlier one's form is paired with that one only) */
  size_t truth = 0, found = 0, wrong = 0, expected = 0;
  for (size_t b = 0; b < NTEXTS; b++)
    for (size_t a = 0; a < b; a++) {
      if (same[a] != CP_MINHASH_NONE || same[b] != CP_MINHASH_NONE) continue;
      double j = jac(m, texts[a], texts[b]);
      if (j < T) continue;
      truth++;
      expected +=
          (size_t)(1000 * cp_minhash_candidate_prob(cp_minhash_options(m), j));
      for (size_t i = 0; i < n; i++)
        if (p[i].b == b && p[i].a == a) {
          found++;
          if (fabs(p[i].score - j) > 1e-12) wrong++;
          break;
        }
    }
  for (size_t i = 0; i < n; i++) {
    double j = jac(m, texts[p[i].a], texts[p[i].b]);
    if (fabs(p[i].score - j) > 1e-12 || j < T) wrong++;
  }
  fprintf(stderr,
          "# %zu pairs >= %.2f by brute force, %zu found, %.1f expected\n",
          truth, T, found, (double)expected / 1000);
  CHECK(truth > 50);
  CHECK_INT(wrong, 0);
  /* every reported pair is true; nearly every true pair is reported (the
   * banding misses a pair at the threshold with probability < 2%, and the
   * MinHash permutations behave as the theory says they should, two bands
   * to agree on included) */
  CHECK(found >= truth * 98 / 100);
  CHECK(found * 1000 + 5000 >= expected);

  /* the same result on one thread, and again on two */
  cp_minhash *m1 = index_new(T, 1);
  for (int i = 0; i < NTEXTS; i++)
    cp_minhash_add(m1, texts[i], strlen(texts[i]), NULL);
  cp_minhash_pair *p1;
  size_t n1;
  cp_minhash_find_all(m1, 0, &p1, &n1);
  CHECK_INT(n1, n);
  CHECK(n1 == n && memcmp(p1, p, n * sizeof *p) == 0);
  free(p1);

  /* nearest mode: one pair per later item, its best earlier match */
  cp_minhash_find_all(m1, 1, &p1, &n1);
  size_t items = 0;
  for (size_t i = 0; i < n1; i++) {
    CHECK(i == 0 || p1[i].b > p1[i - 1].b);
    double best = -1;
    for (size_t k = 0; k < n; k++)
      if (p[k].b == p1[i].b && p[k].score > best) best = p[k].score;
    CHECK_NEAR(p1[i].score, best);
    items++;
  }
  CHECK(items > 0);
  free(p1);
  cp_minhash_free(m1);

  /* incremental: queries between adds see everything added so far */
  cp_minhash *m2 = index_new(T, 1);
  size_t agree = 0, near = 0;
  for (int i = 0; i < NTEXTS; i++) {
    cp_minhash_pair q;
    size_t k = cp_minhash_query(m2, texts[i], strlen(texts[i]), 1, &q);
    double best = -1;
    for (size_t x = 0; x < n; x++)
      if (p[x].b == (uint32_t)i && p[x].score > best) best = p[x].score;
    if (best >= 0) near++;
    if ((k == 1 && best >= 0 && fabs(q.score - best) < 1e-12) ||
        (k == 0 && best < 0))
      agree++;
    cp_minhash_add(m2, texts[i], strlen(texts[i]), NULL);
  }
  fprintf(stderr, "# incremental queries agree on %zu of %d (%zu near)\n",
          agree, NTEXTS, near);
  CHECK(agree >= NTEXTS * 98 / 100);
  cp_minhash_free(m2);

  free(p);
  cp_minhash_free(m);
  for (int i = 0; i < NTEXTS; i++)
    free(texts[i]);
}

/* Enough texts for many chunks of new forms at once (flushed in waves, on
 * two threads, each chunk's sets kept where it was built) and for a flush
 * in between: the same pairs, with their exact scores, whatever the
 * threads and however the adds were flushed. Words in other scripts give
 * rare shingles beyond the words themselves. */
#define NMANY 12000

static const char *const far_words[] = {"café",   "日本語", "straße",
                                        "привет", "ελλάδα", "naïve"};

static void find(cp_minhash *m, cp_minhash_pair **p, size_t *n) {
  cp_minhash_find_all(m, 0, p, n);
  CHECK(!cp_minhash_failed(m));
}

static void test_many_chunks(void) {
  unsigned long long seed = 7;
  char **texts = calloc(NMANY, sizeof *texts);
  CHECK(texts != NULL);
  if (!texts) return;
  for (int i = 0; i < NMANY; i++) {
    if (i % 4 == 0) {
      char *t = random_text(&seed, 5 + (int)(rnd(&seed) % 6));
      char buf[600];
      snprintf(buf, sizeof buf, "%s %s", t,
               far_words[rnd(&seed) % (sizeof far_words / sizeof *far_words)]);
      free(t);
      texts[i] = strdup(buf);
    } else {
      texts[i] = variant(
          &seed, texts[i - 1 - (int)(rnd(&seed) % 3 % (i < 3 ? 1 : 3))]);
    }
  }
  cp_minhash *one = index_new(T, 1), *two = index_new(T, 2),
             *twice = index_new(T, 2);
  cp_minhash_pair q;
  for (int i = 0; i < NMANY; i++) {
    cp_minhash_add(one, texts[i], strlen(texts[i]), NULL);
    cp_minhash_add(two, texts[i], strlen(texts[i]), NULL);
    cp_minhash_add(twice, texts[i], strlen(texts[i]), NULL);
    if (i == NMANY / 3) /* flushes what twice has so far */
      cp_minhash_query(twice, texts[0], strlen(texts[0]), 1, &q);
  }
  CHECK(cp_minhash_pending(twice) < cp_minhash_pending(two));
  cp_minhash_pair *p1, *p2, *p3;
  size_t n1, n2, n3;
  find(one, &p1, &n1);
  find(two, &p2, &n2);
  find(twice, &p3, &n3);
  CHECK(n1 > NMANY / 4);
  CHECK(n2 == n1 && memcmp(p2, p1, n1 * sizeof *p1) == 0);
  CHECK(n3 == n1 && memcmp(p3, p1, n1 * sizeof *p1) == 0);
  size_t wrong = 0;
  for (size_t i = 0; i < n1; i += 17) {
    double j = jac(one, texts[p1[i].a], texts[p1[i].b]);
    if (j < T || fabs(p1[i].score - j) > 1e-12) wrong++;
  }
  CHECK_INT(wrong, 0);
  free(p1);
  free(p2);
  free(p3);
  cp_minhash_free(one);
  cp_minhash_free(two);
  cp_minhash_free(twice);
  for (int i = 0; i < NMANY; i++)
    free(texts[i]);
  free(texts);
}

#undef T

static void test_seed_and_shingle_size(void) {
  cp_minhash_opts o;
  cp_minhash_opts_default(&o);
  o.shingle = 5;
  o.seed = 7;
  CHECK(cp_minhash_opts_check(&o) == NULL);
  cp_minhash *m = cp_minhash_new(&o);
  /* 5-grams over " reset my pasword " (the double s is one): 14 windows
   * and 3 words; "!" changes nothing */
  CHECK_NEAR(jac(m, "reset my password", "reset my password!"), 1.0);
  /* "reset my passwords": 15 windows, 13 shared; the words "reset" and
   * "my" shared, "pasword" and "paswords" not: 15 of 20 */
  CHECK_NEAR(jac(m, "reset my password", "reset my passwords"), 15.0 / 20.0);
  /* a form shorter than a shingle is one shingle (and here one word) */
  CHECK_NEAR(jac(m, "hi", "HI"), 1.0);
  CHECK_NEAR(jac(m, "hi", "ho"), 0.0);
  cp_minhash_add(m, "reset my password", 17, NULL);
  cp_minhash_pair q;
  CHECK_INT(cp_minhash_query(m, "reset my passwords", 18, 1, &q), 1);
  CHECK_NEAR(q.score, 15.0 / 20.0);
  cp_minhash_free(m);
}

/* Shingles of characters beyond U+03FE, and words, go through the
 * dictionary; the values are the same as if they did not. */
static void test_other_scripts(void) {
  cp_minhash *m = index_new(0.55, 1);
  /* " 预订去巴黎的航班 " has 8 shingles and is one word, with "吗" 9
   * shingles and another word: 7 shared, 12 in all */
  CHECK_NEAR(jac(m, "预订去巴黎的航班", "预订去巴黎的航班吗"), 7.0 / 12.0);
  CHECK_NEAR(jac(m, "Привет, как дела?", "привет как дела"), 1.0);
  /* 17 shingles and 2 words, all in the other's 26 and 4 */
  CHECK_NEAR(jac(m, "забронируй столик", "забронируй столик на двоих"),
             19.0 / 30.0);
  cp_minhash_add(m, "预订去巴黎的航班", strlen("预订去巴黎的航班"), NULL);
  cp_minhash_add(m, "забронируй столик", strlen("забронируй столик"), NULL);
  cp_minhash_pair q[2];
  const char *s = "预订去巴黎的航班吗";
  CHECK_INT(cp_minhash_query(m, s, strlen(s), 2, q), 1);
  CHECK_INT(q[0].b, 0);
  CHECK_NEAR(q[0].score, 7.0 / 12.0);
  /* now indexed after the first flush, sharing its rare shingles */
  cp_minhash_add(m, s, strlen(s), NULL);
  s = "забронируй столик на двоих";
  cp_minhash_add(m, s, strlen(s), NULL);
  cp_minhash_pair *p;
  size_t n;
  cp_minhash_find_all(m, 0, &p, &n);
  CHECK_INT(n, 2);
  if (n == 2) {
    CHECK_INT(p[0].a, 0);
    CHECK_INT(p[0].b, 2);
    CHECK_NEAR(p[0].score, 7.0 / 12.0);
    CHECK_INT(p[1].a, 1);
    CHECK_INT(p[1].b, 3);
    CHECK_NEAR(p[1].score, 19.0 / 30.0);
  }
  free(p);
  /* ill-formed UTF-8 is kept byte for byte */
  CHECK_NEAR(jac(m, "caf\xe9 au lait", "caf\xe9 au lait"), 1.0);
  CHECK(jac(m, "caf\xe9 au lait", "cafe au lait") < 1.0);
  cp_minhash_free(m);
}

int main(void) {
  RUN(test_hand_made_pairs);
  RUN(test_defaults);
  RUN(test_pairs_and_aliases);
  RUN(test_recall_against_brute_force);
  RUN(test_many_chunks);
  RUN(test_seed_and_shingle_size);
  RUN(test_other_scripts);
  DONE();
}
