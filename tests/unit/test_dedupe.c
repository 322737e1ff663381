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
static void big_case_mem(const char *data, size_t len, cp_norm_mode mode,
                         const char *threads, uint64_t mask, size_t resident,
                         size_t memory, unsigned min_passes) {
  static uint64_t first[REF_ITEMS][2];
  uint64_t unique, dups;
  reference(data, len, mode, &unique, &dups, first);
  setenv("COGPIPE_THREADS", threads, 1);
  cp_check_opts o;
  cp_check_opts_init(&o);
  o.mode = mode;
  o.test_hash_mask = mask;
  o.resident_bytes = resident;
  if (memory) o.memory_bytes = memory;
  cp_check *c = cp_check_new(&o);
  cp_check_buffer(c, "big", data, len, CP_FMT_LINES);
  const cp_check_report *r = cp_check_finish(c);
  CHECK_INT(r->unique, unique);
  CHECK_INT(r->duplicates, dups);
  if (r->passes < min_passes)
    CHECK_INT(r->passes, min_passes); /* says how many it took */
  if (!memory) CHECK_INT(r->passes, 1);
  if (!memory && len > ((size_t)4 << 20))
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

static void big_case(const char *data, size_t len, cp_norm_mode mode,
                     const char *threads, uint64_t mask, size_t resident) {
  big_case_mem(data, len, mode, threads, mask, resident, 0, 1);
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

/* About `mib` MiB of short lines, nine in ten of them new texts, the rest
 * repeats of any earlier one: a table too big for a small bound. */
static char *make_distinct(size_t mib, size_t *len) {
  size_t cap = (mib << 20) + 4096, n = 0;
  unsigned next = 0;
  char *s = malloc(cap);
  while (n + 64 < (mib << 20)) {
    unsigned r = rnd() % 100;
    unsigned k = r < 90 || !next ? next++ : rnd() % next;
    int w = r < 3 ? snprintf(s + n, cap - n, "\n")
            : r < 6 ? snprintf(s + n, cap - n, "  ITEM %u\n", k)
                    : snprintf(s + n, cap - n, "item %u\n", k);
    n += (size_t)w;
  }
  *len = n;
  return s;
}

/* More distinct texts than the table may hold at once: the check counts
 * them again part by part of the hash space, with the same answers --
 * counts, and the first repeats in input order -- whichever side settles
 * them; the resident head gives way first. */
static void test_check_parts(void) {
  size_t len;
  char *data = make_distinct(6, &len);
  size_t mem = (size_t)10 << 20, all = CP_CHECK_RESIDENT_DEFAULT;
  big_case_mem(data, len, CP_NORM_TRIM, "2", 0, all, mem, 3);
  big_case_mem(data, len, CP_NORM_CASEFOLD, "1", 0, (size_t)1 << 20, mem, 3);
  free(data);
  /* Room for the table, not for the head as well: no second pass. */
  data = make_corpus(12, &len);
  big_case_mem(data, len, CP_NORM_TRIM, "2", 0, all, (size_t)16 << 20, 1);
  /* 4096 hash values, in 256 parts: collisions in the passes after. */
  size_t small = 600000;
  while (data[small - 1] != '\n') small--;
  big_case_mem(data, small, CP_NORM_TRIM, "1", 0xF00000000000FF00ull, 0,
               (size_t)1 << 20, 2);
  /* A bound too small for any table: one more pass, without it. */
  big_case_mem(data, small, CP_NORM_TRIM, "1", 0, 0, (size_t)64 << 10, 2);
  free(data);
}

/* Parts across files, with conflicts: the first occurrence of a repeat
 * may be in an earlier file, and the overflow may come in a later one. */
static void test_check_parts_files(void) {
  size_t n = 40000, cap = n * 40;
  char *a = malloc(cap), *b = malloc(cap);
  size_t la = (size_t)sprintf(a, "text,intent\n"), lb = (size_t)sprintf(b, "intent,text\n");
  for (size_t i = 0; i < n; i++) {
    la += (size_t)sprintf(a + la, "utterance %zu,i%zu\n", i, i % 7);
    lb += (size_t)sprintf(b + lb, "i%zu,utterance %zu\n", (i * 3) % 7, 2 * i);
  }
  for (int k = 0; k < 2; k++) {
    cp_check_opts o;
    cp_check_opts_init(&o);
    o.max_items = 50;
    if (k) o.memory_bytes = (size_t)1 << 20;
    cp_check *c = cp_check_new(&o);
    cp_check_buffer(c, "a.csv", a, la, CP_FMT_CSV);
    cp_check_buffer(c, "b.csv", b, lb, CP_FMT_CSV);
    const cp_check_report *r = cp_check_finish(c);
    CHECK(k ? r->passes > 1 : r->passes == 1);
    CHECK_INT(r->lines, 2 * n);
    CHECK_INT(r->unique, n + n / 2);
    CHECK_INT(r->duplicates + r->conflicts, n / 2);
    /* b's utterance 2j repeats a's line j + 2 when 2j < n. */
    size_t dup = 0, conf = 0;
    for (size_t j = 0; 2 * j < n; j++) {
      int same = (2 * j) % 7 == (j * 3) % 7;
      if (same) dup++;
      else conf++;
    }
    CHECK_INT(r->duplicates, dup);
    CHECK_INT(r->conflicts, conf);
    CHECK_INT(r->n_conflicts, 50);
    CHECK_STR(r->conflict_items[0].file, "b.csv");
    CHECK_STR(r->conflict_items[0].first_file, "a.csv");
    CHECK_INT(r->conflict_items[0].line, 3); /* j = 1: utterance 2 */
    CHECK_INT(r->conflict_items[0].first_line, 4);
    CHECK_STR(r->conflict_items[0].text, "utterance 2");
    CHECK_STR(r->conflict_items[0].intent, "i3");
    CHECK_STR(r->conflict_items[0].first_intent, "i2");
    CHECK_STR(r->conflict_items[49].file, "b.csv");
    cp_check_free(c);
  }
  free(a);
  free(b);
}

/* Texts up to CP_CHECK_MAX_TEXT bytes are deduplicated; longer ones are a
 * problem each, not compared. */
static void test_check_text_limit(void) {
  size_t max = CP_CHECK_MAX_TEXT;
  char *data = malloc(3 * (max + 2) + 16);
  size_t len = 0;
  for (int k = 0; k < 2; k++) {
    memset(data + len, 'm', max);
    len += max;
    data[len++] = '\n';
  }
  memset(data + len, 'o', max + 1);
  len += max + 1;
  data[len++] = '\n';
  cp_check_opts o;
  cp_check_opts_init(&o);
  o.limits.max_chars = 0;
  cp_check *c = cp_check_new(&o);
  cp_check_buffer(c, "t", data, len, CP_FMT_LINES);
  const cp_check_report *r = cp_check_finish(c);
  CHECK_INT(r->unique, 1);
  CHECK_INT(r->duplicates, 1);
  CHECK_INT(r->invalid, 1);
  CHECK_INT(r->problems.total, 1);
  CHECK_INT(r->problems.items[0].line, 3);
  CHECK(strstr(r->problems.items[0].reason, "over 1 MiB") != NULL);
  /* The repeat is listed, its text read again from the input. */
  CHECK_INT(r->n_dups, 1);
  CHECK_INT(strlen(r->dups[0].text), max);
  cp_check_free(c);
  free(data);
}

/* The listed repeats' texts stop at CP_CHECK_LISTED_TEXT bytes; all are
 * counted. */
static void test_check_listed_text(void) {
  size_t each = (size_t)300 << 10, n = 12, len = 0;
  char *data = malloc(2 * n * (each + 1));
  for (int round = 0; round < 2; round++)
    for (size_t k = 0; k < n; k++) {
      memset(data + len, 'a' + (int)k, each);
      len += each;
      data[len++] = '\n';
    }
  cp_check_opts o;
  cp_check_opts_init(&o);
  o.limits.max_chars = 0;
  cp_check *c = cp_check_new(&o);
  cp_check_buffer(c, "t", data, len, CP_FMT_LINES);
  const cp_check_report *r = cp_check_finish(c);
  CHECK_INT(r->duplicates, n);
  CHECK_INT(r->n_dups, CP_CHECK_LISTED_TEXT / each);
  CHECK_INT(r->dups[0].line, n + 1);
  cp_check_free(c);
  free(data);
}

/* Candidate texts as long as a check deduplicates, each repeated after a
 * 1 KiB resident head, so that they are confirmed by passes over the
 * input, on both thread counts. */
static void test_check_long_candidates(void) {
  size_t each = (size_t)600 << 10, len = 0; /* 3 listed: under 2 MiB */
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

/* Memory that runs out in a check -- in any allocation, on either thread
 * -- ends it failed (or, where it only cost a head start, still right): no
 * crash, no thread left waiting, nothing leaked, and no wrong report given
 * as a result. */
static void oom_check(const char *data, size_t len, const char *threads,
                      int every, uint64_t unique) {
  setenv("COGPIPE_THREADS", threads, 1);
  int failed = 0;
  /* every allocation, or (a large input) a spread of them: 1, 3, 7, 15, ... */
  for (long k = 1;; k = every ? k + 1 : 2 * k + 1) {
    cp_check_opts o;
    cp_check_opts_init(&o);
    o.resident_bytes = len / 3; /* repeats on both sides */
    cp_alloc_fail_at(k);
    cp_check *c = cp_check_new(&o);
    const cp_check_report *r = NULL;
    if (c) {
      cp_check_buffer(c, "oom", data, len, CP_FMT_LINES);
      r = cp_check_finish(c);
    }
    int pending = cp_alloc_fail_pending();
    cp_alloc_fail_at(0);
    if (pending) {
      CHECK(c && !cp_check_failed(c));
      CHECK_INT(r->unique, unique);
      cp_check_free(c);
      break;
    }
    /* failed, or (a head start that could not be had: the table grown up
     * front, a buffer warmed) the right answer all the same */
    if (!c || cp_check_failed(c) || r->problems.out_of_memory) failed++;
    else CHECK_INT(r->unique, unique);
    cp_check_free(c);
  }
  CHECK(failed > 3);
  unsetenv("COGPIPE_THREADS");
}

/* The unique texts of data by a check that has all the memory it wants
 * (the tests above hold it to the reference). */
static uint64_t unique_of(const char *data, size_t len, const char *threads) {
  setenv("COGPIPE_THREADS", threads, 1);
  cp_check_opts o;
  cp_check_opts_init(&o);
  o.resident_bytes = len / 3;
  cp_check *c = cp_check_new(&o);
  cp_check_buffer(c, "oom", data, len, CP_FMT_LINES);
  uint64_t u = cp_check_finish(c)->unique;
  cp_check_free(c);
  unsetenv("COGPIPE_THREADS");
  return u;
}

static void test_check_out_of_memory(void) {
  size_t len;
  char *data = make_corpus(5, &len); /* past THREAD_MIN: a scanning thread */
  size_t small = 40000;
  while (data[small - 1] != '\n') small--;
  oom_check(data, small, "1", 1, unique_of(data, small, "1"));
  oom_check(data, len, "2", 0, unique_of(data, len, "2"));
  free(data);
}

/* A set that runs out of memory says so, and stores nothing it could not
 * store whole. */
static void test_set_out_of_memory(void) {
  for (long k = 1;; k++) {
    cp_alloc_fail_at(k);
    cp_dedupe_set *s = cp_dedupe_set_new(CP_NORM_CASEFOLD);
    cp_dedupe_hit hit;
    int failed = !s;
    for (int i = 0; s && i < 3000 && !failed; i++) {
      char t[64], in[16];
      int n = snprintf(t, sizeof t, "  Utterance N\xC3\xBAmero %d  ", i % 2000);
      int m = snprintf(in, sizeof in, "intent%d", i % 40);
      cp_dedupe_set_add(s, t, (size_t)n, in, (size_t)m, (uint64_t)i + 1, &hit);
      failed = cp_dedupe_set_failed(s);
    }
    int pending = cp_alloc_fail_pending();
    cp_alloc_fail_at(0);
    if (pending) {
      CHECK(s && !failed);
      CHECK_INT(cp_dedupe_set_count(s), 2000);
      cp_dedupe_set_free(s);
      break;
    }
    CHECK(failed);
    cp_dedupe_set_free(s);
  }
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
  RUN(test_check_parts);
  RUN(test_check_parts_files);
  RUN(test_check_text_limit);
  RUN(test_check_listed_text);
  RUN(test_check_file);
  RUN(test_set_out_of_memory);
  RUN(test_check_out_of_memory);
  DONE();
}
