/*
 * fuzz_retry_after.c -- libFuzzer target for the Retry-After parser of
 * retry.c, which reads a header any server (or anything in between) sends.
 * Checks only that it never crashes and that a delay it accepts is sane.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "retry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = '\0';
  double d = -1;
  if (cp_retry_after_parse(s, 1700000000, &d) == 0 && !(d >= 0)) abort();
  free(s);
  return 0;
}
