/*
 * crypto_load.h -- libcrypto (OpenSSL 3), loaded on first use. libcogpipe
 * is not linked against libcrypto: cp_crypto_load() dlopen()s it (by the
 * SONAME the build found, CP_CRYPTO_SONAME) and fills cp_crypto with its
 * functions. Linked, it would be loaded and initialised by every command,
 * which costs one that never hashes, signs or draws random bytes, such as
 * `cogpipe check`, a quarter of its start-up. Owns the handle on the
 * library, never unloads it and never hashes, signs or wipes anything
 * itself.
 *
 *   if (cp_crypto_load(err, sizeof err)) ... libcrypto cannot be used ...
 *   cp_crypto.EVP_Digest(p, n, md, &mdlen, cp_crypto.EVP_sha256(), NULL);
 */
#ifndef CP_CRYPTO_LOAD_H
#define CP_CRYPTO_LOAD_H

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stddef.h>

/* The libcrypto functions libcogpipe calls. Each must be a function of
 * libcrypto.so.3 (nm -D): OpenSSL makes some names function-like macros
 * (OPENSSL_free, EVP_MD_CTX_create), and for those the function the macro
 * calls is what belongs here. A name #defined to another is looked up as
 * the other. */
#define CP_CRYPTO_FUNCTIONS(X)                                               \
  X(EVP_Digest)                                                              \
  X(EVP_DigestInit_ex)                                                       \
  X(EVP_DigestUpdate)                                                        \
  X(EVP_DigestFinal_ex)                                                      \
  X(EVP_MD_CTX_new)                                                          \
  X(EVP_MD_CTX_free)                                                         \
  X(EVP_sha256)                                                              \
  X(EVP_MAC_fetch)                                                           \
  X(EVP_MAC_free)                                                            \
  X(EVP_MAC_CTX_new)                                                         \
  X(EVP_MAC_CTX_free)                                                        \
  X(EVP_MAC_init)                                                            \
  X(EVP_MAC_update)                                                          \
  X(EVP_MAC_final)                                                           \
  X(OSSL_PARAM_construct_utf8_string)                                        \
  X(OSSL_PARAM_construct_end)                                                \
  X(RAND_bytes)                                                              \
  X(CRYPTO_memcmp)                                                           \
  X(OPENSSL_cleanse)

/* cp_crypto.EVP_Digest is EVP_Digest, and so on. */
typedef struct cp_crypto_api {
#define CP_CRYPTO_MEMBER(name) __typeof__(name) *name;
  CP_CRYPTO_FUNCTIONS(CP_CRYPTO_MEMBER)
#undef CP_CRYPTO_MEMBER
} cp_crypto_api;

/* Filled by the first successful cp_crypto_load(); read-only afterwards. */
extern cp_crypto_api cp_crypto;

/* Loads libcrypto, once per process and from any thread. Returns 0 when
 * cp_crypto may be used; otherwise -1 with the reason in err (when
 * errlen > 0), and a later call tries again (the reason may have been a
 * lack of memory). */
int cp_crypto_load(char *err, size_t errlen);

#endif
