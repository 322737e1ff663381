-- The intent example batch target (DESIGN 4.2): reads what each intent holds,
-- sends accepted examples in atomic batches of at most 100 with the run
-- journal around each, and triggers retraining on an intent's last batch
-- (reported as triggered; followed only where the tenant names a status
-- URL). A batch answered success:false is a failure even with status 200; a
-- batch whose outcome is unknown is recorded so, never counted as uploaded,
-- and reconciled by the next run before anything is re-sent. The API has
-- no delete: a prune or an undo is refused for it (by the runner and the
-- undo command, from can_delete).
local cp = require "cogpipe"
local json = cp.json
local client_mod = require "cogpipe.cognigy.client"

local M = {}
local Sink = {}
Sink.__index = Sink

local SCOPE = "intent:read intent:write ai:train"
local PAGE = 1000
local STOP_AFTER = 3 -- consecutive failed batches before a tenant stops sending
-- A batch an interrupted run left pending may still be in the platform's
-- hands; reading the intents before it lands would send it again.
local SETTLE = 10

function M.sink(opts)
  local size = opts.batch_size or 100
  if size < 1 or size > 100 then
    error("intent_batches: batch_size must be 1..100 (the platform's limit)", 3)
  end
  return setmetatable({ batch_size = size, retrain = opts.retrain ~= false, name = "intent_batches",
    api = "the intent example batch API", can_delete = false }, Sink)
end

local function key_of(intent, text)
  return cp.hash(intent .. "\0" .. cp.dedupe.normalize(text, "casefold"))
end

local function intent_id(ctx, label)
  local ids = ctx.tenant.intent_ids
  return ids and ids[label] or label
end

function Sink:open(ctx)
  local client, err = client_mod.new(ctx, ctx.tenant.intents, {
    token_path = "/api/v1/auth/token", scope = SCOPE,
  })
  if not client then
    return nil, err
  end
  local _, uerr = client_mod.status_url(ctx, ctx.tenant.intents, client.base, "x")
  if uerr then
    return nil, uerr
  end
  ctx.target = { client = client, jobs = {} }
  return true
end

-- What an intent holds, from its examples ({id, text, annotations, active}).
local function have_of(label, items, active)
  local have = { keys = {}, texts = {}, hashes = {}, items = items, active = active }
  local n = 0
  for i, e in ipairs(items) do
    have.texts[i] = e.text
    have.keys[cp.dedupe.normalize(e.text, "casefold")] = true
    have.hashes[key_of(label, e.text)] = true
    if e.active ~= false then
      n = n + 1
    end
  end
  have.active = active or n
  return have
end

-- Every example an intent holds, through every page.
local function read_intent(ctx, label)
  local client = ctx.target.client
  local path = "/api/v1/intents/" .. client_mod.segment(intent_id(ctx, label)) .. "/examples"
  local items = {}
  local offset = 0
  while true do
    local body, err = client:get_json(path, { limit = PAGE, offset = offset })
    if not body then
      if err.status == 404 then
        return have_of(label, {}) -- an intent with nothing yet
      end
      return nil, err
    end
    for _, e in ipairs(body.examples or {}) do
      local anns = type(e.annotations) == "table" and e.annotations or json.array()
      items[#items + 1] = { id = e.id, text = e.text, annotations = anns, active = e.is_active ~= false }
    end
    local active = math.type(body.active_count) == "integer" and body.active_count or nil
    if body.next_offset == nil or body.next_offset == json.null then
      return have_of(label, items, active)
    end
    offset = body.next_offset
  end
end

-- The intents of the tenant: this API cannot list them, so they are the
-- ones the tenant's intent_ids name.
function Sink:intents(ctx)
  local labels = {}
  for label in pairs(ctx.tenant.intent_ids or {}) do
    labels[#labels + 1] = label
  end
  table.sort(labels)
  return labels
end

-- What the platform holds for labels: {label -> have}, have.items being
-- every example {id, text, annotations, active}.
function Sink:read(ctx, labels)
  return client_mod.read_intents(ctx, labels, read_intent)
end
Sink.read_back = Sink.read

-- Records of committed batches that a read-back did not find: the journal
-- forgets them, so that the next run sends them again.
function Sink:lost(ctx, records)
  local keys = {}
  for i, r in ipairs(records) do
    keys[i] = r.jkey or key_of(r.intent, r.text)
  end
  return ctx.journal:missing(keys)
end

-- Reads every intent concurrently, then settles the batches an earlier run
-- left open: what the platform holds of them counts as committed.
function Sink:prepare(ctx, intents)
  ctx.held = ctx.existing
  if ctx.snapshot then
    -- offline: what the snapshot holds; open batches wait for a run that can read
    for _, label in ipairs(intents) do
      ctx.existing[label] = have_of(label, ctx.snapshot.intents[label] or {})
      ctx.existing[label].journal = ctx.journal
    end
    return true
  end
  local latest = 0
  for _, b in ipairs(ctx.journal:open_batches()) do
    if b.state == "pending" and (b.ts or 0) > latest then
      latest = b.ts
    end
  end
  local wait = latest + SETTLE - os.time()
  if wait > 0 then
    ctx:note(string.format("waited %d s for the requests of an interrupted run to settle", wait))
    cp.sleep(wait)
  end
  local read, err = client_mod.read_intents(ctx, intents, read_intent)
  if not read then
    return nil, err
  end
  for _, label in ipairs(intents) do
    ctx.existing[label] = read[label]
  end
  -- The journal's committed examples count as present even if they have
  -- since been deleted on the platform: a person may have removed them.
  for _, label in ipairs(intents) do
    ctx.existing[label].journal = ctx.journal
  end
  for _, b in ipairs(ctx.journal:open_batches()) do
    local label = b.info and b.info.intent
    local have = label and ctx.existing[label]
    if have then
      local present = {}
      for _, k in ipairs(b.items) do
        if have.hashes[k] then
          present[#present + 1] = k
        end
      end
      ctx.journal:reconciled(b.id, present)
      ctx:event("reconciled", { batch = b.id, was = b.state, present = #present, missing = #b.items - #present })
    end
  end
  return true
end

-- Batches per intent, leaving out what the journal says was committed.
function Sink:plan(ctx, records)
  local by_intent, order = {}, {}
  for _, r in ipairs(records) do
    r.jkey = key_of(r.intent, r.text)
    if ctx.journal:is_committed(r.jkey) then
      ctx:skip(r, "present")
    else
      local list = by_intent[r.intent]
      if not list then
        list = {}
        by_intent[r.intent] = list
        order[#order + 1] = r.intent
      end
      list[#list + 1] = r
    end
  end
  local batches, total = {}, 0
  for _, intent in ipairs(order) do
    local list = by_intent[intent]
    local n = 0
    for i = 1, #list, self.batch_size do
      n = n + 1
      local items = { table.unpack(list, i, math.min(i + self.batch_size - 1, #list)) }
      batches[#batches + 1] = { intent = intent, seq = n, records = items, last = i + self.batch_size > #list }
      total = total + #items
    end
  end
  ctx.stats.accepted = total + 0 -- what will actually be sent
  return { batches = batches, total = total, by_intent = by_intent, order = order }
end

local function example(r)
  local anns = json.array()
  for i, a in ipairs(r.annotations or {}) do
    anns[i] = { entity_id = a.entity_id, start = a.start, ["end"] = a["end"] }
  end
  return { text = r.text, annotations = anns, is_active = true }
end

local function excerpt_errors(body)
  local parts = {}
  for i, e in ipairs(body.errors or {}) do
    if i > 3 then
      parts[#parts + 1] = "..."
      break
    end
    parts[#parts + 1] = (e.path or "?") .. ": " .. (e.message or "?")
  end
  return table.concat(parts, "; ")
end

function Sink:send_batch(ctx, b)
  local client, stats, journal = ctx.target.client, ctx.stats, ctx.journal
  local id = string.format("%s/%s/%d", ctx.run_id, b.intent, b.seq)
  local keys, examples = {}, json.array()
  for i, r in ipairs(b.records) do
    keys[i] = r.jkey
    examples[i] = example(r)
  end
  local n = #b.records
  if not journal:pending(id, keys, { intent = b.intent }) then
    stats.failed = stats.failed + n -- not sent: the journal could not say it was about to be
    return false
  end
  local retrain = self.retrain and b.last
  local resp, err = client:request({
    method = "POST",
    path = "/api/v1/intents/" .. client_mod.segment(intent_id(ctx, b.intent)) .. "/examples/batch",
    json = { examples = examples, trigger_retrain = retrain },
  })
  if not resp then
    if err.outcome == "unknown" then
      journal:unknown(id)
      stats.unknown = stats.unknown + n
      ctx:fail(string.format("intent %s batch %d: outcome unknown (%s); the next run reconciles it", b.intent, b.seq,
        err.message))
    else
      journal:failed(id)
      stats.failed = stats.failed + n
      ctx:request_failed(string.format("intent %s batch %d", b.intent, b.seq), err)
    end
    ctx:event("batch", { intent = b.intent, batch = id, examples = n, outcome = err.outcome or "failed" })
    return false
  end
  local body = resp:json()
  if type(body) ~= "table" or body.success ~= true then
    journal:failed(id)
    stats.failed = stats.failed + n
    ctx:fail(string.format("intent %s batch %d rejected by the platform (status %d): %s %s", b.intent, b.seq,
      resp.status, type(body) == "table" and tostring(body.message) or "answer is not JSON",
      type(body) == "table" and excerpt_errors(body) or ""))
    ctx:event("batch", { intent = b.intent, batch = id, examples = n, outcome = "rejected" })
    return false
  end
  journal:committed_batch(id)
  ctx:uploaded(b.intent, b.records, intent_id(ctx, b.intent))
  if body.retrain_job_id and body.retrain_job_id ~= json.null then
    ctx.target.jobs[#ctx.target.jobs + 1] = { intent = b.intent, id = body.retrain_job_id }
  end
  ctx:event("batch", { intent = b.intent, batch = id, examples = n, outcome = "uploaded",
    retrain_job_id = body.retrain_job_id })
  return true
end

-- Intents go concurrently (the limiter bounds them); the batches of one
-- intent go in order, so that its last batch triggers the retraining.
function Sink:send(ctx, plan)
  local by_intent, order = {}, {}
  for _, b in ipairs(plan.batches) do
    if not by_intent[b.intent] then
      by_intent[b.intent] = {}
      order[#order + 1] = b.intent
    end
    table.insert(by_intent[b.intent], b)
  end
  local failures = 0
  local tasks = {}
  for i, intent in ipairs(order) do
    tasks[i] = cp.spawn(function()
      for _, b in ipairs(by_intent[intent]) do
        if failures >= STOP_AFTER or ctx.stopped then
          -- the platform keeps failing: stop, and say what was not sent
          ctx.stats.failed = ctx.stats.failed + #b.records
        elseif self:send_batch(ctx, b) then
          failures = 0
        else
          failures = failures + 1
        end
      end
    end)
  end
  if #tasks > 0 then
    cp.wait(table.unpack(tasks))
  end
  if failures >= STOP_AFTER then
    ctx:fail(string.format("stopped after %d failed batches in a row", STOP_AFTER))
  end
end

function Sink:train(ctx)
  if #ctx.target.jobs > 0 then
    ctx.target.client:retraining(ctx.tenant.intents, ctx.target.jobs)
  end
end

return M
