-- luacheck configuration: Lua 5.4, no globals anywhere.
std = "lua54"
max_line_length = 120
files["tests/lua"] = { std = "lua54" }
