/*
 * test_utf8.c -- unit tests of utf8.c: decoding and its error kinds, code
 * point counting, the character classes and the printable-ASCII scan.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "utf8.h"

static size_t dec(const char *s, size_t len, uint32_t *cp, cp_utf8_err *err) {
  return cp_utf8_decode(s, len, cp, err);
}

static void test_decode_valid(void) {
  uint32_t cp;
  cp_utf8_err err;
  CHECK_INT(dec("A", 1, &cp, &err), 1);
  CHECK_INT(cp, 'A');
  CHECK_INT(err, CP_UTF8_OK);
  CHECK_INT(dec("\xC3\xA9", 2, &cp, &err), 2); /* é */
  CHECK_INT(cp, 0xE9);
  CHECK_INT(dec("\xE2\x80\x99", 3, &cp, &err), 3); /* ’ */
  CHECK_INT(cp, 0x2019);
  CHECK_INT(dec("\xF0\x9F\x98\x80", 4, &cp, &err), 4); /* 😀 */
  CHECK_INT(cp, 0x1F600);
  CHECK_INT(dec("\xF4\x8F\xBF\xBF", 4, &cp, &err), 4);
  CHECK_INT(cp, 0x10FFFF);
  CHECK_INT(err, CP_UTF8_OK);
}

static void test_decode_errors(void) {
  uint32_t cp;
  cp_utf8_err err;
  CHECK_INT(dec("\x80", 1, &cp, &err), 1);
  CHECK_INT(err, CP_UTF8_BAD_BYTE);
  CHECK_INT(dec("\xFF", 1, &cp, &err), 1);
  CHECK_INT(err, CP_UTF8_BAD_BYTE);
  CHECK_INT(dec("\xC0\xAF", 2, &cp, &err), 1);
  CHECK_INT(err, CP_UTF8_OVERLONG);
  CHECK_INT(dec("\xE0\x80\xAF", 3, &cp, &err), 1);
  CHECK_INT(err, CP_UTF8_OVERLONG);
  CHECK_INT(dec("\xF0\x80\x80\xAF", 4, &cp, &err), 1);
  CHECK_INT(err, CP_UTF8_OVERLONG);
  CHECK_INT(dec("\xED\xA0\x80", 3, &cp, &err), 1);
  CHECK_INT(err, CP_UTF8_SURROGATE);
  CHECK_INT(dec("\xF4\x90\x80\x80", 4, &cp, &err), 1);
  CHECK_INT(err, CP_UTF8_TOO_LARGE);
  /* A lead byte cut short: the maximal subpart is what was there. */
  CHECK_INT(dec("\xE2\x80", 2, &cp, &err), 2);
  CHECK_INT(err, CP_UTF8_TRUNCATED);
  CHECK_INT(dec("\xE2\x80Z", 3, &cp, &err), 2);
  CHECK_INT(err, CP_UTF8_TRUNCATED);
  CHECK_INT(dec("\xC3", 1, &cp, &err), 1);
  CHECK_INT(err, CP_UTF8_TRUNCATED);
  CHECK(strlen(cp_utf8_err_text(CP_UTF8_SURROGATE)) > 0);
}

static void test_count_valid(void) {
  CHECK_INT(cp_utf8_count("", 0), 0);
  CHECK_INT(cp_utf8_count("abc", 3), 3);
  CHECK_INT(cp_utf8_count("caf\xC3\xA9", 5), 4);
  CHECK_INT(cp_utf8_count("\xF0\x9F\x98\x80!", 5), 2);
  /* Each ill-formed byte is one column. */
  CHECK_INT(cp_utf8_count("a\xFF\xFE" "b", 4), 4);
  CHECK_INT(cp_utf8_count("a\xE2\x80", 3), 3);
  CHECK(cp_utf8_valid("caf\xC3\xA9", 5));
  CHECK(!cp_utf8_valid("caf\xC3", 4));
  CHECK(!cp_utf8_valid("\xED\xA0\x80", 3));
  CHECK(cp_utf8_valid("", 0));
}

static void test_encode_offset(void) {
  char b[4];
  CHECK_INT(cp_utf8_encode('x', b), 1);
  CHECK_INT(cp_utf8_encode(0xE9, b), 2);
  CHECK(memcmp(b, "\xC3\xA9", 2) == 0);
  CHECK_INT(cp_utf8_encode(0x20AC, b), 3);
  CHECK(memcmp(b, "\xE2\x82\xAC", 3) == 0);
  CHECK_INT(cp_utf8_encode(0x1F600, b), 4);
  CHECK(memcmp(b, "\xF0\x9F\x98\x80", 4) == 0);
  const char *s = "a\xC3\xA9\xE2\x82\xAC" "b";
  CHECK_INT(cp_utf8_offset(s, 7, 0), 0);
  CHECK_INT(cp_utf8_offset(s, 7, 1), 1);
  CHECK_INT(cp_utf8_offset(s, 7, 2), 3);
  CHECK_INT(cp_utf8_offset(s, 7, 3), 6);
  CHECK_INT(cp_utf8_offset(s, 7, 9), 7);
}

static void test_classes(void) {
  CHECK(cp_utf8_is_space(' '));
  CHECK(cp_utf8_is_space('\t'));
  CHECK(cp_utf8_is_space('\n'));
  CHECK(cp_utf8_is_space(0xA0));
  CHECK(cp_utf8_is_space(0x3000));
  CHECK(cp_utf8_is_space(0x2009));
  CHECK(!cp_utf8_is_space('a'));
  CHECK(!cp_utf8_is_space(0x200B)); /* zero width space is not White_Space */
  CHECK(!cp_utf8_is_space(0x1C));
  CHECK(cp_utf8_is_control(0));
  CHECK(cp_utf8_is_control('\t'));
  CHECK(cp_utf8_is_control(0x7F));
  CHECK(cp_utf8_is_control(0x85));
  CHECK(cp_utf8_is_control(0x9F));
  CHECK(!cp_utf8_is_control(0xA0));
  CHECK(!cp_utf8_is_control(' '));
}

/* The vectorised scan must agree with a byte loop at every length and for
 * every kind of stopping byte, including ones past 16 and 32 bytes. */
static void test_plain_prefix(void) {
  char buf[100];
  const unsigned char stops[] = {0x00, 0x09, 0x0A, 0x1F, 0x7F, 0x80, 0xC3, 0xFF};
  for (size_t len = 0; len <= 80; len++) {
    memset(buf, 'a', sizeof buf);
    CHECK_INT(cp_utf8_plain_prefix(buf, len), len);
    for (size_t at = 0; at < len; at++)
      for (size_t k = 0; k < sizeof stops; k++) {
        memset(buf, 'x', sizeof buf);
        buf[at] = (char)stops[k];
        if (cp_utf8_plain_prefix(buf, len) != at) {
          CHECK_INT(cp_utf8_plain_prefix(buf, len), at);
          return;
        }
      }
  }
  CHECK_INT(cp_utf8_plain_prefix(" ~", 2), 2);
}

int main(void) {
  RUN(test_decode_valid);
  RUN(test_decode_errors);
  RUN(test_count_valid);
  RUN(test_encode_offset);
  RUN(test_classes);
  RUN(test_plain_prefix);
  DONE();
}
