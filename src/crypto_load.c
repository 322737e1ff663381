/*
 * crypto_load.c -- loads libcrypto the first time something is hashed,
 * signed or drawn at random (see crypto_load.h). Owns the library handle,
 * which stays loaded for the life of the process; knows nothing of audit
 * logs or webhooks.
 */
#include "crypto_load.h"

#include <stdio.h>
#include <uv.h>

#include "dl.h"

#ifndef CP_CRYPTO_SONAME
#define CP_CRYPTO_SONAME "libcrypto.so.3"
#endif

cp_crypto_api cp_crypto;

static uv_once_t once = UV_ONCE_INIT;
static int loaded;
static char why[256]; /* the reason loading failed, set once */

/* cp_dl_sym, saying which symbol is missing. */
static int sym(void *lib, const char *name, void *fn) {
  if (cp_dl_sym(lib, name, fn)) return 1;
  snprintf(why, sizeof why, "%s has no %s", CP_CRYPTO_SONAME, name);
  return 0;
}

/* Takes the name after macro expansion, so that a name the headers
 * #define to another is looked up as the symbol it stands for. */
#define CP_CRYPTO_STR(name) #name

static void load(void) {
  /* RTLD_LOCAL: libcrypto must not resolve symbols of ours, nor we its;
   * libcurl's TLS library loads the same copy and shares it. */
  void *lib = dlopen(CP_CRYPTO_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *e = dlerror();
    snprintf(why, sizeof why, "%s", e ? e : "cannot load " CP_CRYPTO_SONAME);
    return;
  }
  cp_crypto_api api;
#define CP_CRYPTO_SYM(name) &&sym(lib, CP_CRYPTO_STR(name), &api.name)
  int ok = 1 CP_CRYPTO_FUNCTIONS(CP_CRYPTO_SYM);
#undef CP_CRYPTO_SYM
  if (!ok) {
    dlclose(lib);
    return;
  }
  /* OpenSSL 3 initialises itself, thread-safely, on first use. */
  cp_crypto = api;
  loaded = 1;
}

int cp_crypto_load(char *err, size_t errlen) {
  uv_once(&once, load);
  if (loaded) return 0;
  if (errlen) snprintf(err, errlen, "cannot load libcrypto: %s", why);
  return -1;
}
