/*
 * lhost.c -- the allocator of the Lua states libcogpipe makes, and the
 * record kept beside each (see lhost.h). Decides only what memory a state
 * may have; what a run does when it ran out is runtime.c's.
 */
#include "lhost.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Counts what the state holds, refuses what would take it past the limit,
 * and notes memory that truly ran out. Lua answers a refusal with an
 * emergency collection and asks once more for the same block; only a
 * second refusal of that request is a memory error (a first one, or a
 * failed growth Lua can do without, such as a shrink, is not). */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  cp_lhost *h = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    h->mem_used -= old;
    return NULL;
  }
  void *p = NULL;
  if (!(h->mem_limit && nsize > old &&
        nsize - old > h->mem_limit - h->mem_used))
    p = realloc(ptr, nsize);
  if (!p) {
    if (h->refused && h->refused_block == ptr && h->refused_size == nsize)
      cp_lhost_note_oom(h, NULL);
    h->refused = 1;
    h->refused_block = ptr;
    h->refused_size = nsize;
    return NULL;
  }
  if (nsize > old) h->refused = 0;
  h->mem_used = h->mem_used - old + nsize;
  return p;
}

lua_State *cp_lhost_newstate(cp_lhost *h, size_t limit) {
  memset(h, 0, sizeof *h);
  h->mem_limit = limit;
  return lua_newstate(host_alloc, h);
}

cp_lhost *cp_lhost_of(lua_State *L) {
  void *ud = NULL;
  return lua_getallocf(L, &ud) == host_alloc ? ud : NULL;
}

void cp_lhost_note_oom(cp_lhost *h, const char *what) {
  if (h->oom && (h->oom_said || !what)) return;
  h->oom = 1;
  h->oom_said = what != NULL;
  /* snprintf into a buffer of our own: no allocation */
  snprintf(h->oom_msg, sizeof h->oom_msg, "out of memory%s%s",
           what ? " while " : "", what ? what : "");
}

void cp_lhost_clear_oom(cp_lhost *h) {
  h->oom = h->oom_said = 0;
  h->oom_msg[0] = '\0';
}
