/*
 * webhook.c -- Standard Webhooks signatures and ids (see webhook.h). Keys
 * are wiped before they are freed; nothing here prints or keeps a secret.
 */
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "base64.h"

const char CP_WEBHOOK_NOMEM[] = "out of memory while reading a webhook secret";

unsigned char *cp_webhook_key(const char *secret, size_t len, size_t *keylen,
                              const char **why) {
  static const char prefix[] = "whsec_";
  size_t pl = sizeof prefix - 1;
  unsigned char *key;
  if (len >= pl && memcmp(secret, prefix, pl) == 0) {
    key = cp_malloc(len / 4 * 3 + 1); /* the caller owns it */
    if (!key) {
      *why = CP_WEBHOOK_NOMEM;
      return NULL;
    }
    if (cp_base64_decode(secret + pl, len - pl, key, keylen) != 0) {
      free(key);
      *why = "webhook secret is not valid whsec_<base64>";
      return NULL;
    }
  } else {
    key = (unsigned char *)cp_strndup(secret, len);
    if (!key) {
      *why = CP_WEBHOOK_NOMEM;
      return NULL;
    }
    *keylen = len;
  }
  if (*keylen < CP_WEBHOOK_KEY_MIN) {
    OPENSSL_cleanse(key, *keylen);
    free(key);
    *why = "webhook secret is too short: at least 24 bytes are needed";
    return NULL;
  }
  return key;
}

/* The HMAC into md: 0, or -1 when libcrypto cannot make it (it allocates
 * its context; a libcrypto without HMAC-SHA256 fails the same way). */
static int mac(const unsigned char *key, size_t keylen, const char *id,
               int64_t ts, const char *body, size_t len,
               unsigned char md[32]) {
  char stamp[32];
  int sl = snprintf(stamp, sizeof stamp, ".%lld.", (long long)ts);
  EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(
                             OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  size_t mdlen = 0;
  int ok = ctx && EVP_MAC_init(ctx, key, keylen, params) &&
           EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) &&
           EVP_MAC_update(ctx, (const unsigned char *)stamp, (size_t)sl) &&
           EVP_MAC_update(ctx, (const unsigned char *)body, len) &&
           EVP_MAC_final(ctx, md, &mdlen, 32) && mdlen == 32;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(m);
  return ok ? 0 : -1;
}

int cp_webhook_sign(const unsigned char *key, size_t keylen, const char *id,
                    int64_t timestamp, const char *body, size_t len,
                    cp_buf *out) {
  unsigned char md[32];
  if (mac(key, keylen, id, timestamp, body, len, md) != 0) return -1;
  char enc[48];
  cp_base64_encode(md, sizeof md, enc);
  cp_buf_adds(out, "v1,");
  cp_buf_adds(out, enc);
  return 0;
}

int cp_webhook_verify(const unsigned char *key, size_t keylen, const char *id,
                      int64_t timestamp, const char *body, size_t len,
                      const char *header) {
  unsigned char md[32];
  if (mac(key, keylen, id, timestamp, body, len, md) != 0) return -1;
  char want[48];
  size_t wl = cp_base64_encode(md, sizeof md, want);
  int matched = 0;
  const char *p = header;
  while (*p) {
    while (*p == ' ')
      p++;
    const char *end = p;
    while (*end && *end != ' ')
      end++;
    size_t n = (size_t)(end - p);
    /* every candidate is compared in full, so timing says nothing about
     * which one (or which byte) differed */
    if (n == wl + 3 && memcmp(p, "v1,", 3) == 0)
      matched |= CRYPTO_memcmp(p + 3, want, wl) == 0;
    p = end;
  }
  return matched;
}

void cp_webhook_new_id(char out[31]) {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  unsigned char r[26];
  if (RAND_bytes(r, sizeof r) != 1) {
    /* no entropy source: clock and pid keep ids apart on one host */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t mix = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^
                   (uint64_t)getpid() << 20;
    for (size_t i = 0; i < sizeof r; i++)
      r[i] = (unsigned char)(mix >> (i % 8 * 8) ^ i);
  }
  memcpy(out, "msg_", 4);
  for (size_t i = 0; i < sizeof r; i++)
    out[4 + i] = alphabet[r[i] & 31];
  out[30] = '\0';
}
