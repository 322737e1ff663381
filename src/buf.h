/*
 * buf.h -- a growable byte buffer, the one way libcogpipe builds strings of
 * unknown length (JSON text, request bodies, reports), and the allocators
 * behind it. Never aborts and never exits: running out of memory is an
 * error value that every caller handles.
 *
 * The scheme, for every part of libcogpipe:
 * - cp_malloc, cp_calloc, cp_realloc, cp_strdup and cp_strndup return NULL
 *   when memory runs out (cp_realloc then leaves the old block as it was).
 *   A function that allocates says in its comment how it reports failure
 *   (NULL, -1, an error kind) and releases what it had taken first.
 * - A cp_buf that cannot grow marks itself failed (sticky until reset or
 *   free) and ignores every later append, so a caller builds a whole text
 *   and checks cp_buf_ok once before using it.
 * - Lua bindings allocate through Lua where they can (lua_newuserdatauv,
 *   luaL_Buffer), so that a failure is LUA_ERRMEM inside the protected call
 *   they run in; where they allocate in C, a NULL becomes a memory error
 *   raised with cp_lua_nomem (lutil.h).
 */
#ifndef CP_BUF_H
#define CP_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct cp_buf {
  char *data; /* owned; always NUL-terminated when non-NULL */
  size_t len;
  size_t cap;
  int failed; /* a growth failed: the contents are incomplete */
} cp_buf;

#define CP_BUF_INIT {NULL, 0, 0, 0}

/* Makes room for extra more bytes: 0, or -1 with the buffer marked failed. */
int cp_buf_reserve(cp_buf *b, size_t extra);
/* Appends; on a failed buffer these do nothing (see cp_buf_ok). */
void cp_buf_add(cp_buf *b, const void *p, size_t n);
void cp_buf_addc(cp_buf *b, char c);
void cp_buf_adds(cp_buf *b, const char *s);
void cp_buf_printf(cp_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cp_buf_vprintf(cp_buf *b, const char *fmt, va_list ap);
/* 1 when every append so far took place; 0 once memory ran out. */
int cp_buf_ok(const cp_buf *b);
void cp_buf_reset(cp_buf *b); /* len = 0 and not failed; keeps the memory */
void cp_buf_free(cp_buf *b);
/* Hands the bytes to the caller, who frees them; b is left empty. NULL when
 * the buffer had failed (its bytes are freed) or memory runs out. */
char *cp_buf_steal(cp_buf *b, size_t *len);

/* malloc and friends that never return a block of 0 bytes (a request for 0
 * gets 1) and return NULL when out of memory. cp_calloc and cp_realloc also
 * return NULL when n * size would overflow. */
void *cp_malloc(size_t n);
void *cp_calloc(size_t n, size_t size);
void *cp_realloc(void *p, size_t n);
/* cp_realloc of n elements of size bytes, checked for overflow. */
void *cp_reallocarray(void *p, size_t n, size_t size);
char *cp_strdup(const char *s);
char *cp_strndup(const char *s, size_t n);

/* How many allocations through the functions above have failed on this
 * thread so far, and a way to count one that failed elsewhere (libcrypto,
 * mmap). A caller compares the count before and after a call that
 * can only say "failed" to know whether memory was the reason. */
unsigned long cp_alloc_failures(void);
void cp_alloc_note_failure(void);

/* For tests of the failure paths: the n-th allocation made through the
 * functions above from now on fails (n >= 1), and only that one; 0 turns
 * it off. cp_alloc_fail_pending says whether that failure is still to
 * come, so a test can fail each allocation of an operation in turn. */
void cp_alloc_fail_at(long n);
int cp_alloc_fail_pending(void);

#endif
