/* Unit tests of json.c: the parser's tree, its errors and the writers. */
#include "check.h"
#include "json.h"

#include <math.h>
#include <stdlib.h>

static cp_json_doc *parse(const char *s, cp_json_error *err) {
  return cp_json_parse(s, strlen(s), err);
}

static void test_tree(void) {
  cp_json_error err;
  cp_json_doc *d = parse(" {\"a\": [1, -2.5, \"x\\u00e9\", true, false, null], \"b\": {}} ", &err);
  CHECK(d != NULL);
  const cp_json *root = cp_json_root(d);
  CHECK_INT(root->type, CP_JSON_OBJECT);
  CHECK_INT(root->u.obj.n, 2);
  const cp_json *a = cp_json_get(root, "a");
  CHECK(a && a->type == CP_JSON_ARRAY && a->u.arr.n == 6);
  CHECK_INT(a->u.arr.items[0]->type, CP_JSON_INT);
  CHECK_INT(a->u.arr.items[0]->u.i, 1);
  CHECK_INT(a->u.arr.items[1]->type, CP_JSON_NUMBER);
  CHECK(a->u.arr.items[1]->u.d == -2.5);
  CHECK_STR(a->u.arr.items[2]->u.str.s, "x\xc3\xa9");
  CHECK_INT(a->u.arr.items[2]->offset, 17);
  CHECK_INT(a->u.arr.items[5]->type, CP_JSON_NULL);
  CHECK(cp_json_get(root, "missing") == NULL);
  CHECK_STR(cp_json_type_name(cp_json_get(root, "b")->type), "object");
  cp_json_doc_free(d);
}

static void test_int_limits(void) {
  cp_json_error err;
  cp_json_doc *d = parse("[9223372036854775807, -9223372036854775808]", &err);
  CHECK(d != NULL);
  CHECK(cp_json_root(d)->u.arr.items[0]->u.i == INT64_MAX);
  CHECK(cp_json_root(d)->u.arr.items[1]->u.i == INT64_MIN);
  cp_json_doc_free(d);
  CHECK(parse("9223372036854775808", &err) == NULL);
  CHECK(strstr(err.message, "out of range") != NULL);
  CHECK(parse("123456789012345678901234567890123456789012345678901234567890123456789", &err) == NULL);
  CHECK(strstr(err.message, "out of range") != NULL);
}

static void test_errors_located(void) {
  cp_json_error err;
  CHECK(parse("{\n  \"a\": 1,\n  \"b\" 2\n}", &err) == NULL);
  CHECK_INT(err.line, 3);
  CHECK_INT(err.column, 7);
  CHECK_INT(err.offset, 18);
  CHECK(strstr(err.message, "':'") != NULL);
  const char *bad[] = {"", "[", "[1,]", "{\"a\":}", "tru", "nul", "\"a", "01", "-", "1.e3",
                       "\"\\x\"", "\"a\tb\"", "[1] [2]", "{\"a\" 1}", "\"\\ud800\\u0041\""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cp_json_doc *d = parse(bad[i], &err);
    if (d) {
      fprintf(stderr, "accepted invalid JSON: %s\n", bad[i]);
      check_failures_++;
      cp_json_doc_free(d);
    }
  }
}

/* A repeated key is an error at the second key, naming its path: readers
 * disagree on which copy wins. Large objects are checked as well as small. */
static void test_duplicate_keys(void) {
  cp_json_error err;
  CHECK(parse("{\"text\":\"a\",\"text\":\"b\"}", &err) == NULL);
  CHECK_INT(err.offset, 12); /* the second key */
  CHECK(strstr(err.message, "duplicate key at $.text") != NULL);
  CHECK(parse("{\"examples\":[{\"t\":1},{\"t\":1,\"the key\":0,\"the key\":1}]}", &err) == NULL);
  CHECK(strstr(err.message, "$.examples[1][\"the key\"]") != NULL);
  /* 999 distinct keys, then the first again */
  cp_buf b = CP_BUF_INIT;
  cp_buf_adds(&b, "{");
  for (int i = 0; i < 1000; i++) cp_buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i % 999, i);
  cp_buf_adds(&b, "}");
  CHECK(parse(b.data, &err) == NULL);
  CHECK(strstr(err.message, "duplicate key at $.k0") != NULL);
  /* the same keys in different objects, and many distinct ones, are fine */
  cp_buf_reset(&b);
  cp_buf_adds(&b, "[{\"a\":1},{\"a\":2},{");
  for (int i = 0; i < 1000; i++) cp_buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i, i);
  cp_buf_adds(&b, "}]");
  cp_json_doc *d = parse(b.data, &err);
  CHECK(d != NULL);
  CHECK_INT(cp_json_root(d)->u.arr.items[2]->u.obj.n, 1000);
  cp_json_doc_free(d);
  cp_buf_free(&b);
}

static void test_depth_limit(void) {
  char deep[2000];
  memset(deep, '[', 600);
  memset(deep + 600, ']', 600);
  deep[1200] = '\0';
  cp_json_error err;
  CHECK(parse(deep, &err) == NULL);
  CHECK(strstr(err.message, "nesting") != NULL);
}

static void test_writers(void) {
  cp_buf b = CP_BUF_INIT;
  CHECK_INT(cp_json_add_string(&b, "a\"\\\n\x01\xc3\xa9", 7), 0);
  CHECK_STR(b.data, "\"a\\\"\\\\\\n\\u0001\xc3\xa9\"");
  cp_buf_reset(&b);
  CHECK_INT(cp_json_add_string(&b, "ok\xff", 3), -1);
  CHECK_INT(b.len, 0);
  CHECK_INT(cp_json_add_string(&b, "\xed\xa0\x80", 3), -1); /* a surrogate */
  cp_buf_reset(&b);
  CHECK_INT(cp_json_add_number(&b, 0.1), 0);
  CHECK_STR(b.data, "0.1");
  cp_buf_reset(&b);
  cp_json_add_number(&b, 150.0);
  CHECK_STR(b.data, "150.0");
  cp_buf_reset(&b);
  CHECK_INT(cp_json_add_number(&b, NAN), -1);
  CHECK_INT(cp_json_add_number(&b, INFINITY), -1);
  cp_buf_free(&b);
}

static void test_round_trip_doubles(void) {
  double vals[] = {1.0 / 3.0, 1e-300, 123456.789, -0.5, 5e-324, 1.7976931348623157e308};
  for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
    cp_buf b = CP_BUF_INIT;
    cp_json_add_number(&b, vals[i]);
    cp_json_error err;
    cp_json_doc *d = cp_json_parse(b.data, b.len, &err);
    CHECK(d != NULL);
    if (d) CHECK(cp_json_root(d)->u.d == vals[i]);
    cp_json_doc_free(d);
    cp_buf_free(&b);
  }
}

/* A parse that runs out of memory fails as such: never "invalid JSON" for
 * text that is fine, and nothing is leaked. Each allocation of the parse
 * fails once in turn (arena blocks, growing arrays and objects, the key
 * set of a large object, a long number's copy). */
static void test_out_of_memory(void) {
  cp_buf t = CP_BUF_INIT;
  cp_buf_adds(&t, "{\"big\":\"");
  for (int i = 0; i < 70000; i++) cp_buf_addc(&t, (char)('a' + i % 26));
  cp_buf_adds(&t, "\",\"n\":1.00000000000000000000000000000000000000000000000000000000000000000001,"
                  "\"list\":[1,2,3,4,5,6,7,8,9,10,11,12,{\"x\":\"\\u00e9\"}]");
  for (int i = 0; i < 40; i++) cp_buf_printf(&t, ",\"k%d\":%d", i, i);
  cp_buf_adds(&t, "}");
  CHECK(cp_buf_ok(&t));
  int hits = 0;
  for (long k = 1;; k++) {
    cp_json_error err;
    cp_alloc_fail_at(k);
    cp_json_doc *doc = cp_json_parse(t.data, t.len, &err);
    int pending = cp_alloc_fail_pending();
    cp_alloc_fail_at(0);
    if (pending) {
      CHECK(doc != NULL && !err.out_of_memory);
      cp_json_doc_free(doc);
      break;
    }
    hits++;
    CHECK(doc == NULL);
    CHECK(err.out_of_memory);
    CHECK_STR(err.message, "out of memory");
    cp_json_doc_free(doc);
  }
  CHECK(hits > 5);
  cp_buf_free(&t);
}

int main(void) {
  RUN(test_tree);
  RUN(test_int_limits);
  RUN(test_errors_located);
  RUN(test_duplicate_keys);
  RUN(test_depth_limit);
  RUN(test_writers);
  RUN(test_round_trip_doubles);
  RUN(test_out_of_memory);
  DONE();
}
