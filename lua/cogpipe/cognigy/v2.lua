-- The Cognigy.AI REST API v2.0 target (DESIGN 4.3): reads each intent's
-- sentences through every page of the cursor, creates the missing ones in
-- bulk (PATCH operations, chunked so that no request body exceeds the
-- platform's 60,000-byte JSON limit, and split in two on a 413), one by one
-- (POST) or through the intent import, deletes what a prune names in the
-- same operation requests, then trains the locale and follows the task --
-- only when every upload of the run succeeded, unless the tenant asks for
-- training anyway. The flow's sentence cap is shared round-robin across
-- intents. The platform can be asked what it holds, so an unknown outcome
-- is reconciled by reading the intent again before anything is re-sent:
-- nothing is lost and nothing doubled. Every change is in the journal
-- before its request goes out (a deletion in the audit log too), and the
-- undo of a run is planned here from what the journal kept. Which
-- sentences are pruned, and when a prune is refused, is the runner's call.
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
    api = "the v2 sentences API",
    can_delete = true,
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
  local listed = ctx.target and ctx.target.listed_ids
  return ids and ids[label] or listed and listed[label] or label
end

local function flow_path(ctx)
  return "/new/v2.0/flows/" .. client_mod.segment(conf(ctx).flow_id)
end

local function sentences_path(ctx, label)
  return flow_path(ctx) .. "/intents/" .. client_mod.segment(intent_id(ctx, label)) .. "/sentences"
end

local function key(text)
  return cp.dedupe.normalize(text, "casefold")
end

-- The locale a sentence of this tenant is created in.
function Sink:locale(ctx)
  return conf(ctx).locale_id
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
  ctx.target = { client = client, body_max = c.json_body_max or JSON_BODY_MAX, listed_ids = {}, seq = 0 }
  return true
end

-- What an intent holds, from its sentences ({id, text, slots, locale}).
local function have_of(items, total)
  local have = { keys = {}, texts = {}, items = items, active = total or #items }
  for i, s in ipairs(items) do
    have.texts[i] = s.text
    have.keys[key(s.text)] = true
  end
  return have
end

-- Every sentence of an intent, following nextCursor to the end.
local function read_intent(ctx, label)
  local client = ctx.target.client
  local items = {}
  local cursor
  while true do
    local body, err = client:get_json(sentences_path(ctx, label), { limit = PAGE, next = cursor })
    if not body then
      if err.status == 404 then
        return have_of({}, 0)
      end
      return nil, err
    end
    for _, s in ipairs(body.items or {}) do
      local slots = type(s.slots) == "table" and s.slots or json.array()
      local locale = s.localeReference ~= json.null and s.localeReference or nil
      items[#items + 1] = { id = s._id, text = s.text, slots = slots, locale = locale }
    end
    cursor = body.nextCursor
    if cursor == nil or cursor == json.null or cursor == "" then
      return have_of(items, math.type(body.total) == "integer" and body.total or #items)
    end
  end
end

-- The flow's intents, as labels (a tenant's intent_ids map platform ids
-- back to the labels its data uses), through every page.
function Sink:intents(ctx)
  local back = {}
  for label, id in pairs(conf(ctx).intent_ids or ctx.tenant.intent_ids or {}) do
    back[id] = label
  end
  local labels, cursor = {}, nil
  repeat
    local body, err = ctx.target.client:get_json(flow_path(ctx) .. "/intents", { limit = PAGE, next = cursor })
    if not body then
      if err.status == 404 or err.status == 405 then
        err.message = "the platform does not list the intents of flow " .. tostring(conf(ctx).flow_id) .. ": " ..
          tostring(err.message)
      end
      return nil, err
    end
    for _, it in ipairs(body.items or {}) do
      local id = it._id or it.name
      local label = back[id] or it.name or id
      if type(label) == "string" then
        labels[#labels + 1] = label
        if label ~= id then
          ctx.target.listed_ids[label] = id
        end
      end
    end
    cursor = body.nextCursor
  until cursor == nil or cursor == json.null or cursor == ""
  table.sort(labels)
  return labels
end

-- What the platform holds for labels: {label -> have}, have.items being
-- every sentence {id, text, slots, locale}.
function Sink:read(ctx, labels)
  return client_mod.read_intents(ctx, labels, read_intent)
end
Sink.read_back = Sink.read

local function union(a, b)
  local seen, out = {}, {}
  for _, list in ipairs({ a, b }) do
    for _, v in ipairs(list) do
      if not seen[v] then
        seen[v] = true
        out[#out + 1] = v
      end
    end
  end
  table.sort(out)
  return out
end

-- Reads the intents of the source (and, for a prune, every intent of the
-- flow), from the platform or from the snapshot a plan works offline from.
-- ctx.existing: the source's intents (what the steps compare with);
-- ctx.held: every intent read.
function Sink:prepare(ctx, intents)
  local labels, read = intents, {}
  if ctx.snapshot then
    local listed = {}
    if ctx.opts.prune then
      for label in pairs(ctx.snapshot.intents) do
        listed[#listed + 1] = label
      end
    end
    labels = union(intents, listed)
    for _, label in ipairs(labels) do
      read[label] = have_of(ctx.snapshot.intents[label] or {})
    end
  else
    if ctx.opts.prune then
      local listed, err = self:intents(ctx)
      if not listed then
        return nil, err
      end
      labels = union(intents, listed)
    end
    local err
    read, err = self:read(ctx, labels)
    if not read then
      return nil, err
    end
  end
  local total = 0
  ctx.held = {}
  for _, label in ipairs(labels) do
    ctx.held[label] = read[label]
    total = total + read[label].active
  end
  for _, label in ipairs(intents) do
    ctx.existing[label] = read[label]
  end
  ctx.target.flow_count = total
  return true
end

-- The sentences a prune will delete ({intent, items} per intent): what the
-- steps compare new records with, and the flow's count, leave them out.
function Sink:set_prune(ctx, prune)
  ctx.target.prune = prune
  for _, p in ipairs(prune) do
    local gone = {}
    for _, item in ipairs(p.items) do
      gone[item] = true
    end
    local keep = {}
    for _, item in ipairs(ctx.held[p.intent].items) do
      if not gone[item] then
        keep[#keep + 1] = item
      end
    end
    if ctx.existing[p.intent] then
      ctx.existing[p.intent] = have_of(keep)
    end
    ctx.target.flow_count = ctx.target.flow_count - #p.items
  end
end

local function sentence(ctx, r)
  return { text = r.text, localeId = r.locale or conf(ctx).locale_id, slots = json.array(r.slots or {}) }
end

local function operation(ctx, kind, r)
  if kind == "delete" then
    return { op = "delete", value = { _id = r.id } }
  end
  return { op = "create", value = sentence(ctx, r) }
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

-- Operations of one kind for one intent, grouped into units whose encoded
-- body stays under the limit (counted in bytes of the JSON actually sent).
-- too_large(r) hears of a record that cannot go even alone. Returns the
-- records placed.
local function units_of(ctx, kind, intent, list, out, too_large)
  local envelope = #'{"operations":[]}'
  local unit, size = { kind = kind, intent = intent, records = {}, ops = json.array() }, envelope
  local placed = {}
  for _, r in ipairs(list) do
    local op = operation(ctx, kind, r)
    local bytes = #json.encode(op) + 1 -- and its comma
    if bytes + envelope > ctx.target.body_max then
      too_large(r)
    else
      if size + bytes > ctx.target.body_max and #unit.ops > 0 then
        out[#out + 1] = unit
        unit, size = { kind = kind, intent = intent, records = {}, ops = json.array() }, envelope
      end
      unit.ops[#unit.ops + 1] = op
      unit.records[#unit.records + 1] = r
      size = size + bytes
      placed[#placed + 1] = r
    end
  end
  if #unit.ops > 0 then
    out[#out + 1] = unit
  end
  return placed
end

-- Creates grouped per intent into chunks under the body limit, after the
-- flow's cap; deletions of a prune likewise, sent before them.
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
  for _, intent in ipairs(order) do
    by_intent[intent] = units_of(ctx, "create", intent, by_intent[intent], chunks, function(r)
      ctx:reject(r, "invalid", { problem = "sentence too large for one request" })
    end)
    total = total + #by_intent[intent]
  end
  local deletes, pruning = {}, 0
  for _, p in ipairs(ctx.target.prune or {}) do
    pruning = pruning + #units_of(ctx, "delete", p.intent, p.items, deletes, function() end)
  end
  ctx.stats.accepted = total
  return { chunks = chunks, deletes = deletes, total = total, pruning = pruning, by_intent = by_intent,
    order = order }
end

-- After an unknown outcome: which records of the unit took effect (created
-- ones the intent holds, deleted ones it no longer does), and which not.
local function reconcile(ctx, unit)
  local have, err = read_intent(ctx, unit.intent)
  if not have then
    return nil, err
  end
  local ids = {}
  for _, s in ipairs(have.items) do
    ids[s.id] = true
  end
  local took, rest = {}, {}
  for _, r in ipairs(unit.records) do
    local done
    if unit.kind == "delete" then
      done = not ids[r.id]
    else
      done = have.keys[key(r.text)]
    end
    if done then
      took[#took + 1] = r
    else
      rest[#rest + 1] = r
    end
  end
  ctx:event("reconciled", { intent = unit.intent, kind = unit.kind, present = #took, missing = #rest })
  return took, rest
end

local function patch(ctx, unit)
  return ctx.target.client:request({
    method = "PATCH", path = sentences_path(ctx, unit.intent), json = { operations = unit.ops },
  })
end

local function post_one(ctx, unit)
  return ctx.target.client:request({ method = "POST", path = sentences_path(ctx, unit.intent),
    json = sentence(ctx, unit.records[1]) })
end

local function rebuild(ctx, unit, records)
  local again = { kind = unit.kind, intent = unit.intent, records = records, ops = json.array() }
  for i, r in ipairs(records) do
    again.ops[i] = operation(ctx, unit.kind, r)
  end
  return again
end

-- The unit in the journal (and a deletion in the audit log) before its
-- request goes out; false when that could not be written: it is not sent.
local function record(ctx, unit)
  ctx.target.seq = ctx.target.seq + 1
  unit.jid = string.format("%s/%s/%s-%d", ctx.run_id, unit.intent, unit.kind, ctx.target.seq)
  local list = json.array()
  for i, r in ipairs(unit.records) do
    list[i] = { id = r.id, text = r.text, slots = json.array(r.slots or {}), locale = r.locale or conf(ctx).locale_id }
  end
  local ok = ctx.journal:change(unit.jid, unit.kind, { intent = unit.intent, intent_id = intent_id(ctx, unit.intent),
    flow = conf(ctx).flow_id }, list)
  if ok and unit.kind == "delete" then
    ctx:event("prune", { intent = unit.intent, batch = unit.jid, sentences = list })
    ctx:sync()
  end
  return ok and not ctx.stopped
end

local function took_effect(ctx, unit, records)
  if #records == 0 then
    return
  end
  if unit.kind == "delete" then
    ctx:pruned(unit.intent, records)
  else
    ctx:uploaded(unit.intent, records, intent_id(ctx, unit.intent))
  end
end

-- Records of a unit that did not take effect (or may not have): counted
-- as failed or unknown sentences, or as deletions that failed.
local function lost(ctx, unit, n, outcome)
  local field = unit.kind == "delete" and "prune_failed" or outcome == "unknown" and "unknown" or "failed"
  ctx.stats[field] = ctx.stats[field] + n
end

local function what(unit)
  return unit.kind == "delete" and ("intent " .. unit.intent .. " (deleting)") or ("intent " .. unit.intent)
end

local function failed(ctx, unit, n, err)
  lost(ctx, unit, n, "failed")
  ctx:request_failed(what(unit), err)
  return false
end

local send_unit

-- A 413: the platform's limit is lower than the tenant's setting. Each half
-- goes on its own, down to one sentence; only a sentence too large alone
-- fails.
local function split(ctx, unit, send, err, retried)
  local n = #unit.records
  if n < 2 then
    return failed(ctx, unit, n, err)
  end
  ctx:event("split", { intent = unit.intent, kind = unit.kind, operations = n })
  local half = n // 2
  local a = send_unit(ctx, rebuild(ctx, unit, { table.unpack(unit.records, 1, half) }), send, retried)
  local b = send_unit(ctx, rebuild(ctx, unit, { table.unpack(unit.records, half + 1, n) }), send, retried)
  return a and b
end

-- Sends one unit (a chunk of operations, or one sentence); a 413 splits it;
-- on an unknown outcome reads the intent and sends what did not take
-- effect, once.
send_unit = function(ctx, unit, send, retried)
  local n = #unit.records
  if ctx.stopped or not record(ctx, unit) then
    lost(ctx, unit, n, "failed") -- not sent: the tenant stopped, or the journal could not say it would be
    return false
  end
  local resp, err = send(ctx, unit)
  if resp then
    ctx.journal:committed_batch(unit.jid)
    ctx:event("batch", { intent = unit.intent, batch = unit.jid, kind = unit.kind, sentences = n, outcome = "ok" })
    took_effect(ctx, unit, unit.records)
    return true
  end
  if err.status == 413 then
    ctx.journal:failed(unit.jid)
    return split(ctx, unit, send, err, retried)
  end
  if err.outcome ~= "unknown" then
    ctx.journal:failed(unit.jid)
    ctx:event("batch", { intent = unit.intent, batch = unit.jid, kind = unit.kind, sentences = n,
      outcome = err.outcome or "failed" })
    return failed(ctx, unit, n, err)
  end
  ctx.journal:unknown(unit.jid)
  ctx:event("batch", { intent = unit.intent, batch = unit.jid, kind = unit.kind, sentences = n, outcome = "unknown" })
  if retried then
    lost(ctx, unit, n, "unknown")
    ctx:fail(string.format("%s: %s", what(unit), err.message))
    return false
  end
  local took, rest = reconcile(ctx, unit)
  if not took then
    lost(ctx, unit, n, "unknown")
    ctx:fail(string.format("%s: outcome unknown and the intent could not be read: %s", what(unit), rest.message))
    return false
  end
  took_effect(ctx, unit, took)
  if #rest == 0 then
    return true
  end
  return send_unit(ctx, rebuild(ctx, unit, rest), send, true)
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
    for _, intent in ipairs(plan.order) do
      ctx:uploaded(intent, plan.by_intent[intent], intent_id(ctx, intent))
    end
  else
    ctx.stats.failed = plan.total
    ctx:fail("intent import task: " .. tostring(status) .. " " .. tostring(info or ""))
  end
end

local function send_all(ctx, units, send)
  local tasks = {}
  for _, unit in ipairs(units) do
    tasks[#tasks + 1] = cp.spawn(send_unit, ctx, unit, send)
  end
  if #tasks > 0 then
    cp.wait(table.unpack(tasks))
  end
end

-- Deletions first, every one of them, so that the room they free in an
-- intent or the flow is there when the creations arrive.
function Sink:send(ctx, plan)
  send_all(ctx, plan.deletes or {}, patch)
  if self.method == "import" then
    return self:send_import(ctx, plan)
  end
  if self.method == "post" then
    local units = {}
    for _, intent in ipairs(plan.order) do
      for _, r in ipairs(plan.by_intent[intent]) do
        units[#units + 1] = { kind = "create", intent = intent, records = { r } }
      end
    end
    send_all(ctx, units, post_one)
  else
    send_all(ctx, plan.chunks, patch)
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
  local short = s.failed + s.unknown + (ctx.readback_missing or 0)
  if (short > 0 or ctx.readback_failed or ctx.stopped) and not conf(ctx).train_after_failure then
    -- a model trained on part of the data would go live as if it were all
    ctx.training = { status = "skipped" }
    ctx:note(string.format("locale %s not trained: %d sentence(s) failed, %d have an unknown outcome and %d sent "
      .. "are not on the platform in this run (v2.train_after_failure = true trains anyway)",
      tostring(conf(ctx).locale_id), s.failed, s.unknown, ctx.readback_missing or 0))
    ctx:event("training", { status = "skipped", failed = s.failed, unknown = s.unknown,
      missing = ctx.readback_missing or 0 })
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

-- ---- undo --------------------------------------------------------------------

local function same_slots(a, b)
  return json.encode(json.array(a or {})) == json.encode(json.array(b or {}))
end

local function quote(text)
  return '"' .. tostring(text) .. '"'
end

-- The plan that reverses a run (run: what the journal knows of it, see
-- Journal:run): the sentences it created are deleted (found by the ids its
-- read-back kept, else by their text), the ones it deleted are created
-- again. Returns the plan (as Sink:plan's, for Sink:send), or nil and the
-- list of reasons it cannot be done, each naming a sentence: one created by
-- the run that was edited or deleted since, one it deleted that is back.
function Sink:undo_plan(ctx, run)
  local created, deleted, labels = {}, {}, {}
  local seen = { create = {}, delete = {} }
  for _, b in ipairs(run.batches) do
    local c = b.change
    -- a failed request changed nothing; a pending or unknown one may have,
    -- and what it did not do was sent again in a request of its own
    if c and b.state ~= "failed" then
      local into = c.kind == "delete" and deleted or created
      into[c.intent] = into[c.intent] or {}
      labels[c.intent] = true
      for _, s in ipairs(c.sentences or {}) do
        local k = c.intent .. "\0" .. (c.kind == "delete" and tostring(s.id) or s.text)
        local entry = seen[c.kind == "delete" and "delete" or "create"][k]
        if entry then
          entry.sure = entry.sure or b.state == "committed"
        else
          entry = { id = s.id, text = s.text, slots = s.slots, locale = s.locale, sure = b.state == "committed" }
          seen[c.kind == "delete" and "delete" or "create"][k] = entry
          table.insert(into[c.intent], entry)
        end
      end
    end
  end
  local order = {}
  for label in pairs(labels) do
    order[#order + 1] = label
  end
  table.sort(order)
  local read, err = self:read(ctx, order)
  if not read then
    return nil, { err.message }
  end
  local problems, deletes, recreate = {}, {}, {}
  local notes = {}
  for _, intent in ipairs(order) do
    local by_id, by_text = {}, {}
    for _, s in ipairs(read[intent].items) do
      by_id[s.id] = s
      by_text[s.text] = by_text[s.text] or {}
      table.insert(by_text[s.text], s)
    end
    local ids, taken, gone = run.ids[intent] or {}, {}, {}
    for _, c in ipairs(created[intent] or {}) do
      local id = ids[c.text]
      local now = id and by_id[id]
      if id and not now then
        problems[#problems + 1] = string.format("intent %s: sentence %s (id %s), created by run %s, was deleted "
          .. "on the platform since", intent, quote(c.text), id, run.id)
      elseif now and (now.text ~= c.text or not same_slots(now.slots, c.slots)) then
        problems[#problems + 1] = string.format("intent %s: sentence %s (id %s), created by run %s, was edited on "
          .. "the platform since: it is now %s%s", intent, quote(c.text), id, run.id, quote(now.text),
          same_slots(now.slots, c.slots) and "" or " with other slots")
      else
        if not now then
          for _, s in ipairs(by_text[c.text] or {}) do
            if not taken[s] and same_slots(s.slots, c.slots) then
              now = s
              break
            end
          end
        end
        local other = not now and by_text[c.text] and by_text[c.text][1]
        if now and not taken[now] then
          taken[now] = true
          deletes[#deletes + 1] = { intent = intent, item = now }
        elseif other and c.sure then
          problems[#problems + 1] = string.format("intent %s: sentence %s, created by run %s, was edited on the "
            .. "platform since: it has other slots now (id %s)", intent, quote(c.text), run.id, tostring(other.id))
        elseif c.sure then
          notes[#notes + 1] = string.format("intent %s: sentence %s, created by run %s, is not on the platform "
            .. "(its read-back did not find it either): nothing to delete", intent, quote(c.text), run.id)
        end
      end
    end
    for _, d in ipairs(deleted[intent] or {}) do
      local back = by_text[d.text] and by_text[d.text][1]
      if by_id[d.id] then
        -- never deleted (its request failed or did not take effect): nothing to put back
        notes[#notes + 1] = string.format("intent %s: sentence %s, to be deleted by run %s, is still there: "
          .. "nothing to create again", intent, quote(d.text), run.id)
      elseif back then
        problems[#problems + 1] = string.format("intent %s: sentence %s, deleted by run %s, is on the platform "
          .. "again (id %s)", intent, quote(d.text), run.id, tostring(back.id))
      elseif not gone[d.text] then
        gone[d.text] = true
        recreate[#recreate + 1] = { intent = intent, text = d.text, slots = d.slots, locale = d.locale }
      end
    end
  end
  if #problems > 0 then
    return nil, problems
  end
  local plan = { deletes = {}, chunks = {}, by_intent = {}, order = {}, total = #recreate, pruning = #deletes,
    notes = notes }
  local del_by, add_by = {}, {}
  for _, d in ipairs(deletes) do
    del_by[d.intent] = del_by[d.intent] or {}
    table.insert(del_by[d.intent], d.item)
  end
  for _, r in ipairs(recreate) do
    if not add_by[r.intent] then
      add_by[r.intent] = {}
      plan.order[#plan.order + 1] = r.intent
    end
    table.insert(add_by[r.intent], r)
  end
  for _, intent in ipairs(order) do
    if del_by[intent] then
      units_of(ctx, "delete", intent, del_by[intent], plan.deletes, function() end)
    end
    if add_by[intent] then
      units_of(ctx, "create", intent, add_by[intent], plan.chunks, function(r)
        problems[#problems + 1] = string.format("intent %s: sentence %s is too large for one request", intent,
          quote(r.text))
      end)
    end
  end
  if #problems > 0 then
    return nil, problems
  end
  plan.by_intent = add_by
  return plan
end

return M
