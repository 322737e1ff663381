/*
 * fuzz_reader_common.h -- what the JSON Lines and CSV fuzz targets share:
 * read every record of the input and check the reader's promises -- a
 * valid record's text decodes again, byte for byte, from its raw span
 * inside the input (dedupe relies on it), and problems lie in the input.
 */
#ifndef FUZZ_READER_COMMON_H
#define FUZZ_READER_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"

static inline void fuzz_reader(const uint8_t *data, size_t size, cp_format fmt) {
  const char *s = (const char *)data;
  cp_problems probs;
  cp_problems_init(&probs, 64);
  cp_limits lim;
  cp_limits_init(&lim);
  lim.max_chars = 64;
  cp_reader *r = cp_reader_new("fuzz", s, size, fmt, &lim, &probs);
  cp_record rec;
  cp_buf scratch = CP_BUF_INIT;
  uint64_t last_line = 0;
  while (cp_reader_next(r, &rec)) {
    if (rec.line <= last_line && last_line) abort();
    last_line = rec.line;
    if (rec.blank || rec.invalid) continue;
    if (rec.raw < s || rec.raw + rec.raw_len > s + size) abort();
    const char *p;
    size_t n;
    cp_text_decode(rec.enc, rec.raw, rec.raw_len, &scratch, &p, &n);
    if (n != rec.len || memcmp(p, rec.text, n) != 0) abort();
    if (fmt != CP_FMT_LINES && !rec.intent) abort();
  }
  cp_reader_free(r);
  for (size_t i = 0; i < probs.n; i++)
    if (probs.items[i].offset > size || probs.items[i].column < 1) abort();
  cp_buf_free(&scratch);
  cp_problems_free(&probs);
}

#endif
