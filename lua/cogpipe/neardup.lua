-- Near-duplicate dedupe of records ({text=, intent=, line=, file=, ...}) on
-- top of the native MinHash index (cp.near): the pipeline step, which
-- `cogpipe check --near` runs too, and neardup.pairs, each record's nearest
-- earlier near-duplicate among all records (kept or not: not what the step
-- rejects). Owns which records are compared with which and how a find
-- becomes a rejection; the similarity itself (shingles, MinHash, LSH, the
-- verified Jaccard) is cp.near's.
--
--   local neardup = require "cogpipe.neardup"
--   local kept = neardup.filter(ctx, records, { threshold = 0.65 })
--   local pairs = neardup.pairs(records, { threshold = 0.65 })
local cp = require "cogpipe"

local M = {}

-- The records whose text (normalised by mode: none, trim, collapse,
-- casefold) has not been seen before: exact duplicates are exact dedupe's
-- to report, not this module's.
function M.first_occurrences(records, mode)
  if not mode then
    return records
  end
  local seen, out = {}, {}
  for _, r in ipairs(records) do
    local key = cp.dedupe.normalize(r.text, mode)
    if not seen[key] then
      seen[key] = true
      out[#out + 1] = r
    end
  end
  return out
end

M.DEFAULT_THRESHOLD = cp.near.DEFAULT_THRESHOLD

-- Calls fn(text, intent) for every text of the existing corpus
-- (existing[intent].texts), intents in name order and texts sorted within
-- each: the platform lists them in an order of its own (newest first, or
-- as concurrent uploads landed), and what a filter keeps, and which
-- earlier text it names, must not depend on that order. Shared with semdup.
function M.each_existing(existing, fn)
  local intents = {}
  for intent in pairs(existing) do
    intents[#intents + 1] = intent
  end
  table.sort(intents)
  for _, intent in ipairs(intents) do
    local texts = table.move(existing[intent].texts or {}, 1, #(existing[intent].texts or {}), 1, {})
    table.sort(texts)
    for _, text in ipairs(texts) do
      fn(text, intent)
    end
  end
end

-- Whether the platform already holds record r exactly (existing keys,
-- casefolded): such records pass the filters untouched, for the existing
-- step to skip as present.
function M.present(existing, r)
  local have = existing[r.intent]
  local normalize = cp.dedupe and cp.dedupe.normalize
  return have and have.keys and normalize and have.keys[normalize(r.text, "casefold")] and true or false
end

local function index_options(opts)
  opts = opts or {}
  return {
    threshold = opts.threshold or M.DEFAULT_THRESHOLD,
    shingle = opts.shingle,
    words = opts.words,
    perms = opts.perms,
    bands = opts.bands,
    rows = opts.rows,
    min_bands = opts.min_bands,
    seed = opts.seed,
  }
end

-- neardup.pairs(records [, opts]) -> { {a = earlier, b = record, score = s}, ... }
-- For every record with a near-duplicate before it (Jaccard of the feature
-- sets >= threshold; texts with the same near form -- differing only in
-- case, spacing, punctuation, contractions, numbers or letters repeated --
-- score 1.0), one pair naming the most similar earlier record;
-- in record order. opts: threshold (0.65), the index options, and normalize
-- = the exact-dedupe mode: records that are exact duplicates under it are
-- left out (exact dedupe reports them).
function M.pairs(records, opts)
  records = M.first_occurrences(records, opts and opts.normalize)
  local idx <close> = cp.near.new(index_options(opts))
  for _, r in ipairs(records) do
    idx:add(r.text)
  end
  local found = idx:find_all({ nearest = true })
  local out = {}
  for i, p in ipairs(found) do
    out[i] = { a = records[p.a], b = records[p.b], score = p.score }
  end
  return out
end

-- The pipeline step (pipeline.near): records in order, each compared with
-- the existing corpus (ctx.existing[intent].texts, every intent) and with
-- the records kept before it. A near-duplicate under the same intent is
-- rejected as "near"; under another intent as "conflict" (a model cannot
-- learn both). Records the platform already holds exactly (ctx.existing
-- keys) pass untouched: the existing step skips them as present.
-- opts: threshold (0.65) and the index options; opts.key is not used (near
-- duplicates have their own normalisation).
function M.filter(ctx, records, opts)
  local idx <close> = cp.near.new(index_options(opts))
  local existing = ctx.existing or {}
  M.each_existing(existing, function(text, intent)
    idx:add(text, intent, false)
  end)
  local kept = {}
  for _, r in ipairs(records) do
    if M.present(existing, r) then
      kept[#kept + 1] = r
    else
      local ok, match = idx:admit(r.text, r.intent, r)
      if ok then
        kept[#kept + 1] = r
      else
        local earlier = match.id or nil -- a record, or false for the existing corpus
        local info = {
          nearest = match.text,
          nearest_intent = match.intent,
          score = match.score,
          nearest_line = earlier and earlier.line or nil,
          nearest_file = earlier and earlier.file or nil,
          existing = not earlier or nil,
        }
        if match.intent ~= nil and match.intent ~= r.intent then
          info.other_intent = match.intent
          ctx:reject(r, "conflict", info)
        else
          ctx:reject(r, "near", info)
        end
      end
    end
  end
  return kept
end

return M
