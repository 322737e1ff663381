/*
 * modules.h -- the native Lua modules of libcogpipe, one binding file each;
 * lua_core.c gathers them into `require "cogpipe"`.
 */
#ifndef CP_MODULES_H
#define CP_MODULES_H

#include <lua.h>

int luaopen_cogpipe_core(lua_State *L);
int luaopen_cogpipe_json(lua_State *L);
int luaopen_cogpipe_secrets(lua_State *L);
int luaopen_cogpipe_audit(lua_State *L);
int luaopen_cogpipe_webhook_native(lua_State *L);
int luaopen_cogpipe_fs(lua_State *L);
int luaopen_cogpipe_http(lua_State *L);
int luaopen_cogpipe_validate(lua_State *L);
int luaopen_cogpipe_dedupe(lua_State *L);
int luaopen_cogpipe_near(lua_State *L);
int luaopen_cogpipe_semantic(lua_State *L);
int luaopen_cogpipe_base64(lua_State *L);
/* cogpipe._sandbox, required by cogpipe.tenant only (runtime.c preloads it) */
int luaopen_cogpipe_sandbox(lua_State *L);

#endif
