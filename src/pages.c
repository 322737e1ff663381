/*
 * pages.c -- anonymous mappings for exact dedupe's large arrays (pages.h):
 * huge pages or not, populated at once or not. Must not decide sizes or
 * layouts, which are the table's and the check's.
 */
#include "pages.h"

#include <stdint.h>
#include <sys/mman.h>

#include "buf.h"

/* Maps the pages of [p, p + n) in one call rather than a page fault per
 * 4 KiB as they are first written: the table takes thousands of pages, and
 * a fault is dear on virtual machines. Only a hint: faults do the same. */
void cp_pages_populate(void *p, size_t n) {
#ifdef MADV_POPULATE_WRITE
  madvise(p, n, MADV_POPULATE_WRITE);
#else
  (void)p;
  (void)n;
#endif
}

/* Zeroed memory, populated when `all` says it is written
 * all over at once. From 2 MiB on it is aligned to 2 MiB and asks for
 * transparent huge pages: one fault then maps 2 MiB, where 4 KiB pages
 * would take 512, each several microseconds on a virtual machine (where
 * the kernel must first compact memory to make one, it is slower, but
 * still no slower than the 512). The part past the last whole huge page
 * stays in 4 KiB pages, so at most the last huge page written is resident
 * beyond what is used. */
void *cp_pages_zalloc(size_t n, int all, int huge_ok) {
  int huge = huge_ok && n >= CP_HUGE_PAGE;
  size_t len = huge ? n + CP_HUGE_PAGE : n;
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) { /* the caller fails for want of memory */
    cp_alloc_note_failure();
    return NULL;
  }
  if (huge) { /* keep [a, a + n) of the mapping, a aligned */
    char *a = (char *)(((uintptr_t)p + CP_HUGE_PAGE - 1) & ~(uintptr_t)(CP_HUGE_PAGE - 1));
    if (a > p) munmap(p, (size_t)(a - p));
    if (p + len > a + n) munmap(a + n, (size_t)(p + len - (a + n)));
    p = a;
#ifdef MADV_HUGEPAGE
    madvise(p, n, MADV_HUGEPAGE); /* a hint, as the system may have none */
#endif
  }
#ifdef MADV_NOHUGEPAGE
  /* Nor where the system would give them unasked (THP "always"). */
  if (!huge_ok) madvise(p, n, MADV_NOHUGEPAGE);
#endif
  if (all) cp_pages_populate(p, n);
  return p;
}

void cp_pages_free(void *p, size_t n) {
  if (p) munmap(p, n);
}
