/*
 * lutil.h -- the conventions every Lua binding of libcogpipe shares: the
 * `nil, err` error tables, registry references that are counted so a leak
 * fails the tests, the one protected call with a traceback, and how
 * running out of memory is reported.
 *
 * Memory: a binding whose C allocation fails raises a memory error with
 * cp_lua_nomem, as Lua itself raises one when its own allocation fails --
 * never a result a script could mistake for data; the run then fails. C
 * code outside any Lua call (loop callbacks, the embedding API) enters Lua
 * only through cp_lua_protect or cp_lua_pcall, so an error there is a
 * status, never the end of the process.
 */
#ifndef CP_LUTIL_H
#define CP_LUTIL_H

#include <lauxlib.h>
#include <lua.h>
#include <stdarg.h>

#include "buf.h"

/* Pushes nil and an error table {kind=, message=} and returns 2, for
 *   return cp_lua_fail(L, "http", "connect to %s: %s", host, why);
 * Callers add more fields (status, retryable, path) with cp_lua_fail_field
 * before returning -- the table is at the top of the stack. */
int cp_lua_fail(lua_State *L, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Pushes just the error table (no nil). */
void cp_lua_push_error(lua_State *L, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cp_lua_error_vpush(lua_State *L, const char *kind, const char *fmt,
                        va_list ap);

/* Registry references, counted per Lua state -- one count for a runtime's
 * state and all its coroutines, kept in its host (lhost.h) -- so that a
 * test build checks each runtime's count when it is freed, whatever other
 * runtimes the process holds. A state libcogpipe did not make (the tenant
 * sandbox's) is not counted. */
int cp_lua_ref(lua_State *L);              /* pops the value; LUA_NOREF for nil */
void cp_lua_unref(lua_State *L, int *ref); /* releases and sets LUA_NOREF */
long cp_lua_live_refs(lua_State *L);       /* held now by L's state */

/* lua_pcall with debug.traceback as the message handler. On error the
 * traceback string is left on the stack; a memory error is also noted with
 * the runtime (cp_lua_note_oom). The caller makes room for the handler (one
 * slot: lua_checkstack, which never raises, outside a Lua call). */
int cp_lua_pcall(lua_State *L, int nargs, int nresults);

/* Calls fn on L in protected mode (cp_lua_pcall) with ud as its only
 * argument, a light userdata, and leaves nresults values (LUA_MULTRET: all
 * of them) on success. On failure the error object is popped and the status
 * returned (LUA_ERRMEM also when L has no room to start the call). For C
 * code outside any Lua call; never raises. */
int cp_lua_protect(lua_State *L, lua_CFunction fn, void *ud, int nresults);

/* Notes that memory ran out in L's runtime while doing what (NULL: running
 * Lua code): the run then ends failed and says so. Allocates nothing; does
 * nothing for a state that is not a runtime's own (the tenant sandbox). */
void cp_lua_note_oom(lua_State *L, const char *what);

/* What a binding does when a C allocation fails: notes it, and raises the
 * error table {kind = "memory", message = "out of memory while <what>"}.
 * Free what C holds first. */
int cp_lua_nomem(lua_State *L, const char *what);

/* Pushes a userdata holding an empty cp_buf and returns the buffer: its
 * memory is freed when the userdata is collected or closed, so a binding
 * may build text in it across calls that raise. Raises when out of memory
 * (before anything is allocated in C). */
cp_buf *cp_lua_newbuf(lua_State *L);

/* Sets a field of the table at the top of the stack. */
void cp_lua_setstr(lua_State *L, const char *k, const char *v);
void cp_lua_setint(lua_State *L, const char *k, lua_Integer v);
void cp_lua_setnum(lua_State *L, const char *k, lua_Number v);
void cp_lua_setbool(lua_State *L, const char *k, int v);

#endif
