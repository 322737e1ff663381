/*
 * test_embedio.c -- vectors files (JSON Lines and the binary format), the
 * atomic write, and OpenAI-compatible embeddings answers: what is read
 * back, and that every malformed input is refused with a message that
 * says where.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "embedio.h"

static char dir[512];

static const char *write_file(const char *name, const void *data, size_t len) {
  static char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  fwrite(data, 1, len, f);
  fclose(f);
  return path;
}

static int contains(const char *s, const char *sub) {
  return strstr(s, sub) != NULL;
}

static void test_jsonl(void) {
  const char *text =
      "{\"text\": \"book a flight\", \"vector\": [3, 4], \"intent\": "
      "\"travel\"}\n"
      "\n"
      "{\"text\": \"reset my password\", \"embedding\": [0.0, -2.5e0]}\r\n";
  char err[256];
  cp_vecset *s = cp_embedio_read(write_file("a.jsonl", text, strlen(text)), err,
                                 sizeof err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(cp_vecset_count(s), 2);
  CHECK_INT(cp_vecset_dim(s), 2);
  size_t len;
  CHECK(strncmp(cp_vecset_intent(s, 0, &len), "travel", len) == 0);
  CHECK(cp_vecset_intent(s, 1, &len) == NULL);
  CHECK(fabsf(cp_vecset_row(s, 0)[0] - 0.6f) < 1e-7f);
  CHECK(cp_vecset_row(s, 1)[1] == -1.0f);
  CHECK_INT(cp_vecset_find(s, "reset my password", 17), 1);
  cp_vecset_unref(s);

  struct {
    const char *text, *want;
  } bad[] = {
      {"{\"text\": \"a\", \"vector\": [1, 2]}\n{\"text\": \"b\", \"vector\": "
       "[1]}\n",
       "b.jsonl:2: vector has 1 values, expected 2"},
      {"{\"text\": \"a\", \"vector\": [0, 0]}\n", "b.jsonl:1: vector is zero"},
      {"{\"text\": \"a\", \"vector\": []}\n", "b.jsonl:1: \"vector\" must be"},
      {"{\"text\": 1, \"vector\": [1]}\n",
       "b.jsonl:1: \"text\" must be a string"},
      {"{\"text\": \"a\", \"vector\": [\"x\"]}\n",
       "b.jsonl:1: \"vector\" must be"},
      {"[1, 2]\n", "b.jsonl:1: expected an object"},
      {"{\"text\": \"a\", \"vector\": [1]}\n{\"text\": \"b\",\n", "b.jsonl:2:"},
      {"{\"text\": \"a\", \"vector\": [1], \"intent\": 3}\n",
       "\"intent\" must be a string"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    err[0] = '\0';
    s = cp_embedio_read(write_file("b.jsonl", bad[i].text, strlen(bad[i].text)),
                        err, sizeof err);
    CHECK(s == NULL);
    if (!contains(err, bad[i].want))
      fprintf(stderr, "# case %zu: error \"%s\" lacks \"%s\"\n", i, err,
              bad[i].want);
    CHECK(contains(err, bad[i].want));
    cp_vecset_unref(s);
  }
  s = cp_embedio_read("/nonexistent/dir/v.jsonl", err, sizeof err);
  CHECK(s == NULL && contains(err, "No such file"));
}

static void test_binary_round_trip(void) {
  cp_vecset *s = cp_vecset_new(0);
  const char *why;
  double a[3] = {1, 2, 2}, b[3] = {-1, 0, 0};
  cp_vecset_add_double(s, a, 3, "first", 5, "intent-1", 8, &why);
  cp_vecset_add_double(s, b, 3, "", 0, NULL, 0, &why);
  cp_vecset_add_double(s, a, 3, "caf\xc3\xa9", 5, "", 0, &why);
  char path[256], err[256];
  /* the parent directories do not exist yet: they are created */
  snprintf(path, sizeof path, "%s/cache/embeddings/m.cpvec", dir);
  CHECK_INT(cp_embedio_write(s, path, err, sizeof err), 0);
  cp_vecset *r = cp_embedio_read(path, err, sizeof err);
  CHECK(r != NULL);
  if (r) {
    CHECK_INT(cp_vecset_count(r), 3);
    CHECK(memcmp(cp_vecset_row(r, 0), cp_vecset_row(s, 0), 3 * sizeof(float)) ==
          0);
    CHECK(memcmp(cp_vecset_row(r, 2), cp_vecset_row(s, 2), 3 * sizeof(float)) ==
          0);
    size_t len;
    CHECK(strncmp(cp_vecset_intent(r, 0, &len), "intent-1", len) == 0 &&
          len == 8);
    CHECK(cp_vecset_intent(r, 1, &len) == NULL);
    CHECK(cp_vecset_intent(r, 2, &len) != NULL && len == 0);
    CHECK_INT(cp_vecset_find(r, "caf\xc3\xa9", 5), 2);
    cp_vecset_unref(r);
  }
  /* written atomically: no temporary file is left beside it */
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s/cache/embeddings", dir);
  struct stat st;
  CHECK(stat(cmd, &st) == 0 && (st.st_mode & 0777) == 0700);

  /* every truncation of the file is refused, none crashes (an empty file
   * is an empty JSON Lines file, which is fine) */
  FILE *f = fopen(path, "rb");
  unsigned char buf[4096];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  size_t refused = 0;
  for (size_t cut = 1; cut < n; cut++) {
    r = cp_embedio_read(write_file("t.cpvec", buf, cut), err, sizeof err);
    refused += r == NULL;
    cp_vecset_unref(r);
  }
  CHECK_INT(refused, n - 1);
  /* a count that cannot fit */
  buf[16] = 0xff;
  r = cp_embedio_read(write_file("t.cpvec", buf, n), err, sizeof err);
  CHECK(r == NULL && contains(err, "cannot fit"));
  cp_vecset_unref(s);

  /* a directory in the way of the file */
  cp_vecset *one = cp_vecset_new(1);
  double x = 1;
  cp_vecset_add_double(one, &x, 1, "x", 1, NULL, 0, &why);
  snprintf(path, sizeof path, "%s/cache", dir);
  CHECK_INT(cp_embedio_write(one, path, err, sizeof err), -1);
  CHECK(contains(err, "rename"));
  cp_vecset_unref(one);
}

static void test_response(void) {
  const char *texts[] = {"a", "b", "c"};
  size_t lens[] = {1, 1, 1};
  cp_vecset *s = cp_vecset_new(0);
  char err[256];
  /* out of order, as some servers answer */
  const char *body = "{\"object\":\"list\",\"data\":["
                     "{\"index\":2,\"embedding\":[0,0,1]},"
                     "{\"index\":0,\"embedding\":[1,0,0]},"
                     "{\"index\":1,\"embedding\":[0,2,0]}],\"model\":\"m\"}";
  CHECK_INT(cp_embedio_add_response(s, body, strlen(body), texts, lens, 3, err,
                                    sizeof err),
            0);
  CHECK_INT(cp_vecset_count(s), 3);
  CHECK_INT(cp_vecset_find(s, "c", 1), 2);
  CHECK(cp_vecset_row(s, 2)[2] == 1.0f && cp_vecset_row(s, 1)[1] == 1.0f);

  /* base64 float32: [1, 0, 0] */
  const char *b64 =
      "{\"data\":[{\"index\":0,\"embedding\":\"AACAPwAAAAAAAAAA\"}]}";
  CHECK_INT(cp_embedio_add_response(s, b64, strlen(b64), texts, lens, 1, err,
                                    sizeof err),
            0);
  CHECK(cp_vecset_row(s, 3)[0] == 1.0f);

  /* one float32, [-2]: padded, and with the padding left out */
  const char *one_b64[] = {
      "{\"data\":[{\"index\":0,\"embedding\":\"AAAAwA==\"}]}",
      "{\"data\":[{\"index\":0,\"embedding\":\"AAAAwA\"}]}"};
  for (int k = 0; k < 2; k++) {
    cp_vecset *one = cp_vecset_new(0);
    CHECK_INT(cp_embedio_add_response(one, one_b64[k], strlen(one_b64[k]),
                                      texts, lens, 1, err, sizeof err),
              0);
    CHECK(cp_vecset_count(one) == 1 && cp_vecset_row(one, 0)[0] == -1.0f);
    cp_vecset_unref(one);
  }

  struct {
    const char *body, *want;
    size_t n;
  } bad[] = {
      {"not json", "not JSON", 1},
      {"{\"error\":{\"message\":\"x\"}}", "no \"data\" array", 1},
      {"{\"data\":[{\"index\":0,\"embedding\":[1,0,0]}]}",
       "1 vectors for 2 inputs", 2},
      {"{\"data\":[{\"index\":0,\"embedding\":[1,0,0]},{\"index\":0,"
       "\"embedding\":[1,0,0]}]}",
       "index 0 appears twice", 2},
      {"{\"data\":[{\"index\":5,\"embedding\":[1,0,0]}]}", "not an input index",
       1},
      {"{\"data\":[{\"index\":0,\"embedding\":[1,0]}]}",
       "vector of 2 values, expected 3", 1},
      {"{\"data\":[{\"index\":0,\"embedding\":[0,0,0]}]}", "is zero", 1},
      {"{\"data\":[{\"index\":0,\"embedding\":\"!!!!\"}]}", "is not a vector",
       1},
      /* the second is bad: the first must not have been added */
      {"{\"data\":[{\"index\":0,\"embedding\":[1,1,1]},{\"index\":1,"
       "\"embedding\":null}]}",
       "data[1].embedding is not a vector", 2},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    err[0] = '\0';
    CHECK_INT(cp_embedio_add_response(s, bad[i].body, strlen(bad[i].body),
                                      texts, lens, bad[i].n, err, sizeof err),
              -1);
    if (!contains(err, bad[i].want))
      fprintf(stderr, "# case %zu: error \"%s\" lacks \"%s\"\n", i, err,
              bad[i].want);
    CHECK(contains(err, bad[i].want));
  }
  CHECK_INT(cp_vecset_count(s), 4);
  cp_vecset_unref(s);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/cogpipe-embedio-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) return 1;
  RUN(test_jsonl);
  RUN(test_binary_round_trip);
  RUN(test_response);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "# could not remove %s\n", dir);
  DONE();
}
