-- A script that exercises spawn, wait, sleep and json; run under valgrind by
-- the test suite to show the runtime frees everything it allocates.
local cp = require "cogpipe"

local tasks = {}
for i = 1, 20 do
  tasks[i] = cp.spawn(function()
    cp.sleep(0.001 * i)
    local doc = cp.json.decode(cp.json.encode({ i = i, list = cp.json.array({ i, i * 2 }), s = "é" }))
    return doc.i + doc.list[2]
  end)
end
local failing = cp.spawn(function()
  error("expected failure")
end)
local sleeper = cp.spawn(function()
  cp.sleep(60)
end)
local sum = 0
for i = 1, 20 do
  sum = sum + cp.wait(tasks[i])
end
assert(sum == 630, sum)
assert(cp.wait(failing) == nil)
sleeper:cancel()
print("ok", sum)
