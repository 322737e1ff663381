/*
 * webhook.h -- Standard Webhooks signing (https://www.standardwebhooks.com):
 * secrets as whsec_<base64> or raw bytes, the v1 HMAC-SHA256 signature over
 * "id.timestamp.body", its constant-time check and message ids (base64 is
 * base64.h's).
 * Pure functions: no I/O, no delivery (lua/cogpipe/webhook.lua sends).
 */
#ifndef CP_WEBHOOK_H
#define CP_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Shorter keys are refused, as the specification asks (24..64 bytes). */
#define CP_WEBHOOK_KEY_MIN 24

/* The key bytes of a secret: whsec_<base64> is decoded, anything else is
 * used as it is. Returns a malloc'd key the caller frees (and should wipe
 * with OPENSSL_cleanse), or NULL with *why set to a static message
 * that never quotes the secret (CP_WEBHOOK_NOMEM when out of memory). */
extern const char CP_WEBHOOK_NOMEM[];
unsigned char *cp_webhook_key(const char *secret, size_t len, size_t *keylen,
                              const char **why);

/* Appends "v1,<base64 HMAC-SHA256(key, id "." timestamp "." body)>". key
 * comes from cp_webhook_key (so for verify). Returns 0, or -1 when
 * libcrypto cannot compute the HMAC (out of memory, or a libcrypto without
 * it): nothing is appended then, since a wrong signature must never go
 * out. */
int cp_webhook_sign(const unsigned char *key, size_t keylen, const char *id,
                    int64_t timestamp, const char *body, size_t len,
                    cp_buf *out);

/* 1 when one of the space-separated v1 signatures in header matches key,
 * compared in constant time; 0 when none does; -1 when the HMAC cannot be
 * computed (as for sign). */
int cp_webhook_verify(const unsigned char *key, size_t keylen, const char *id,
                      int64_t timestamp, const char *body, size_t len,
                      const char *header);

/* A new message id: "msg_" and 26 random base32 characters (NUL-ended;
 * from the clock and the pid when libcrypto's entropy source fails). */
void cp_webhook_new_id(char out[31]);

#endif
