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

int main(void) {
  RUN(test_grow_and_format);
  RUN(test_steal_empty);
  DONE();
}
