-- cogpipe.tenant: tenant files evaluated in a sandbox bounded in memory and
-- time, whose every error is a config error at the tenant file's line; the
-- escapes a config must not have; env() secrets; the shipped tenants.
local cp = require "cogpipe"
local t = require "t"
local tenant = require "cogpipe.tenant"

local dir = os.tmpname()
os.remove(dir)
assert(cp.fs.mkdir(dir))
local n = 0

-- Writes a tenant file and loads it: the table and secrets, or nil and the
-- error, with the file's path and the seconds the load took.
local function load(src, name)
  n = n + 1
  local path = string.format("%s/%s%d.lua", dir, name or "acme", n)
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  local start = cp.now()
  local cfg, secrets = tenant.load(path)
  return cfg, secrets, path, cp.now() - start
end

-- Asserts that src fails to load with a config error at line `line` of the
-- file whose message contains `text`; returns the error.
local function refused(src, line, text)
  local cfg, err, path = load(src)
  t.eq(cfg, nil, "the file was refused")
  t.eq(err.kind, "config")
  local where = path .. ":" .. line .. ": "
  t.eq(err.message:sub(1, #where), where, "names the tenant file and line: " .. err.message)
  t.ok(err.message:find(text, 1, true), err.message)
  t.ok(not err.message:find("tenant.lua", 1, true), "no line of the loader: " .. err.message)
  t.eq(err.line, line)
  return err
end

-- Like refused, for a file that fills the sandbox's memory: writing 64 MiB
-- can take longer than the time limit under the sanitizers on a loaded
-- machine, and then the clock stops it, at the same line.
local function out_of_memory(src, line)
  local start = cp.now()
  local err = refused(src, line, "config ")
  local took = cp.now() - start
  t.ok(took < 5, "took " .. took .. " s")
  if took < 2 or not err.message:find("config ran longer than 2 s", 1, true) then
    t.ok(err.message:find("config needs more than 64 MiB of memory", 1, true), err.message)
  end
end

local MINIMAL = "return { name = 'acme', base_url = 'https://api.example.com' }\n"

t.test("a plain tenant file loads and its table comes back", function()
  local cfg, secrets = load("local host = 'api.example.com'\n" ..
    "return { base_url = 'https://' .. host, limits = { rate = 3, burst = 10 },\n" ..
    "  dedupe = { near = 0.8 }, webhooks = { { url = 'https://hooks.example.com/x',\n" ..
    "  secret = 'whsec_c2FuZGJveC13ZWJob29rLXNlY3JldC0wMDAx' } } }\n", "plain")
  t.ok(cfg, secrets and secrets.message)
  t.eq(cfg.base_url, "https://api.example.com")
  t.eq(cfg.limits.rate, 3)
  t.eq(math.type(cfg.limits.rate), "integer")
  t.eq(cfg.dedupe.near, 0.8)
  t.eq(cfg.webhooks[1].url, "https://hooks.example.com/x")
  t.ok(cfg.name:match("^plain%d+$"), cfg.name)
  t.same(secrets, {})
end)

t.test("the shipped tenants still load", function()
  local cfg, secrets = tenant.load(t.source_dir .. "/pipelines/tenants/sandbox.lua")
  t.ok(cfg, secrets and secrets.message)
  t.eq(cfg.name, "sandbox")
  t.eq(cfg.v2.flow_id, "sandbox-flow")
  t.ok(cfg.webhooks[1].url:match("/_sink/webhooks/sandbox$"))
  -- the production example needs its variables: every missing one is
  -- named at once, from the line of the first
  if not os.getenv("COGNIGY_CLIENT_ID") then
    local path = t.source_dir .. "/pipelines/tenants/example_production.lua"
    local none, err = tenant.load(path)
    t.eq(none, nil)
    t.ok(err.message:find("^" .. path:gsub("%p", "%%%0") .. ":%d+: environment variables not set: "), err.message)
    for _, var in ipairs({ "COGNIGY_CLIENT_ID", "COGNIGY_CLIENT_SECRET", "COGNIGY_API_KEY", "COGNIGY_FLOW_ID" }) do
      t.ok(err.message:find(var, 1, true), var .. " in " .. err.message)
    end
  end
end)

t.test("a tenant shares a table between two keys", function()
  local cfg = load("local auth = { api_key = 'k-1234' }\n" ..
    "return { base_url = 'https://a.example.com', auth = auth, v2 = { auth = auth } }\n")
  t.ok(cfg)
  t.eq(cfg.v2.auth.api_key, "k-1234")
  t.eq(cfg.auth, cfg.v2.auth)
end)

-- ---- bounded in time and memory ------------------------------------------------

t.test("an endless loop stops at its own line within the time limit", function()
  local _, _, _, took = load("local x = 0\nwhile true do\n  x = x + 1\nend\n")
  t.ok(took < 3, "took " .. took .. " s")
  refused("local x = 0\nwhile true do\n  x = x + 1\nend\n", 3, "endless loop?")
end)

t.test("C calls too slow for the instruction budget meet the 2 s wall clock", function()
  local src = "local s = string.rep('x', 1 << 20)\nwhile true do\n  local _ = s:upper()\nend\n"
  local start = cp.now()
  local err = refused(src, 3, "config ran longer than 2 s (endless loop?)")
  local took = cp.now() - start
  t.ok(took >= 1.9 and took < 4, "took " .. took .. " s: " .. err.message)
end)

t.test("a backtracking pattern bomb is refused at once", function()
  local start = cp.now()
  refused('local s = string.rep("a", 40)\nlocal p = string.rep("a*", 25) .. "b"\n' ..
    "local r = string.find(s, p)\nreturn {}\n", 3, "string.find refused")
  t.ok(cp.now() - start < 1, "refused in " .. (cp.now() - start) .. " s")
  -- through a method call and the other pattern functions too
  refused('local p = ("a*"):rep(25) .. "b"\nreturn { x = ("a"):rep(40):match(p) }\n', 2, "string.match refused")
  refused('local p = ("a*"):rep(25) .. "b"\nfor _ in ("a"):rep(40):gmatch(p) do end\n', 2, "string.gmatch refused")
  refused('local p = ("a*"):rep(25) .. "b"\nlocal s = ("a"):rep(40):gsub(p, "")\n', 2, "string.gsub refused")
  -- a plain search is bounded by the lengths alone
  refused('local s = ("a"):rep(1 << 20)\nlocal r = s:find(("a"):rep(1 << 19) .. "b", 1, true)\n', 2,
    "string.find refused")
end)

t.test("ordinary patterns on ordinary strings work", function()
  local cfg, err = load([[
local url = "  https://api.example.com/v2/  "
local trimmed = url:match("^%s*(.-)%s*$")
local host = trimmed:match("^https?://([^/]+)")
local parts = {}
for p in ("a,b,,c"):gmatch("([^,]*)") do parts[#parts + 1] = p end
local order = { 3, 1, 2 }
table.sort(order)
table.sort(parts, function(x, y) return x > y end)
return {
  base_url = trimmed:gsub("/+$", ""),
  name = host:gsub("%.", "-"),
  intent_ids = { first = parts[1], last = parts[#parts] },
  limits = { rate = order[1], burst = order[3] },
  dataset = { reference = ("x"):rep(3, "-") .. string.format("%05d", 42) .. table.concat({ 1, 2 }, "+") },
}
]])
  t.ok(cfg, err and err.message)
  t.eq(cfg.base_url, "https://api.example.com/v2")
  t.eq(cfg.name, "api-example-com")
  t.same(cfg.intent_ids, { first = "c", last = "" })
  t.eq(cfg.limits.rate, 1)
  t.eq(cfg.limits.burst, 3)
  t.eq(cfg.dataset.reference, "x-x-x000421+2")
end)

t.test("400 strings of 10 MiB stop at the memory limit, at their line", function()
  out_of_memory("local t = {}\nfor i = 1, 400 do\n  t[i] = string.rep('x', 10 * 1024 * 1024)\nend\nreturn {}\n", 3)
end)

t.test("memory grown by plain Lua code stops at its line too", function()
  out_of_memory("local t = {}\nlocal i = 0\nwhile true do\n  i = i + 1\n  t[i] = i\nend\n", 5)
  out_of_memory("local s = 'x'\nfor _ = 1, 40 do\n  s = s .. s\nend\n", 3)
end)

t.test("results larger than the memory cap are refused before any work", function()
  local start = cp.now()
  refused("return { x = string.rep('abc', 1 << 40) }\n", 1, "string.rep would make a string of")
  refused("local t = { ('y'):rep(1 << 20) }\nfor i = 2, 40 do t[i] = t[1] end\n" ..
    "local s = table.concat(t, ('z'):rep(1 << 20))\n", 3, "table.concat")
  refused("local s, a = ('y'):rep(1 << 20), {}\nfor i = 1, 70 do a[i] = s end\n" ..
    "local f = string.format(('%s'):rep(70), table.unpack(a))\n", 3, "string.format would make a string of")
  t.ok(cp.now() - start < 2, "took " .. (cp.now() - start) .. " s")
end)

t.test("loops hidden in one C call are refused or cut short", function()
  local cfg, err, _, took = load("return { name = string.rep('', 1 << 62) .. 'x' .. ('' ):rep(1 << 62, '') }\n")
  t.ok(cfg, err and err.message)
  t.eq(cfg.name, "x")
  t.ok(took < 1, "took " .. took .. " s")
  refused("local t = {}\ntable.move(t, 1, 1 << 50, 2)\n", 2, "table.move")
  refused("local u, t = {}, {}\nfor i = 1, 1000 do u[i] = -i end\n" ..
    "for j = 0, 999 do table.move(u, 1, 1000, j * 1000 + 1, t) end\ntable.sort(t)\n", 4,
    "table.sort of 1000000 elements refused")
end)

t.test("memory freed does not count against the limit", function()
  local cfg, err = load("local s, n = string.rep('x', 1 << 20), 0\nfor i = 1, 80 do\n  n = n + #(s .. i)\nend\n" ..
    "return { name = tostring(n) }\n")
  t.ok(cfg, err and err.message)
  t.eq(cfg.name, tostring(80 * (1 << 20) + 9 + 2 * 71))
end)

-- ---- every error at the tenant's line ---------------------------------------------

t.test("syntax and run-time errors name the tenant file and line", function()
  refused("return {\n  name = 'x'\n  base_url = 'https://x',\n}\n", 3, "'}' expected")
  refused("local t = nil\nreturn { x = t.y }\n", 2, "attempt to index a nil value")
  refused("local function f()\n  error('inner failure')\nend\nf()\n", 2, "inner failure")
  refused("\nerror('no position', 0)\n", 2, "no position")
  refused("\n\nassert(false, 'not so')\n", 3, "not so")
  refused("error({ code = 1 })\n", 1, "error object is a table value")
end)

t.test("a long path is named in full, not shortened as Lua does", function()
  local long = dir .. "/" .. string.rep("deep/", 12)
  assert(cp.fs.mkdir(long))
  local path = long .. "tenant.lua"
  local f = assert(io.open(path, "w"))
  f:write("local a = 1\nlocal b = a + nil\n")
  f:close()
  local cfg, err = tenant.load(path)
  t.eq(cfg, nil)
  t.eq(err.message:sub(1, #path + 3), path .. ":2:", err.message)
end)

t.test("a function, a cycle or a deep nest in the result is refused by its key", function()
  refused("return {\n  base_url = 'https://x',\n  webhooks = { { url = 'https://h', sign = function() end } },\n}\n", 3,
    "webhooks[1].sign is a function")
  refused("local t = { name = 'x', limits = {} }\nt.limits.up = t\nreturn t\n", 3,
    "limits.up is a table that contains itself")
  refused("local t = {}\nfor _ = 1, 100 do t = { t } end\nreturn t\n", 3, "nested more than")
  refused("return { [string.len] = 1 }\n", 1, "a key that is a function")
  refused("return { string.len }\n", 1, "[1] is a function")
  refused("return 42\n", 1, "config must return a table, not number")
end)

t.test("a schema error names the file and the line of the key", function()
  refused("local cfg = {\n  base_url = 'ftp://x',\n}\nreturn cfg\n", 2, "base_url must be an http(s) URL")
  refused("return { webhooks = { 'https://h' } }\n", 1, "webhooks[1] must be a table")
end)

-- ---- the escapes stay refused ------------------------------------------------------

t.test("no io, os.execute, require, load, dump, metatables or debug", function()
  refused("\nlocal f = io.open('/etc/passwd')\n", 2, "undefined global 'io'")
  refused("\nos.execute('true')\n", 2, "attempt to call a nil value (field 'execute')")
  refused("\nlocal p = io.popen('id')\n", 2, "undefined global 'io'")
  refused("\nlocal x = require 'os'\n", 2, "undefined global 'require'")
  refused("\nlocal f = load('return 1')\n", 2, "undefined global 'load'")
  refused("\nlocal f = dofile('/etc/passwd')\n", 2, "undefined global 'dofile'")
  refused("\nlocal d = string.dump(function() end)\n", 2, "attempt to call a nil value (field 'dump')")
  refused("\nlocal mt = getmetatable('')\n", 2, "undefined global 'getmetatable'")
  refused("\nlocal idx = ('').__index\nlocal x = idx.dump\n", 3, "attempt to index a nil value")
  refused("\nsetmetatable({}, {})\n", 2, "undefined global 'setmetatable'")
  refused("\nlocal r = debug.getregistry()\n", 2, "undefined global 'debug'")
  refused("\nlocal x = rawget(_ENV, 'io')\n", 2, "undefined global 'rawget'")
  refused("\ncollectgarbage()\n", 2, "undefined global 'collectgarbage'")
  refused("\nlocal co = coroutine.create(print)\n", 2, "undefined global 'coroutine'")
  refused("\nprint('hello')\n", 2, "undefined global 'print'")
  refused("\nlocal g = _G\n", 2, "undefined global '_G'")
  refused("\nx = 1\n", 2, "assignment to global 'x' (use local)")
  -- _ENV is a variable like any other: a new one holds nothing new
  refused("local _ENV = { io = io }\n", 1, "undefined global 'io'")
  refused("\nlocal e = _ENV\nlocal f = e.io\n", 3, "undefined global 'io'")
  refused("local _ENV = {}\nlocal x = os.getenv('HOME')\n", 2, "attempt to index a nil value (global 'os')")
end)

t.test("a binary chunk is not loaded", function()
  local src = string.dump(function() return {} end)
  local cfg, err = load(src)
  t.eq(cfg, nil)
  t.eq(err.kind, "config")
  t.ok(err.message:find("attempt to load a binary chunk", 1, true), err.message)
end)

t.test("pcall cannot swallow the budget", function()
  refused("\npcall(function() while true do end end)\n", 2, "undefined global 'pcall'")
  refused("\nxpcall(function() while true do end end, print)\n", 2, "undefined global 'xpcall'")
  -- errors inside a callback from C still end the file
  refused("local s = ('abc'):gsub('%w', function()\n  while true do end\nend)\n", 2, "endless loop?")
  refused("local t = { 3, 2, 1 }\ntable.sort(t, function()\n  error('in sort')\nend)\n", 3, "in sort")
end)

-- ---- env() --------------------------------------------------------------------

t.test("env() values come back as secrets; defaults are not secrets", function()
  local var = "COGPIPE_SOURCE_DIR"
  local value = assert(os.getenv(var), "ctest sets " .. var)
  local cfg, secrets = load(("return { base_url = 'https://x', name = env(%q),\n" ..
    "  auth = { api_key = env('COGPIPE_SURELY_UNSET_VAR', 'fallback-key') } }\n"):format(var))
  t.ok(cfg, secrets and secrets.message)
  t.eq(cfg.name, value)
  t.eq(cfg.auth.api_key, "fallback-key")
  t.same(secrets, { value })
end)

t.test("env() errors are at the line of the call", function()
  refused("local a = 1\nlocal k = env('COGPIPE_SURELY_UNSET_VAR')\n", 2,
    "environment variable not set: COGPIPE_SURELY_UNSET_VAR (line 2)")
  refused("\n\nlocal k = env()\n", 3, "env() needs a variable name")
end)

t.test("an error that quotes an env() value does not show it", function()
  local var = "COGPIPE_SOURCE_DIR"
  local value = assert(os.getenv(var))
  local err = refused(("local v = env(%q)\nerror('bad value ' .. v)\n"):format(var), 2, "bad value")
  t.ok(not err.message:find(value, 1, true), err.message)
  t.ok(err.message:find(cp.secrets.REDACTED, 1, true), err.message)
  err = refused(("return {\n  base_url = env(%q),\n}\n"):format(var), 2, "must be an http(s) URL")
  t.ok(not err.message:find(value, 1, true), err.message)
end)

t.test("a tenant file larger than the sandbox is not read", function()
  n = n + 1
  local path = string.format("%s/huge%d.lua", dir, n)
  local f = assert(io.open(path, "w"))
  f:write("return {}\n")
  f:seek("set", 65 * 1024 * 1024)
  f:write("\n")
  f:close()
  local cfg, err = tenant.load(path)
  t.eq(cfg, nil)
  t.ok(err.message:find(path .. ": a tenant file may have at most", 1, true), err.message)
end)

t.test("tenants do not leak into each other or into the runtime", function()
  local a = load("local s = string\ns.upper = nil\nreturn { name = ('a'):rep(2) }\n")
  local b = load(MINIMAL)
  t.eq(a.name, "aa")
  t.eq(b.name, "acme")
  t.eq(string.upper("x"), "X")
  t.eq(type(string.dump), "function", "the host's string library keeps dump")
end)

t.done()
os.execute("rm -rf '" .. dir .. "'")
