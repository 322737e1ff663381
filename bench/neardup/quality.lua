-- The cogpipe side of the near-duplicate quality figures (bench/neardup/
-- quality.py, tests/e2e/test_near_quality.py): every pair of records of a
-- JSON Lines file ({"id", "text"} a line) whose near-duplicate score is at
-- or above each threshold, as the index finds them (LSH, then the exact
-- Jaccard). "default" is the index's own default threshold. Prints one
-- JSON line a threshold: {"threshold": t, "pairs": [[id, id, score], ...]}.
--
--   cogpipe run quality.lua -- FILE [THRESHOLD|default ...]
local cp = require "cogpipe"

local path = assert(arg[1], "usage: quality.lua FILE [THRESHOLD|default ...]")
local records = {}
for line in io.lines(path) do
  if line:find("%S") then
    records[#records + 1] = cp.json.decode(line)
  end
end

local thresholds = { table.unpack(arg, 2) }
if #thresholds == 0 then
  thresholds = { "default" }
end
for _, t in ipairs(thresholds) do
  local opts = {}
  if t ~= "default" then
    opts.threshold = assert(tonumber(t), "a threshold is a number or 'default'")
  end
  local idx <close> = cp.near.new(opts)
  for _, r in ipairs(records) do
    idx:add(r.text)
  end
  local found = cp.json.array()
  for _, p in ipairs(idx:find_all()) do
    found[#found + 1] = cp.json.array({ records[p.a].id, records[p.b].id, p.score })
  end
  print(cp.json.encode({ threshold = idx:options().threshold, pairs = found }))
end
