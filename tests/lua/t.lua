-- t.lua: the assertion helper of the Lua tests, which the cogpipe runtime
-- runs itself. Each test is a function run as its own task; the file ends
-- with t.done(), which prints "N passed, N failed" and sets the exit status.
local cp = require "cogpipe"

local t = {}
local passed, failed = 0, 0
local current

local function fmt(v)
  if type(v) == "string" then
    return string.format("%q", v)
  end
  return tostring(v)
end

local function fail(msg, level)
  error({ test_failure = true, message = msg }, (level or 1) + 1)
end

function t.ok(cond, msg)
  if not cond then
    fail("expected a true value" .. (msg and (": " .. msg) or ""), 2)
  end
  return cond
end

function t.eq(got, want, msg)
  if got ~= want then
    fail(string.format("got %s, want %s%s", fmt(got), fmt(want), msg and (" (" .. msg .. ")") or ""), 2)
  end
end

function t.near(got, want, tol, msg)
  if type(got) ~= "number" or math.abs(got - want) > tol then
    fail(string.format("got %s, want %s +- %s%s", fmt(got), fmt(want), fmt(tol), msg and (" (" .. msg .. ")") or ""), 2)
  end
end

local function deep_eq(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then
    return a == b
  end
  for k, v in pairs(a) do
    if not deep_eq(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

function t.same(got, want, msg)
  if not deep_eq(got, want) then
    fail(string.format("tables differ: got %s, want %s%s", cp.json.encode(got), cp.json.encode(want),
      msg and (" (" .. msg .. ")") or ""), 2)
  end
end

-- Asserts that fn raises an error whose text contains pattern (plain find).
function t.raises(fn, pattern, ...)
  local ok, err = pcall(fn, ...)
  if ok then
    fail("expected an error matching " .. fmt(pattern), 2)
  end
  local text = type(err) == "table" and (err.message or tostring(err)) or tostring(err)
  if pattern and not text:find(pattern, 1, true) then
    fail(string.format("error %s does not contain %s", fmt(text), fmt(pattern)), 2)
  end
  return err
end

function t.test(name, fn)
  current = name
  local task = cp.spawn(function()
    local ok, err = xpcall(fn, function(e)
      if type(e) == "table" and e.test_failure then
        return e.message .. "\n" .. debug.traceback("", 2)
      end
      return debug.traceback(tostring(e), 2)
    end)
    return ok, err
  end)
  local ok, res, err = true, cp.wait(task)
  if res ~= true then
    ok = false
    err = err or res
  end
  if ok then
    passed = passed + 1
    print("ok - " .. current)
  else
    failed = failed + 1
    print("not ok - " .. current)
    io.stderr:write("# " .. current .. ": " .. tostring(err):gsub("\n", "\n#   ") .. "\n")
  end
end

function t.done()
  print(string.format("%d passed, %d failed", passed, failed))
  if failed > 0 then
    cp.exit_status(1)
  end
end

-- Paths the tests share: the repository, and the data beside it (may be absent).
t.source_dir = os.getenv("COGPIPE_SOURCE_DIR") or "."
t.shared_dir = os.getenv("COGPIPE_SHARED_DIR") or (t.source_dir .. "/../shared")

return t
