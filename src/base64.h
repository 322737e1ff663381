/*
 * base64.h -- standard base64 with padding. Pure functions on caller-owned
 * buffers; no allocation.
 */
#ifndef CP_BASE64_H
#define CP_BASE64_H

#include <stddef.h>

/* out needs 4 * ((len + 2) / 3) + 1 bytes; returns the length written (NUL
 * not counted). */
size_t cp_base64_encode(const unsigned char *in, size_t len, char *out);
/* Strict decode (alphabet, padding, no white space). out needs len / 4 * 3
 * bytes. Returns 0 and *outlen, or -1. */
int cp_base64_decode(const char *in, size_t len, unsigned char *out,
                     size_t *outlen);
/* Why cp_base64_decode refuses in, with the offset of the first byte at
 * fault in *at (len for a length that is not a multiple of 4); NULL when
 * it does not. The reason names no byte's value: in may be a secret. */
const char *cp_base64_problem(const char *in, size_t len, size_t *at);

#endif
