/* Unit tests of buf.c. */
#include "buf.h"
#include "check.h"

#include <stdlib.h>

static void test_grow_and_format(void) {
  cp_buf b = CP_BUF_INIT;
  for (int i = 0; i < 1000; i++) cp_buf_printf(&b, "%d,", i);
  CHECK_INT(b.len, 3890);
  CHECK(strncmp(b.data, "0,1,2,", 6) == 0);
  CHECK_INT(b.data[b.len], '\0');
  cp_buf_reset(&b);
  CHECK_INT(b.len, 0);
  CHECK_STR(b.data, "");
  cp_buf_add(&b, "a\0b", 3);
  CHECK_INT(b.len, 3);
  size_t n;
  char *s = cp_buf_steal(&b, &n);
  CHECK_INT(n, 3);
  CHECK(memcmp(s, "a\0b", 3) == 0);
  CHECK(b.data == NULL);
  free(s);
  cp_buf_free(&b);
}

static void test_steal_empty(void) {
  cp_buf b = CP_BUF_INIT;
  char *s = cp_buf_steal(&b, NULL);
  CHECK_STR(s, "");
  free(s);
}

/* A buffer that cannot grow says so once, keeps what it had, ignores
 * every later append, and gives nothing to steal: a caller never sends or
 * stores half a text believing it whole. */
static void test_failed_growth_is_sticky(void) {
  cp_buf b = CP_BUF_INIT;
  cp_buf_adds(&b, "kept");
  CHECK(cp_buf_ok(&b));
  cp_alloc_fail_at(1);
  cp_buf_add(&b, "0123456789012345678901234567890123456789012345678901234567890123456789", 70);
  CHECK(!cp_alloc_fail_pending());
  CHECK(!cp_buf_ok(&b));
  CHECK_STR(b.data, "kept");
  cp_buf_adds(&b, "more"); /* memory is back, but the text has a hole */
  cp_buf_printf(&b, "%d", 42);
  CHECK(!cp_buf_ok(&b));
  CHECK_INT(b.len, 4);
  CHECK(cp_buf_steal(&b, NULL) == NULL);
  CHECK(b.data == NULL);
  /* once emptied it is usable again */
  cp_buf_adds(&b, "fresh");
  CHECK(cp_buf_ok(&b));
  CHECK_STR(b.data, "fresh");
  cp_buf_reset(&b);
  cp_buf_free(&b);
}

static void test_allocators_return_null(void) {
  unsigned long before = cp_alloc_failures();
  cp_alloc_fail_at(1);
  CHECK(cp_malloc(16) == NULL);
  cp_alloc_fail_at(1);
  CHECK(cp_strdup("abc") == NULL);
  char *p = cp_malloc(8);
  CHECK(p != NULL);
  cp_alloc_fail_at(1);
  CHECK(cp_realloc(p, 4096) == NULL); /* p is still the caller's */
  p[0] = 'x';
  free(p);
  CHECK(cp_calloc((size_t)-1 / 2, 4) == NULL); /* the size overflows */
  CHECK(cp_reallocarray(NULL, (size_t)-1 / 2, 4) == NULL);
  CHECK_INT(cp_alloc_failures() - before, 5);
  /* the second allocation from now fails, and only that one */
  cp_alloc_fail_at(2);
  void *a = cp_malloc(1), *b = cp_malloc(1), *c = cp_malloc(1);
  CHECK(a && !b && c);
  free(a);
  free(c);
}

static void test_huge_reserve_fails_cleanly(void) {
  cp_buf b = CP_BUF_INIT;
  cp_buf_adds(&b, "x");
  CHECK_INT(cp_buf_reserve(&b, (size_t)-1), -1);
  CHECK(!cp_buf_ok(&b));
  cp_buf_free(&b);
  CHECK(cp_buf_ok(&b));
}

int main(void) {
  RUN(test_grow_and_format);
  RUN(test_steal_empty);
  RUN(test_failed_growth_is_sticky);
  RUN(test_allocators_return_null);
  RUN(test_huge_reserve_fails_cleanly);
  DONE();
}
