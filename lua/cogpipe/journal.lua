-- The run journal: what a pipeline committed to a tenant's platform, kept in
-- the state directory so that a re-run sends nothing twice. Each batch is
-- written as "pending" (and synced) before it is sent, then "committed" or
-- "unknown" after; a pending or unknown batch found at the next start is one
-- whose outcome nobody saw, and the sink reconciles it before sending. A
-- write that fails (a full disk, an I/O error) is returned as nil, err and
-- given to the opener's on_error: a batch whose "pending" is not on disk
-- must not be sent, and nothing after it either.
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
  local self = setmetatable({ path = path, committed = {}, batches = {}, torn = 0, on_error = on_error }, Journal)
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

function Journal:_apply(rec)
  if rec.op == "pending" then
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
    if b.state == "pending" or b.state == "unknown" then
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

function Journal:close()
  if self.file then
    self.file:close()
    self.file = nil
  end
end
Journal.__close = Journal.close
Journal.__gc = Journal.close

return M
