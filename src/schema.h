/*
 * schema.h -- validators for the three request payloads of DESIGN §4: the
 * dataset upload metadata (§4.1), an intent example batch (§4.2) and a v2
 * sentence (§4.3). Each walks a parsed JSON tree and reports every
 * violation with a JSON path ("examples[3].annotations[0].end"); none of
 * them stops at the first or touches the network.
 */
#ifndef CP_SCHEMA_H
#define CP_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"

typedef struct cp_schema_error {
  char *path;    /* owned; "$" is the document itself */
  char *message; /* owned */
  size_t offset; /* where the offending value (or its parent, when a field
                    is missing) starts in the source text */
} cp_schema_error;

typedef struct cp_schema_errors {
  cp_schema_error *items;
  size_t n, cap;
  /* Memory ran out while checking: violations may be missing, so the
   * payload must be taken as neither valid nor fully reported. */
  int out_of_memory;
} cp_schema_errors;

void cp_schema_errors_init(cp_schema_errors *e);
void cp_schema_errors_free(cp_schema_errors *e);

#define CP_DEFAULT_INTENT_CAP 2000
#define CP_DEFAULT_BATCH_MAX 100
#define CP_DATASET_COUNT_MAX 100000

typedef struct cp_batch_opts {
  int64_t existing_active; /* active examples the intent already has */
  int64_t cap;             /* active examples allowed per intent */
  size_t max_chars;        /* per example text, in code points */
  size_t max_examples;     /* per batch */
} cp_batch_opts;

void cp_batch_opts_init(cp_batch_opts *o);

/* Each returns 1 when root is valid, 0 after appending its violations or
 * when memory ran out (errs->out_of_memory). */
int cp_schema_dataset_payload(const cp_json *root, cp_schema_errors *errs);
int cp_schema_intent_batch(const cp_json *root, const cp_batch_opts *o,
                           cp_schema_errors *errs);
int cp_schema_v2_sentence(const cp_json *root, cp_schema_errors *errs);

/* The annotation rules of §4.2 for an array of {entity_id, start, end}
 * against a text of text_chars code points (text_chars < 0: the text is
 * unusable, so end is not compared with it). path names the array. */
void cp_schema_annotations(const cp_json *anns, long long text_chars,
                           const char *path, cp_schema_errors *errs);

#endif
