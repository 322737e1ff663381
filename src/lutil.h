/*
 * lutil.h -- the conventions every Lua binding of libcogpipe shares: the
 * `nil, err` error tables, registry references that are counted so a leak
 * fails the tests, and the one protected call with a traceback.
 */
#ifndef CP_LUTIL_H
#define CP_LUTIL_H

#include <lauxlib.h>
#include <lua.h>
#include <stdarg.h>

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

/* Registry references, counted per runtime (see cp_lua_live_refs). */
int cp_lua_ref(lua_State *L);              /* pops the value; LUA_NOREF for nil */
void cp_lua_unref(lua_State *L, int *ref); /* releases and sets LUA_NOREF */
long cp_lua_live_refs(void);

/* lua_pcall with debug.traceback as the message handler. On error the
 * traceback string is left on the stack. */
int cp_lua_pcall(lua_State *L, int nargs, int nresults);

/* Sets a field of the table at the top of the stack. */
void cp_lua_setstr(lua_State *L, const char *k, const char *v);
void cp_lua_setint(lua_State *L, const char *k, lua_Integer v);
void cp_lua_setnum(lua_State *L, const char *k, lua_Number v);
void cp_lua_setbool(lua_State *L, const char *k, int v);

#endif
