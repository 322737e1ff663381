/*
 * fuzz_nearform.c -- libFuzzer target for the near form (nearform.c) and
 * the score built on it (minhash.c): any bytes, cut at the first newline
 * into two texts. A form is words of word characters joined by single
 * spaces; a score is in [0, 1], the same both ways, and 1 for a text with
 * itself unless it has no features at all.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "minhash.h"
#include "nearform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_form(const char *s, size_t n) {
  cp_buf scratch = CP_BUF_INIT, out = CP_BUF_INIT;
  cp_nearform(s, n, &scratch, &out);
  for (size_t i = 0; i < out.len; i++) {
    unsigned char c = (unsigned char)out.data[i];
    if (c == ' ' && (i == 0 || i + 1 == out.len || out.data[i + 1] == ' '))
      abort(); /* spaces only between words, one at a time */
    if (c < 0x80 && c != ' ' &&
        !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
      abort(); /* no ASCII punctuation, controls or capitals */
    if (c >= '1' && c <= '9') abort(); /* every number is "0" */
  }
  cp_buf_free(&scratch);
  cp_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  const char *nl = memchr(s, '\n', size);
  size_t an = nl ? (size_t)(nl - s) : size;
  const char *b = nl ? nl + 1 : s;
  size_t bn = nl ? size - an - 1 : size;
  check_form(s, an);
  check_form(b, bn);

  cp_minhash_opts o;
  cp_minhash_opts_default(&o);
  o.threads = 1;
  o.shingle = 1 + (size ? data[0] % 5 : 0);
  if (cp_minhash_opts_check(&o)) abort();
  cp_minhash *m = cp_minhash_new(&o);
  double ab = cp_minhash_jaccard(m, s, an, b, bn);
  double ba = cp_minhash_jaccard(m, b, bn, s, an);
  double aa = cp_minhash_jaccard(m, s, an, s, an);
  if (!(ab >= 0.0 && ab <= 1.0) || ab != ba) abort();
  if (aa != 0.0 && aa != 1.0) abort();
  /* an index finds a text added to it, with the same score */
  cp_minhash_add(m, s, an, NULL);
  cp_minhash_pair q;
  size_t k = cp_minhash_query(m, s, an, 1, &q);
  if (aa == 1.0 && (k != 1 || q.score != 1.0)) abort();
  cp_minhash_free(m);
  return 0;
}
