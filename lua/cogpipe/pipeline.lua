-- The pipeline DSL. A pipeline file returns pipeline.new{...}: a source of
-- labelled examples, steps that each keep some and reject the rest with a
-- reason, a sink (one of the Cognigy targets) and notifications. The runner
-- (cogpipe.runner) runs it once per tenant. Steps are plain tables
-- {name=, run=function(ctx, records) -> kept}; ctx:reject(rec, reason, info)
-- records why a record was dropped.
--
--   return pipeline.new {
--     name = "intent_examples",
--     source = pipeline.source { path = arg[1] or "data/sample.jsonl" },
--     steps = {
--       pipeline.normalize "collapse",
--       pipeline.validate { max_chars = 500 },
--       pipeline.exact { key = "casefold" },   -- duplicates and conflicts
--       pipeline.near { threshold = 0.65 },
--       pipeline.semantic { threshold = 0.85 },
--       pipeline.existing(),                   -- what the platform has
--       pipeline.cap(),                        -- per-intent cap
--     },
--     sink = pipeline.sink.intent_batches { batch_size = 100, retrain = true },
--   }
local cp = require "cogpipe"

local M = {}
local PIPELINE = {}

function M.is(v)
  return type(v) == "table" and getmetatable(v) == PIPELINE
end

local function step(name, run, opts)
  return { name = name, run = run, opts = opts or {} }
end

local function check_step(s, i)
  if type(s) ~= "table" or type(s.run) ~= "function" or type(s.name) ~= "string" then
    error(string.format("pipeline: steps[%d] is not a step (use pipeline.validate, pipeline.exact, ...)", i), 3)
  end
  -- A step function takes (ctx, records); catch a wrong signature at load time.
  local info = debug.getinfo(s.run, "u")
  if not info.isvararg and info.nparams < 2 then
    error(string.format("pipeline: step '%s' must take (ctx, records)", s.name), 3)
  end
end

function M.new(def)
  if type(def) ~= "table" then
    error("pipeline.new: a table expected", 2)
  end
  if type(def.name) ~= "string" or not def.name:match("^[%w_.-]+$") then
    error("pipeline.new: name must be a word (letters, digits, _ . -)", 2)
  end
  if type(def.source) ~= "table" or type(def.source.read) ~= "function" then
    error("pipeline.new: source must be a pipeline.source{...}", 2)
  end
  if type(def.sink) ~= "table" or type(def.sink.send) ~= "function" then
    error("pipeline.new: sink must be one of pipeline.sink.*", 2)
  end
  def.steps = def.steps or {}
  for i, s in ipairs(def.steps) do
    check_step(s, i)
  end
  def.notify = def.notify or {}
  return setmetatable(def, PIPELINE)
end

-- ---- sources ---------------------------------------------------------------

local function bad_slots(slots, text)
  if type(slots) ~= "table" or not cp.json.is_array(slots) then
    return '"slots" must be an array ([] when there are none)'
  end
  local len = utf8.len(text) or #text
  for i, slot in ipairs(slots) do
    if type(slot) ~= "table" or cp.json.is_array(slot) then
      return string.format("slots[%d] must be an object", i - 1)
    end
    local a, b = slot.start, slot["end"]
    if a ~= nil or b ~= nil then
      if math.type(a) ~= "integer" or math.type(b) ~= "integer" or a < 0 or b <= a then
        return string.format("slots[%d] needs integers 0 <= start < end", i - 1)
      elseif b > len then
        return string.format("slots[%d] ends at %d, past the text (%d characters)", i - 1, b, len)
      end
    end
  end
end

-- The v2 slots and locale of JSON Lines records (an export of the v2 API
-- has them), which the native reader does not carry: read from the lines
-- that name them. A bad one makes its record invalid, with where and why.
local function add_slots(result, path)
  local by_line = {}
  for i, r in ipairs(result.records) do
    by_line[r.line] = i
  end
  local f = io.open(path, "rb")
  if not f then
    return result
  end
  local drop, n = {}, 0
  for text in f:lines() do
    n = n + 1
    local i = by_line[n]
    if i and (text:find('"slots"', 1, true) or text:find('"locale"', 1, true)) then
      local r, doc = result.records[i], cp.json.decode(text)
      local problem
      if type(doc) == "table" then
        if doc.slots ~= nil then
          problem = bad_slots(doc.slots, r.text)
          r.slots = doc.slots
        end
        if doc.locale ~= nil and (type(doc.locale) ~= "string" or doc.locale == "") then
          problem = problem or '"locale" must be a non-empty string'
        end
        r.locale = doc.locale
      end
      if problem then
        drop[i] = true
        result.invalid[#result.invalid + 1] = { file = path, line = n, column = 1, reason = problem, kind = "field" }
      end
    end
  end
  f:close()
  if next(drop) then
    local kept = {}
    for i, r in ipairs(result.records) do
      if not drop[i] then
        kept[#kept + 1] = r
      end
    end
    result.records = kept
  end
  return result
end

-- pipeline.source{path=, format="lines"|"jsonl"|"csv"|"pairs", intent=}
-- format defaults from the extension (.jsonl, .csv, .json = [text, intent]
-- pairs as CLINC150 ships them, else lines); a lines file has no intents, so
-- `intent` names the one its examples belong to. A JSON Lines record may
-- carry v2 `slots` and a `locale` (as cogpipe export writes them).
function M.source(opts)
  if type(opts) ~= "table" or type(opts.path) ~= "string" then
    error("pipeline.source: path expected", 2)
  end
  local src = require "cogpipe.source"
  local jsonl = opts.format == "jsonl" or (opts.format == nil and opts.path:match("%.jsonl$") ~= nil)
  return {
    path = opts.path,
    read = function(ctx)
      local result, problems = src.read(opts, ctx)
      if result and jsonl then
        result = add_slots(result, opts.path)
      end
      return result, problems
    end,
  }
end

-- ---- steps -----------------------------------------------------------------

-- Rewrites each text (none | trim | collapse); the text sent is the result.
function M.normalize(mode)
  mode = mode or "collapse"
  if mode ~= "none" and mode ~= "trim" and mode ~= "collapse" and mode ~= "casefold" then
    error("pipeline.normalize: mode must be none, trim, collapse or casefold", 2)
  end
  return step("normalize", function(_, records)
    local norm = cp.dedupe.normalize
    for _, r in ipairs(records) do
      r.text = norm(r.text, mode)
    end
    return records
  end, { mode = mode })
end

-- The intent example rules of the platform (DESIGN 4.2): 1..max_chars code
-- points, no white space at either end, annotations inside the text -- the
-- same native checks the platform's batch validator applies, one example
-- at a time so that one bad example rejects only itself.
function M.validate(opts)
  opts = opts or {}
  local max_chars = opts.max_chars or 500
  return step("validate", function(ctx, records)
    local check = cp.validate.intent_batch
    local kept = {}
    local limits = { max_chars = max_chars, cap = math.maxinteger, existing_active = 0 }
    for _, r in ipairs(records) do
      local example = { text = r.text, is_active = true, annotations = cp.json.array(r.annotations or {}) }
      local ok, err = check({ examples = cp.json.array({ example }) }, limits)
      if ok then
        kept[#kept + 1] = r
      else
        local first = err.errors and err.errors[1]
        ctx:reject(r, "invalid", { problem = first and ((first.path or ""):gsub("^examples%[0%]%.?", "") ..
          ": " .. first.message) or err.message })
      end
    end
    return kept
  end, opts)
end

-- Exact duplicates (same intent, same key) and conflicts (same key under
-- two intents: every copy is rejected, since a model cannot learn both).
function M.exact(opts)
  opts = opts or {}
  local mode = opts.key or "casefold"
  return step("exact", function(ctx, records)
    local norm = cp.dedupe.normalize
    local first = {} -- key -> first record
    local intents_of = {} -- key -> intents in the order they first appear
    for _, r in ipairs(records) do
      r.key = norm(r.text, mode)
      local list = intents_of[r.key]
      if not list then
        list = {}
        intents_of[r.key] = list
      end
      if not list[r.intent] then
        list[#list + 1] = r.intent
        list[r.intent] = true
      end
    end
    local kept = {}
    for _, r in ipairs(records) do
      local other -- the first other intent in file order, the same on every run
      for _, intent in ipairs(intents_of[r.key]) do
        if intent ~= r.intent then
          other = intent
          break
        end
      end
      local f = first[r.key]
      if other then
        local o = f or r
        ctx:reject(r, "conflict", { other_intent = other, first_line = o.line })
        first[r.key] = f or r
      elseif f then
        ctx:reject(r, "duplicate", { first_line = f.line, first_text = f.text })
      else
        first[r.key] = r
        kept[#kept + 1] = r
      end
    end
    return kept
  end, opts)
end

-- Near duplicates within an intent (MinHash over character shingles, checked
-- with the true Jaccard similarity); a near copy under another intent is a
-- conflict.
function M.near(opts)
  opts = opts or {}
  return step("near", function(ctx, records)
    local threshold = opts.threshold or (ctx.tenant.dedupe or {}).near
      or require("cogpipe.neardup").DEFAULT_THRESHOLD
    return require("cogpipe.neardup").filter(ctx, records, { threshold = threshold })
  end, opts)
end

-- Semantic duplicates through the tenant's embedding provider, against the
-- existing corpus and the examples accepted earlier in the run. Skipped (with
-- a note) when the tenant names no provider.
function M.semantic(opts)
  opts = opts or {}
  return step("semantic", function(ctx, records)
    local conf = ctx.tenant.embeddings
    if not conf then
      ctx:note("semantic dedupe skipped: the tenant names no embeddings provider")
      return records
    end
    local threshold = opts.threshold or (ctx.tenant.dedupe or {}).semantic or 0.85
    return require("cogpipe.semdup").filter(ctx, records, { threshold = threshold, provider = conf })
  end, opts)
end

-- Drops what the platform already holds (compared by the exact key), so a
-- re-run after success sends nothing; not a rejection.
function M.existing(opts)
  opts = opts or {}
  local mode = opts.key or "casefold"
  return step("existing", function(ctx, records)
    local norm = cp.dedupe.normalize
    local kept = {}
    for _, r in ipairs(records) do
      local have = ctx.existing[r.intent]
      if have and have.keys[norm(r.text, mode)] then
        ctx:skip(r, "present")
      else
        kept[#kept + 1] = r
      end
    end
    return kept
  end, opts)
end

-- The per-intent cap, counting what is already there (tenant.intent_cap,
-- 2000 by default; the platform documents both 200 and 2000).
function M.cap(opts)
  opts = opts or {}
  return step("cap", function(ctx, records)
    local cap = opts.per_intent or ctx.tenant.intent_cap or 2000
    local used = {}
    local kept = {}
    for _, r in ipairs(records) do
      if used[r.intent] == nil then
        local have = ctx.existing[r.intent]
        used[r.intent] = have and have.active or 0
      end
      if used[r.intent] >= cap then
        ctx:reject(r, "over_limit", { cap = cap })
      else
        used[r.intent] = used[r.intent] + 1
        kept[#kept + 1] = r
      end
    end
    return kept
  end, opts)
end

-- ---- sinks and notifications -------------------------------------------------

M.sink = {}

function M.sink.intent_batches(opts)
  return require("cogpipe.cognigy.intents").sink(opts or {})
end

function M.sink.dataset(opts)
  return require("cogpipe.cognigy.dataset").sink(opts or {})
end

function M.sink.v2_sentences(opts)
  return require("cogpipe.cognigy.v2").sink(opts or {})
end

-- Webhooks of the tenant (tenant.webhooks), sent with the run's metrics.
function M.webhooks()
  return { kind = "webhooks" }
end

return M
