/*
 * curl_load.c -- loads libcurl the first time HTTP is used (see
 * curl_load.h). Owns the library handle, which stays loaded for the life
 * of the process; knows nothing of requests.
 */
#include "curl_load.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "dl.h"

#ifndef CP_CURL_SONAME
#define CP_CURL_SONAME "libcurl.so.4"
#endif

cp_curl_api cp_curl;

/* Loading is tried again until it works: a failure for want of memory
 * (dlopen cannot map the library) must not leave a long-lived process
 * without libcurl for good. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int loaded;
static char why[256]; /* the reason the last try failed (under lock) */

static void load(void) {
  void *lib = cp_dl_open(CP_CURL_SONAME, why, sizeof why);
  if (!lib) return;
  cp_curl_api api;
#define CP_CURL_SYM(name) \
  &&cp_dl_need(lib, CP_CURL_SONAME, "curl_" #name, &api.name, why, sizeof why)
  int ok = 1 CP_CURL_FUNCTIONS(CP_CURL_SYM);
#undef CP_CURL_SYM
  if (!ok) {
    dlclose(lib);
    return;
  }
  /* Thread-safe from 7.84 on, and done under the lock anyway. */
  CURLcode rc = api.global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    snprintf(why, sizeof why, "libcurl initialisation failed: %s",
             api.easy_strerror(rc));
    dlclose(lib);
    return;
  }
  cp_curl = api;
  atomic_store(&loaded, 1); /* after cp_curl: readers see it whole */
}

int cp_curl_load(char *err, size_t errlen) {
  if (atomic_load(&loaded)) return 0;
  pthread_mutex_lock(&lock);
  if (!atomic_load(&loaded)) load();
  int ok = atomic_load(&loaded);
  if (!ok && errlen) snprintf(err, errlen, "cannot load libcurl: %s", why);
  pthread_mutex_unlock(&lock);
  return ok ? 0 : -1;
}
