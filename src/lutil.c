/*
 * lutil.c -- helpers every Lua binding uses: `nil, err` error tables,
 * counted registry references, the protected call with a traceback, and
 * memory errors. Holds no state: counts and notes go to the state's host
 * (lhost.h).
 */
#include "lutil.h"

#include "lhost.h"

static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "error");
  }
  return 1;
}

/* Error tables share a metatable so that tostring(err), print(err) and an
 * error(err) that reaches the top level all show the message. */
static void push_error_meta(lua_State *L) {
  if (luaL_newmetatable(L, "cogpipe.error")) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
}

void cp_lua_error_vpush(lua_State *L, const char *kind, const char *fmt,
                        va_list ap) {
  lua_createtable(L, 0, 4);
  cp_lua_setstr(L, "kind", kind);
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  push_error_meta(L);
  lua_setmetatable(L, -2);
}

void cp_lua_push_error(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cp_lua_error_vpush(L, kind, fmt, ap);
  va_end(ap);
}

int cp_lua_fail(lua_State *L, const char *kind, const char *fmt, ...) {
  lua_pushnil(L);
  va_list ap;
  va_start(ap, fmt);
  cp_lua_error_vpush(L, kind, fmt, ap);
  va_end(ap);
  return 2;
}

int cp_lua_ref(lua_State *L) {
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  cp_lhost *h = cp_lhost_of(L);
  if (h && ref != LUA_REFNIL && ref != LUA_NOREF) h->live_refs++;
  return ref;
}

void cp_lua_unref(lua_State *L, int *ref) {
  if (*ref == LUA_REFNIL || *ref == LUA_NOREF) return;
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  cp_lhost *h = cp_lhost_of(L);
  if (h) h->live_refs--;
  *ref = LUA_NOREF;
}

long cp_lua_live_refs(lua_State *L) {
  cp_lhost *h = cp_lhost_of(L);
  return h ? h->live_refs : 0;
}

/* Message handler: a traceback for string errors and for objects with a
 * __tostring; cogpipe's error tables ({kind, message}), and other objects
 * without a __tostring, are passed through untouched so the caller can
 * still read their fields (a task that raises one adds its traceback). */
static int traceback(lua_State *L) {
  if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, "cogpipe.error");
    if (lua_rawequal(L, -1, -2)) {
      lua_settop(L, 1);
      return 1;
    }
    lua_pop(L, 2);
  }
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int cp_lua_pcall(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  int status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  if (status == LUA_ERRMEM) cp_lua_note_oom(L, NULL);
  return status;
}

int cp_lua_protect(lua_State *L, lua_CFunction fn, void *ud, int nresults) {
  /* the function, its argument, the message handler, and the results a
   * fixed count asks for (a C function makes room for more itself) */
  if (!lua_checkstack(L, 3 + (nresults > 0 ? nresults : 0))) {
    cp_lua_note_oom(L, NULL);
    return LUA_ERRMEM;
  }
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, ud);
  int status = cp_lua_pcall(L, 1, nresults);
  if (status != LUA_OK) lua_pop(L, 1);
  return status;
}

void cp_lua_note_oom(lua_State *L, const char *what) {
  cp_lhost *h = cp_lhost_of(L);
  if (h) cp_lhost_note_oom(h, what);
}

int cp_lua_nomem(lua_State *L, const char *what) {
  cp_lua_note_oom(L, what);
  cp_lua_push_error(L, "memory", "out of memory while %s", what);
  return lua_error(L);
}

static int buf_gc(lua_State *L) {
  cp_buf_free(luaL_checkudata(L, 1, "cogpipe.buf"));
  return 0;
}

cp_buf *cp_lua_newbuf(lua_State *L) {
  cp_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
  *b = (cp_buf)CP_BUF_INIT;
  if (luaL_newmetatable(L, "cogpipe.buf")) {
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_setmetatable(L, -2);
  return b;
}

void cp_lua_setstr(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

void cp_lua_setint(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

void cp_lua_setnum(lua_State *L, const char *k, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

void cp_lua_setbool(lua_State *L, const char *k, int v) {
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}
