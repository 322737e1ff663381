/*
 * test_secrets.c -- redaction: registered values in every form they take,
 * secret-named fields, credential headers and schemes, and text that must
 * come through untouched.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "secrets.h"

static char *redact(const cp_secrets *s, const char *in, size_t *count) {
  cp_buf b = CP_BUF_INIT;
  size_t n = cp_secret_redact(s, in, strlen(in), &b);
  if (count) *count = n;
  if (!b.data) return cp_strdup("");
  return cp_buf_steal(&b, NULL);
}

#define EXPECT(s, in, want)                                                    \
  do {                                                                         \
    char *got_ = redact(s, in, NULL);                                          \
    CHECK_STR(got_, want);                                                     \
    free(got_);                                                                \
  } while (0)

static void test_registered_values(void) {
  cp_secrets *s = cp_secrets_new();
  CHECK_INT(cp_secret_add(s, "s3cr3t-Value", 12), 0);
  CHECK_INT(cp_secret_add(s, "abc", 3), -1); /* too short to redact safely */
  EXPECT(s, "token s3cr3t-Value here", "token [redacted] here");
  EXPECT(s, "s3cr3t-Values3cr3t-Value", "[redacted][redacted]");
  EXPECT(s, "no secret here, abc", "no secret here, abc");
  size_t n;
  char *out = redact(s, "a s3cr3t-Value b s3cr3t-Value", &n);
  CHECK_INT(n, 2);
  free(out);
  cp_secrets_free(s);
}

static void test_encoded_forms(void) {
  cp_secrets *s = cp_secrets_new();
  const char *v = "p@ss w/rd\"&=";
  cp_secret_add(s, v, strlen(v));
  /* as is, percent-encoded, form-encoded (+ for space), JSON-escaped */
  EXPECT(s, "x p@ss w/rd\"&= y", "x [redacted] y");
  EXPECT(s, "x=p%40ss%20w%2Frd%22%26%3D", "x=[redacted]");
  EXPECT(s, "x=p%40ss+w%2Frd%22%26%3D", "x=[redacted]");
  EXPECT(s, "{\"x\":\"p@ss w/rd\\\"&=\"}", "{\"x\":\"[redacted]\"}");
  cp_secrets_free(s);
}

static void test_longest_first(void) {
  cp_secrets *s = cp_secrets_new();
  cp_secret_add(s, "abcd", 4);
  cp_secret_add(s, "abcdefgh", 8);
  EXPECT(s, "abcdefgh abcd", "[redacted] [redacted]");
  CHECK_INT(cp_secrets_count(s), 2);
  cp_secret_add(s, "abcd", 4); /* again: no duplicate */
  CHECK_INT(cp_secrets_count(s), 2);
  cp_secrets_free(s);
}

static void test_fields(void) {
  const char *yes[] = {
      "client_secret", "password",       "token",         "access_token",
      "api_key",       "API-Key",        "Authorization", "X-API-Key",
      "x_api_key",     "webhook_secret", "refresh_token", "Cookie",
      "db_password",   "secret",         "secrets",       NULL};
  const char *no[] = {"token_type",     "expires_in", "tenant",
                      "text",           "key",        "idempotency_key",
                      "secretary_name", "status",     NULL};
  for (int i = 0; yes[i]; i++) {
    if (!cp_secret_field(yes[i], strlen(yes[i])))
      fprintf(stderr, "  %s should be a secret field\n", yes[i]);
    CHECK(cp_secret_field(yes[i], strlen(yes[i])));
  }
  for (int i = 0; no[i]; i++) {
    if (cp_secret_field(no[i], strlen(no[i])))
      fprintf(stderr, "  %s should not be a secret field\n", no[i]);
    CHECK(!cp_secret_field(no[i], strlen(no[i])));
  }
}

static void test_headers_and_schemes(void) {
  EXPECT(NULL, "Authorization: Bearer eyJhbGciOi.x.y",
         "Authorization: [redacted]");
  EXPECT(NULL, "GET /\r\nx-api-key: k-123\r\nAccept: */*",
         "GET /\r\nx-api-key: [redacted]\r\nAccept: */*");
  EXPECT(NULL, "sent Bearer abc.def-ghi to host",
         "sent Bearer [redacted] to host");
  EXPECT(NULL, "basic dXNlcjpwYXNz", "basic [redacted]");
  /* words that only look like the start of one */
  EXPECT(NULL, "the Authorization failed", "the Authorization failed");
  EXPECT(NULL, "a basic example", "a basic example");
  EXPECT(NULL, "uses Bearer authentication", "uses Bearer authentication");
}

static void test_pairs_in_text(void) {
  EXPECT(NULL,
         "grant_type=client_credentials&client_id=me&client_secret=xyz%2B1&"
         "scope=a",
         "grant_type=client_credentials&client_id=me&client_secret=[redacted]&"
         "scope=a");
  EXPECT(NULL, "https://h/p?api_key=abc&q=1",
         "https://h/p?api_key=[redacted]&q=1");
  EXPECT(NULL, "{\"access_token\": \"tok-123\", \"token_type\": \"bearer\"}",
         "{\"access_token\": \"[redacted]\", \"token_type\": \"bearer\"}");
  EXPECT(NULL, "{\"password\":\"a\\\"b\"}", "{\"password\":\"[redacted]\"}");
  /* a field name inside a longer word is not a field */
  EXPECT(NULL, "mytoken=abc", "mytoken=abc");
  EXPECT(NULL, "token_type=bearer", "token_type=bearer");
  EXPECT(NULL, "empty: password=&x=1", "empty: password=&x=1");
}

static void test_plain_text_untouched(void) {
  const char *texts[] = {"book a flight to Paris",
                         "{\"text\":\"hello\",\"intent\":\"greet\"}",
                         "déjà vu — ünïcödé", "", NULL};
  for (int i = 0; texts[i]; i++)
    EXPECT(NULL, texts[i], texts[i]);
}

/* A secret that cannot be registered with all its forms says so, and a
 * redaction whose buffer cannot grow is marked failed, never shown cut. */
static void test_out_of_memory(void) {
  const char *v = "p@ss word/with+forms\"and quotes";
  for (long k = 1;; k++) {
    cp_secrets *s = cp_secrets_new();
    CHECK(s != NULL);
    cp_alloc_fail_at(k);
    int rc = cp_secret_add(s, v, strlen(v));
    int pending = cp_alloc_fail_pending();
    cp_alloc_fail_at(0);
    if (pending) {
      CHECK_INT(rc, 0);
      CHECK(cp_secrets_count(s) >= 3);
      cp_secrets_free(s);
      break;
    }
    CHECK_INT(rc, -2);
    cp_secrets_free(s);
  }
  cp_secrets *s = cp_secrets_new();
  CHECK_INT(cp_secret_add(s, v, strlen(v)), 0);
  cp_buf b = CP_BUF_INIT;
  cp_alloc_fail_at(1);
  cp_secret_redact(s, "token: p@ss word/with+forms\"and quotes", 38, &b);
  cp_alloc_fail_at(0);
  CHECK(!cp_buf_ok(&b));
  cp_buf_free(&b);
  cp_secrets_free(s);
}

int main(void) {
  RUN(test_registered_values);
  RUN(test_encoded_forms);
  RUN(test_longest_first);
  RUN(test_fields);
  RUN(test_headers_and_schemes);
  RUN(test_pairs_in_text);
  RUN(test_plain_text_untouched);
  RUN(test_out_of_memory);
  DONE();
}
