-- The cogpipe side of bench/neardup/bench.py: every non-blank line of a
-- file into a near-duplicate index (cp.near: MinHash over the features of
-- each line, LSH, verified Jaccard), then each line's nearest earlier
-- near-duplicate. Prints counts and timings as one JSON line.
--
--   cogpipe run neardup.lua -- FILE [THRESHOLD]   (none: the default)
local cp = require "cogpipe"

local path, threshold = arg[1], tonumber(arg[2])

local t0 = cp.now()
local idx <close> = cp.near.new({ threshold = threshold })
local lines, blank = 0, 0
for line in io.lines(path) do
  lines = lines + 1
  if line:find("%S") then
    idx:add(line)
  else
    blank = blank + 1
  end
end
local t1 = cp.now()
local pairs = idx:find_all({ nearest = true })
local t2 = cp.now()

local same_form, near = 0, 0
for _, p in ipairs(pairs) do
  if p.score == 1.0 then
    same_form = same_form + 1
  else
    near = near + 1
  end
end
local o = idx:options()
print(cp.json.encode({
  threshold = o.threshold,
  perms = o.perms,
  lines = lines,
  blank = blank,
  texts = #idx,
  distinct_forms = idx:distinct(),
  with_earlier_near_duplicate = #pairs,
  of_which_same_form = same_form,
  of_which_below_1 = near,
  read_and_add_s = t1 - t0,
  find_s = t2 - t1,
  total_s = t2 - t0,
  lines_per_s = lines / (t2 - t0),
}))
