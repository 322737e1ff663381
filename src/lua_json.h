/*
 * lua_json.h -- JSON between Lua values and text, for C code that holds a
 * Lua value (request bodies, audit records) and for the cogpipe.json module.
 */
#ifndef CP_LUA_JSON_H
#define CP_LUA_JSON_H

#include <lauxlib.h>
#include <lua.h>

#include "buf.h"
#include "json.h"

/* Appends the value at idx as JSON. Returns 0; -1 with *errmsg set to a
 * malloc'd message (the caller frees it) naming where the problem is, e.g.
 * "cannot encode a function at $.examples[2].text"; or CP_LUA_JSON_NOMEM
 * when memory ran out (*errmsg NULL; out may be failed or cut short).
 * Never raises, so a caller holding C memory loses none. */
#define CP_LUA_JSON_NOMEM (-2)
int cp_lua_json_encode(lua_State *L, int idx, cp_buf *out, char **errmsg);

/* Pushes the decoded value (1 result), or nil and an error table with line,
 * column and offset (2 results). Raises a memory error when memory runs
 * out (never an "invalid JSON" for it). */
int cp_lua_json_decode(lua_State *L, const char *s, size_t len);

/* Pushes a parsed tree as Lua values. */
void cp_lua_json_push(lua_State *L, const cp_json *v);

int luaopen_cogpipe_json(lua_State *L);

#endif
