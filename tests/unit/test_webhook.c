/*
 * test_webhook.c -- Standard Webhooks signing: the specification's own
 * example, a raw secret (expected value computed with Python's hmac),
 * several signatures for key rotation, secrets refused, base64 edge cases.
 */
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "check.h"
#include "webhook.h"

static void test_base64(void) {
  const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char *want[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; i++) {
    char out[16];
    size_t n =
        cp_base64_encode((const unsigned char *)in[i], strlen(in[i]), out);
    CHECK_STR(out, want[i]);
    CHECK_INT(n, strlen(want[i]));
    unsigned char back[16];
    size_t bl = 99;
    CHECK_INT(cp_base64_decode(out, n, back, &bl), 0);
    CHECK_INT(bl, strlen(in[i]));
    CHECK(memcmp(back, in[i], bl) == 0);
  }
  unsigned char b[16];
  size_t bl;
  CHECK_INT(cp_base64_decode("Zm9", 3, b, &bl), -1);       /* length */
  CHECK_INT(cp_base64_decode("Zm9v Zg==", 9, b, &bl), -1); /* space */
  CHECK_INT(cp_base64_decode("Z=9v", 4, b, &bl), -1);      /* inner pad */
  CHECK_INT(cp_base64_decode("Zg==Zg==", 8, b, &bl), -1);  /* pad mid-way */
  CHECK_INT(cp_base64_decode("Zm9-", 4, b, &bl), -1);      /* url alphabet */
  CHECK_INT(cp_base64_decode("Zg=A", 4, b, &bl), -1);
}

static void test_spec_example(void) {
  /* the example of the Standard Webhooks specification */
  const char *secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const char *why = NULL;
  size_t kl = 0;
  unsigned char *key = cp_webhook_key(secret, strlen(secret), &kl, &why);
  CHECK(key != NULL);
  CHECK_INT(kl, 24);
  const char *body = "{\"test\": 2432232314}";
  cp_buf sig = CP_BUF_INIT;
  cp_webhook_sign(key, kl, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body,
                  strlen(body), &sig);
  CHECK_STR(sig.data, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  CHECK(cp_webhook_verify(key, kl, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                          body, strlen(body), sig.data));
  /* anything changed: id, time, body */
  CHECK(!cp_webhook_verify(key, kl, "msg_p5jXN8AQM9LWM0D4loKWxJeK", 1614265330,
                           body, strlen(body), sig.data));
  CHECK(!cp_webhook_verify(key, kl, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331,
                           body, strlen(body), sig.data));
  CHECK(!cp_webhook_verify(key, kl, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                           "{\"test\": 2432232315}", strlen(body), sig.data));
  cp_buf_free(&sig);
  free(key);
}

static void test_raw_secret(void) {
  /* python3: base64.b64encode(hmac.new(b"a-raw-secret-that-is-long-enough",
   *   b'msg_1.1700000000.{"a":1}', hashlib.sha256).digest()) */
  const char *secret = "a-raw-secret-that-is-long-enough";
  const char *why = NULL;
  size_t kl = 0;
  unsigned char *key = cp_webhook_key(secret, strlen(secret), &kl, &why);
  CHECK(key != NULL);
  CHECK_INT(kl, 32);
  cp_buf sig = CP_BUF_INIT;
  cp_webhook_sign(key, kl, "msg_1", 1700000000, "{\"a\":1}", 7, &sig);
  CHECK_STR(sig.data, "v1,1yOMq7hPcEHC5hW+oSZtLkmfVFnvhr/KfaCUImaJqkI=");
  cp_buf_free(&sig);
  free(key);
}

static void test_rotation_header(void) {
  const char *old_s = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const char *new_s = "a-raw-secret-that-is-long-enough";
  const char *why;
  size_t kl1, kl2;
  unsigned char *k1 = cp_webhook_key(old_s, strlen(old_s), &kl1, &why);
  unsigned char *k2 = cp_webhook_key(new_s, strlen(new_s), &kl2, &why);
  cp_buf h = CP_BUF_INIT;
  cp_webhook_sign(k1, kl1, "msg_x", 42, "b", 1, &h);
  cp_buf_addc(&h, ' ');
  cp_webhook_sign(k2, kl2, "msg_x", 42, "b", 1, &h);
  /* a receiver holding either key accepts */
  CHECK(cp_webhook_verify(k1, kl1, "msg_x", 42, "b", 1, h.data));
  CHECK(cp_webhook_verify(k2, kl2, "msg_x", 42, "b", 1, h.data));
  CHECK(!cp_webhook_verify(k1, kl1, "msg_x", 42, "b", 1, "v1,AAAA v2,xyz"));
  CHECK(!cp_webhook_verify(k1, kl1, "msg_x", 42, "b", 1, ""));
  cp_buf_free(&h);
  free(k1);
  free(k2);
}

static void test_bad_secrets(void) {
  const char *why = NULL;
  size_t kl;
  CHECK(cp_webhook_key("whsec_!!!!", 10, &kl, &why) == NULL);
  CHECK(why && strstr(why, "whsec_") && !strstr(why, "!!!!"));
  why = NULL;
  CHECK(cp_webhook_key("whsec_c2hvcnQ=", 14, &kl, &why) == NULL); /* "short" */
  CHECK(why && strstr(why, "too short"));
  why = NULL;
  CHECK(cp_webhook_key("short-raw", 9, &kl, &why) == NULL);
  CHECK(why && strstr(why, "too short") && !strstr(why, "short-raw"));
}

static void test_ids(void) {
  char a[31], b[31];
  cp_webhook_new_id(a);
  cp_webhook_new_id(b);
  CHECK_INT(strlen(a), 30);
  CHECK(strncmp(a, "msg_", 4) == 0);
  CHECK(strcmp(a, b) != 0);
  for (int i = 4; i < 30; i++)
    CHECK(strchr("abcdefghijklmnopqrstuvwxyz234567", a[i]) != NULL);
}

int main(void) {
  RUN(test_base64);
  RUN(test_spec_example);
  RUN(test_raw_secret);
  RUN(test_rotation_header);
  RUN(test_bad_secrets);
  RUN(test_ids);
  DONE();
}
