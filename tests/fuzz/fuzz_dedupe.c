/*
 * fuzz_dedupe.c -- libFuzzer target for the whole-file check (dedupe.c):
 * any bytes as a line file, checked with hashes cut to 2 bits so that
 * nearly every text collides. The counts must equal those of the set,
 * which compares bytes at once: no false duplicate, none missed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dedupe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const char *s = (const char *)data + 1;
  size_t n = size - 1;
  cp_norm_mode mode = (cp_norm_mode)(data[0] % 4);
  cp_check_opts o;
  cp_check_opts_init(&o);
  o.mode = mode;
  o.limits.max_chars = 0;
  o.test_hash_mask = 0xC000000000000000ull;
  cp_check *c = cp_check_new(&o);
  cp_check_buffer(c, "fuzz", s, n, CP_FMT_LINES);
  const cp_check_report *r = cp_check_finish(c);
  /* The reference: valid, non-blank lines through the set. */
  cp_problems probs;
  cp_problems_init(&probs, 0);
  cp_reader *rd = cp_reader_new("fuzz", s, n, CP_FMT_LINES, &o.limits, &probs);
  cp_dedupe_set *set = cp_dedupe_set_new(mode);
  cp_buf scratch = CP_BUF_INIT;
  uint64_t dups = 0;
  cp_record rec;
  while (cp_reader_next(rd, &rec)) {
    if (rec.blank || rec.invalid) continue;
    const char *p;
    size_t pn;
    cp_normalize(mode, rec.text, rec.len, &scratch, &p, &pn);
    if (pn == 0) continue;
    cp_dedupe_hit hit;
    if (cp_dedupe_set_add(set, rec.text, rec.len, NULL, 0, rec.line, &hit) != CP_DEDUPE_NEW)
      dups++;
  }
  if (r->unique != cp_dedupe_set_count(set) || r->duplicates != dups) abort();
  cp_buf_free(&scratch);
  cp_dedupe_set_free(set);
  cp_reader_free(rd);
  cp_problems_free(&probs);
  cp_check_free(c);
  return 0;
}
