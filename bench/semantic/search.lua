-- The cogpipe side of bench/semantic/bench.py: loads the new and existing
-- vectors (binary vectors files), then times cp.semantic.search (top-1
-- cosine of every new vector against the existing ones) `rounds` times and
-- the in-run filter once. Writes the best row and score of each new vector
-- to OUT and prints the timings as one JSON line.
--
--   cogpipe run search.lua -- NEW.cpvec EXISTING.cpvec ROUNDS OUT
local cp = require "cogpipe"

local new_path, old_path, rounds, out_path = arg[1], arg[2], tonumber(arg[3]) or 5, arg[4]

local t0 = cp.now()
local new = assert(cp.semantic.load(new_path))
local old = assert(cp.semantic.load(old_path))
local load_s = cp.now() - t0

local times, hits = {}, nil
for r = 1, rounds do
  local t = cp.now()
  hits = cp.semantic.search({ query = new, corpus = old, k = 1 })
  times[r] = cp.now() - t
end

local t = cp.now()
local verdicts = cp.semantic.filter({ new = new, existing = old, threshold = 0.85 })
local filter_s = cp.now() - t
local accepted = 0
for _, v in ipairs(verdicts) do
  accepted = accepted + (v.accepted and 1 or 0)
end

if out_path then
  local f = assert(io.open(out_path, "w"))
  for i = 1, #hits do
    f:write(string.format("%d %.7f\n", hits[i][1].row - 1, hits[i][1].score))
  end
  f:close()
end

print(cp.json.encode({
  backend = cp.semantic.backend(),
  new = #new,
  existing = #old,
  dim = new:dim(),
  load_s = load_s,
  times = cp.json.array(times),
  filter_s = filter_s,
  filter_accepted = accepted,
}))
