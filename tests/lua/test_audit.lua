-- cogpipe.audit and cogpipe.secrets from Lua: records, redaction before
-- writing, sync inside tasks, misuse, verification of what was written.
local cp = require "cogpipe"
local t = require "t"
local json = cp.json

local dir = os.tmpname()
os.remove(dir)
assert(cp.fs.mkdir(dir))
local n = 0
local function fresh(name)
  n = n + 1
  local p = string.format("%s/%s-%d.log", dir, name, n)
  os.remove(p)
  return p
end

local function lines(path)
  local out = {}
  for l in io.lines(path) do
    out[#out + 1] = l
  end
  return out
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

t.test("records carry the envelope, the fields and the chain", function()
  local path = fresh("basic")
  local log = assert(cp.audit.open(path, { run_id = "run-42", tenant = "acme", pipeline = "intents" }))
  assert(log:record("run_start", { options = { dry_run = false }, files = json.array({ "a.txt" }) }))
  assert(log:record("batch", { uploaded = 10, failed = 0, empty = json.array() }))
  local info = log:info()
  t.eq(info.seq, 2)
  t.eq(info.run_id, "run-42")
  t.eq(#info.last_hash, 64)
  assert(log:close())
  local ls = lines(path)
  t.eq(#ls, 2)
  local a, b = json.decode(ls[1]), json.decode(ls[2])
  t.eq(a.event, "run_start")
  t.eq(a.run_id, "run-42")
  t.eq(a.tenant, "acme")
  t.eq(a.pipeline, "intents")
  t.eq(a.genesis, true)
  t.eq(a.prev, string.rep("0", 64))
  t.eq(a.seq, 1)
  t.ok(a.ts:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"), a.ts)
  t.eq(b.prev, cp.audit.sha256(ls[1]))
  t.eq(b.uploaded, 10)
  t.ok(ls[2]:find('"empty":[]', 1, true), "an empty array stays an array")
  t.eq(info.last_hash, cp.audit.sha256(ls[2]))
  local r = cp.audit.verify(path)
  t.eq(r.ok, true)
  t.eq(r.records, 2)
end)

t.test("secrets never reach the file", function()
  local path = fresh("secrets")
  local log = assert(cp.audit.open(path, { tenant = "acme" }))
  t.eq(log:add_secret("Sup3r-S3cret-Value"), true)
  t.eq(cp.secrets.add("ab"), false, "too short to register")
  assert(log:record("request", {
    method = "POST",
    path = "/oauth/token",
    headers = { Authorization = "Bearer abc.def.ghi", ["X-API-Key"] = "key-123456", Accept = "json" },
    body = "grant_type=client_credentials&client_secret=Sup3r-S3cret-Value",
    client_secret = "anything at all",
    nested = { deeper = { password = 12345, note = "the value Sup3r-S3cret-Value leaked?" } },
    list = json.array({ "token=abcdef", "fine" }),
  }))
  -- the envelope goes through redaction too
  assert(log:record("note", nil, { tenant = "Sup3r-S3cret-Value" }))
  log:close()
  local text = read(path)
  t.ok(not text:find("Sup3r-S3cret-Value", 1, true), text)
  t.ok(not text:find("abc.def.ghi", 1, true))
  t.ok(not text:find("key-123456", 1, true))
  t.ok(not text:find("12345", 1, true))
  t.ok(not text:find("anything at all", 1, true))
  local rec = json.decode(lines(path)[1])
  t.eq(rec.headers.Authorization, cp.secrets.REDACTED)
  t.eq(rec.headers["X-API-Key"], cp.secrets.REDACTED)
  t.eq(rec.headers.Accept, "json")
  t.eq(rec.body, "grant_type=client_credentials&client_secret=[redacted]")
  t.eq(rec.nested.deeper.note, "the value [redacted] leaked?")
  t.eq(rec.list[1], "token=[redacted]")
  t.eq(rec.list[2], "fine")
  t.eq(json.decode(lines(path)[2]).tenant, "[redacted]")
end)

t.test("cp.secrets.redact copies deeply and keeps arrays", function()
  cp.secrets.add("another-secret-7")
  local src = { a = "x another-secret-7 y", token = "t", arr = json.array({}), n = 3 }
  local r = cp.secrets.redact(src)
  t.eq(r.a, "x [redacted] y")
  t.eq(r.token, "[redacted]")
  t.eq(r.n, 3)
  t.ok(json.is_array(r.arr))
  t.eq(src.a, "x another-secret-7 y", "the original is untouched")
  t.eq(cp.secrets.redact("Authorization: Basic dXNlcjpwYXNz"), "Authorization: [redacted]")
  t.eq(cp.secrets.redact(42), 42)
  t.eq(cp.secrets.is_field("client_secret"), true)
  t.eq(cp.secrets.is_field("text"), false)
end)

t.test("sync inside a task does not stop the others", function()
  local path = fresh("sync")
  local log = assert(cp.audit.open(path, { fsync = "batch" }))
  local ticks = 0
  local ticker = cp.spawn(function()
    for _ = 1, 5 do
      ticks = ticks + 1
      cp.sleep(0)
    end
  end)
  for i = 1, 20 do
    assert(log:record("batch", { i = i }))
    assert(log:sync())
  end
  -- the ticker ran while this task waited for the disk
  t.eq(ticks, 5)
  cp.wait(ticker)
  assert(log:sync()) -- nothing new: returns at once
  log:close()
  t.eq(cp.audit.verify(path).records, 20)
end)

t.test("fsync always and off", function()
  for _, mode in ipairs({ "always", "off" }) do
    local path = fresh(mode)
    local log = assert(cp.audit.open(path, { fsync = mode }))
    assert(log:record("x"))
    assert(log:sync())
    log:close()
    t.eq(cp.audit.verify(path).ok, true)
  end
end)

t.test("reopening continues the chain; a to-be-closed log closes", function()
  local path = fresh("reopen")
  do
    local log <close> = assert(cp.audit.open(path))
    log:record("one")
  end
  local log = assert(cp.audit.open(path, { run_id = "second" }))
  t.eq(log:info().seq, 1)
  log:record("two")
  log:close()
  t.eq(log:close(), true, "closing twice is fine")
  local r = cp.audit.verify(path)
  t.eq(r.ok, true)
  t.eq(r.last_seq, 2)
end)

t.test("set_context and the per-record context", function()
  local path = fresh("ctx")
  local log = assert(cp.audit.open(path, { tenant = "a", pipeline = "p" }))
  log:record("x")
  log:set_context({ tenant = "b" })
  log:record("y")
  log:record("z", {}, { tenant = "c", pipeline = "q" })
  log:close()
  local ls = lines(path)
  t.eq(json.decode(ls[1]).tenant, "a")
  t.eq(json.decode(ls[2]).tenant, "b")
  t.eq(json.decode(ls[2]).pipeline, "p")
  t.eq(json.decode(ls[3]).tenant, "c")
  t.eq(json.decode(ls[3]).pipeline, "q")
end)

t.test("misuse raises; failures return nil, err", function()
  local path = fresh("misuse")
  local log = assert(cp.audit.open(path))
  t.raises(function() log:record() end, "string expected")
  t.raises(function() log:record("x", { seq = 1 }) end, "set by the audit log")
  t.raises(function() log:record("x", { prev = "a" }) end, "set by the audit log")
  t.raises(function() log:record("x", { f = print }) end, "cannot record event fields")
  t.raises(function() log:record("x", json.array({ 1 })) end, "string keys")
  t.raises(function() cp.audit.open(path, { fsync = "sometimes" }) end, "fsync")
  t.raises(function() cp.audit.open(path, { max_bytes = -1 }) end, "max_bytes")
  log:close()
  t.raises(function() log:record("x") end, "closed")
  local bad, err = cp.audit.open(dir .. "/no/such/dir/x.log")
  t.eq(bad, nil)
  t.eq(err.kind, "io")
  local r, verr = cp.audit.verify(dir .. "/missing.log")
  t.eq(r, nil)
  t.eq(verr.kind, "io")
end)

t.test("verify names the first broken line", function()
  local path = fresh("tamper")
  local log = assert(cp.audit.open(path))
  for i = 1, 6 do
    log:record("step", { i = i })
  end
  log:close()
  local ls = lines(path)
  ls[3] = ls[3]:gsub('"i":3', '"i":33')
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(ls, "\n"), "\n")
  f:close()
  local r = cp.audit.verify(path)
  t.eq(r.ok, false)
  t.eq(r.problem.line, 3)
  t.ok(r.problem.message:find("changed", 1, true), r.problem.message)
end)

t.test("rotation from Lua keeps one chain", function()
  local path = fresh("rot")
  local log = assert(cp.audit.open(path, { max_bytes = 600 }))
  for i = 1, 8 do
    log:record("step", { i = i })
  end
  log:close()
  local files = {}
  for i = 1, 20 do
    local p = string.format("%s.%06d", path, i)
    if io.open(p) then
      files[#files + 1] = p
    end
  end
  t.ok(#files >= 2, "rotated " .. #files .. " times")
  files[#files + 1] = path
  local r = cp.audit.verify(table.unpack(files))
  t.eq(r.ok, true)
  t.eq(#r.warnings, 0)
  t.eq(r.records, 8 + #files - 1)
end)

t.test("input files are hashed for the run_start record", function()
  local path = fresh("input")
  local f = assert(io.open(path, "wb"))
  f:write(string.rep("book a flight\n", 10000))
  f:close()
  t.eq(cp.audit.sha256_file(path), cp.audit.sha256(string.rep("book a flight\n", 10000)))
  local none, err = cp.audit.sha256_file(dir .. "/missing")
  t.eq(none, nil)
  t.eq(err.kind, "io")
end)

t.test("run ids are UUID version 7 and distinct", function()
  local a, b = cp.audit.run_id(), cp.audit.run_id()
  t.ok(a:match("^%x+%-%x+%-7%x+%-[89ab]%x+%-%x+$"), a)
  t.ok(a ~= b)
end)

os.execute("rm -rf '" .. dir .. "'")
t.done()
