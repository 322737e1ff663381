/*
 * curl_load.c -- loads libcurl the first time HTTP is used (see
 * curl_load.h). Owns the library handle, which stays loaded for the life
 * of the process; knows nothing of requests.
 */
#include "curl_load.h"

#include <stdio.h>
#include <uv.h>

#include "dl.h"

#ifndef CP_CURL_SONAME
#define CP_CURL_SONAME "libcurl.so.4"
#endif

cp_curl_api cp_curl;

static uv_once_t once = UV_ONCE_INIT;
static int loaded;
static char why[256]; /* the reason loading failed, set once */

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
  /* Thread-safe from 7.84 on, and done under the once anyway. */
  CURLcode rc = api.global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    snprintf(why, sizeof why, "libcurl initialisation failed: %s",
             api.easy_strerror(rc));
    dlclose(lib);
    return;
  }
  cp_curl = api;
  loaded = 1;
}

int cp_curl_load(char *err, size_t errlen) {
  uv_once(&once, load);
  if (loaded) return 0;
  if (errlen) snprintf(err, errlen, "cannot load libcurl: %s", why);
  return -1;
}
