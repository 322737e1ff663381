/*
 * buf.c -- growable byte buffer and the allocators behind it (buf.h). They
 * report running out of memory as NULL or a failed buffer; nothing here
 * prints, aborts or exits. Owns nothing global but the test hook's counter.
 */
#include "buf.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Allocations left before the one a test asked to fail; 0 when none. */
static atomic_long fail_countdown;
static _Thread_local unsigned long failures;

unsigned long cp_alloc_failures(void) { return failures; }
void cp_alloc_note_failure(void) { failures++; }

/* Counts a NULL from an allocator. */
static void *counted(void *p) {
  if (!p) failures++;
  return p;
}

void cp_alloc_fail_at(long n) { atomic_store(&fail_countdown, n > 0 ? n : 0); }
int cp_alloc_fail_pending(void) { return atomic_load(&fail_countdown) > 0; }

static int injected_failure(void) {
  long left = atomic_load(&fail_countdown);
  while (left > 0) {
    if (atomic_compare_exchange_weak(&fail_countdown, &left, left - 1))
      return left == 1;
  }
  return 0;
}

void *cp_malloc(size_t n) {
  if (injected_failure()) return counted(NULL);
  return counted(malloc(n ? n : 1));
}

void *cp_calloc(size_t n, size_t size) {
  if ((size && n > SIZE_MAX / size) || injected_failure()) return counted(NULL);
  return counted(calloc(n ? n : 1, size ? size : 1));
}

void *cp_realloc(void *p, size_t n) {
  if (injected_failure()) return counted(NULL);
  return counted(realloc(p, n ? n : 1));
}

void *cp_reallocarray(void *p, size_t n, size_t size) {
  if (size && n > SIZE_MAX / size) return counted(NULL);
  return cp_realloc(p, n * size);
}

char *cp_strndup(const char *s, size_t n) {
  if (n == SIZE_MAX) return NULL;
  char *d = cp_malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *cp_strdup(const char *s) { return cp_strndup(s, strlen(s)); }

int cp_buf_reserve(cp_buf *b, size_t extra) {
  if (b->failed) return -1;
  if (extra > SIZE_MAX - b->len - 1) {
    b->failed = 1;
    return -1;
  }
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *d = cp_realloc(b->data, cap);
  if (!d) {
    b->failed = 1;
    return -1;
  }
  b->data = d;
  b->cap = cap;
  return 0;
}

void cp_buf_add(cp_buf *b, const void *p, size_t n) {
  if (cp_buf_reserve(b, n) != 0) return;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void cp_buf_addc(cp_buf *b, char c) {
  if (cp_buf_reserve(b, 1) != 0) return;
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
}

void cp_buf_adds(cp_buf *b, const char *s) { cp_buf_add(b, s, strlen(s)); }

void cp_buf_vprintf(cp_buf *b, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) {
    b->failed = 1; /* the text cannot be what the caller asked for */
    return;
  }
  if (cp_buf_reserve(b, (size_t)n) != 0) return;
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
}

void cp_buf_printf(cp_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cp_buf_vprintf(b, fmt, ap);
  va_end(ap);
}

int cp_buf_ok(const cp_buf *b) { return !b->failed; }

void cp_buf_reset(cp_buf *b) {
  b->len = 0;
  b->failed = 0;
  if (b->data) b->data[0] = '\0';
}

void cp_buf_free(cp_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
  b->failed = 0;
}

char *cp_buf_steal(cp_buf *b, size_t *len) {
  char *d = NULL;
  if (!b->failed) d = b->data ? b->data : cp_strdup("");
  else free(b->data);
  if (len) *len = d ? b->len : 0;
  b->data = NULL;
  b->len = b->cap = 0;
  b->failed = 0;
  return d;
}
