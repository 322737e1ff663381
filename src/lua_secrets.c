/*
 * lua_secrets.c -- the cogpipe.secrets module: registers the values a run
 * must never show (the tenant loader adds every env() value) and redacts
 * Lua values with them. Only this runtime's registry is touched.
 */
#include "lua_secrets.h"

#include <lauxlib.h>

#include "buf.h"
#include "lutil.h"
#include "runtime.h"

#define MAX_DEPTH 200

/* A cp_buf inside a userdata, so that a Lua error (out of memory while
 * pushing the result) cannot leak what C allocated: __gc frees it. */
static int bufbox_gc(lua_State *L) {
  cp_buf_free(lua_touserdata(L, 1));
  return 0;
}

static cp_buf *push_bufbox(lua_State *L) {
  cp_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
  *b = (cp_buf)CP_BUF_INIT;
  if (luaL_newmetatable(L, "cogpipe.secrets.buf")) {
    lua_pushcfunction(L, bufbox_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

static void redact_string(lua_State *L, int idx, const cp_secrets *s) {
  idx = lua_absindex(L, idx);
  size_t len;
  const char *str = lua_tolstring(L, idx, &len);
  cp_buf *b = push_bufbox(L);
  size_t n = cp_secret_redact(s, str, len, b);
  /* a text cut short could end inside what it should have hidden */
  if (!cp_buf_ok(b)) cp_lua_nomem(L, "redacting secrets");
  if (n == 0)
    lua_pushvalue(L, idx);
  else
    lua_pushlstring(L, b->data, b->len);
  cp_buf_free(b);
  lua_remove(L, -2); /* the box */
}

static void redact(lua_State *L, int idx, const cp_secrets *s, int depth) {
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: redact_string(L, idx, s); return;
  case LUA_TTABLE: break;
  default: lua_pushvalue(L, idx); return;
  }
  if (depth > MAX_DEPTH)
    luaL_error(L,
               "cannot redact a table nested deeper than %d levels "
               "(a cycle?)",
               MAX_DEPTH);
  luaL_checkstack(L, 6, "redact");
  lua_newtable(L);
  int copy = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t klen = 0;
    const char *key =
        lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
    if (key && cp_secret_field(key, klen)) {
      lua_pushvalue(L, -2);
      lua_pushliteral(L, CP_REDACTED);
    } else {
      if (lua_type(L, -2) == LUA_TSTRING)
        redact_string(L, -2, s); /* a key can carry a secret too */
      else
        lua_pushvalue(L, -2);
      redact(L, -2, s, depth + 1);
    }
    lua_rawset(L, copy);
    lua_pop(L, 1);
  }
  if (lua_getmetatable(L, idx)) lua_setmetatable(L, copy);
}

void cp_lua_redact(lua_State *L, int idx, const cp_secrets *s) {
  redact(L, idx, s, 0);
}

static cp_secrets *registry(lua_State *L) { return cp_secrets_of(L); }

/* secrets.add(value) -> true, or false when the value is too short to be
 * redacted without mangling ordinary text. Raises a memory error when it
 * cannot be registered whole: a run must not go on with a secret that
 * might show. */
static int l_add(lua_State *L) {
  size_t len;
  const char *v = luaL_checklstring(L, 1, &len);
  int rc = cp_secret_add(registry(L), v, len);
  if (rc == -2) return cp_lua_nomem(L, "registering a secret");
  lua_pushboolean(L, rc == 0);
  return 1;
}

static int l_redact(lua_State *L) {
  luaL_checkany(L, 1);
  cp_lua_redact(L, 1, registry(L));
  return 1;
}

static int l_is_field(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, cp_secret_field(name, len));
  return 1;
}

static int l_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)cp_secrets_count(registry(L)));
  return 1;
}

static const luaL_Reg secrets_fns[] = {{"add", l_add},
                                       {"redact", l_redact},
                                       {"is_field", l_is_field},
                                       {"count", l_count},
                                       {NULL, NULL}};

int luaopen_cogpipe_secrets(lua_State *L) {
  luaL_newlib(L, secrets_fns);
  lua_pushliteral(L, CP_REDACTED);
  lua_setfield(L, -2, "REDACTED");
  return 1;
}
