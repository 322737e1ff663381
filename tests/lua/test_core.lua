-- Tasks on the loop: spawn, wait, sleep, failures, cancellation.
local cp = require "cogpipe"
local t = require "t"

t.test("100 tasks sleeping 0.2 s finish together in under 0.5 s", function()
  local start = cp.now()
  local tasks = {}
  for i = 1, 100 do
    tasks[i] = cp.spawn(function()
      cp.sleep(0.2)
      return i
    end)
  end
  local sum = 0
  for i = 1, 100 do
    sum = sum + cp.wait(tasks[i])
  end
  local elapsed = cp.now() - start
  t.eq(sum, 5050)
  t.ok(elapsed >= 0.19, "slept at least 0.2 s: " .. elapsed)
  t.ok(elapsed < 0.5, "took " .. elapsed .. " s")
end)

t.test("sleep after a busy stretch still sleeps its whole time", function()
  -- The loop's clock stands still while a task computes; a timer started
  -- from it would fire early by as long as the task ran.
  local busy = cp.now()
  while cp.now() - busy < 0.1 do end
  local start = cp.now()
  cp.sleep(0.1)
  local slept = cp.now() - start
  t.ok(slept >= 0.099, "slept " .. slept .. " s of 0.1")
end)

t.test("spawn passes arguments and wait returns every result", function()
  local task = cp.spawn(function(a, b)
    return a + b, "two", nil, 4
  end, 1, 2)
  local a, b, c, d = cp.wait(task)
  t.eq(a, 3)
  t.eq(b, "two")
  t.eq(c, nil)
  t.eq(d, 4)
  t.eq(task:status(), "done")
end)

t.test("wait on a finished task returns at once, and again", function()
  local task = cp.spawn(function() return "x" end)
  cp.sleep(0)
  t.eq(task:status(), "done")
  t.eq(cp.wait(task), "x")
  t.eq(cp.wait(task), "x")
end)

t.test("a failing task gives its waiter nil, err with file:line and a traceback", function()
  local task = cp.spawn(function()
    cp.sleep(0.01)
    error("broken on purpose")
  end)
  local res, err = cp.wait(task)
  t.eq(res, nil)
  t.eq(err.kind, "task")
  t.ok(err.message:find("test_core.lua:%d+: broken on purpose"), err.message)
  t.ok(err.traceback:find("stack traceback", 1, true), err.traceback)
  t.eq(task:status(), "failed")
end)

t.test("one task's failure does not stop the others", function()
  local good = cp.spawn(function()
    cp.sleep(0.05)
    return "still here"
  end)
  local bad = cp.spawn(function() error("x") end)
  local r1, r2, errs = cp.wait(good, bad)
  t.eq(r1, "still here")
  t.eq(r2, nil)
  t.eq(errs[2].kind, "task")
  t.eq(errs[1], nil)
end)

t.test("wait on several tasks returns one value each", function()
  local a = cp.spawn(function() cp.sleep(0.03) return 1 end)
  local b = cp.spawn(function() cp.sleep(0.01) return 2 end)
  local c = cp.spawn(function() return 3 end)
  local x, y, z, errs = cp.wait(a, b, c)
  t.same({ x, y, z }, { 1, 2, 3 })
  t.eq(errs, nil)
end)

t.test("many waiters on one task all wake up", function()
  local shared = cp.spawn(function() cp.sleep(0.02) return "token" end)
  local waiters = {}
  for i = 1, 20 do
    waiters[i] = cp.spawn(function() return cp.wait(shared) end)
  end
  for i = 1, 20 do
    t.eq(cp.wait(waiters[i]), "token")
  end
end)

t.test("tasks interleave in sleep order", function()
  local order = {}
  local tasks = {}
  for _, d in ipairs({ 0.05, 0.01, 0.03 }) do
    tasks[#tasks + 1] = cp.spawn(function()
      cp.sleep(d)
      order[#order + 1] = d
    end)
  end
  cp.wait(table.unpack(tasks))
  t.same(order, { 0.01, 0.03, 0.05 })
end)

t.test("a cancelled task fails with kind cancelled and its sleep stops", function()
  local reached = false
  local task = cp.spawn(function()
    cp.sleep(5)
    reached = true
  end)
  cp.sleep(0.01)
  t.eq(task:status(), "waiting")
  t.eq(task:cancel(), true)
  local res, err = cp.wait(task)
  t.eq(res, nil)
  t.eq(err.kind, "cancelled")
  t.eq(reached, false)
  t.eq(task:cancel(), false)
end)

t.test("async calls from a plain coroutine raise a clear error", function()
  local co = coroutine.wrap(function() cp.sleep(0.01) end)
  t.raises(co, "outside a cogpipe task")
end)

t.test("a bare coroutine.yield in a task fails that task with advice", function()
  local task = cp.spawn(function() coroutine.yield() end)
  local _, err = cp.wait(task)
  t.ok(err.message:find("cp.sleep(0)", 1, true), err.message)
end)

t.test("misuse raises", function()
  t.raises(function() cp.spawn(42) end, "function expected")
  t.raises(function() cp.sleep(-1) end, "seconds out of range")
  t.raises(function() cp.wait() end, "task expected")
  t.raises(function() cp.wait({}) end, "cogpipe.task expected")
end)

t.test("now is monotonic seconds", function()
  local a = cp.now()
  cp.sleep(0.02)
  local b = cp.now()
  t.eq(math.type(a), "float")
  t.ok(b - a >= 0.015, "advanced " .. (b - a))
end)

t.done()
