/* Unit tests of base64.c: the RFC 4648 test vectors both ways, and a
 * decoder and a problem finder that agree on every short text. */
#include "base64.h"
#include "check.h"

#include <stdint.h>

static const char *const vectors[][2] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_vectors(void) {
  for (size_t i = 0; i < sizeof vectors / sizeof *vectors; i++) {
    const char *plain = vectors[i][0], *enc = vectors[i][1];
    char out[16];
    CHECK_INT(
        cp_base64_encode((const unsigned char *)plain, strlen(plain), out),
        strlen(enc));
    CHECK_STR(out, enc);
    unsigned char dec[16];
    size_t n = 99, at = 99;
    CHECK_INT(cp_base64_decode(enc, strlen(enc), dec, &n), 0);
    CHECK_INT(n, strlen(plain));
    CHECK(memcmp(dec, plain, n) == 0);
    CHECK(cp_base64_problem(enc, strlen(enc), &at) == NULL);
  }
}

static void test_problems(void) {
  size_t at = 99;
  CHECK(cp_base64_problem("Zm9", 3, &at) != NULL);
  CHECK_INT(at, 3);
  CHECK(strstr(cp_base64_problem("Zm9v!A==", 8, &at), "alphabet") != NULL);
  CHECK_INT(at, 4);
  CHECK(strstr(cp_base64_problem("Zm=v", 4, &at), "padding") != NULL);
  CHECK_INT(at, 2);
  CHECK(strstr(cp_base64_problem("Z===", 4, &at), "padding") != NULL);
  CHECK(strstr(cp_base64_problem("Zm9v Zg==", 9, &at), "alphabet") != NULL);
  CHECK_INT(at, 4);
}

/* Every text of up to 6 bytes over a small alphabet that holds valid and
 * invalid bytes: the problem finder refuses exactly what decode refuses. */
static void test_agrees_with_decode(void) {
  static const char alpha[] = "Az+/=!";
  const size_t k = sizeof alpha - 1;
  int disagree = 0;
  for (size_t len = 0; len <= 6; len++) {
    size_t total = 1;
    for (size_t i = 0; i < len; i++)
      total *= k;
    for (size_t code = 0; code < total; code++) {
      char in[8];
      size_t c = code;
      for (size_t i = 0; i < len; i++, c /= k)
        in[i] = alpha[c % k];
      unsigned char out[8];
      size_t n, at;
      int ok = cp_base64_decode(in, len, out, &n) == 0;
      if (ok != (cp_base64_problem(in, len, &at) == NULL)) disagree++;
    }
  }
  CHECK_INT(disagree, 0);
}

int main(void) {
  RUN(test_vectors);
  RUN(test_problems);
  RUN(test_agrees_with_decode);
  DONE();
}
