/*
 * dl.h -- opening a library loaded on first use and taking functions out
 * of it (curl_load.c, crypto_load.c, similarity.c). Owns no handle and
 * keeps none open itself.
 */
#ifndef CP_DL_H
#define CP_DL_H

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"

_Static_assert(sizeof(void (*)(void)) == sizeof(void *),
               "a function pointer holds what dlsym returns");

/* Sets the function pointer at fn to the symbol name of lib; returns 0
 * when lib has no such symbol. C has no conversion from void * to a
 * function pointer; POSIX makes their bits the same. */
static inline int cp_dl_sym(void *lib, const char *name, void *fn) {
  void *p = dlsym(lib, name);
  if (p) memcpy(fn, &p, sizeof p);
  return p != NULL;
}

/* Opens the library soname for a loader: RTLD_NOW, so that a missing
 * dependency shows here, and RTLD_LOCAL, so that neither it nor what it
 * pulls in resolves symbols of ours, nor we theirs. NULL with the reason
 * in why. A library (or one it needs) that could not be mapped for want
 * of memory counts as an allocation failure (cp_alloc_failures): the
 * dynamic loader says so only in words. */
static inline void *cp_dl_open(const char *soname, char *why, size_t whylen) {
  void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *e = dlerror();
    if (e) snprintf(why, whylen, "%s", e);
    else snprintf(why, whylen, "cannot load %s", soname);
    if (e && (strstr(e, "failed to map segment") ||
              strstr(e, "annot allocate memory") || strstr(e, "out of memory")))
      cp_alloc_note_failure();
  }
  return lib;
}

/* cp_dl_sym for a function the loader cannot do without: when soname has
 * no such symbol, why says so. */
static inline int cp_dl_need(void *lib, const char *soname, const char *name,
                             void *fn, char *why, size_t whylen) {
  if (cp_dl_sym(lib, name, fn)) return 1;
  snprintf(why, whylen, "%s has no %s", soname, name);
  return 0;
}

#endif
