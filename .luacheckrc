-- luacheck configuration: Lua 5.4, no globals anywhere.
std = "lua54"
max_line_length = 120
files["tests/lua"] = { std = "lua54" }
-- methods keep `self` in their signature even when they do not use it
self = false
-- tenant configs run in a sandbox whose only helper is env()
files["pipelines/tenants"] = { std = "min", read_globals = { "env" } }
