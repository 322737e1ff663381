-- The thread-pool hand-over (lua_offload.c) as scripts meet it: heavy
-- native work runs off the loop while other tasks go on, gives the same
-- answer as when it runs inline, and a task cancelled while its pool job
-- runs is dropped cleanly: the job finishes, its memory goes, nobody is
-- resumed with it, and the runtime carries on.
local cp = require "cogpipe"
local t = require "t"

-- Texts enough that an all-pairs near-duplicate search takes a while.
local function texts(n)
  local out = {}
  for i = 1, n do
    out[i] = string.format("please book %d tickets to city number %d for %s", i % 7, i, ("x"):rep(i % 13))
  end
  return out
end

local function index(list)
  local idx = cp.near.new({ threshold = 0.5 })
  for _, s in ipairs(list) do
    idx:add(s)
  end
  return idx
end

local function summary(pairs)
  local n, sum = #pairs, 0
  for _, p in ipairs(pairs) do
    sum = sum + p.a * 7 + p.b * 13
  end
  return n, sum
end

t.test("a pool job gives the answer the inline run gives", function()
  local list = texts(3000)
  -- the main chunk cannot suspend: this runs inline
  local inline_n, inline_sum = summary(index(list):find_all({ nearest = true }))
  local task = cp.spawn(function()
    return summary(index(list):find_all({ nearest = true }))
  end)
  local n, sum = cp.wait(task)
  t.eq(n, inline_n)
  t.eq(sum, inline_sum)
  t.ok(n > 0)
end)

t.test("the loop goes on while a pool job runs", function()
  local list = texts(6000)
  local ticks, done = 0, false
  local ticker = cp.spawn(function()
    while not done do
      cp.sleep(0.002)
      ticks = ticks + 1
    end
  end)
  local job = cp.spawn(function()
    local r = index(list):find_all({ nearest = true })
    done = true
    return #r
  end)
  t.ok(cp.wait(job) > 0)
  cp.wait(ticker)
  t.ok(ticks > 0, "the ticker never ran while the job did")
end)

t.test("a task cancelled while its pool job runs is dropped cleanly", function()
  local list = texts(6000)
  for _ = 1, 3 do
    local started = false
    local job = cp.spawn(function()
      local idx = index(list)
      started = true
      return #idx:find_all({ nearest = true }) -- suspends on the pool
    end)
    while not started do
      cp.sleep(0.001)
    end
    t.eq(job:status(), "waiting")
    t.eq(job:cancel("no longer wanted"), true)
    local r, err = cp.wait(job)
    t.eq(r, nil)
    t.eq(err.kind, "cancelled")
    t.eq(job:status(), "failed")
  end
  -- the pool threads finished those jobs; new work still goes through
  local again = cp.spawn(function()
    return #index(texts(500)):find_all({ nearest = true })
  end)
  t.ok(cp.wait(again) >= 0)
end)

t.done()
