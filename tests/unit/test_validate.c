/*
 * test_validate.c -- unit tests of validate.c: every problem kind of a line
 * with its exact line, column (code points) and byte offset, the length
 * limit, and the sink's cap and counts.
 */
#include <string.h>

#include "check.h"
#include "validate.h"

static cp_limits lim;
static cp_problems probs;

static void reset(size_t max_kept) {
  cp_problems_free(&probs);
  cp_problems_init(&probs, max_kept);
  cp_problems_set_file(&probs, "in.txt");
  cp_limits_init(&lim);
}

static cp_text_info line(const char *s, uint64_t lineno, uint64_t offset) {
  cp_text_info info;
  cp_line_check(&lim, &probs, s, strlen(s), lineno, offset, &info);
  return info;
}

#define PROBLEM(i, l, c, o, k)                  \
  do {                                          \
    CHECK((size_t)(i) < probs.n);               \
    if ((size_t)(i) < probs.n) {                \
      CHECK_INT(probs.items[i].line, l);        \
      CHECK_INT(probs.items[i].column, c);      \
      CHECK_INT(probs.items[i].offset, o);      \
      CHECK_INT(probs.items[i].kind, k);        \
      CHECK_STR(probs.items[i].file, "in.txt"); \
    }                                           \
  } while (0)

static void test_clean_lines(void) {
  reset(10);
  cp_text_info i = line("book a flight", 1, 0);
  CHECK_INT(i.issues, 0);
  CHECK_INT(i.chars, 13);
  CHECK(i.plain);
  i = line("tab\tis fine", 2, 14);
  CHECK_INT(i.issues, 0);
  CHECK(!i.plain);
  i = line("caf\xC3\xA9 \xF0\x9F\x98\x80", 3, 30);
  CHECK_INT(i.issues, 0);
  CHECK_INT(i.chars, 6);
  CHECK_INT(probs.total, 0);
}

static void test_control(void) {
  reset(10);
  /* "é" is two bytes: the control character is column 4, byte 4. */
  cp_text_info i = line("\xC3\xA9" "ab\x01" "c\x7F", 7, 100);
  CHECK_INT(i.issues, 2);
  PROBLEM(0, 7, 4, 104, CP_PROB_CONTROL);
  PROBLEM(1, 7, 6, 106, CP_PROB_CONTROL);
  CHECK(strstr(probs.items[0].reason, "U+0001") != NULL);
  CHECK(strstr(probs.items[1].reason, "U+007F") != NULL);
  reset(10);
  line("crlf\r", 2, 10);
  PROBLEM(0, 2, 5, 14, CP_PROB_CONTROL);
  CHECK(strstr(probs.items[0].reason, "carriage return") != NULL);
  reset(10);
  line("c1 \xC2\x85!", 1, 0); /* U+0085, a C1 control */
  PROBLEM(0, 1, 4, 3, CP_PROB_CONTROL);
}

static void test_utf8(void) {
  reset(10);
  cp_text_info i = line("ok \xE2\x82\xAC then \xFF and \xE2\x82", 3, 50);
  CHECK_INT(i.issues, 2);
  PROBLEM(0, 3, 11, 50 + 12, CP_PROB_UTF8);
  PROBLEM(1, 3, 17, 50 + 18, CP_PROB_UTF8);
  CHECK(strstr(probs.items[0].reason, "0xFF") != NULL);
  CHECK(strstr(probs.items[1].reason, "truncated") != NULL);
  reset(10);
  line("\xED\xA0\x80", 1, 0);
  CHECK(strstr(probs.items[0].reason, "surrogate") != NULL);
  PROBLEM(0, 1, 1, 0, CP_PROB_UTF8);
  /* The maximal subparts of ED A0 80 are three single bytes. */
  CHECK_INT(probs.total, 3);
}

static void test_bom(void) {
  reset(10);
  line("\xEF\xBB\xBFhello", 1, 0);
  PROBLEM(0, 1, 1, 0, CP_PROB_BOM);
  CHECK(strstr(probs.items[0].reason, "start of the file") != NULL);
  reset(10);
  line("hi\xEF\xBB\xBFthere", 4, 20);
  PROBLEM(0, 4, 3, 22, CP_PROB_BOM);
  CHECK(strstr(probs.items[0].reason, "inside") != NULL);
}

static void test_too_long(void) {
  reset(10);
  lim.max_chars = 5;
  cp_text_info i = line("abcdefgh", 2, 9);
  CHECK_INT(i.issues, 1);
  PROBLEM(0, 2, 6, 14, CP_PROB_TOO_LONG);
  CHECK(strstr(probs.items[0].reason, "8 characters") != NULL);
  /* Counted in code points: five "é" are ten bytes and not too long. */
  reset(10);
  lim.max_chars = 5;
  i = line("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9", 1, 0);
  CHECK_INT(i.issues, 0);
  i = line("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9x", 2, 11);
  PROBLEM(0, 2, 6, 21, CP_PROB_TOO_LONG);
  /* Past the limit inside a run of plain ASCII after a non-ASCII start. */
  reset(10);
  lim.max_chars = 3;
  line("\xC3\xA9" "abcdef", 1, 0);
  PROBLEM(0, 1, 4, 4, CP_PROB_TOO_LONG);
  reset(10);
  lim.max_chars = 0; /* no limit */
  i = line("a very long line indeed, longer than any limit", 1, 0);
  CHECK_INT(i.issues, 0);
}

static void test_cap_and_counts(void) {
  reset(2);
  line("\x01\x02\x03\x04", 1, 0);
  CHECK_INT(probs.total, 4);
  CHECK_INT(probs.n, 2);
  CHECK_INT(probs.by_kind[CP_PROB_CONTROL], 4);
  PROBLEM(1, 1, 2, 1, CP_PROB_CONTROL);
  CHECK_STR(cp_problem_kind_name(CP_PROB_TOO_LARGE), "too_large");
  CHECK_STR(cp_problem_kind_name(CP_PROB_ANNOTATION), "annotation");
  reset(0);
  line("\x01", 1, 0);
  CHECK_INT(probs.total, 1);
  CHECK_INT(probs.n, 0);
}

int main(void) {
  RUN(test_clean_lines);
  RUN(test_control);
  RUN(test_utf8);
  RUN(test_bom);
  RUN(test_too_long);
  RUN(test_cap_and_counts);
  cp_problems_free(&probs);
  DONE();
}
