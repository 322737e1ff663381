-- Runs a pipeline for each tenant concurrently on the loop: each tenant has
-- its own task, token, limiter, journal and results, and one tenant's failure
-- does not stop the others. Owns the order of a run (config, source, what
-- to prune, steps, send, read-back, train, notify) and the exit status;
-- what is sent and how belongs to the sinks, what is dropped and why to the
-- steps. A prune deletes only where the target can, and never more of an
-- intent than the user allowed. A run re-reads what it changed: what the
-- platform said it stored and does not hold fails the run. Whatever must be
-- on disk (audit log, journal, outbox, metrics file, report) and could not
-- be written stops the sending and fails the run: a run never says ok with
-- a record lost.
local cp = require "cogpipe"
local json = cp.json
local tenant_mod = require "cogpipe.tenant"
local journal_mod = require "cogpipe.journal"
local progress_mod = require "cogpipe.progress"
local report = require "cogpipe.report"
local webhook = require "cogpipe.webhook"
local metrics = require "cogpipe.metrics"

local M = {}

local REASONS = report.REASONS
M.REASONS = REASONS

-- Training that ended so fails the run. "triggered" (the platform took the
-- job; the contract defines no way to follow it), "unavailable" (the
-- tenant's status URL answered 404) and "skipped" (an upload of the run
-- failed, so the locale was not trained; the upload's failure is what
-- fails the run) do not.
M.TRAINING_FAILED = { error = true, cancelled = true, timeout = true }

-- ---- the per-tenant context ----------------------------------------------------

local Context = {}
Context.__index = Context

local function new_context(def, tenant, opts, shared)
  local stats = {
    submitted = 0, accepted = 0, present = 0, uploaded = 0, failed = 0, unknown = 0,
    pruned = 0, prune_failed = 0, rejected = {}, latencies = {}, requests = 0,
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
    input = {}, -- lines, blank and unique texts of the source (report.counts)
    notes = {},
    existing = {},
    errors = {},
    training = nil,
    started = cp.now(),
    by_intent = {}, -- intent -> {present, rejected = {reason -> n}}
    sent = {}, -- intent -> records the platform said it stored
    sent_ids = {}, -- the platform ids of the intents it stored records of, in order
    sent_seen = {}, -- the same as a set
    pruned_items = {}, -- intent -> sentences the platform said it deleted
  }, Context)
end

-- A context for a command that talks to a tenant's platform outside a
-- pipeline run (export, undo): def names what the audit and journal call
-- it; shared as M.run builds it (run_id, state_dir, progress, audit, ctxs).
function M.context(def, tenant, opts, shared)
  local ctx = new_context(def, tenant, opts, shared)
  shared.ctxs[#shared.ctxs + 1] = ctx
  return ctx
end

local function counts(ctx, intent)
  local c = ctx.by_intent[intent or "?"]
  if not c then
    c = { present = 0, rejected = {} }
    ctx.by_intent[intent or "?"] = c
  end
  return c
end

-- A record dropped for a reason the user must see (reason is one of REASONS).
function Context:reject(rec, reason, info)
  self.stats.rejected[reason] = (self.stats.rejected[reason] or 0) + 1
  if rec.intent then
    local c = counts(self, rec.intent)
    c.rejected[reason] = (c.rejected[reason] or 0) + 1
  end
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
function Context:skip(rec, why)
  if why == "present" then
    self.stats.present = self.stats.present + 1
    local c = counts(self, rec.intent)
    c.present = c.present + 1
  end
end

-- Records of an intent the platform said it stored; platform_id: the
-- intent's id there (webhooks name it as intent_id).
function Context:uploaded(intent, records, platform_id)
  if platform_id and not self.sent_seen[platform_id] then
    self.sent_seen[platform_id] = true
    self.sent_ids[#self.sent_ids + 1] = platform_id
  end
  local list = self.sent[intent] or {}
  self.sent[intent] = list
  table.move(records, 1, #records, #list + 1, list)
  self.stats.uploaded = self.stats.uploaded + #records
  self:advance(#records)
end

-- Sentences of an intent the platform said it deleted.
function Context:pruned(intent, items)
  local list = self.pruned_items[intent] or {}
  self.pruned_items[intent] = list
  table.move(items, 1, #items, #list + 1, list)
  self.stats.pruned = self.stats.pruned + #items
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

-- A file a request sends from disk (a dataset, an import), in the state
-- directory's tmp/: its path, or nil when it could not be written, which
-- stops the tenant (what was to be sent is not on disk).
function Context:temp_file(name, content)
  local dir = self.state_dir .. "/tmp"
  local path = dir .. "/" .. name
  local ok, err = cp.fs.mkdir(dir)
  if ok then
    ok, err = cp.fs.write_atomic(path, content)
  end
  if not ok then
    self:stop(err)
    return nil
  end
  return path
end

function Context:sync()
  if self.audit then
    self.audit:sync()
  end
end

-- ---- the audit log of a run ---------------------------------------------------------

-- The run's audit log as the run writes it: the first record or sync that
-- fails stops every tenant (nothing more is sent) and fails the run; later
-- records are not attempted, so the log ends at the last record that is
-- whole on disk.
local Audit = {}
Audit.__index = Audit

local function guard_audit(log, shared)
  return setmetatable({ log = log, shared = shared }, Audit)
end

function Audit:failed(err)
  if self.error then
    return
  end
  self.error = { kind = "io", message = "audit log " .. tostring(err and err.message or err) }
  for _, ctx in ipairs(self.shared.ctxs) do
    ctx:stop(self.error)
  end
end

function Audit:record(name, fields, meta)
  if self.error then
    return nil, self.error
  end
  local ok, err = self.log:record(name, fields, meta)
  if not ok then
    self:failed(err)
  end
  return ok, err
end

function Audit:sync()
  if self.error then
    return nil, self.error
  end
  local ok, err = self.log:sync()
  if not ok then
    self:failed(err)
  end
  return ok, err
end

function Audit:head()
  return self.log:head()
end

function Audit:close()
  local ok, err = self.log:close()
  if not ok then
    self:failed(err)
  end
  return self.error == nil, self.error
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

-- An error of the tenant's run. A request the tenant never sent because
-- it had stopped (see Context:stop) adds nothing: its cause is reported once.
function Context:fail(err)
  if type(err) == "table" and (err.kind == "stopped" or (err.kind == "auth" and self.stopped)) then
    return
  end
  self.errors[#self.errors + 1] = type(err) == "table" and (err.message or tostring(err)) or tostring(err)
end

-- The tenant cannot go on (its credentials were refused): one error, and
-- no request of the tenant is sent from now on.
function Context:stop(err)
  if self.stopped then
    return
  end
  self:fail(err)
  self.stopped = err
  self:event("stopped", { kind = err.kind, message = err.message })
end

-- A request failed: the error, unless it is the stop already reported.
function Context:request_failed(what, err)
  if err.kind == "stopped" or (err.kind == "auth" and self.stopped) then
    return
  end
  self:fail(string.format("%s: %s", what, tostring(err.message)))
end

-- ---- one tenant ------------------------------------------------------------------

-- Runs one step, whose function the pipeline file wrote: an error in it, or
-- a result that is not a list of records, names the step and where the
-- pipeline defines it.
function M.run_step(step, ctx, records)
  local ok, kept = xpcall(step.run, debug.traceback, ctx, records)
  local info = debug.getinfo(step.run, "S")
  local where = string.format("%s:%d", info.short_src, info.linedefined)
  if not ok then
    if type(kept) == "table" then
      error(kept, 0) -- an error value a step raised on purpose (err.kind)
    end
    error(string.format("step '%s' (%s) failed: %s", step.name, where, tostring(kept)), 0)
  end
  if type(kept) ~= "table" then
    error(string.format("step '%s' (%s) returned %s: a step returns the list of records it keeps", step.name,
      where, type(kept)), 0)
  end
  return kept
end

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

local function key(text)
  return cp.dedupe.normalize(text, "casefold")
end

local function sorted_keys(t)
  local list = {}
  for k in pairs(t) do
    list[#list + 1] = k
  end
  table.sort(list)
  return list
end

-- What the target is called in a message.
local function api_of(sink)
  return sink.api or (sink.name == "dataset" and "the dataset upload API") or tostring(sink.name)
end
M.api_of = api_of

local function percent(n, of)
  return string.format("%.1f%%", of > 0 and n * 100 / of or 0)
end

-- What a prune would delete: the sentences of the tenant's locale that the
-- platform holds (ctx.held) and the source does not -- compared as the
-- exact step compares, after case folding, with every record of the source,
-- rejected ones included -- per intent {intent, items, held}; and the
-- reasons it is refused: an intent would lose more than --prune-max percent
-- (default 10) of its sentences, or all of them, and is not named by
-- --prune-allow. nil, reason when no prune can be planned at all.
local function plan_prune(ctx, records, invalid)
  if #invalid > 0 then
    local p = invalid[1]
    return nil, string.format("--prune needs every line of the source read, so that what it holds is known: %d "
      .. "line(s) could not be read (first %s:%s: %s)", #invalid, tostring(p.file), tostring(p.line),
      tostring(p.problem or p.reason or "?"))
  end
  local keep = {}
  for _, r in ipairs(records) do
    keep[r.intent] = keep[r.intent] or {}
    keep[r.intent][key(r.text)] = true
  end
  local allowed = {}
  for _, label in ipairs(ctx.opts.prune_allow or {}) do
    allowed[label] = true
  end
  local max = ctx.opts.prune_max or 10
  local locale = ctx.pipeline.sink:locale(ctx)
  local prune, over = {}, {}
  for _, label in ipairs(sorted_keys(ctx.held or {})) do
    local mine, gone = 0, {}
    for _, item in ipairs(ctx.held[label].items or {}) do
      -- a sentence of another locale is not this source's to judge
      if item.locale == nil or item.locale == locale then
        mine = mine + 1
        if not (keep[label] and keep[label][key(item.text)]) then
          gone[#gone + 1] = item
        end
      end
    end
    if #gone > 0 then
      prune[#prune + 1] = { intent = label, items = gone, held = mine }
      if allowed[label] then
        allowed[label] = nil
      elseif #gone == mine then
        over[#over + 1] = string.format("intent %s would be emptied (all %d sentence(s))", label, mine)
      elseif #gone * 100 > max * mine then
        over[#over + 1] = string.format("intent %s would lose %d of %d sentences (%s)", label, #gone, mine,
          percent(#gone, mine))
      end
    end
  end
  return prune, over
end

local function refuse_prune(ctx, reasons)
  local msg = string.format("prune refused, nothing was sent: %s. A prune may take at most %s%% of an intent "
    .. "(--prune-max PERCENT) and empty none; --prune-allow INTENT lets a named intent go further",
    table.concat(reasons, "; "), tostring(ctx.opts.prune_max or 10))
  ctx.prune_refused = msg
  ctx.config_error = true
  ctx:fail(msg)
  ctx:event("prune_refused", { reasons = json.array(reasons) })
end

local function texts_of(list, n)
  local out = {}
  for i = 1, math.min(#list, n) do
    out[i] = string.format("%q", list[i].text)
  end
  if #list > n then
    out[#out + 1] = string.format("and %d more", #list - n)
  end
  return table.concat(out, ", ")
end

-- Re-reads every intent the run changed: each sentence the platform said it
-- stored must be there, each it said it deleted gone. What is not so fails
-- the run, with the texts; the journal forgets what was never stored (the
-- next run sends it again) and keeps the ids of what a v2 run created
-- (PATCH answers carry counts only, and an undo needs them).
local function read_back(ctx, sink)
  local changed = {}
  for label in pairs(ctx.sent) do
    changed[label] = true
  end
  for label in pairs(ctx.pruned_items) do
    changed[label] = true
  end
  local labels = sorted_keys(changed)
  if not sink.read_back or #labels == 0 or ctx.stopped then
    return
  end
  ctx:set_progress({ phase = "read-back" })
  local read, err = sink:read_back(ctx, labels)
  if not read then
    ctx.readback_failed = true
    ctx:fail("read-back of what was sent: " .. tostring(err.message))
    return
  end
  local rows, lost, problems = json.array(), {}, {}
  ctx.readback_missing = 0
  for _, label in ipairs(labels) do
    local have, sent = read[label], ctx.sent[label] or {}
    local before = {}
    for _, item in ipairs((ctx.held and ctx.held[label] or {}).items or {}) do
      before[item.id or false] = true
    end
    local by_text, ids = {}, {}
    for _, item in ipairs(have.items or {}) do
      if item.id and not before[item.id] then
        by_text[item.text] = by_text[item.text] or item.id
      end
      ids[item.id or false] = true
    end
    local missing, found = {}, json.array()
    for _, r in ipairs(sent) do
      if not have.keys[key(r.text)] then
        missing[#missing + 1] = r
        lost[#lost + 1] = r
      elseif by_text[r.text] then
        found[#found + 1] = { text = r.text, id = by_text[r.text] }
      end
    end
    local still = {}
    for _, item in ipairs(ctx.pruned_items[label] or {}) do
      if ids[item.id] then
        still[#still + 1] = item
      end
    end
    local row = { intent = label, sent = #sent, held = #sent - #missing, missing = json.array(),
      pruned = #(ctx.pruned_items[label] or {}), still_there = json.array() }
    for i, r in ipairs(missing) do
      row.missing[i] = r.text
    end
    for i, item in ipairs(still) do
      row.still_there[i] = item.text
    end
    rows[#rows + 1] = row
    ctx.readback_missing = ctx.readback_missing + #missing + #still
    if #missing > 0 then
      problems[#problems + 1] = string.format("intent %s: the platform holds %d of %d sent; missing %s", label,
        row.held, row.sent, texts_of(missing, 10))
    end
    if #still > 0 then
      problems[#problems + 1] = string.format("intent %s: %d sentence(s) the platform said it deleted are still "
        .. "there: %s", label, #still, texts_of(still, 10))
    end
    if sink.can_delete and #found > 0 then
      ctx.journal:ids(label, found)
    end
  end
  ctx.readback = rows
  ctx:event("read_back", { intents = #rows, missing = ctx.readback_missing })
  for _, p in ipairs(problems) do
    ctx:fail("read-back: " .. p)
  end
  if #lost > 0 and sink.lost then
    sink:lost(ctx, lost)
  end
end

M.read_back = read_back

-- How the pipeline's exact step compares texts (casefold unless it says
-- otherwise): the unique texts of the summary are counted the same way.
local function exact_key(def)
  for _, s in ipairs(def.steps) do
    if s.name == "exact" then
      return s.opts.key or "casefold"
    end
  end
  return "casefold"
end

-- Distinct texts among the records the steps did not reject as invalid,
-- as the exact step compares them (report.counts' `unique`).
local function unique_texts(ctx, records)
  local invalid = {}
  for _, r in ipairs(ctx.rejections) do
    if r.reason == "invalid" then
      invalid[tostring(r.file) .. "\0" .. tostring(r.line)] = true
    end
  end
  local mode, seen, n = exact_key(ctx.pipeline), {}, 0
  for _, r in ipairs(records) do
    if not invalid[tostring(r.file) .. "\0" .. tostring(r.line)] then
      local k = cp.dedupe.normalize(r.text, mode)
      if not seen[k] then
        seen[k] = true
        n = n + 1
      end
    end
  end
  return n
end

local function run_tenant(def, ctx, records, invalid)
  local sink = def.sink
  -- every record once, valid or not: lines - blank (report.counts)
  ctx.stats.submitted = #records + #invalid
  -- records the reader could not accept count as rejected, with where and why
  for _, p in ipairs(invalid) do
    local more
    if p.problems and #p.problems > 1 then
      more = json.array()
      for i, q in ipairs(p.problems) do
        more[i] = string.format("%s:%s: %s", tostring(q.line), tostring(q.column), tostring(q.reason))
      end
    end
    ctx:reject({ line = p.line, file = p.file }, "invalid", { column = p.column, problem = p.reason, kind = p.kind,
      problems = more })
  end
  if ctx.opts.prune and not sink.can_delete then
    ctx.config_error = true
    ctx:fail(string.format("--prune: %s has no delete operation, so nothing can be pruned there; prune works with "
      .. "the v2 sentences API (pipeline.sink.v2_sentences)", api_of(sink)))
    return
  end
  ctx:set_progress({ phase = "reading", total = ctx.stats.submitted, done = 0, of = "submitted" })
  local jr, jerr = journal_mod.open(ctx.state_dir, ctx.tenant.name, def.name, function(err)
    ctx:stop(err) -- what is sent must be in the journal first
  end)
  if not jr then
    ctx:fail(jerr)
    return
  end
  jr.run_id = ctx.run_id
  ctx.journal = jr
  local ok, err = pcall(function()
    local opened, oerr = sink:open(ctx)
    if not opened then
      -- a tenant setting this target cannot work with: nothing was sent
      ctx.config_error = type(oerr) == "table" and oerr.kind == "config"
      ctx:fail(oerr)
      return
    end
    ctx:set_progress({ phase = "existing" })
    local prepared, perr = sink:prepare(ctx, intents_of(records))
    if not prepared then
      ctx:fail(perr)
      return
    end
    if ctx.opts.prune then
      local prune, over = plan_prune(ctx, records, invalid)
      if not prune then
        refuse_prune(ctx, { over })
      else
        if #over > 0 then
          refuse_prune(ctx, over)
        end
        sink:set_prune(ctx, prune)
        ctx.prune_plan = prune
      end
    end
    ctx:set_progress({ phase = "filtering" })
    local kept = records
    for _, s in ipairs(def.steps) do
      ctx:set_progress({ phase = s.name })
      kept = M.run_step(s, ctx, kept)
    end
    ctx.stats.accepted = #kept
    ctx.accepted = kept
    ctx.input.unique = unique_texts(ctx, records)
    ctx:event("filtered", { accepted = #kept, rejected = ctx.stats.rejected, present = ctx.stats.present })
    ctx:sync()
    local plan = sink:plan(ctx, kept)
    ctx.plan = plan
    if ctx.dry_run then
      ctx:set_progress({ phase = "planned", total = #kept, done = #kept, of = "accepted" })
      return
    end
    if ctx.stopped or ctx.prune_refused then
      return
    end
    ctx:set_progress({ phase = "uploading", total = #kept, done = 0, of = "accepted" })
    sink:send(ctx, plan)
    ctx:sync()
    read_back(ctx, sink)
    ctx:sync()
    if sink.train and (ctx.stats.uploaded > 0 or ctx.stats.pruned > 0 or ctx.plan.train_anyway) then
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
  if ctx.stats.failed > 0 or ctx.stats.unknown > 0 or ctx.stats.prune_failed > 0 or (ctx.readback_missing or 0) > 0
      or ctx.readback_failed then
    ctx.remote_failure = true
  end
  if ctx.training and M.TRAINING_FAILED[ctx.training.status] then
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

-- A failure of the run as a whole (a file it had to write): every tenant's
-- status says so, and so does the exit status.
local function fail_run(summary, message)
  summary.status = "failed"
  summary.errors = summary.errors or json.array()
  summary.errors[#summary.errors + 1] = message
  for _, t in ipairs(summary.tenants) do
    t.status = "failed"
    t.errors[#t.errors + 1] = message
  end
  io.stderr:write("cogpipe: ", message, "\n")
end

local function notify(def, shared, summary, ctxs)
  if not wants_webhooks(def) or shared.dry_run then
    return
  end
  local tasks, lost = {}, {}
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
            if r.outcome == "retry" and not r.queued then
              lost[#lost + 1] = string.format("%s: a webhook delivery could not be kept in the outbox (%s)",
                t.name, tostring(r.error))
            end
          end
        end
      end)
    end
  end
  if #tasks > 0 then
    cp.wait(table.unpack(tasks))
  end
  for _, message in ipairs(lost) do
    fail_run(summary, message)
  end
end

local function open_audit(opts, run_id, def)
  if not opts.audit then
    return true
  end
  return cp.audit.open(opts.audit, { run_id = run_id, pipeline = def.name, fsync = opts.audit_fsync or "batch" })
end

-- The point the audit chain has reached, for the summary, the metrics and
-- the webhook body: whoever keeps them can tell later whether records were
-- cut from the end of the log.
local function anchor(shared)
  if not shared.audit then
    return nil
  end
  local h = shared.audit:head()
  return h and { path = h.path, head_path = h.head_path, seq = h.seq, hash = h.hash, records = h.records } or nil
end

-- The tenants of opts.tenants, checked for what pipeline def reads, their
-- secrets registered before anything can be printed or logged; nil and the
-- exit status (2) after saying why one cannot be loaded. There is no
-- default tenant: a run against the wrong platform is worse than none.
function M.tenants(opts, script_path, def)
  if #(opts.tenants or {}) == 0 then
    io.stderr:write("cogpipe: ", opts.command or "run", ": a pipeline needs --tenant NAME|FILE (e.g. --tenant ",
      "sandbox for the local emulator; cogpipe init writes a tenant file)\n")
    return nil, 2
  end
  local tenants = {}
  for _, spec in ipairs(opts.tenants) do
    local t, secrets = tenant_mod.load(spec, script_path, def)
    if not t then
      io.stderr:write("cogpipe: ", tostring(secrets.message or secrets), "\n")
      return nil, 2
    end
    for _, v in ipairs(secrets) do
      cp.secrets.add(v)
    end
    tenants[#tenants + 1] = t
  end
  return tenants
end

-- What the tenants of a run share: its id, state directory, progress and
-- audit log (opts.audit; guarded: the first record that fails stops every
-- tenant). nil and the exit status when the log cannot be opened.
function M.shared(def, opts)
  local run_id = cp.audit.run_id()
  local log, aerr = open_audit(opts, run_id, def)
  if not log then
    io.stderr:write("cogpipe: audit log: ", aerr.message, "\n")
    return nil, 2
  end
  local shared = {
    run_id = run_id,
    state_dir = require("cogpipe.state").dir(opts.state_dir),
    progress = progress_mod.new({ disabled = opts.no_progress }),
    dry_run = opts.dry_run,
    ctxs = {},
  }
  shared.log = log ~= true and log or nil
  shared.audit = shared.log and guard_audit(log, shared) or nil
  return shared
end

-- The summary as the audit log keeps it at run_end: the lists a plan
-- shows in full (texts to add and delete, every rejection) left to the
-- plan's own output.
local function audit_summary(summary)
  local copy = {}
  for k, v in pairs(summary) do
    copy[k] = v
  end
  copy.tenants = json.array()
  for i, t in ipairs(summary.tenants) do
    local c = {}
    for k, v in pairs(t) do
      c[k] = v
    end
    c.changes = nil
    c.rejections = json.array({ table.unpack(t.rejections, 1, math.min(#t.rejections, 200)) })
    copy.tenants[i] = c
  end
  return copy
end

-- Runs def for every tenant in opts.tenants. Returns the exit status.
function M.run(def, opts, script_path)
  local tenants, code = M.tenants(opts, script_path, def)
  if not tenants then
    return code
  end
  local snap
  if opts.snapshot then
    local serr
    snap, serr = require("cogpipe.snapshot").read(opts.snapshot)
    if not snap then
      io.stderr:write("cogpipe: ", serr.message, "\n")
      return 2
    end
  end

  local shared, scode = M.shared(def, opts)
  if not shared then
    return scode
  end
  local audit, log = shared.audit, shared.log
  local names = {}
  for i, t in ipairs(tenants) do
    names[i] = t.name
  end
  if audit then
    local ok, err = audit:record("run_start", {
      script = script_path, tenants = json.array(names),
      options = { dry_run = opts.dry_run or false, audit_fsync = opts.audit_fsync or "batch" },
      input = { path = def.source.path, sha256 = cp.audit.sha256_file(def.source.path) },
    })
    if ok then
      ok, err = audit:sync()
    end
    if not ok then
      -- nothing was done yet: nothing is done at all
      io.stderr:write("cogpipe: audit log ", tostring(err.message), "; nothing was sent\n")
      log:close()
      return 1
    end
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
      invalid = #(source.invalid or {}), lines = source.stats.lines, blank = source.stats.blank_lines })
  end

  local started = cp.now()
  local tasks, ctxs = {}, shared.ctxs
  for i, t in ipairs(tenants) do
    local ctx = new_context(def, t, opts, shared)
    ctx.input = { lines = source.stats.lines, blank = source.stats.blank_lines }
    ctx.snapshot = snap
    ctxs[i] = ctx
    if audit and audit.error then
      ctx:stop(audit.error) -- the log failed before the tenant started
    end
  end
  if not opts.dry_run then
    for _, t in ipairs(tenants) do
      flush_outbox(shared, t)
    end
  end
  for i, ctx in ipairs(ctxs) do
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
  if audit and audit.error then
    fail_run(summary, audit.error.message)
  end
  -- Written in this order so that each carries the anchor of the audit
  -- chain as far as it goes when it is written.
  summary.audit = anchor(shared)
  if opts.metrics_file then
    local ok, merr = metrics.write_prometheus(opts.metrics_file, summary)
    if not ok then
      fail_run(summary, "metrics file " .. opts.metrics_file .. ": " .. tostring(merr and merr.message or merr))
    end
  end
  notify(def, shared, summary, ctxs)
  if audit then
    local was_ok = audit.error == nil
    audit:record("run_end", { status = summary.status, summary = audit_summary(summary) })
    local final = anchor(shared)
    audit:close()
    if was_ok and audit.error then
      fail_run(summary, audit.error.message)
    end
    summary.audit = final or summary.audit
  end
  if opts.report then
    -- after the log is closed, so that it shows where the chain ends
    local all = {}
    for i, ctx in ipairs(ctxs) do
      all[i] = cp.secrets.redact(ctx.rejections)
    end
    local ok, rerr = require("cogpipe.report_html").write(opts.report, cp.secrets.redact(summary), all)
    if not ok then
      fail_run(summary, "report " .. opts.report .. ": " .. tostring(rerr and rerr.message or rerr))
    end
  end
  if opts.json then
    io.stdout:write(json.encode(cp.secrets.redact(summary)), "\n")
  else
    report.print(cp.secrets.redact(summary))
  end
  for _, ctx in ipairs(ctxs) do
    if ctx.config_error then
      return 2
    end
  end
  return summary.status == "ok" and 0 or 1
end

return M
