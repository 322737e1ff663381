/*
 * fuzz_embedio.c -- libFuzzer target for the embedding formats (embedio.c):
 * the first byte picks what the rest is -- a vectors file (binary or JSON
 * Lines, read from a temporary file) or an OpenAI-compatible embeddings
 * answer to three inputs. Whatever is accepted must be a consistent set:
 * unit rows of one dimension, and an answer adds all of its rows or none.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "embedio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_set(const cp_vecset *s) {
  size_t dim = cp_vecset_dim(s);
  for (size_t i = 0; i < cp_vecset_count(s); i++) {
    const float *r = cp_vecset_row(s, i);
    double ss = 0;
    for (size_t k = 0; k < dim; k++) ss += (double)r[k] * r[k];
    if (fabs(ss - 1.0) > 1e-3) abort();
    size_t len;
    cp_vecset_text(s, i, &len);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  char err[256];
  if (data[0] & 1) {
    static const char *const texts[] = {"a", "b", "c"};
    static const size_t lens[] = {1, 1, 1};
    cp_vecset *s = cp_vecset_new(0);
    size_t n = (size_t)(data[0] >> 1) % 4;
    int rc = cp_embedio_add_response(s, (const char *)data + 1, size - 1,
                                     texts, lens, n, err, sizeof err);
    if (cp_vecset_count(s) != (rc == 0 ? n : 0)) abort();
    check_set(s);
    cp_vecset_unref(s);
    return 0;
  }
  char path[512];
  const char *tmp = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/fuzz-embedio-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  int fd = mkstemp(path);
  if (fd < 0) return 0;
  if (write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) {
    close(fd);
    unlink(path);
    return 0;
  }
  close(fd);
  cp_vecset *s = cp_embedio_read(path, err, sizeof err);
  unlink(path);
  if (s) {
    check_set(s);
    cp_vecset_unref(s);
  }
  return 0;
}
