/*
 * crypto_load.c -- loads libcrypto the first time something is hashed,
 * signed or drawn at random (see crypto_load.h). Owns the library handle,
 * which stays loaded for the life of the process; knows nothing of audit
 * logs or webhooks.
 */
#include "crypto_load.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "dl.h"

#ifndef CP_CRYPTO_SONAME
#define CP_CRYPTO_SONAME "libcrypto.so.3"
#endif

cp_crypto_api cp_crypto;

/* Loading is tried again until it works: a failure for want of memory
 * (dlopen cannot map the library) must not leave a long-lived process
 * without libcrypto for good. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int loaded;
static char why[256]; /* the reason the last try failed (under lock) */

/* Takes the name after macro expansion, so that a name the headers
 * #define to another is looked up as the symbol it stands for. */
#define CP_CRYPTO_STR(name) #name

static void load(void) {
  /* libcurl's TLS library, when loaded, shares this copy. */
  void *lib = cp_dl_open(CP_CRYPTO_SONAME, why, sizeof why);
  if (!lib) return;
  cp_crypto_api api;
#define CP_CRYPTO_SYM(name) \
  &&cp_dl_need(lib, CP_CRYPTO_SONAME, CP_CRYPTO_STR(name), &api.name, why, \
               sizeof why)
  int ok = 1 CP_CRYPTO_FUNCTIONS(CP_CRYPTO_SYM);
#undef CP_CRYPTO_SYM
  if (!ok) {
    dlclose(lib);
    return;
  }
  /* OpenSSL 3 initialises itself, thread-safely, on first use. */
  cp_crypto = api;
  atomic_store(&loaded, 1); /* after cp_crypto: readers see it whole */
}

int cp_crypto_load(char *err, size_t errlen) {
  if (atomic_load(&loaded)) return 0;
  pthread_mutex_lock(&lock);
  if (!atomic_load(&loaded)) load();
  int ok = atomic_load(&loaded);
  if (!ok && errlen) snprintf(err, errlen, "cannot load libcrypto: %s", why);
  pthread_mutex_unlock(&lock);
  return ok ? 0 : -1;
}
