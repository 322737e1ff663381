/*
 * lua_http.h -- the opener of the cogpipe.http Lua module (lua_http.c), for
 * lua_core.c to register as a submodule of `require "cogpipe"`.
 */
#ifndef CP_LUA_HTTP_H
#define CP_LUA_HTTP_H

#include <lua.h>

int luaopen_cogpipe_http(lua_State *L);

#endif
