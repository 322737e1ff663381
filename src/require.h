/*
 * require.h -- where `require` finds the Lua half of cogpipe (lua/cogpipe)
 * in a runtime's state: the copy compiled into libcogpipe, or a directory a
 * developer names. Not part of the public API.
 */
#ifndef CP_REQUIRE_H
#define CP_REQUIRE_H

#include <lua.h>
#include <stddef.h>

/* One module of lua/cogpipe as the build embedded it: its require name
 * ("cogpipe.cmd.run"), its chunk name ("@lua/cogpipe/cmd/run.lua", so that
 * errors and tracebacks say file:line as in the source tree) and its source
 * text. */
typedef struct cp_lua_module {
  const char *name;
  const char *chunkname;
  const unsigned char *code;
  size_t size;
} cp_lua_module;

/* Every module of lua/cogpipe, ending with a NULL name; generated at build
 * time by cmake/embed_lua.cmake. */
extern const cp_lua_module cp_lua_modules[];

/* Sets up `package` in L, whose standard libraries are open: the native
 * modules cogpipe.core and cogpipe._sandbox in package.preload, and the
 * searchers that find the Lua half. dir NULL: the embedded copy, which a
 * module on package.path cannot shadow. dir given: the Lua half is read from
 * dir/cogpipe/ instead, at each require, and the embedded copy is not used
 * at all (a development tree, so that editing a .lua file needs no
 * rebuild; no mix of two versions): a module of the copy that dir lacks is
 * an error that names dir. Either way a module file that cannot be opened
 * for want of file descriptors is reported as such, not as absent. Raises
 * on a memory error. */
void cp_require_init(lua_State *L, const char *dir);

#endif
