-- Runs a pipeline for each tenant concurrently on the loop: each tenant has
-- its own task, token, limiter, journal and results, and one tenant's failure
-- does not stop the others. Owns the order of a run (config, source, steps,
-- send, train, notify) and the exit status; what is sent and how belongs to
-- the sinks, what is dropped and why to the steps.
local cp = require "cogpipe"
local json = cp.json
local tenant_mod = require "cogpipe.tenant"
local journal_mod = require "cogpipe.journal"
local progress_mod = require "cogpipe.progress"
local report = require "cogpipe.report"

local M = {}

local REASONS = { "invalid", "duplicate", "conflict", "near", "semantic", "over_limit" }
M.REASONS = REASONS

-- ---- the per-tenant context ----------------------------------------------------

local Context = {}
Context.__index = Context

local function new_context(def, tenant, opts, shared)
  local stats = {
    submitted = 0, accepted = 0, present = 0, uploaded = 0, failed = 0, unknown = 0,
    rejected = {}, latencies = {}, requests = 0,
  }
  for _, r in ipairs(REASONS) do
    stats.rejected[r] = 0
  end
  return setmetatable({
    pipeline = def,
    tenant = tenant,
    opts = opts,
    dry_run = opts.dry_run and true or false,
    run_id = shared.run_id,
    state_dir = shared.state_dir,
    progress = shared.progress,
    audit = shared.audit,
    stats = stats,
    rejections = {},
    notes = {},
    existing = {},
    errors = {},
    training = nil,
    started = cp.now(),
  }, Context)
end

-- A record dropped for a reason the user must see (reason is one of REASONS).
function Context:reject(rec, reason, info)
  self.stats.rejected[reason] = (self.stats.rejected[reason] or 0) + 1
  local entry = { reason = reason, text = rec.text, intent = rec.intent, line = rec.line, file = rec.file }
  for k, v in pairs(info or {}) do
    entry[k] = v
  end
  self.rejections[#self.rejections + 1] = entry
  self:event("rejected", {
    reason = reason, intent = rec.intent, line = rec.line, text_hash = cp.hash(rec.text or ""),
    nearest = info and info.nearest, score = info and info.score,
  })
end

-- A record not sent because the platform already has it.
function Context:skip(_, why)
  if why == "present" then
    self.stats.present = self.stats.present + 1
  end
end

function Context:note(msg)
  self.notes[#self.notes + 1] = msg
end

-- A request the sink made, for latency figures and the audit log.
function Context:request_done(info)
  self.stats.requests = self.stats.requests + (info.attempts or 1)
  if info.elapsed then
    self.stats.latencies[#self.stats.latencies + 1] = info.elapsed * 1000
  end
  self:event("request", info)
end

function Context:event(name, fields)
  if self.audit then
    self.audit:record(name, fields, { tenant = self.tenant.name, pipeline = self.pipeline.name })
  end
end

function Context:sync()
  if self.audit then
    self.audit:sync()
  end
end

function Context:set_progress(fields)
  if self.progress then
    self.progress:update(self.tenant.name, fields)
  end
end

function Context:advance(n)
  if self.progress then
    self.progress:add(self.tenant.name, n)
  end
end

function Context:fail(err)
  self.errors[#self.errors + 1] = type(err) == "table" and (err.message or tostring(err)) or tostring(err)
end

-- ---- one tenant ------------------------------------------------------------------

local function copy_records(records)
  local out = {}
  for i, r in ipairs(records) do
    local c = {}
    for k, v in pairs(r) do
      c[k] = v
    end
    out[i] = c
  end
  return out
end

local function intents_of(records)
  local seen, list = {}, {}
  for _, r in ipairs(records) do
    if not seen[r.intent] then
      seen[r.intent] = true
      list[#list + 1] = r.intent
    end
  end
  table.sort(list)
  return list
end

local function run_tenant(def, ctx, records)
  local sink = def.sink
  ctx.stats.submitted = #records
  ctx:set_progress({ phase = "reading", total = #records, done = 0 })
  local jr, jerr = journal_mod.open(ctx.state_dir, ctx.tenant.name, def.name)
  if not jr then
    ctx:fail(jerr)
    return
  end
  ctx.journal = jr
  local ok, err = pcall(function()
    local opened, oerr = sink:open(ctx)
    if not opened then
      ctx:fail(oerr)
      return
    end
    ctx:set_progress({ phase = "existing" })
    local prepared, perr = sink:prepare(ctx, intents_of(records))
    if not prepared then
      ctx:fail(perr)
      return
    end
    ctx:set_progress({ phase = "filtering" })
    local kept = records
    for _, s in ipairs(def.steps) do
      kept = s.run(ctx, kept)
    end
    ctx.stats.accepted = #kept
    ctx.accepted = kept
    ctx:event("filtered", { accepted = #kept, rejected = ctx.stats.rejected, present = ctx.stats.present })
    ctx:sync()
    local plan = sink:plan(ctx, kept)
    ctx.plan = plan
    if ctx.dry_run then
      ctx:set_progress({ phase = "planned", total = #kept, done = #kept })
      return
    end
    ctx:set_progress({ phase = "uploading", total = #kept, done = 0 })
    sink:send(ctx, plan)
    ctx:sync()
    if sink.train and (ctx.stats.uploaded > 0 or ctx.plan.train_anyway) then
      ctx:set_progress({ phase = "training" })
      sink:train(ctx)
    end
  end)
  jr:close()
  if not ok then
    -- a bug in a step or sink: the tenant fails with the traceback kept
    ctx:fail(err)
  end
  if ctx.stats.failed > 0 or ctx.stats.unknown > 0 then
    ctx.remote_failure = true
  end
  if ctx.training and ctx.training.status ~= "done" then
    ctx.remote_failure = true
  end
  ctx:set_progress({ phase = (#ctx.errors > 0 or ctx.remote_failure) and "failed" or "done" })
end

-- ---- the run -----------------------------------------------------------------------

local function new_run_id()
  return cp.hash(string.format("%.9f:%d:%s", cp.now(), os.time(), tostring({})))
end

-- Runs def for every tenant in opts.tenants (default: sandbox). Returns the
-- exit status.
function M.run(def, opts, script_path)
  local specs = #opts.tenants > 0 and opts.tenants or { "sandbox" }
  local tenants = {}
  for _, spec in ipairs(specs) do
    local t, err = tenant_mod.load(spec, script_path)
    if not t then
      io.stderr:write("cogpipe: ", tostring(err.message or err), "\n")
      return 2
    end
    tenants[#tenants + 1] = t
  end

  local source, problems = def.source.read({ pipeline = def, opts = opts })
  if not source then
    report.problems(problems, def.source.path)
    return 3
  end

  local shared = {
    run_id = new_run_id(),
    state_dir = journal_mod.state_dir(opts.state_dir),
    progress = progress_mod.new({ disabled = opts.no_progress }),
  }
  local started = cp.now()
  local tasks, ctxs = {}, {}
  for i, t in ipairs(tenants) do
    local ctx = new_context(def, t, opts, shared)
    ctx.parsing = source.stats
    ctxs[i] = ctx
    tasks[i] = cp.spawn(run_tenant, def, ctx, copy_records(source.records))
  end
  for i, task in ipairs(tasks) do
    local _, err = cp.wait(task)
    if err then
      ctxs[i]:fail(err)
    end
  end
  shared.progress:finish()

  local summary = report.summary(def, ctxs, {
    run_id = shared.run_id, dry_run = opts.dry_run and true or false,
    duration = cp.now() - started, source = source.stats,
  })
  if opts.json then
    io.stdout:write(json.encode(summary), "\n")
  else
    report.print(summary, ctxs)
  end
  return summary.status == "ok" and 0 or 1
end

return M
