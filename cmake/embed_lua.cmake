# embed_lua.cmake -- the Lua half compiled into libcogpipe. Run as a script
# at build time (cmake -DLUA_DIR=<tree>/lua -DLIST=<file> -DOUTPUT=<file.c>
# -P this), it writes each file that LIST names, one a line relative to
# LUA_DIR (every lua/cogpipe/**.lua), as a byte array, and the table
# cp_lua_modules[] (src/require.h) that names each one's module and chunk, so
# that an installed program cannot drift from its Lua half or lose it.
# Source, not bytecode: tracebacks keep file:line, and nothing here needs
# luac. It knows nothing of how the modules are loaded (src/require.c).
if(NOT LUA_DIR OR NOT LIST OR NOT OUTPUT)
  message(FATAL_ERROR "usage: cmake -DLUA_DIR=<dir> -DLIST=<file> -DOUTPUT=<file.c> -P embed_lua.cmake")
endif()

file(STRINGS "${LIST}" files)
if(NOT files)
  message(FATAL_ERROR "embed_lua: ${LIST} names no Lua modules")
endif()

# 12 bytes (24 hex digits) a line keeps the arrays readable in a diff.
string(REPEAT "[0-9a-f]" 24 line_of_hex)

set(arrays "")
set(table "")
set(i 0)
foreach(rel ${files})
  # require names, as package.path's "?.lua;?/init.lua" would find the
  # file: cogpipe/cmd/run.lua is "cogpipe.cmd.run", cogpipe/cmd/init.lua
  # both "cogpipe.cmd.init" (the init command) and "cogpipe.cmd". The chunk
  # is named as the file in the source tree.
  if(NOT rel MATCHES "^[A-Za-z0-9_/]+\\.lua$")
    message(FATAL_ERROR "embed_lua: ${LUA_DIR}/${rel}: a module file name has letters, digits and _ only")
  endif()
  string(REGEX REPLACE "\\.lua$" "" name "${rel}")
  string(REPLACE "/" "." name "${name}")
  set(names "${name}")
  if(name MATCHES "^(.+)\\.init$")
    list(APPEND names "${CMAKE_MATCH_1}")
  endif()

  file(READ "${LUA_DIR}/${rel}" hex HEX)
  string(REGEX REPLACE "(${line_of_hex})" "\\1\n  " hex "${hex}")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  # The trailing 0 is not counted: it keeps an empty file's array legal C.
  string(APPEND arrays "/* lua/${rel} */\nstatic const unsigned char m${i}[] = {\n  ${hex}0};\n\n")
  foreach(name ${names})
    string(APPEND table "  {\"${name}\", \"@lua/${rel}\", m${i}, sizeof m${i} - 1},\n")
  endforeach()
  math(EXPR i "${i} + 1")
endforeach()

set(text "/* Generated from lua/cogpipe by cmake/embed_lua.cmake; do not edit. */\n")
string(APPEND text "#include \"require.h\"\n\n${arrays}")
string(APPEND text "const cp_lua_module cp_lua_modules[] = {\n${table}  {0, 0, 0, 0},\n};\n")
file(WRITE "${OUTPUT}" "${text}")
