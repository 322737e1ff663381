/*
 * dl.h -- taking functions out of a library loaded on first use
 * (curl_load.c, similarity.c). Owns no handle and loads nothing itself.
 */
#ifndef CP_DL_H
#define CP_DL_H

#include <dlfcn.h>
#include <string.h>

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

#endif
