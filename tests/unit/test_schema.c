/*
 * test_schema.c -- unit tests of schema.c: every rule of the dataset
 * payload (§4.1), intent example batches (§4.2) and v2 sentences (§4.3),
 * each violation found with its JSON path, and all of them reported.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "schema.h"

static cp_schema_errors errs;

typedef int (*validator)(const cp_json *root, const void *opts,
                         cp_schema_errors *e);

static int dataset(const cp_json *r, const void *o, cp_schema_errors *e) {
  (void)o;
  return cp_schema_dataset_payload(r, e);
}
static int batch(const cp_json *r, const void *o, cp_schema_errors *e) {
  return cp_schema_intent_batch(r, o, e);
}
static int v2(const cp_json *r, const void *o, cp_schema_errors *e) {
  (void)o;
  return cp_schema_v2_sentence(r, e);
}

/* Validates JSON text; returns the validator's verdict. */
static int run(validator fn, const void *opts, const char *json) {
  cp_schema_errors_free(&errs);
  cp_schema_errors_init(&errs);
  cp_json_error jerr;
  cp_json_doc *doc = cp_json_parse(json, strlen(json), &jerr);
  if (!doc) {
    fprintf(stderr, "test JSON does not parse: %s\n", jerr.message);
    return -1;
  }
  int ok = fn(cp_json_root(doc), opts, &errs);
  cp_json_doc_free(doc);
  return ok;
}

/* 1 when some error has this path and its message contains `part`. */
static int has(const char *path, const char *part) {
  for (size_t i = 0; i < errs.n; i++)
    if (strcmp(errs.items[i].path, path) == 0 &&
        strstr(errs.items[i].message, part))
      return 1;
  fprintf(stderr, "no error \"%s: ...%s...\" among:\n", path, part);
  for (size_t i = 0; i < errs.n; i++)
    fprintf(stderr, "  %s: %s\n", errs.items[i].path, errs.items[i].message);
  return 0;
}

#define GOOD_DATASET                                                       \
  "{\"datasetIdReference\":\"ds-1\",\"utteranceCountMatrix\":{\"greet\":2," \
  "\"book flight\":0},\"labelTaxonomyDirectives\":[{\"label\":\"greet\","  \
  "\"type\":\"intent\",\"priority\":0}],\"metadata\":{\"source\":\"x\"}}"

static void test_dataset_valid(void) {
  CHECK_INT(run(dataset, NULL, GOOD_DATASET), 1);
  CHECK_INT(errs.n, 0);
}

static void test_dataset_rules(void) {
  CHECK_INT(run(dataset, NULL, "[]"), 0);
  CHECK(has("$", "must be an object"));
  CHECK_INT(run(dataset, NULL, "{}"), 0);
  CHECK_INT(errs.n, 4);
  CHECK(has("datasetIdReference", "is required"));
  CHECK(has("utteranceCountMatrix", "is required"));
  CHECK(has("labelTaxonomyDirectives", "is required"));
  CHECK(has("metadata", "is required"));
  CHECK_INT(run(dataset, NULL,
                "{\"datasetIdReference\":\"  \",\"utteranceCountMatrix\":{\"a\":-1,"
                "\"b\":100001,\"c\":1.5,\"d\":\"3\",\"\":1},"
                "\"labelTaxonomyDirectives\":[],\"metadata\":{\"k\":1}}"),
            0);
  CHECK(has("datasetIdReference", "must not be empty"));
  CHECK(has("utteranceCountMatrix.a", "between 0 and 100000, got -1"));
  CHECK(has("utteranceCountMatrix.b", "got 100001"));
  CHECK(has("utteranceCountMatrix.c", "must be an integer, got 1.5"));
  CHECK(has("utteranceCountMatrix.d", "must be an integer, got string"));
  CHECK(has("utteranceCountMatrix[\"\"]", "label must not be empty"));
  CHECK(has("labelTaxonomyDirectives", "at least one directive"));
  CHECK(has("metadata.k", "must be a string"));
  CHECK_INT(run(dataset, NULL,
                "{\"datasetIdReference\":7,\"utteranceCountMatrix\":[],"
                "\"labelTaxonomyDirectives\":[{\"label\":\"\",\"priority\":-2},5],"
                "\"metadata\":null}"),
            0);
  CHECK(has("datasetIdReference", "must be a string, got integer"));
  CHECK(has("utteranceCountMatrix", "must be an object"));
  CHECK(has("labelTaxonomyDirectives[0].label", "must not be empty"));
  CHECK(has("labelTaxonomyDirectives[0].type", "is required"));
  CHECK(has("labelTaxonomyDirectives[0].priority", "at least 0, got -2"));
  CHECK(has("labelTaxonomyDirectives[1]", "must be an object"));
  CHECK(has("metadata", "is required (got null)"));
  CHECK(has("utteranceCountMatrix", "must be an object"));
}

static cp_batch_opts bo;

static void test_batch_valid(void) {
  cp_batch_opts_init(&bo);
  CHECK_INT(run(batch, &bo,
                "{\"examples\":[{\"text\":\"book a flight to Paris\",\"annotations\":"
                "[{\"entity_id\":\"city\",\"start\":17,\"end\":22}],\"is_active\":true},"
                "{\"text\":\"caf\xC3\xA9 au lait\",\"annotations\":[{\"entity_id\":\"d\","
                "\"start\":0,\"end\":12}]}],\"trigger_retrain\":false}"),
            1);
  CHECK_INT(errs.n, 0);
}

static void test_batch_text_rules(void) {
  cp_batch_opts_init(&bo);
  bo.max_chars = 10;
  CHECK_INT(run(batch, &bo,
                "{\"examples\":[{\"text\":\"\"},{\"text\":\" lead\"},{\"text\":\"trail\\t\"},"
                "{\"text\":\"   \"},{\"text\":\"0123456789X\"},{\"text\":5},{},"
                "{\"text\":\"\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\"}]}"),
            0);
  CHECK(has("examples[0].text", "must not be empty"));
  CHECK(has("examples[1].text", "must not start with white space"));
  CHECK(has("examples[2].text", "must not end with white space"));
  CHECK(has("examples[3].text", "only white space"));
  CHECK(has("examples[4].text", "11 characters long; at most 10"));
  CHECK(has("examples[5].text", "must be a string, got integer"));
  CHECK(has("examples[6].text", "is required"));
  CHECK_INT(errs.n, 7); /* ten é are ten characters: allowed */
}

static void test_batch_annotations(void) {
  cp_batch_opts_init(&bo);
  /* "héllo" is 5 code points and 6 bytes: end 6 is out of bounds. */
  CHECK_INT(run(batch, &bo,
                "{\"examples\":[{\"text\":\"h\xC3\xA9llo\",\"annotations\":["
                "{\"entity_id\":\"a\",\"start\":0,\"end\":5},"
                "{\"entity_id\":\"b\",\"start\":1,\"end\":6},"
                "{\"entity_id\":\"\",\"start\":-1,\"end\":0},"
                "{\"start\":3,\"end\":3},"
                "{\"entity_id\":\"c\",\"start\":2.0,\"end\":\"4\"},"
                "{\"entity_id\":\"d\",\"start\":5,\"end\":5},"
                "7]},{\"text\":\"x\",\"annotations\":null},"
                "{\"text\":\"y\",\"annotations\":{}},{\"text\":\"z\",\"is_active\":\"yes\"}]}"),
            0);
  CHECK(has("examples[0].annotations[1].end", "at most the text's length (5 characters), got 6"));
  CHECK(has("examples[0].annotations[2].entity_id", "must not be empty"));
  CHECK(has("examples[0].annotations[2].start", "at least 0, got -1"));
  CHECK(has("examples[0].annotations[3].entity_id", "is required"));
  CHECK(has("examples[0].annotations[3].end", "greater than start (3), got 3"));
  CHECK(has("examples[0].annotations[4].start", "must be an integer, got 2"));
  CHECK(has("examples[0].annotations[4].end", "must be an integer, got string"));
  CHECK(has("examples[0].annotations[5].start", "less than the text's length"));
  CHECK(has("examples[0].annotations[6]", "must be an object"));
  CHECK(has("examples[1].annotations", "got null"));
  CHECK(has("examples[2].annotations", "must be an array"));
  CHECK(has("examples[3].is_active", "must be a boolean"));
}

static void test_batch_size_and_dupes(void) {
  cp_batch_opts_init(&bo);
  CHECK_INT(run(batch, &bo, "{\"examples\":[]}"), 0);
  CHECK(has("examples", "at least 1 example"));
  CHECK_INT(run(batch, &bo, "{\"examples\":{}}"), 0);
  CHECK(has("examples", "must be an array"));
  CHECK_INT(run(batch, &bo, "{\"trigger_retrain\":1}"), 0);
  CHECK(has("examples", "is required"));
  CHECK(has("trigger_retrain", "must be a boolean"));
  /* 101 examples. */
  char *big = malloc(101 * 24 + 32);
  strcpy(big, "{\"examples\":[");
  for (int i = 0; i < 101; i++)
    sprintf(big + strlen(big), "%s{\"text\":\"ex %d\"}", i ? "," : "", i);
  strcat(big, "]}");
  CHECK_INT(run(batch, &bo, big), 0);
  CHECK(has("examples", "has 101 examples; at most 100"));
  CHECK_INT(errs.n, 1);
  free(big);
  CHECK_INT(run(batch, &bo,
                "{\"examples\":[{\"text\":\"Book a Flight\"},{\"text\":\"other\"},"
                "{\"text\":\"BOOK A FLIGHT\"},{\"text\":\"book a flight\"},"
                "{\"text\":\"Stra\xC3\x9F" "e\"},{\"text\":\"STRASSE\"},"
                "{\"text\":\"book  a flight\"}]}"),
            0);
  CHECK(has("examples[2].text", "equals examples[0].text after case folding"));
  CHECK(has("examples[3].text", "equals examples[0].text"));
  CHECK(has("examples[5].text", "equals examples[4].text"));
  CHECK_INT(errs.n, 3); /* inner white space is not folded away */
}

static void test_batch_cap(void) {
  cp_batch_opts_init(&bo);
  bo.existing_active = 1998;
  const char *three =
      "{\"examples\":[{\"text\":\"a\"},{\"text\":\"b\",\"is_active\":false},"
      "{\"text\":\"c\",\"is_active\":true}]}";
  CHECK_INT(run(batch, &bo, three), 1); /* 1998 + 2 active = 2000 */
  bo.existing_active = 1999;
  CHECK_INT(run(batch, &bo, three), 0);
  CHECK(has("examples", "2001 active examples for the intent (1999 already there + 2 in this batch); the cap is 2000"));
  bo.existing_active = 150;
  bo.cap = 151;
  CHECK_INT(run(batch, &bo, three), 0);
  CHECK(has("examples", "the cap is 151"));
}

static void test_v2(void) {
  CHECK_INT(run(v2, NULL, "{\"text\":\"hello there\",\"localeId\":\"en-US\",\"slots\":[]}"), 1);
  CHECK_INT(run(v2, NULL, "{\"text\":\"hi\",\"localeId\":\"l\",\"slots\":[{\"type\":\"x\"}]}"), 1);
  CHECK_INT(run(v2, NULL, "{\"text\":\"\",\"slots\":{}}"), 0);
  CHECK(has("text", "must not be empty"));
  CHECK(has("localeId", "is required"));
  CHECK(has("slots", "must be an array ([] when empty), got object"));
  CHECK_INT(errs.n, 3);
  CHECK_INT(run(v2, NULL, "{\"text\":1,\"localeId\":\"\",\"slots\":[1,{}]}"), 0);
  CHECK(has("text", "must be a string"));
  CHECK(has("localeId", "must not be empty"));
  CHECK(has("slots[0]", "must be an object"));
  CHECK_INT(run(v2, NULL, "\"x\""), 0);
  CHECK(has("$", "must be an object"));
}

static void test_paths_and_offsets(void) {
  const char *j = "{\"examples\":[{\"text\":\"ok\"},{\"text\":\"x\",\"annotations\":"
                  "[{\"entity_id\":\"e\",\"start\":0,\"end\":9}]}]}";
  cp_batch_opts_init(&bo);
  CHECK_INT(run(batch, &bo, j), 0);
  CHECK_INT(errs.n, 1);
  CHECK_STR(errs.items[0].path, "examples[1].annotations[0].end");
  CHECK_INT(errs.items[0].offset, (long long)(strstr(j, "9}") - j));
  cp_schema_errors_free(&errs);
  cp_schema_errors_init(&errs);
  cp_json_error jerr;
  const char *anns = "[{\"entity_id\":\"e\",\"start\":0,\"end\":4}]";
  cp_json_doc *doc = cp_json_parse(anns, strlen(anns), &jerr);
  CHECK(doc != NULL);
  if (!doc) return;
  cp_schema_annotations(cp_json_root(doc), 3, "annotations", &errs);
  CHECK_INT(errs.n, 1);
  CHECK_STR(errs.items[0].path, "annotations[0].end");
  cp_json_doc_free(doc);
}

/* A batch checked while memory runs out is never valid: the repeats it
 * could not look for, or the violations it could not keep, make it a
 * failure marked out_of_memory. */
static void test_out_of_memory_is_no_verdict(void) {
  const char *text =
      "{\"examples\":[{\"text\":\"Book a Flight\"},{\"text\":\"book a flight\"},"
      "{\"text\":\"cancel it\"},{\"text\":\" padded \"}]}";
  cp_batch_opts_init(&bo);
  cp_json_error jerr;
  cp_json_doc *doc = cp_json_parse(text, strlen(text), &jerr);
  CHECK(doc != NULL);
  for (long k = 1;; k++) {
    cp_schema_errors e;
    cp_schema_errors_init(&e);
    cp_alloc_fail_at(k);
    int ok = cp_schema_intent_batch(cp_json_root(doc), &bo, &e);
    int pending = cp_alloc_fail_pending();
    cp_alloc_fail_at(0);
    CHECK(!ok); /* it has a repeat and a padded text */
    if (pending) {
      CHECK(!e.out_of_memory);
      CHECK_INT(e.n, 3); /* the repeat, and " padded " at both ends */
      cp_schema_errors_free(&e);
      break;
    }
    CHECK(e.out_of_memory);
    cp_schema_errors_free(&e);
  }
  /* a valid batch is not called valid either while memory runs out */
  const char *good = "{\"examples\":[{\"text\":\"one\"},{\"text\":\"two\"}]}";
  cp_json_doc *g = cp_json_parse(good, strlen(good), &jerr);
  cp_schema_errors e;
  cp_schema_errors_init(&e);
  cp_alloc_fail_at(1);
  int ok = cp_schema_intent_batch(cp_json_root(g), &bo, &e);
  cp_alloc_fail_at(0);
  CHECK(!ok && e.out_of_memory);
  cp_schema_errors_free(&e);
  cp_json_doc_free(g);
  cp_json_doc_free(doc);
}

int main(void) {
  RUN(test_dataset_valid);
  RUN(test_dataset_rules);
  RUN(test_batch_valid);
  RUN(test_batch_text_rules);
  RUN(test_batch_annotations);
  RUN(test_batch_size_and_dupes);
  RUN(test_batch_cap);
  RUN(test_v2);
  RUN(test_paths_and_offsets);
  cp_schema_errors_free(&errs);
  RUN(test_out_of_memory_is_no_verdict);
  DONE();
}
