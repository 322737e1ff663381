/*
 * test_normalize.c -- unit tests of normalize.c: the four modes on ASCII
 * and non-ASCII text, the fast ASCII paths against the general ones, and
 * case folding without white-space changes.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "normalize.h"

static cp_buf scratch = CP_BUF_INIT;
static char out[512];

static const char *norm(cp_norm_mode m, const char *s) {
  const char *p;
  size_t n;
  cp_normalize(m, s, strlen(s), &scratch, &p, &n);
  memcpy(out, p, n);
  out[n] = '\0';
  return out;
}

static void test_modes_parse(void) {
  cp_norm_mode m;
  CHECK_INT(cp_norm_mode_parse("none", &m), 0);
  CHECK_INT(m, CP_NORM_NONE);
  CHECK_INT(cp_norm_mode_parse("casefold", &m), 0);
  CHECK_INT(m, CP_NORM_CASEFOLD);
  CHECK_INT(cp_norm_mode_parse("CaseFold", &m), -1);
  CHECK_INT(cp_norm_mode_parse("", &m), -1);
  CHECK_STR(cp_norm_mode_name(CP_NORM_COLLAPSE), "collapse");
}

static void test_none_and_trim(void) {
  CHECK_STR(norm(CP_NORM_NONE, "  Hi  there "), "  Hi  there ");
  CHECK_STR(norm(CP_NORM_TRIM, "  Hi  there "), "Hi  there");
  CHECK_STR(norm(CP_NORM_TRIM, "\t\xC2\xA0Hi\xE3\x80\x80"), "Hi"); /* NBSP, U+3000 */
  CHECK_STR(norm(CP_NORM_TRIM, "   "), "");
  CHECK_STR(norm(CP_NORM_TRIM, ""), "");
  /* Trim returns a span of the input: no copy. */
  const char *s = "  abc ";
  const char *p;
  size_t n;
  cp_normalize(CP_NORM_TRIM, s, strlen(s), &scratch, &p, &n);
  CHECK(p == s + 2);
  CHECK_INT(n, 3);
}

static void test_collapse(void) {
  CHECK_STR(norm(CP_NORM_COLLAPSE, "  book  a\t\tflight \n"), "book a flight");
  CHECK_STR(norm(CP_NORM_COLLAPSE, "a\xC2\xA0\xC2\xA0" "b"), "a b");
  CHECK_STR(norm(CP_NORM_COLLAPSE, "Keep Case"), "Keep Case");
  CHECK_STR(norm(CP_NORM_COLLAPSE, "caf\xC3\xA9  ol\xC3\xA9"), "caf\xC3\xA9 ol\xC3\xA9");
}

static void test_casefold(void) {
  CHECK_STR(norm(CP_NORM_CASEFOLD, "  HELLO   World "), "hello world");
  CHECK_STR(norm(CP_NORM_CASEFOLD, "Stra\xC3\x9F" "e"), "strasse"); /* ß */
  CHECK_STR(norm(CP_NORM_CASEFOLD, "\xEF\xAC\x81le"), "file");      /* ﬁ ligature */
  CHECK_STR(norm(CP_NORM_CASEFOLD, "\xEF\xBC\xA1\xEF\xBC\xA2"), "ab"); /* full-width AB */
  CHECK_STR(norm(CP_NORM_CASEFOLD, "CAF\xC3\x89"), "caf\xC3\xA9");  /* É */
  CHECK_STR(norm(CP_NORM_CASEFOLD, "E\xCC\x81"), "\xC3\xA9");       /* e + combining acute */
  CHECK_STR(norm(CP_NORM_CASEFOLD, "I\xE2\x80\x99LL GO"), "i\xE2\x80\x99ll go");
  CHECK_STR(norm(CP_NORM_CASEFOLD, "TAB\tSEP"), "tab sep");
  /* Ill-formed UTF-8 is kept, with its ASCII folded. */
  CHECK_STR(norm(CP_NORM_CASEFOLD, "AB\xFF  C"), "ab\xFF c");
}

/* cp_normalize_plain must give what cp_normalize gives, for every mode,
 * on printable ASCII. */
static void test_plain_agrees(void) {
  static const char alphabet[] = "aZ  b.Y";
  char s[64];
  srand(7);
  for (int iter = 0; iter < 4000; iter++) {
    size_t n = (size_t)(rand() % 40);
    for (size_t i = 0; i < n; i++) s[i] = alphabet[rand() % 7];
    for (int m = CP_NORM_NONE; m <= CP_NORM_CASEFOLD; m++) {
      const char *p, *q;
      size_t pn, qn;
      cp_buf other = CP_BUF_INIT;
      cp_normalize((cp_norm_mode)m, s, n, &scratch, &p, &pn);
      cp_normalize_plain((cp_norm_mode)m, s, n, &other, &q, &qn);
      int same = pn == qn && memcmp(p, q, pn) == 0;
      cp_buf_free(&other);
      if (!same) {
        CHECK(same);
        return;
      }
    }
  }
}

static void test_casefold_only(void) {
  const char *p;
  size_t n;
  cp_casefold("Hello  WORLD ", 13, &scratch, &p, &n);
  CHECK_INT(n, 13);
  CHECK(memcmp(p, "hello  world ", 13) == 0);
  cp_casefold("\xC3\x9F", 2, &scratch, &p, &n);
  CHECK_INT(n, 2);
  CHECK(memcmp(p, "ss", 2) == 0);
}

static void test_blank(void) {
  CHECK(cp_is_blank("", 0));
  CHECK(cp_is_blank(" \t\r\n", 4));
  CHECK(cp_is_blank("\xE3\x80\x80", 3));
  CHECK(!cp_is_blank(" x ", 3));
  CHECK(!cp_is_blank("\xE2\x80\x8B", 3)); /* zero width space is text */
  size_t a, b;
  cp_trim_span("  x y  ", 7, &a, &b);
  CHECK_INT(a, 2);
  CHECK_INT(b, 5);
}

int main(void) {
  RUN(test_modes_parse);
  RUN(test_none_and_trim);
  RUN(test_collapse);
  RUN(test_casefold);
  RUN(test_plain_agrees);
  RUN(test_casefold_only);
  RUN(test_blank);
  cp_buf_free(&scratch);
  DONE();
}
