/*
 * fuzz_jsonl.c -- libFuzzer target for the JSON Lines reader (reader.c):
 * any bytes as a .jsonl file; see fuzz_reader_common.h for what is checked.
 */
#include "fuzz_reader_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_reader(data, size, CP_FMT_JSONL);
  return 0;
}
