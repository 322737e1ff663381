/*
 * lhost.h -- what libcogpipe keeps beside each Lua state it makes: the
 * allocator that counts the state's memory against a limit, whether memory
 * ran out and while doing what, and how many registry references the
 * bindings hold. runtime.c embeds one per runtime; lutil.c finds it from
 * any thread of the state. Knows of neither.
 */
#ifndef CP_LHOST_H
#define CP_LHOST_H

#include <lua.h>
#include <stddef.h>

typedef struct cp_lhost {
  size_t mem_used, mem_limit;
  void *refused_block; /* the last allocation refused, until one succeeds */
  size_t refused_size;
  int refused;
  int oom;           /* memory ran out (since cp_lhost_clear_oom) */
  int oom_said;      /* oom_msg says what was being done */
  char oom_msg[256]; /* "out of memory while ...": kept without allocating */
  long live_refs;    /* cp_lua_ref minus cp_lua_unref on this state */
} cp_lhost;

/* Makes a Lua state whose memory h counts, refusing what would take it
 * past limit bytes (0: no limit of its own). h is zeroed first and must
 * outlive the state. Returns NULL when out of memory. */
lua_State *cp_lhost_newstate(cp_lhost *h, size_t limit);

/* The host of L's state, or NULL for a state cp_lhost_newstate did not
 * make (the tenant sandbox's): safe to ask of any state. */
cp_lhost *cp_lhost_of(lua_State *L);

/* Records that memory ran out while doing what (NULL: in Lua code); the
 * first what given is kept. Allocates nothing. */
void cp_lhost_note_oom(cp_lhost *h, const char *what);
void cp_lhost_clear_oom(cp_lhost *h);

#endif
