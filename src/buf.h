/*
 * buf.h -- a growable byte buffer, the one way libcogpipe builds strings of
 * unknown length (JSON text, request bodies, reports). Allocation failure
 * aborts: a half-built request body is never a useful state to recover.
 */
#ifndef CP_BUF_H
#define CP_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct cp_buf {
  char *data; /* owned; always NUL-terminated when non-NULL */
  size_t len;
  size_t cap;
} cp_buf;

#define CP_BUF_INIT {NULL, 0, 0}

void cp_buf_reserve(cp_buf *b, size_t extra);
void cp_buf_add(cp_buf *b, const void *p, size_t n);
void cp_buf_addc(cp_buf *b, char c);
void cp_buf_adds(cp_buf *b, const char *s);
void cp_buf_printf(cp_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cp_buf_vprintf(cp_buf *b, const char *fmt, va_list ap);
void cp_buf_reset(cp_buf *b); /* len = 0, keeps the memory */
void cp_buf_free(cp_buf *b);
/* Hands the bytes to the caller, who frees them; b is left empty. */
char *cp_buf_steal(cp_buf *b, size_t *len);

/* Allocation helpers that abort with a message instead of returning NULL. */
void *cp_malloc(size_t n);
void *cp_calloc(size_t n, size_t size);
void *cp_realloc(void *p, size_t n);
char *cp_strdup(const char *s);
char *cp_strndup(const char *s, size_t n);

#endif
