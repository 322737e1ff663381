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
local webhook = require "cogpipe.webhook"
local metrics = require "cogpipe.metrics"

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
    if name == "batch" then
      self.audit:sync() -- a batch boundary: what was sent is on disk before more is
    end
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

local function run_tenant(def, ctx, records, invalid)
  local sink = def.sink
  ctx.stats.submitted = #records + #invalid
  -- records the reader could not accept count as rejected, with where and why
  for _, p in ipairs(invalid) do
    ctx:reject({ line = p.line, file = p.file }, "invalid", { column = p.column, problem = p.reason, kind = p.kind })
  end
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
      ctx:set_progress({ phase = s.name })
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
  ctx:sync()
  if ctx.stats.failed > 0 or ctx.stats.unknown > 0 then
    ctx.remote_failure = true
  end
  if ctx.training and ctx.training.status ~= "done" then
    ctx.remote_failure = true
  end
  ctx:set_progress({ phase = (#ctx.errors > 0 or ctx.remote_failure) and "failed" or "done" })
end

-- ---- the run -----------------------------------------------------------------------

local function wants_webhooks(def)
  for _, n in ipairs(def.notify) do
    if n.kind == "webhooks" then
      return true
    end
  end
  return false
end

-- Deliveries a former run could not make go first, then this run's report.
local function flush_outbox(shared, t)
  if not t.webhooks or #t.webhooks == 0 then
    return
  end
  local r = webhook.flush_outbox({ state_dir = shared.state_dir, targets = t.webhooks, tenant = t.name,
    audit = shared.audit })
  if r and r.delivered and r.delivered > 0 then
    io.stderr:write(string.format("cogpipe: %s: delivered %d webhook(s) kept from an earlier run\n", t.name,
      r.delivered))
  end
end

local function notify(def, shared, summary, ctxs)
  if not wants_webhooks(def) or shared.dry_run then
    return
  end
  local tasks = {}
  for i, ctx in ipairs(ctxs) do
    local t = ctx.tenant
    if t.webhooks and #t.webhooks > 0 then
      tasks[#tasks + 1] = cp.spawn(function()
        local _, results = webhook.send(t.webhooks, metrics.webhook_body(summary, t.name), {
          state_dir = shared.state_dir, audit = shared.audit, tenant = t.name, pipeline = def.name,
        })
        for _, r in ipairs(results or {}) do
          if r.outcome ~= "delivered" then
            summary.tenants[i].webhooks_pending = (summary.tenants[i].webhooks_pending or 0) + 1
            io.stderr:write(string.format("cogpipe: %s: webhook to %s not delivered (%s)%s\n", t.name,
              tostring(r.url), tostring(r.error or r.outcome), r.queued and "; kept for the next run" or ""))
          end
        end
      end)
    end
  end
  if #tasks > 0 then
    cp.wait(table.unpack(tasks))
  end
end

local function open_audit(opts, run_id, def)
  if not opts.audit then
    return true
  end
  return cp.audit.open(opts.audit, { run_id = run_id, pipeline = def.name, fsync = opts.audit_fsync or "batch" })
end

-- Runs def for every tenant in opts.tenants (default: sandbox). Returns the
-- exit status.
function M.run(def, opts, script_path)
  local specs = #opts.tenants > 0 and opts.tenants or { "sandbox" }
  local tenants = {}
  for _, spec in ipairs(specs) do
    local t, secrets = tenant_mod.load(spec, script_path)
    if not t then
      io.stderr:write("cogpipe: ", tostring(secrets.message or secrets), "\n")
      return 2
    end
    -- before anything can be printed or logged
    for _, v in ipairs(secrets) do
      cp.secrets.add(v)
    end
    tenants[#tenants + 1] = t
  end

  local run_id = cp.audit.run_id()
  local audit, aerr = open_audit(opts, run_id, def)
  if not audit then
    io.stderr:write("cogpipe: audit log: ", aerr.message, "\n")
    return 2
  end
  audit = audit ~= true and audit or nil
  local shared = {
    run_id = run_id,
    state_dir = require("cogpipe.state").dir(opts.state_dir),
    progress = progress_mod.new({ disabled = opts.no_progress }),
    audit = audit,
    dry_run = opts.dry_run,
  }
  local names = {}
  for i, t in ipairs(tenants) do
    names[i] = t.name
  end
  if audit then
    audit:record("run_start", {
      script = script_path, tenants = json.array(names),
      options = { dry_run = opts.dry_run or false, audit_fsync = opts.audit_fsync or "batch" },
      input = { path = def.source.path, sha256 = cp.audit.sha256_file(def.source.path) },
    })
  end

  local source, problems = def.source.read({ pipeline = def, opts = opts })
  if not source then
    report.problems(problems, def.source.path)
    if audit then
      audit:record("validation_failed", { input = def.source.path,
        problems = type(problems) == "table" and (problems.problem_count or 0) or 0 })
      audit:record("run_end", { status = "invalid", exit = 3 })
      audit:close()
    end
    return 3
  end
  if audit then
    audit:record("validated", { input = def.source.path, records = #source.records,
      invalid = #(source.invalid or {}), lines = source.stats.lines })
  end

  if not opts.dry_run then
    for _, t in ipairs(tenants) do
      flush_outbox(shared, t)
    end
  end

  local started = cp.now()
  local tasks, ctxs = {}, {}
  for i, t in ipairs(tenants) do
    local ctx = new_context(def, t, opts, shared)
    ctx.parsing = source.stats
    ctxs[i] = ctx
    tasks[i] = cp.spawn(run_tenant, def, ctx, copy_records(source.records), source.invalid or {})
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
  notify(def, shared, summary, ctxs)
  if opts.metrics_file then
    local ok, merr = metrics.write_prometheus(opts.metrics_file, summary)
    if not ok then
      io.stderr:write("cogpipe: metrics file: ", tostring(merr and merr.message or merr), "\n")
    end
  end
  if audit then
    audit:record("run_end", { status = summary.status, summary = summary })
    audit:close()
  end
  if opts.json then
    io.stdout:write(json.encode(cp.secrets.redact(summary)), "\n")
  else
    report.print(cp.secrets.redact(summary), ctxs)
  end
  return summary.status == "ok" and 0 or 1
end

return M
