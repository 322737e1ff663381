-- Semantic dedupe of records ({text=, intent=, line=, ...}): embeddings
-- from a provider (cogpipe.embeddings), then cp.semantic.filter, which
-- accepts a new record only if its cosine similarity to every existing
-- example and to every record accepted before it is below the threshold.
-- The pipeline step, which `cogpipe check --semantic` runs too, and
-- semdup.pairs, the same verdicts as pairs of texts.
-- Owns which texts are compared and how a verdict becomes a rejection.
--
--   local semdup = require "cogpipe.semdup"
--   local kept = semdup.filter(ctx, records, { threshold = 0.85, provider = tenant.embeddings })
--   local pairs, err = semdup.pairs(records, { threshold = 0.85, embeddings = "vectors.jsonl" })
--   local accepted, rejected = semdup.check{ new = records, existing = corpus, provider = p }
local cp = require "cogpipe"
local embeddings = require "cogpipe.embeddings"

local M = {}

-- Exact duplicates are exact dedupe's to report, not this module's.
local neardup = require "cogpipe.neardup"
local first_occurrences = neardup.first_occurrences

M.DEFAULT_THRESHOLD = 0.85

-- A provider object from opts.provider (an object with :embed, a URL, a
-- file, or a tenant's `embeddings` table) or opts.embeddings (URL | FILE).
local function provider_of(opts)
  local p = opts.provider or opts.embeddings
  if type(p) == "table" and type(p.embed) == "function" then
    return p
  end
  if p == nil then
    error("semantic: an embeddings provider is needed (provider = or embeddings =)", 3)
  end
  return embeddings.provider(p, { model = opts.model, state_dir = opts.state_dir })
end

local function texts_of(records)
  local texts, intents = {}, {}
  for i, r in ipairs(records) do
    texts[i] = r.text
    intents[i] = r.intent
  end
  return texts, intents
end

-- semdup.check{new = records, existing = records?, threshold = 0.85,
-- provider = ...} -> accepted, rejected, or nil, err. accepted: the new
-- records kept, in order; rejected: {record =, nearest = record, score =,
-- from = "existing" | "new"}, where nearest is the existing record or the
-- earlier accepted new record it is too close to.
function M.check(opts)
  local p = provider_of(opts)
  local threshold = opts.threshold or M.DEFAULT_THRESHOLD
  local new, existing = opts.new or {}, opts.existing or {}
  if #new == 0 then
    return {}, {}
  end
  -- one call for both sides, so that batches are full and the cache is
  -- read and written once
  local nt, ni = texts_of(new)
  local et, ei = texts_of(existing)
  local all = table.move(et, 1, #et, #nt + 1, table.move(nt, 1, #nt, 1, {}))
  local vectors <close>, err = p:embed(all)
  if not vectors then
    return nil, err
  end
  local fresh <close> = assert(vectors:select(nt, ni))
  local old <close> = #existing > 0 and assert(vectors:select(et, ei)) or nil
  local verdicts = cp.semantic.filter({ new = fresh, existing = old, threshold = threshold })
  local accepted, rejected = {}, {}
  for i, v in ipairs(verdicts) do
    if v.accepted then
      accepted[#accepted + 1] = new[i]
    else
      rejected[#rejected + 1] = {
        record = new[i],
        nearest = v.from == "existing" and existing[v.row] or new[v.row],
        score = v.score,
        from = v.from,
      }
    end
  end
  return accepted, rejected
end

-- semdup.pairs(records, {threshold =, embeddings = URL | FILE, model =,
-- provider =, normalize =}) -> { {a = nearest earlier record, b = record,
-- score = s}, ... } or nil, err: each record too close
-- to one kept before it, in record order. normalize: as for neardup.pairs.
function M.pairs(records, opts)
  local accepted, rejected = M.check({
    new = first_occurrences(records, opts.normalize),
    threshold = opts.threshold,
    provider = provider_of(opts),
  })
  if not accepted then
    return nil, rejected
  end
  local out = {}
  for i, r in ipairs(rejected) do
    out[i] = { a = r.nearest, b = r.record, score = r.score }
  end
  return out
end

-- The pipeline step (pipeline.semantic): compares records with the
-- existing corpus (ctx.existing[intent].texts, every intent) and with the
-- records kept before them; rejects as "semantic" with the nearest text,
-- its intent and the score. Records the platform already holds exactly
-- pass untouched (the existing step skips them). A provider failure fails
-- the step (raises), so nothing unfiltered is sent.
-- opts: threshold (0.85), provider (tenant.embeddings or a provider).
function M.filter(ctx, records, opts)
  local existing_records = {}
  local existing = ctx.existing or {}
  neardup.each_existing(existing, function(text, intent)
    existing_records[#existing_records + 1] = { text = text, intent = intent, existing = true }
  end)
  local candidates, present = {}, {}
  for _, r in ipairs(records) do
    if neardup.present(existing, r) then
      present[r] = true
    else
      candidates[#candidates + 1] = r
    end
  end
  local p = opts.provider
  if type(p) ~= "table" or type(p.embed) ~= "function" then
    p = embeddings.provider(p, { state_dir = ctx.state_dir })
  end
  local accepted, rejected = M.check({
    new = candidates,
    existing = existing_records,
    threshold = opts.threshold,
    provider = p,
  })
  if not accepted then
    local err = rejected
    error({ kind = err.kind or "embeddings", message = "semantic dedupe: " .. tostring(err.message or err) }, 0)
  end
  local keep = {}
  for _, r in ipairs(accepted) do
    keep[r] = true
  end
  for _, rej in ipairs(rejected) do
    ctx:reject(rej.record, "semantic", {
      nearest = rej.nearest.text,
      nearest_intent = rej.nearest.intent,
      nearest_line = rej.nearest.line,
      nearest_file = rej.nearest.file,
      existing = rej.from == "existing" or nil,
      score = rej.score,
    })
  end
  local kept = {}
  for _, r in ipairs(records) do
    if present[r] or keep[r] then
      kept[#kept + 1] = r
    end
  end
  return kept
end

return M
