-- bench/http/post.lua: the cogpipe side of bench/http/bench.py. Sends N
-- POSTs of small v2 sentence-create bodies with W requests in flight (W
-- tasks looping) and prints one JSON line: sent, ok, seconds.
--   cogpipe run post.lua -- URL N W
local cp = require "cogpipe"

local url, n, width = arg[1], tonumber(arg[2]), tonumber(arg[3])
local next_i, ok, bad = 1, 0, nil
local slots = cp.json.array()

local function worker()
  while next_i <= n do
    local i = next_i
    next_i = next_i + 1
    local resp, err = cp.http.request({
      method = "POST",
      url = url,
      json = { text = "book a flight to city number " .. i, localeId = "en-US", slots = slots },
      retry = false,
    })
    if resp and resp.status == 200 then
      ok = ok + 1
    else
      bad = bad or tostring(err or resp.status)
    end
  end
end

local start = cp.now()
local tasks = {}
for w = 1, width do
  tasks[w] = cp.spawn(worker)
end
for w = 1, width do
  cp.wait(tasks[w])
end
print(cp.json.encode({ sent = n, ok = ok, seconds = cp.now() - start, first_error = bad }))
