/*
 * buf.c -- growable byte buffer and the aborting allocators behind it.
 * Owns nothing global; every cp_buf belongs to whoever declared it.
 */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n) {
  fprintf(stderr, "cogpipe: out of memory (%zu bytes)\n", n);
  abort();
}

void *cp_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}

void *cp_calloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) oom(n * size);
  return p;
}

void *cp_realloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) oom(n);
  return q;
}

char *cp_strndup(const char *s, size_t n) {
  char *d = cp_malloc(n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *cp_strdup(const char *s) { return cp_strndup(s, strlen(s)); }

void cp_buf_reserve(cp_buf *b, size_t extra) {
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) cap *= 2;
  b->data = cp_realloc(b->data, cap);
  b->cap = cap;
}

void cp_buf_add(cp_buf *b, const void *p, size_t n) {
  cp_buf_reserve(b, n);
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void cp_buf_addc(cp_buf *b, char c) {
  cp_buf_reserve(b, 1);
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
}

void cp_buf_adds(cp_buf *b, const char *s) { cp_buf_add(b, s, strlen(s)); }

void cp_buf_vprintf(cp_buf *b, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) return;
  cp_buf_reserve(b, (size_t)n);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
}

void cp_buf_printf(cp_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cp_buf_vprintf(b, fmt, ap);
  va_end(ap);
}

void cp_buf_reset(cp_buf *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

void cp_buf_free(cp_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

char *cp_buf_steal(cp_buf *b, size_t *len) {
  char *d = b->data ? b->data : cp_strdup("");
  if (len) *len = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return d;
}
