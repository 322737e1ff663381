-- The Cognigy.AI REST API v2.0 target (DESIGN 4.3): reads each intent's
-- sentences through every page of the cursor, creates the missing ones in
-- bulk (PATCH operations, chunked so that no request body exceeds the
-- platform's 60,000-byte JSON limit, and split in two on a 413), one by one
-- (POST) or through the intent import, then trains the locale and follows
-- the task -- only when every upload of the run succeeded, unless the
-- tenant asks for training anyway. The flow's sentence cap is shared
-- round-robin across intents. The platform can be asked what it holds, so
-- an unknown outcome is reconciled by reading the intent again before
-- anything is re-sent: nothing is lost and nothing doubled.
local cp = require "cogpipe"
local json = cp.json
local client_mod = require "cogpipe.cognigy.client"

local M = {}
local Sink = {}
Sink.__index = Sink

local PAGE = 100 -- the platform's largest page
local JSON_BODY_MAX = 60000 -- the platform's "60 kB" of request body
local FLOW_CAP = 10000

function M.sink(opts)
  local method = opts.method or "patch"
  if method ~= "patch" and method ~= "post" and method ~= "import" then
    error("v2_sentences: method must be patch, post or import", 3)
  end
  local import_mode = opts.import_mode or "merge"
  if import_mode ~= "skip" and import_mode ~= "overwrite" and import_mode ~= "merge" then
    error("v2_sentences: import_mode must be skip, overwrite or merge", 3)
  end
  return setmetatable({
    name = "v2_sentences",
    method = method,
    import_mode = import_mode,
    retrain = opts.train ~= false,
    train_mode = opts.train_mode or "full",
  }, Sink)
end

local function conf(ctx)
  return ctx.tenant.v2 or {}
end

local function intent_id(ctx, label)
  local ids = conf(ctx).intent_ids or ctx.tenant.intent_ids
  return ids and ids[label] or label
end

local function flow_path(ctx)
  return "/new/v2.0/flows/" .. client_mod.segment(conf(ctx).flow_id)
end

local function sentences_path(ctx, label)
  return flow_path(ctx) .. "/intents/" .. client_mod.segment(intent_id(ctx, label)) .. "/sentences"
end

function Sink:open(ctx)
  local c = conf(ctx)
  if type(c.flow_id) ~= "string" or type(c.locale_id) ~= "string" then
    return nil, { kind = "config",
      message = "tenant " .. ctx.tenant.name .. ": v2.flow_id and v2.locale_id are needed" }
  end
  local client, err = client_mod.new(ctx, c, { token_path = "/auth/oauth2/token", api_key_ok = true })
  if not client then
    return nil, err
  end
  ctx.target = { client = client, body_max = c.json_body_max or JSON_BODY_MAX }
  return true
end

-- Every sentence of an intent, following nextCursor to the end.
local function read_intent(ctx, label)
  local client = ctx.target.client
  local have = { keys = {}, texts = {}, active = 0 }
  local cursor
  repeat
    local body, err = client:get_json(sentences_path(ctx, label), { limit = PAGE, next = cursor })
    if not body then
      if err.status == 404 then
        return have
      end
      return nil, err
    end
    for _, s in ipairs(body.items or {}) do
      have.texts[#have.texts + 1] = s.text
      have.keys[cp.dedupe.normalize(s.text, "casefold")] = true
    end
    have.active = body.total or #have.texts
    cursor = body.nextCursor
  until cursor == nil or cursor == json.null or cursor == ""
  return have
end

function Sink:prepare(ctx, intents)
  local read, err = client_mod.read_intents(ctx, intents, read_intent)
  if not read then
    return nil, err
  end
  local total = 0
  for _, label in ipairs(intents) do
    ctx.existing[label] = read[label]
    total = total + read[label].active
  end
  ctx.target.flow_count = total
  return true
end

local function sentence(ctx, r)
  return { text = r.text, localeId = conf(ctx).locale_id, slots = json.array() }
end

-- How many of each intent's records fit in room, shared round-robin: one
-- record of each intent in turn (intents in name order), so every intent
-- gets an equal share of the room, or all it has when that is less.
local function share_room(order, by_intent, room)
  local take, left = {}, {}
  local open = {}
  for _, intent in ipairs(order) do
    take[intent], left[intent] = 0, #by_intent[intent]
    if left[intent] > 0 then
      open[#open + 1] = intent
    end
  end
  table.sort(open)
  while room > 0 and #open > 0 do
    local still = {}
    for _, intent in ipairs(open) do
      if room > 0 then
        take[intent], left[intent], room = take[intent] + 1, left[intent] - 1, room - 1
      end
      if left[intent] > 0 then
        still[#still + 1] = intent
      end
    end
    open = still
  end
  return take
end

-- Operations grouped per intent into chunks whose encoded body stays under
-- the limit (counted in bytes of the JSON actually sent).
function Sink:plan(ctx, records)
  local cap = conf(ctx).flow_cap or FLOW_CAP
  local room = math.max(0, cap - (ctx.target.flow_count or 0))
  local by_intent, order = {}, {}
  for _, r in ipairs(records) do
    if not by_intent[r.intent] then
      by_intent[r.intent] = {}
      order[#order + 1] = r.intent
    end
    table.insert(by_intent[r.intent], r)
  end
  local take = share_room(order, by_intent, room)
  local left_out, dropped = json.array(), 0
  for _, intent in ipairs(order) do
    local list, n = by_intent[intent], take[intent]
    for i = n + 1, #list do
      ctx:reject(list[i], "over_limit", { cap = cap, scope = "flow" })
    end
    if #list > n then
      left_out[#left_out + 1] = { intent = intent, left_out = #list - n, kept = n }
      dropped = dropped + #list - n
    end
    by_intent[intent] = { table.unpack(list, 1, n) }
  end
  if #left_out > 0 then
    table.sort(left_out, function(a, b) return a.intent < b.intent end)
    ctx.left_out = left_out
    ctx:note(string.format("the flow's cap of %d sentences left out %d sentence(s) of %d intent(s), shared "
      .. "round-robin (left_out lists them per intent)", cap, dropped, #left_out))
  end
  local chunks, total = {}, 0
  local envelope = #'{"operations":[]}'
  for _, intent in ipairs(order) do
    local chunk, size = { intent = intent, records = {}, ops = json.array() }, envelope
    for _, r in ipairs(by_intent[intent]) do
      local op = { op = "create", value = sentence(ctx, r) }
      local bytes = #json.encode(op) + 1 -- and its comma
      if bytes + envelope > ctx.target.body_max then
        ctx:reject(r, "invalid", { problem = "sentence too large for one request" })
      else
        if size + bytes > ctx.target.body_max and #chunk.ops > 0 then
          chunks[#chunks + 1] = chunk
          chunk, size = { intent = intent, records = {}, ops = json.array() }, envelope
        end
        chunk.ops[#chunk.ops + 1] = op
        chunk.records[#chunk.records + 1] = r
        size = size + bytes
        total = total + 1
      end
    end
    if #chunk.ops > 0 then
      chunks[#chunks + 1] = chunk
    end
  end
  ctx.stats.accepted = total
  return { chunks = chunks, total = total, by_intent = by_intent, order = order }
end

-- After an unknown outcome: which of these records does the intent hold now?
local function reconcile(ctx, intent, records)
  local have, err = read_intent(ctx, intent)
  if not have then
    return nil, err
  end
  local present, missing = 0, {}
  for _, r in ipairs(records) do
    if have.keys[cp.dedupe.normalize(r.text, "casefold")] then
      present = present + 1
    else
      missing[#missing + 1] = r
    end
  end
  ctx:event("reconciled", { intent = intent, present = present, missing = #missing })
  return present, missing
end

local function patch(ctx, chunk)
  return ctx.target.client:request({
    method = "PATCH", path = sentences_path(ctx, chunk.intent), json = { operations = chunk.ops },
  })
end

local function post_one(ctx, r)
  return ctx.target.client:request({ method = "POST", path = sentences_path(ctx, r.intent), json = sentence(ctx, r) })
end

local function rebuild(ctx, intent, records)
  local chunk = { intent = intent, records = records, ops = json.array() }
  for i, r in ipairs(records) do
    chunk.ops[i] = { op = "create", value = sentence(ctx, r) }
  end
  return chunk
end

local function failed(ctx, unit, n, err)
  ctx.stats.failed = ctx.stats.failed + n
  ctx:request_failed("intent " .. unit.intent, err)
  return false
end

local send_unit

-- A 413: the platform's limit is lower than the tenant's setting. Each half
-- goes on its own, down to one sentence; only a sentence too large alone
-- fails.
local function split(ctx, unit, send, err)
  local n = #unit.records
  if n < 2 then
    return failed(ctx, unit, n, err)
  end
  ctx:event("split", { intent = unit.intent, operations = n })
  local half = n // 2
  local a = send_unit(ctx, rebuild(ctx, unit.intent, { table.unpack(unit.records, 1, half) }), send)
  local b = send_unit(ctx, rebuild(ctx, unit.intent, { table.unpack(unit.records, half + 1, n) }), send)
  return a and b
end

-- Sends one chunk (or one sentence); a 413 splits it; on an unknown outcome
-- reads the intent and sends what is missing, once.
send_unit = function(ctx, unit, send)
  local n = #unit.records
  if ctx.stopped then
    ctx.stats.failed = ctx.stats.failed + n -- not sent: the tenant stopped
    return false
  end
  local resp, err = send(ctx, unit)
  if resp then
    ctx.stats.uploaded = ctx.stats.uploaded + n
    ctx:advance(n)
    return true
  end
  if err.status == 413 then
    return split(ctx, unit, send, err)
  end
  if err.outcome ~= "unknown" then
    return failed(ctx, unit, n, err)
  end
  local present, missing = reconcile(ctx, unit.intent, unit.records)
  if not present then
    ctx.stats.unknown = ctx.stats.unknown + n
    ctx:fail(string.format("intent %s: outcome unknown and the intent could not be read: %s", unit.intent,
      missing.message))
    return false
  end
  ctx.stats.uploaded = ctx.stats.uploaded + present
  ctx:advance(present)
  if #missing == 0 then
    return true
  end
  local again = rebuild(ctx, unit.intent, missing)
  local resp2, err2 = send(ctx, again)
  if resp2 then
    ctx.stats.uploaded = ctx.stats.uploaded + #missing
    ctx:advance(#missing)
    return true
  end
  if err2.status == 413 then
    return split(ctx, again, send, err2)
  end
  if err2.outcome == "unknown" then
    ctx.stats.unknown = ctx.stats.unknown + #missing
    ctx:fail(string.format("intent %s: %s", unit.intent, err2.message))
    return false
  end
  return failed(ctx, again, #missing, err2)
end

function Sink:send_import(ctx, plan)
  local intents = json.array()
  for i, intent in ipairs(plan.order) do
    local texts = json.array()
    for j, r in ipairs(plan.by_intent[intent]) do
      texts[j] = r.text
    end
    intents[i] = { name = intent_id(ctx, intent), sentences = texts }
  end
  local path = ctx:temp_file(string.format("import-%s.json", ctx.run_id), json.encode(intents))
  if not path then
    ctx.stats.failed = plan.total
    return
  end
  local resp, err = ctx.target.client:request({
    method = "POST",
    path = flow_path(ctx) .. "/intents/import",
    multipart = {
      { name = "file", file = path, filename = "intents.json", content_type = "application/json" },
      { name = "localeId", value = conf(ctx).locale_id },
      { name = "mode", value = self.import_mode },
    },
  })
  os.remove(path)
  if not resp then
    ctx.stats[err.outcome == "unknown" and "unknown" or "failed"] = plan.total
    ctx:fail("intent import: " .. err.message)
    return
  end
  local task = resp:json() or {}
  local status, info = self:follow_task(ctx, task._id)
  if status == "done" then
    ctx.stats.uploaded = plan.total
    ctx:advance(plan.total)
  else
    ctx.stats.failed = plan.total
    ctx:fail("intent import task: " .. tostring(status) .. " " .. tostring(info or ""))
  end
end

function Sink:send(ctx, plan)
  if self.method == "import" then
    return self:send_import(ctx, plan)
  end
  local tasks = {}
  if self.method == "post" then
    for _, intent in ipairs(plan.order) do
      for _, r in ipairs(plan.by_intent[intent]) do
        tasks[#tasks + 1] = cp.spawn(send_unit, ctx, { intent = intent, records = { r } }, function(c, unit)
          return post_one(c, unit.records[1])
        end)
      end
    end
  else
    for _, chunk in ipairs(plan.chunks) do
      tasks[#tasks + 1] = cp.spawn(send_unit, ctx, chunk, patch)
    end
  end
  if #tasks > 0 then
    cp.wait(table.unpack(tasks))
  end
end

local function task_state(body)
  local s = body.status
  if s == "done" or s == "error" or s == "cancelled" then
    return s, body.failReason
  end
end

function Sink:follow_task(ctx, id)
  if not id then
    return "error", "the platform answered without a task id"
  end
  local status, info = ctx.target.client:follow("/new/v2.0/tasks/" .. client_mod.segment(id), task_state,
    { timeout = conf(ctx).train_timeout })
  ctx:event("task", { task = id, status = status, info = info })
  return status, info
end

function Sink:train(ctx)
  if not self.retrain then
    return
  end
  local s = ctx.stats
  if (s.failed > 0 or s.unknown > 0 or ctx.stopped) and not conf(ctx).train_after_failure then
    -- a model trained on part of the data would go live as if it were all
    ctx.training = { status = "skipped" }
    ctx:note(string.format("locale %s not trained: %d sentence(s) failed and %d have an unknown outcome in this "
      .. "run (v2.train_after_failure = true trains anyway)", tostring(conf(ctx).locale_id), s.failed, s.unknown))
    ctx:event("training", { status = "skipped", failed = s.failed, unknown = s.unknown })
    return
  end
  local resp, err = ctx.target.client:request({
    method = "POST",
    path = flow_path(ctx) .. "/intents/train",
    json = { localeId = conf(ctx).locale_id, mode = self.train_mode },
  })
  ctx.training = { status = "error" }
  if not resp then
    ctx:request_failed("training", err)
    return
  end
  local task = resp:json() or {}
  ctx.training.task_id = task._id
  local status, info = self:follow_task(ctx, task._id)
  ctx.training.status = status
  if status ~= "done" then
    ctx:fail(string.format("training task %s: %s %s", tostring(task._id), status, tostring(info or "")))
  end
end

return M
