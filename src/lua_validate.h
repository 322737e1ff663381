/*
 * lua_validate.h -- what the validate and dedupe bindings share: pushing a
 * problem list as Lua tables. Not part of the public API.
 */
#ifndef CP_LUA_VALIDATE_H
#define CP_LUA_VALIDATE_H

#include <lua.h>

#include "validate.h"

int luaopen_cogpipe_validate(lua_State *L);
int luaopen_cogpipe_dedupe(lua_State *L);

/* Pushes the kept problems: {{file, line, column, offset, kind, reason}...}. */
void cp_lua_push_problems(lua_State *L, const cp_problems *p);

#endif
