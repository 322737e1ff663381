/*
 * lua_base64.c -- cogpipe.base64, standard base64 with padding (base64.c)
 * for Lua: encode(s) -> text; decode(text) -> s | nil, err{kind =
 * "base64", message, offset} (offset: of the first byte at fault, from 0).
 * An error never quotes the text, which may be a secret.
 */
#include <stdint.h>

#include "base64.h"
#include "lutil.h"
#include "modules.h"

static int l_encode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (len > (SIZE_MAX - 4) / 4 * 3)
    return luaL_argerror(L, 1, "too long to encode");
  size_t n = (len + 2) / 3 * 4;
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n + 1); /* Lua's memory: may raise */
  cp_base64_encode((const unsigned char *)s, len, out);
  luaL_pushresultsize(&b, n);
  return 1;
}

static int l_decode(lua_State *L) {
  size_t len, at = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *why = cp_base64_problem(s, len, &at);
  if (why) {
    cp_lua_fail(L, "base64", "not base64: %s at byte offset %d", why, (int)at);
    cp_lua_setint(L, "offset", (lua_Integer)at);
    return 2;
  }
  luaL_Buffer b;
  unsigned char *out =
      (unsigned char *)luaL_buffinitsize(L, &b, len / 4 * 3 + 1);
  size_t n = 0;
  cp_base64_decode(s, len, out, &n); /* checked above */
  luaL_pushresultsize(&b, n);
  return 1;
}

static const luaL_Reg fns[] = {
    {"encode", l_encode}, {"decode", l_decode}, {NULL, NULL}};

int luaopen_cogpipe_base64(lua_State *L) {
  luaL_newlib(L, fns);
  return 1;
}
