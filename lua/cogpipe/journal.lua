-- The run journal: what a pipeline committed to a tenant's platform, kept in
-- the state directory so that a re-run sends nothing twice and a run can be
-- undone. Each batch is written as "pending" (and synced) before it is sent,
-- then "committed" or "unknown" after; a pending or unknown batch found at
-- the next start is one whose outcome nobody saw, and the sink reconciles it
-- before sending. A change of the v2 API (sentences created or deleted)
-- is written whole -- text, slots, locale, and the id of what is deleted --
-- before its request goes out, so that what a run deleted can be put back.
-- Every record names the run that wrote it. A write that fails (a full
-- disk, an I/O error) is returned as nil, err and given to the opener's
-- on_error: a batch whose "pending" is not on disk must not be sent, and
-- nothing after it either.
local cp = require "cogpipe"
local json = cp.json

local Journal = {}
Journal.__index = Journal

local M = {}

-- The state directory (cogpipe.state), kept here for callers of this module.
M.state_dir = require("cogpipe.state").dir

local function safe(name)
  return (name:gsub("[^%w_.-]", "_"))
end

-- Opens (creating) the journal of one pipeline for one tenant and replays
-- it. on_error(err), when given, hears of the first write that fails.
function M.open(state_dir, tenant, pipeline, on_error)
  local dir = state_dir .. "/journal/" .. safe(tenant)
  local ok, err = cp.fs.mkdir(dir)
  if not ok then
    return nil, err
  end
  local path = dir .. "/" .. safe(pipeline) .. ".jsonl"
  local self = setmetatable({ path = path, pipeline = pipeline, committed = {}, batches = {}, runs = {}, undone_by = {},
    torn = 0, on_error = on_error }, Journal)
  local f = io.open(path, "r")
  if f then
    for line in f:lines() do
      local rec = json.decode(line)
      if type(rec) == "table" then
        self:_apply(rec)
      else
        self.torn = self.torn + 1 -- a line cut by a crash: the batch stays pending
      end
    end
    f:close()
  end
  local fh, oerr = io.open(path, "a")
  if not fh then
    return nil, { kind = "io", message = "journal " .. tostring(oerr) }
  end
  self.file = fh
  return self
end

-- The run a record belongs to: its own field, or the run id a batch id
-- starts with (records written before runs were named).
local function run_of(rec)
  return rec.run or (type(rec.batch) == "string" and rec.batch:match("^([^/]+)/")) or nil
end

function Journal:_apply(rec)
  local run = run_of(rec)
  if run then
    local r = self.runs[run]
    if not r then
      r = { batches = {}, ids = {} }
      self.runs[run] = r
    end
    if rec.batch and not r.batches[rec.batch] then
      r.batches[rec.batch] = true
      r.batches[#r.batches + 1] = rec.batch
    end
    if rec.op == "ids" then
      r.ids[#r.ids + 1] = rec
    elseif rec.op == "undone" then
      self.undone_by[rec.undoes] = run
    end
  end
  if rec.op == "change" then
    self.batches[rec.batch] = { state = "pending", change = rec, ts = rec.ts }
  elseif rec.op == "missing" then
    -- a read-back did not find these: they were never stored after all
    for _, key in ipairs(rec.items or {}) do
      self.committed[key] = nil
    end
  elseif rec.op == "pending" then
    self.batches[rec.batch] = { state = "pending", items = rec.items, info = rec.info, ts = rec.ts }
  elseif rec.op == "committed" or rec.op == "unknown" or rec.op == "failed" or rec.op == "resent" then
    local b = self.batches[rec.batch] or { items = rec.items or {} }
    b.state = rec.op
    self.batches[rec.batch] = b
    if rec.op == "committed" then
      for _, key in ipairs(b.items or {}) do
        self.committed[key] = true
      end
    end
  elseif rec.op == "reconciled" then
    local b = self.batches[rec.batch]
    if b then
      b.state = "reconciled"
    end
    for _, key in ipairs(rec.present or {}) do
      self.committed[key] = true
    end
  end
end

function Journal:_write(rec, sync)
  if self.broken then
    return nil, self.broken
  end
  rec.ts = os.time()
  rec.run = rec.run or self.run_id
  local ok, err = self.file:write(json.encode(rec), "\n")
  if ok then
    if sync then
      ok, err = cp.fs.sync(self.file)
    else
      ok, err = self.file:flush()
    end
  end
  if not ok then
    -- what follows must not count on this record: no more writes either
    self.broken = { kind = "io", message = string.format("journal %s: %s", self.path,
      type(err) == "table" and tostring(err.message) or tostring(err)) }
    if self.on_error then
      self.on_error(self.broken)
    end
    return nil, self.broken
  end
  self:_apply(rec)
  return true
end

-- Was this item (an opaque key the sink chose) committed by an earlier run?
function Journal:is_committed(key)
  return self.committed[key] == true
end

-- Batches whose outcome is not known: pending when the process died, or
-- unknown after a reset; the sink must reconcile them before sending.
function Journal:open_batches()
  local list = {}
  for id, b in pairs(self.batches) do
    -- a v2 change is reconciled by reading the platform, not from here
    if (b.state == "pending" or b.state == "unknown") and not b.change then
      list[#list + 1] = { id = id, items = b.items or {}, info = b.info, state = b.state, ts = b.ts }
    end
  end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

-- Each returns true, or nil, err when the record is not on disk.
function Journal:pending(batch, items, info)
  return self:_write({ op = "pending", batch = batch, items = json.array(items), info = info }, true)
end

function Journal:committed_batch(batch)
  return self:_write({ op = "committed", batch = batch }, true)
end

function Journal:unknown(batch)
  return self:_write({ op = "unknown", batch = batch }, true)
end

function Journal:failed(batch)
  return self:_write({ op = "failed", batch = batch }, false)
end

-- An open batch the user chose to send again (its outcome stays unknown;
-- what is sent now is a batch of its own).
function Journal:resent(batch)
  return self:_write({ op = "resent", batch = batch }, true)
end

-- After reading the platform: these keys of an open batch are there.
function Journal:reconciled(batch, present)
  return self:_write({ op = "reconciled", batch = batch, present = json.array(present) }, true)
end

-- A change of the v2 API about to be sent: kind "create" or "delete",
-- info {intent, intent_id, flow, locale}, sentences {id?, text, slots,
-- locale}. Synced before the request goes out.
function Journal:change(batch, kind, info, sentences)
  local list = json.array()
  for i, s in ipairs(sentences) do
    list[i] = { id = s.id, text = s.text, slots = json.array(s.slots or {}), locale = s.locale }
  end
  return self:_write({ op = "change", batch = batch, kind = kind, intent = info.intent, intent_id = info.intent_id,
    flow = info.flow, sentences = list }, true)
end

-- The ids a read-back found for the sentences this run created in an
-- intent ({text, id} pairs): PATCH answers carry counts only.
function Journal:ids(intent, pairs_)
  return self:_write({ op = "ids", intent = intent, ids = json.array(pairs_) }, true)
end

-- Items (keys) of committed batches that a read-back did not find on the
-- platform: the next run sends them again.
function Journal:missing(keys)
  return self:_write({ op = "missing", items = json.array(keys) }, true)
end

-- This run undid the run `undoes`.
function Journal:undone(undoes)
  return self:_write({ op = "undone", undoes = undoes }, true)
end

-- What this journal knows of a run: nil when it holds no record of it, else
-- {batches = {{id, state, change?, info?}...}, ids = {intent -> {text -> id}},
-- undone_by = run id or nil}.
function Journal:run(run_id)
  local r = self.runs[run_id]
  if not r then
    return nil
  end
  local out = { batches = {}, ids = {}, undone_by = self.undone_by[run_id] }
  for _, id in ipairs(r.batches) do
    local b = self.batches[id]
    if b then
      out.batches[#out.batches + 1] = { id = id, state = b.state, change = b.change, info = b.info }
    end
  end
  for _, rec in ipairs(r.ids) do
    local m = out.ids[rec.intent] or {}
    for _, p in ipairs(rec.ids or {}) do
      m[p.text] = p.id
    end
    out.ids[rec.intent] = m
  end
  return out
end

-- The journal of one tenant that holds records of run_id, opened (to be
-- closed by the caller), and what it knows of the run; nil, err when no
-- journal of the tenant has heard of it.
function M.find_run(state_dir, tenant, run_id)
  local dir = state_dir .. "/journal/" .. safe(tenant)
  -- the directory listing the webhook outbox is read with (sorted names)
  local names, lerr = require("cogpipe._webhook").list(dir, ".jsonl")
  if not names then
    return nil, lerr
  end
  for _, name in ipairs(names) do
    local pipeline = name:match("^(.*)%.jsonl$")
    if pipeline then
      local jr = M.open(state_dir, tenant, pipeline)
      if jr then
        local info = jr:run(run_id)
        if info then
          return jr, info
        end
        jr:close()
      end
    end
  end
  return nil, { kind = "usage", message = string.format("no journal of tenant %s in %s records run %s", tenant, dir,
    run_id) }
end

function Journal:close()
  if self.file then
    self.file:close()
    self.file = nil
  end
end
Journal.__close = Journal.close
Journal.__gc = Journal.close

return M
