/*
 * pages.h -- the memory policy of exact dedupe's large arrays (the hash
 * table, its entries, the check's candidate sets): anonymous mappings,
 * 2 MiB huge pages where they pay, and pages mapped in ahead of their
 * first write. Owns no array and knows nothing of what is stored; never
 * aborts: a mapping that fails is NULL, noted as a failed allocation.
 */
#ifndef CP_PAGES_H
#define CP_PAGES_H

#include <stddef.h>

#define CP_HUGE_PAGE ((size_t)2 << 20)

/* Zeroed memory of n bytes, for cp_pages_free; NULL when out of memory.
 * all: populate it at once, as it is written all over; huge_ok: from
 * CP_HUGE_PAGE on, ask for transparent huge pages (else refuse them). */
void *cp_pages_zalloc(size_t n, int all, int huge_ok);
void cp_pages_free(void *p, size_t n); /* p NULL: nothing */
/* Maps the pages of [p, p + n) in one call; only a hint. */
void cp_pages_populate(void *p, size_t n);

#endif
