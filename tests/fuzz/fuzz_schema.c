/*
 * fuzz_schema.c -- libFuzzer target for the payload validators (schema.c):
 * any bytes that parse as JSON go through all three validators and the
 * annotation rules. Checks that nothing crashes, that a valid verdict
 * comes with no errors and an invalid one with at least one, each with a
 * path and an offset inside the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void verdict(int ok, const cp_schema_errors *e, size_t size) {
  if (ok != (e->n == 0)) abort();
  for (size_t i = 0; i < e->n; i++)
    if (!e->items[i].path[0] || !e->items[i].message[0] || e->items[i].offset > size)
      abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cp_json_error jerr;
  cp_json_doc *doc = cp_json_parse((const char *)data, size, &jerr);
  if (!doc) return 0;
  const cp_json *root = cp_json_root(doc);
  cp_schema_errors e;
  cp_schema_errors_init(&e);
  verdict(cp_schema_dataset_payload(root, &e), &e, size);
  cp_schema_errors_free(&e);
  cp_schema_errors_init(&e);
  cp_batch_opts o;
  cp_batch_opts_init(&o);
  o.existing_active = size % 2001;
  o.max_examples = 5;
  o.max_chars = 20;
  verdict(cp_schema_intent_batch(root, &o, &e), &e, size);
  cp_schema_errors_free(&e);
  cp_schema_errors_init(&e);
  verdict(cp_schema_v2_sentence(root, &e), &e, size);
  cp_schema_errors_free(&e);
  cp_schema_errors_init(&e);
  cp_schema_annotations(root, (long long)(size % 7) - 1, "annotations", &e);
  cp_schema_errors_free(&e);
  cp_json_doc_free(doc);
  return 0;
}
