/*
 * fuzz_validate.c -- libFuzzer target for the line validator (validate.c)
 * and the normalisers it feeds (normalize.c): any bytes as a line file.
 * Checks that nothing crashes and that what is reported is consistent:
 * every problem lies inside the input, and the fast ASCII normaliser
 * agrees with the general one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "normalize.h"
#include "reader.h"
#include "utf8.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  cp_problems probs;
  cp_problems_init(&probs, 64);
  cp_limits lim;
  cp_limits_init(&lim);
  lim.max_chars = 16;
  lim.max_bytes = size / 2;
  cp_reader *r = cp_reader_new("fuzz", s, size, CP_FMT_LINES, &lim, &probs);
  cp_record rec;
  cp_buf a = CP_BUF_INIT, b = CP_BUF_INIT;
  uint64_t lines = 0;
  while (cp_reader_next(r, &rec)) {
    lines++;
    if (rec.line != lines) abort();
    if (rec.offset > size || rec.len > size - rec.offset) abort();
    if (rec.chars != cp_utf8_count(rec.text, rec.len)) abort();
    for (int m = CP_NORM_NONE; m <= CP_NORM_CASEFOLD; m++) {
      const char *p, *q;
      size_t pn, qn;
      cp_normalize((cp_norm_mode)m, rec.text, rec.len, &a, &p, &pn);
      if (rec.plain) {
        cp_normalize_plain((cp_norm_mode)m, rec.text, rec.len, &b, &q, &qn);
        if (pn != qn || memcmp(p, q, pn) != 0) abort();
      }
    }
  }
  cp_reader_free(r);
  for (size_t i = 0; i < probs.n; i++) {
    const cp_problem *p = &probs.items[i];
    if (p->offset > size || p->line < 1 || p->line > lines + 1 || p->column < 1) abort();
  }
  if (probs.total < probs.n) abort();
  cp_buf_free(&a);
  cp_buf_free(&b);
  cp_problems_free(&probs);
  return 0;
}
