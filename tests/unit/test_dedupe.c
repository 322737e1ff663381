/*
 * test_dedupe.c -- unit tests of dedupe.c: the in-memory set (duplicates,
 * conflicts, modes, forced hash collisions) and the whole-file check
 * (counts, first occurrences, conflicts across formats and files), checked
 * against the set on inputs large enough for the threaded, multi-pass path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dedupe.h"

static void test_set_basics(void) {
  cp_dedupe_set *s = cp_dedupe_set_new(CP_NORM_TRIM);
  cp_dedupe_hit hit;
  CHECK_INT(cp_dedupe_set_add(s, "book a flight", 13, "travel", 6, 1, &hit), CP_DEDUPE_NEW);
  CHECK_INT(cp_dedupe_set_add(s, "  book a flight ", 16, "travel", 6, 5, &hit), CP_DEDUPE_DUPLICATE);
  CHECK_INT(hit.line, 1);
  CHECK_INT(hit.intent_len, 6);
  CHECK(memcmp(hit.intent, "travel", 6) == 0);
  CHECK_INT(cp_dedupe_set_add(s, "book a flight", 13, "flights", 7, 9, &hit), CP_DEDUPE_CONFLICT);
  CHECK_INT(hit.line, 1);
  CHECK(memcmp(hit.intent, "travel", 6) == 0);
  /* Without an intent there is nothing to conflict with. */
  CHECK_INT(cp_dedupe_set_add(s, "book a flight", 13, NULL, 0, 11, &hit), CP_DEDUPE_DUPLICATE);
  CHECK_INT(cp_dedupe_set_add(s, "Book a flight", 13, "travel", 6, 12, &hit), CP_DEDUPE_NEW);
  CHECK_INT(cp_dedupe_set_add(s, "hi", 2, NULL, 0, 13, &hit), CP_DEDUPE_NEW);
  CHECK_INT(cp_dedupe_set_add(s, "hi", 2, "greet", 5, 14, &hit), CP_DEDUPE_DUPLICATE);
  CHECK(hit.intent == NULL);
  CHECK_INT(cp_dedupe_set_count(s), 3);
  CHECK(cp_dedupe_set_find(s, " hi", 3, &hit));
  CHECK_INT(hit.line, 13);
  CHECK(!cp_dedupe_set_find(s, "HI", 2, &hit));
  /* Intent names are bytes: NUL inside is kept. */
  CHECK_INT(cp_dedupe_set_add(s, "x", 1, "a\0b", 3, 20, &hit), CP_DEDUPE_NEW);
  CHECK_INT(cp_dedupe_set_add(s, "x", 1, "a\0c", 3, 21, &hit), CP_DEDUPE_CONFLICT);
  CHECK_INT(hit.intent_len, 3);
  CHECK(memcmp(hit.intent, "a\0b", 3) == 0);
  cp_dedupe_set_free(s);
}

static void test_set_modes(void) {
  cp_dedupe_set *s = cp_dedupe_set_new(CP_NORM_CASEFOLD);
  cp_dedupe_hit hit;
  CHECK_INT(cp_dedupe_set_add(s, "Stra\xC3\x9F" "e  nach", 13, NULL, 0, 1, &hit), CP_DEDUPE_NEW);
  CHECK_INT(cp_dedupe_set_add(s, "STRASSE NACH", 12, NULL, 0, 2, &hit), CP_DEDUPE_DUPLICATE);
  cp_dedupe_set_free(s);
  s = cp_dedupe_set_new(CP_NORM_NONE);
  CHECK_INT(cp_dedupe_set_add(s, "a", 1, NULL, 0, 1, &hit), CP_DEDUPE_NEW);
  CHECK_INT(cp_dedupe_set_add(s, "a ", 2, NULL, 0, 2, &hit), CP_DEDUPE_NEW);
  CHECK_INT(cp_dedupe_set_mode(s), CP_NORM_NONE);
  cp_dedupe_set_free(s);
}

/* With every hash forced equal, only the byte comparison tells texts
 * apart: results must not change. */
static void test_set_collisions(void) {
  cp_dedupe_set *s = cp_dedupe_set_new(CP_NORM_TRIM);
  cp_dedupe_set_test_mask(s, 0);
  cp_dedupe_hit hit;
  char buf[32];
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 300; i++) {
      int n = snprintf(buf, sizeof buf, "text %d", i);
      cp_dedupe_result r = cp_dedupe_set_add(s, buf, (size_t)n, NULL, 0,
                                             (uint64_t)(round * 1000 + i), &hit);
      if (round == 0) CHECK_INT(r, CP_DEDUPE_NEW);
      else {
        CHECK_INT(r, CP_DEDUPE_DUPLICATE);
        CHECK_INT(hit.line, i);
      }
    }
  CHECK_INT(cp_dedupe_set_count(s), 300);
  cp_dedupe_set_free(s);
}

static const cp_check_report *check_mem(cp_check **c, const char *text,
                                        cp_format fmt, cp_norm_mode mode,
                                        uint64_t mask) {
  cp_check_opts o;
  cp_check_opts_init(&o);
  o.mode = mode;
  o.test_hash_mask = mask;
  *c = cp_check_new(&o);
  cp_check_buffer(*c, "in", text, strlen(text), fmt);
  return cp_check_finish(*c);
}

static void test_check_lines(void) {
  const char *in = "hello\n"
                   "book a flight\n"
                   "\n"
                   "  hello \n"
                   "Hello\n"
                   "bad \x01 line\n"
                   "book a flight\n"
                   "   \n"
                   "hello";
  for (int m = 0; m < 3; m++) {
    uint64_t mask = m == 0 ? 0 : (m == 1 ? 1 : 0x3); /* 0 = full hashes */
    cp_check *c;
    const cp_check_report *r = check_mem(&c, in, CP_FMT_LINES, CP_NORM_TRIM, mask);
    CHECK_INT(r->lines, 9);
    CHECK_INT(r->blank_lines, 2);
    CHECK_INT(r->invalid, 1);
    CHECK_INT(r->utterances, 6);
    CHECK_INT(r->unique, 3);
    CHECK_INT(r->duplicates, 3);
    CHECK_INT(r->conflicts, 0);
    CHECK_INT(r->problems.total, 1);
    CHECK_INT(r->n_dups, 3);
    if (r->n_dups == 3) {
      CHECK_INT(r->dups[0].line, 4);
      CHECK_INT(r->dups[0].first_line, 1);
      CHECK_STR(r->dups[0].text, "hello");
      CHECK_STR(r->dups[0].file, "in");
      CHECK_INT(r->dups[1].line, 7);
      CHECK_INT(r->dups[1].first_line, 2);
      CHECK_INT(r->dups[2].line, 9);
      CHECK_INT(r->dups[2].first_line, 1);
      CHECK(r->dups[0].intent == NULL);
    }
    CHECK(r->success_rate > 33.3 && r->success_rate < 33.4);
    cp_check_free(c);
  }
  cp_check *c;
  const cp_check_report *r = check_mem(&c, in, CP_FMT_LINES, CP_NORM_CASEFOLD, 0);
  CHECK_INT(r->unique, 2);
  CHECK_INT(r->duplicates, 4);
  cp_check_free(c);
  r = check_mem(&c, in, CP_FMT_LINES, CP_NORM_NONE, 0);
  CHECK_INT(r->unique, 4);
  cp_check_free(c);
}

static void test_check_conflicts(void) {
  const char *in =
      "{\"text\":\"book a flight\",\"intent\":\"travel\"}\n"
      "{\"text\":\"Book a flight\",\"intent\":\"travel\"}\n"
      "{\"text\":\"book a flight \",\"intent\":\"flights\"}\n"
      "{\"text\":\"book a flight\",\"intent\":\"travel\"}\n"
      "{\"text\":\"say \\\"hi\\\"\",\"intent\":\"greet\"}\n"
      "{\"text\":\"say \\\"hi\\\"\",\"intent\":\"smalltalk\"}\n";
  cp_check *c;
  const cp_check_report *r = check_mem(&c, in, CP_FMT_JSONL, CP_NORM_TRIM, 0);
  CHECK_INT(r->lines, 6);
  CHECK_INT(r->unique, 3);
  CHECK_INT(r->duplicates, 1);
  CHECK_INT(r->conflicts, 2);
  CHECK_INT(r->n_conflicts, 2);
  if (r->n_conflicts == 2) {
    CHECK_INT(r->conflict_items[0].line, 3);
    CHECK_INT(r->conflict_items[0].first_line, 1);
    CHECK_STR(r->conflict_items[0].intent, "flights");
    CHECK_STR(r->conflict_items[0].first_intent, "travel");
    CHECK_STR(r->conflict_items[0].text, "book a flight");
    CHECK_INT(r->conflict_items[1].line, 6);
    CHECK_STR(r->conflict_items[1].text, "say \"hi\"");
    CHECK_STR(r->conflict_items[1].first_intent, "greet");
  }
  CHECK_INT(r->dups[0].line, 4);
  CHECK_STR(r->dups[0].intent, "travel");
  cp_check_free(c);
  /* The same through the collision path. */
  r = check_mem(&c, in, CP_FMT_JSONL, CP_NORM_TRIM, 1);
  CHECK_INT(r->unique, 3);
  CHECK_INT(r->conflicts, 2);
  CHECK_INT(r->duplicates, 1);
  CHECK_STR(r->conflict_items[1].first_intent, "greet");
  cp_check_free(c);
}

static void test_check_csv_and_files(void) {
  const char *a = "text,intent\nhello,greet\n\"hello, you\",greet\n";
  const char *b = "intent,text\ngreet,hello\nbye,\"hello, you\"\n";
  cp_check_opts o;
  cp_check_opts_init(&o);
  cp_check *c = cp_check_new(&o);
  cp_check_buffer(c, "a.csv", a, strlen(a), CP_FMT_CSV);
  cp_check_buffer(c, "b.csv", b, strlen(b), CP_FMT_CSV);
  const cp_check_report *r = cp_check_finish(c);
  CHECK_INT(r->files, 2);
  CHECK_INT(r->lines, 4);
  CHECK_INT(r->unique, 2);
  CHECK_INT(r->duplicates, 1);
  CHECK_INT(r->conflicts, 1);
  CHECK_STR(r->dups[0].file, "b.csv");
  CHECK_INT(r->dups[0].line, 2);
  CHECK_STR(r->dups[0].first_file, "a.csv");
  CHECK_INT(r->dups[0].first_line, 2);
  CHECK_STR(r->conflict_items[0].first_file, "a.csv");
  CHECK_INT(r->conflict_items[0].first_line, 3);
  CHECK_STR(r->conflict_items[0].intent, "bye");
  cp_check_free(c);
}

static void test_max_items(void) {
  cp_check_opts o;
  cp_check_opts_init(&o);
  o.max_items = 2;
  cp_check *c = cp_check_new(&o);
  const char *in = "a\na\na\na\na\n";
  cp_check_buffer(c, "in", in, strlen(in), CP_FMT_LINES);
  const cp_check_report *r = cp_check_finish(c);
  CHECK_INT(r->duplicates, 4);
  CHECK_INT(r->n_dups, 2);
  CHECK_INT(r->dups[1].line, 3);
  cp_check_free(c);
}

/* ---- large inputs against the set ---------------------------------------- */

static unsigned long long rng = 0x9E3779B97F4A7C15ull;
static unsigned rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (unsigned)(rng >> 16);
}

/* About `mib` MiB of lines: repeats, case and space variants, blanks, a
 * few non-ASCII and tab lines. */
static char *make_corpus(size_t mib, size_t *len) {
  size_t cap = (mib << 20) + 4096, n = 0;
  char *s = malloc(cap);
  while (n + 200 < (mib << 20)) {
    unsigned r = rnd() % 100, k = rnd() % 60000;
    int w;
    if (r < 3) w = snprintf(s + n, cap - n, "\n");
    else if (r < 10) w = snprintf(s + n, cap - n, "  UTTERANCE NUMBER %u PLEASE  \n", k);
    else if (r < 12) w = snprintf(s + n, cap - n, "caf\xC3\xA9\tnumber %u\n", k % 500);
    else if (r < 13) w = snprintf(s + n, cap - n, "STRA\xC3\x9F" "E %u\n", k % 300);
    else w = snprintf(s + n, cap - n, "utterance number %u please and some more words\n", k);
    n += (size_t)w;
  }
  *len = n;
  return s;
}

#define REF_ITEMS 1000 /* the check's default max_items */

/* The reference: the same lines through the set, one at a time. first
 * gets (line, line of first occurrence) of the first REF_ITEMS repeats. */
static void reference(const char *s, size_t len, cp_norm_mode mode,
                      uint64_t *unique, uint64_t *dups,
                      uint64_t first[][2]) {
  cp_dedupe_set *set = cp_dedupe_set_new(mode);
  uint64_t line = 0, nd = 0;
  const char *p = s, *end = s + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)((nl ? nl : end) - p);
    line++;
    if (!cp_is_blank(p, n)) {
      cp_dedupe_hit hit;
      if (cp_dedupe_set_add(set, p, n, NULL, 0, line, &hit) != CP_DEDUPE_NEW) {
        if (nd < REF_ITEMS) {
          first[nd][0] = line;
          first[nd][1] = hit.line;
        }
        nd++;
      }
    }
    p = nl ? nl + 1 : end;
  }
  *unique = cp_dedupe_set_count(set);
  *dups = nd;
  cp_dedupe_set_free(set);
}

/* resident: how much of the input stays mapped, so how many repeats are
 * settled at once rather than in confirming passes: none, some (most of
 * them, the usual case), all. Either way the listed repeats are the first
 * ones in input order. */
static void big_case(const char *data, size_t len, cp_norm_mode mode,
                     const char *threads, uint64_t mask, size_t resident) {
  static uint64_t first[REF_ITEMS][2];
  uint64_t unique, dups;
  reference(data, len, mode, &unique, &dups, first);
  setenv("COGPIPE_THREADS", threads, 1);
  cp_check_opts o;
  cp_check_opts_init(&o);
  o.mode = mode;
  o.test_hash_mask = mask;
  o.resident_bytes = resident;
  cp_check *c = cp_check_new(&o);
  cp_check_buffer(c, "big", data, len, CP_FMT_LINES);
  const cp_check_report *r = cp_check_finish(c);
  CHECK_INT(r->unique, unique);
  CHECK_INT(r->duplicates, dups);
  CHECK(dups > 100000); /* enough for several confirming passes */
  CHECK_INT(r->problems.total, 0);
  CHECK_INT(r->n_dups, REF_ITEMS);
  for (size_t i = 0; i < REF_ITEMS && i < r->n_dups; i++) {
    if (r->dups[i].line != first[i][0] || r->dups[i].first_line != first[i][1]) {
      CHECK_INT(r->dups[i].line, first[i][0]);
      CHECK_INT(r->dups[i].first_line, first[i][1]);
      break;
    }
  }
  cp_check_free(c);
  unsetenv("COGPIPE_THREADS");
}

static void test_check_large(void) {
  size_t len;
  char *data = make_corpus(12, &len);
  /* With 64 KiB resident, the first repeats listed come from both sides. */
  size_t some = (size_t)1 << 20, all = CP_CHECK_RESIDENT_DEFAULT;
  big_case(data, len, CP_NORM_TRIM, "2", 0, (size_t)64 << 10);
  big_case(data, len, CP_NORM_TRIM, "2", 0, some);
  big_case(data, len, CP_NORM_TRIM, "2", 0, 0);
  big_case(data, len, CP_NORM_TRIM, "2", 0, all);
  big_case(data, len, CP_NORM_TRIM, "1", 0, some);
  big_case(data, len, CP_NORM_CASEFOLD, "2", 0, some);
  big_case(data, len, CP_NORM_CASEFOLD, "1", 0, 0);
  big_case(data, len, CP_NORM_COLLAPSE, "2", 0, some);
  /* 16 distinct hash values: collisions everywhere, same answers. */
  size_t small = 600000;
  while (data[small - 1] != '\n') small--;
  static uint64_t first[REF_ITEMS][2];
  uint64_t unique, dups;
  reference(data, small, CP_NORM_TRIM, &unique, &dups, first);
  cp_check_opts o;
  cp_check_opts_init(&o);
  o.test_hash_mask = 0xF000000000000000ull;
  o.resident_bytes = small / 2; /* collisions on both sides */
  cp_check *c = cp_check_new(&o);
  cp_check_buffer(c, "small", data, small, CP_FMT_LINES);
  const cp_check_report *r = cp_check_finish(c);
  CHECK_INT(r->unique, unique);
  CHECK_INT(r->duplicates, dups);
  CHECK_INT(r->dups[0].first_line, first[0][1]);
  cp_check_free(c);
  free(data);
}

/* Candidate texts longer than a set's first arrays hold: the set grows,
 * keeping what it had. Three 1.5 MiB lines each repeated after a 1 KiB
 * resident head, on both thread counts. */
static void test_check_long_candidates(void) {
  size_t each = (size_t)3 << 19, len = 0;
  char *data = malloc(6 * (each + 1) + 64);
  CHECK(data != NULL);
  len += (size_t)sprintf(data, "head\n");
  for (int round = 0; round < 2; round++)
    for (int k = 0; k < 3; k++) {
      memset(data + len, 'a' + k, each);
      len += each;
      data[len++] = '\n';
    }
  const char *threads[] = {"1", "2"};
  for (int t = 0; t < 2; t++) {
    setenv("COGPIPE_THREADS", threads[t], 1);
    cp_check_opts o;
    cp_check_opts_init(&o);
    o.limits.max_chars = 0;
    o.limits.max_bytes = 0;
    o.resident_bytes = 1024;
    cp_check *c = cp_check_new(&o);
    cp_check_buffer(c, "long", data, len, CP_FMT_LINES);
    const cp_check_report *r = cp_check_finish(c);
    CHECK_INT(r->unique, 4);
    CHECK_INT(r->duplicates, 3);
    CHECK_INT(r->n_dups, 3);
    for (size_t i = 0; i < r->n_dups; i++) {
      CHECK_INT(r->dups[i].line, 5 + i);
      CHECK_INT(r->dups[i].first_line, 2 + i);
    }
    cp_check_free(c);
  }
  unsetenv("COGPIPE_THREADS");
  free(data);
}

static void test_check_file(void) {
  size_t len;
  char *data = make_corpus(6, &len);
  char path[512];
  const char *tmp = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/cp_dedupe_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  CHECK_INT(write(fd, data, len), len);
  close(fd);
  static uint64_t first[REF_ITEMS][2];
  uint64_t unique, dups;
  reference(data, len, CP_NORM_TRIM, &unique, &dups, first);
  /* A mapped file: pages past the resident head are dropped and mapped
   * again by the confirming passes. */
  size_t resident[2] = {(size_t)2 << 20, CP_CHECK_RESIDENT_DEFAULT};
  for (int k = 0; k < 2; k++) {
    cp_check_opts o;
    cp_check_opts_init(&o);
    o.resident_bytes = resident[k];
    cp_check *c = cp_check_new(&o);
    char err[256];
    CHECK_INT(cp_check_file(c, path, CP_FMT_LINES, err, sizeof err), 0);
    CHECK_INT(cp_check_file(c, "/nonexistent/x", CP_FMT_LINES, err, sizeof err), -1);
    CHECK(strstr(err, "/nonexistent/x") != NULL);
    const cp_check_report *r = cp_check_finish(c);
    CHECK_INT(r->bytes, len);
    CHECK_INT(r->unique, unique);
    CHECK_INT(r->duplicates, dups);
    CHECK_STR(r->dups[0].file, path);
    CHECK_INT(r->dups[REF_ITEMS - 1].line, first[REF_ITEMS - 1][0]);
    CHECK_INT(r->dups[REF_ITEMS - 1].first_line, first[REF_ITEMS - 1][1]);
    cp_check_free(c);
  }
  unlink(path);
  free(data);
}

int main(void) {
  RUN(test_set_basics);
  RUN(test_set_modes);
  RUN(test_set_collisions);
  RUN(test_check_lines);
  RUN(test_check_conflicts);
  RUN(test_check_csv_and_files);
  RUN(test_max_items);
  RUN(test_check_large);
  RUN(test_check_long_candidates);
  RUN(test_check_file);
  DONE();
}
