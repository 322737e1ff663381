/*
 * lua_secrets.h -- redaction of Lua values, for the bindings that write
 * anything out (audit records, webhook bodies) and for the cogpipe.secrets
 * module. Holds no state of its own: secrets live in secrets.c.
 */
#ifndef CP_LUA_SECRETS_H
#define CP_LUA_SECRETS_H

#include <lua.h>

#include "secrets.h"

/* Pushes a redacted copy of the value at idx: strings pass through
 * cp_secret_redact, tables are copied deeply (keeping their metatables, so
 * JSON arrays stay arrays) with the value of every secret-named key
 * replaced by CP_REDACTED; other values are pushed as they are. Raises on a
 * table nested deeper than 200 levels (a cycle). s may be NULL. */
void cp_lua_redact(lua_State *L, int idx, const cp_secrets *s);

int luaopen_cogpipe_secrets(lua_State *L);

#endif
