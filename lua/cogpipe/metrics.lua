-- Run metrics: counts per tenant (submitted, accepted, rejected by reason,
-- uploaded, failed, unknown), request latency, parsing success rate and
-- training, gathered during a run; the summary for --json and webhooks
-- (with the field names receivers of the original workflows parse), and
-- the Prometheus text exposition for node_exporter's textfile collector.
-- Decides nothing about the data and sends nothing.
--
--   local m = metrics.new{ pipeline = "intents", run_id = id, workflow = "intent" }
--   m:add("acme", "submitted", 120); m:reject("acme", "duplicate")
--   m:latency("acme", 0.183); m:retrain("acme", { job_id = "j1", status = "done" })
--   m:finish()                         -- status derived, or m:finish{status = "failed"}
--   local s = m:summary()              -- also metrics.webhook_body(s, "acme")
--   m:write_prometheus("/var/lib/node_exporter/textfile/cogpipe.prom")
local cp = require "cogpipe"
local json = cp.json

local M = {}

M.REASONS = { "invalid", "duplicate", "near", "semantic", "conflict", "over_limit" }
M.COUNTS = { "submitted", "accepted", "present", "uploaded", "failed", "unknown", "requests" }

local is_reason, is_count = {}, {}
for _, r in ipairs(M.REASONS) do
  is_reason[r] = true
end
for _, c in ipairs(M.COUNTS) do
  is_count[c] = true
end

local Metrics = {}
Metrics.__index = Metrics

function M.new(opts)
  opts = opts or {}
  if opts.pipeline ~= nil and type(opts.pipeline) ~= "string" then
    error("metrics.new: pipeline must be a string", 2)
  end
  return setmetatable({
    pipeline = opts.pipeline or "pipeline",
    run_id = opts.run_id,
    workflow = opts.workflow,
    started = cp.now(),
    started_at = cp.audit.timestamp(),
    started_unix = os.time(),
    tenants = {},
    order = {},
  }, Metrics)
end

-- The accumulator of one tenant, made on first use.
function Metrics:tenant(name)
  if type(name) ~= "string" or name == "" then
    error("metrics: a tenant name is required", 3)
  end
  local t = self.tenants[name]
  if not t then
    t = { name = name, rejected = {}, latencies = {}, job_ids = {}, task_ids = {}, intent_ids = {}, started = cp.now() }
    for _, c in ipairs(M.COUNTS) do
      t[c] = 0
    end
    for _, r in ipairs(M.REASONS) do
      t.rejected[r] = 0
    end
    self.tenants[name] = t
    self.order[#self.order + 1] = name
  end
  return t
end

local function check_n(n, what)
  n = n or 1
  if math.type(n) ~= "integer" or n < 0 then
    error(string.format("metrics: %s needs a whole number >= 0", what), 3)
  end
  return n
end

-- Adds n (default 1) to a count: submitted, accepted, present, uploaded,
-- failed, unknown, requests.
function Metrics:add(tenant, key, n)
  if not is_count[key] then
    error(string.format("metrics: unknown count '%s'", tostring(key)), 2)
  end
  local t = self:tenant(tenant)
  t[key] = t[key] + check_n(n, key)
end

-- Counts n (default 1) examples rejected for reason (one of M.REASONS).
function Metrics:reject(tenant, reason, n)
  if not is_reason[reason] then
    error(string.format("metrics: unknown rejection reason '%s'", tostring(reason)), 2)
  end
  local t = self:tenant(tenant)
  t.rejected[reason] = t.rejected[reason] + check_n(n, reason)
end

-- Records the latency of one request, in seconds.
function Metrics:latency(tenant, seconds)
  if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
    error("metrics: latency needs seconds >= 0", 2)
  end
  local l = self:tenant(tenant).latencies
  l[#l + 1] = seconds
end

-- Parsing success rate: unique non-blank lines / all lines x 100.
function Metrics:parsing(tenant, unique, total)
  local t = self:tenant(tenant)
  check_n(unique, "parsing")
  check_n(total, "parsing")
  t.parsing_success_rate = total > 0 and unique / total * 100 or 100.0
end

-- Remembers what the workflow names: dataset_id, intent_id (repeatable).
function Metrics:set(tenant, key, value)
  local t = self:tenant(tenant)
  if key == "intent_id" then
    t.intent_ids[#t.intent_ids + 1] = value
  elseif key == "dataset_id" or key == "parsing_success_rate" then
    t[key] = value
  else
    error(string.format("metrics: unknown setting '%s'", tostring(key)), 2)
  end
end

-- Training: a job or task id (each kept once) and the latest status.
function Metrics:retrain(tenant, info)
  local t = self:tenant(tenant)
  local function keep(list, v)
    if v == nil then
      return
    end
    for _, x in ipairs(list) do
      if x == v then
        return
      end
    end
    list[#list + 1] = v
  end
  keep(t.job_ids, info.job_id)
  keep(t.task_ids, info.task_id)
  if info.status then
    t.training_status = info.status
  end
end

-- Marks a tenant failed (an error the counts do not show).
function Metrics:fail(tenant, message)
  local t = self:tenant(tenant)
  t.errors = t.errors or {}
  t.errors[#t.errors + 1] = message
end

-- Ends the run: the time it took and its status (given, or derived: a
-- tenant with failed or unknown examples, errors or training that did not
-- end "done" fails the run).
function Metrics:finish(opts)
  opts = opts or {}
  self.duration = cp.now() - self.started
  self.finished_at = cp.audit.timestamp()
  self.finished_unix = os.time()
  for _, name in ipairs(self.order) do
    local t = self.tenants[name]
    t.duration = t.duration or (cp.now() - t.started)
  end
  self.status = opts.status
end

-- ---- the summary --------------------------------------------------------------------

local function quantile(sorted, q)
  if #sorted == 0 then
    return 0
  end
  return sorted[math.max(1, math.ceil(q * #sorted))]
end

local function ms(seconds)
  return math.floor(seconds * 1000 + 0.5)
end

local function tenant_status(t)
  if (t.errors and #t.errors > 0) or t.failed > 0 or t.unknown > 0 then
    return "failed"
  end
  if t.training_status and t.training_status ~= "done" then
    return "failed"
  end
  return "ok"
end

local function tenant_summary(self, t)
  local sorted = table.move(t.latencies, 1, #t.latencies, 1, {})
  table.sort(sorted)
  local sum = 0
  for _, v in ipairs(sorted) do
    sum = sum + v
  end
  local rejected = 0
  local by_reason = {}
  for _, r in ipairs(M.REASONS) do
    by_reason[r] = t.rejected[r]
    rejected = rejected + t.rejected[r]
  end
  local s = {
    tenant = t.name,
    pipeline = self.pipeline,
    status = tenant_status(t),
    submitted = t.submitted, accepted = t.accepted, present = t.present,
    rejected = rejected, rejected_by_reason = by_reason,
    uploaded = t.uploaded, failed = t.failed, unknown = t.unknown, requests = t.requests,
    latency_ms = {
      p50 = ms(quantile(sorted, 0.5)), p95 = ms(quantile(sorted, 0.95)), max = ms(sorted[#sorted] or 0),
      count = #sorted, sum = ms(sum),
    },
    latency_seconds = { p50 = quantile(sorted, 0.5), p95 = quantile(sorted, 0.95), max = sorted[#sorted] or 0,
      count = #sorted, sum = sum },
    duration_s = math.floor((t.duration or (cp.now() - t.started)) * 1000 + 0.5) / 1000,
    parsing_success_rate = t.parsing_success_rate,
    dataset_id = t.dataset_id,
    intent_ids = json.array(table.move(t.intent_ids, 1, #t.intent_ids, 1, {})),
    errors = json.array(table.move(t.errors or {}, 1, #(t.errors or {}), 1, {})),
  }
  if #t.job_ids > 0 or #t.task_ids > 0 or t.training_status then
    s.training = {
      job_ids = json.array(table.move(t.job_ids, 1, #t.job_ids, 1, {})),
      task_ids = json.array(table.move(t.task_ids, 1, #t.task_ids, 1, {})),
      retrain_job_id = t.job_ids[#t.job_ids],
      task_id = t.task_ids[#t.task_ids],
      status = t.training_status,
    }
  end
  return s
end

-- The run's summary: { pipeline, run_id, status, started_at, finished_at,
-- timestamp (Unix seconds of the end), duration_s, totals = {...}, tenants
-- = array of per-tenant summaries }. Totals add the counts; their latency
-- quantiles are over every request of the run; their parsing success rate
-- is the tenants' mean.
function Metrics:summary()
  local tenants = json.array()
  local all = { name = "*", rejected = {}, latencies = {}, job_ids = {}, task_ids = {}, intent_ids = {},
    started = self.started, duration = self.duration }
  for _, c in ipairs(M.COUNTS) do
    all[c] = 0
  end
  for _, r in ipairs(M.REASONS) do
    all.rejected[r] = 0
  end
  local rate_sum, rates = 0, 0
  local status = "ok"
  for i, name in ipairs(self.order) do
    local t = self.tenants[name]
    tenants[i] = tenant_summary(self, t)
    if tenants[i].status ~= "ok" then
      status = "failed"
    end
    for _, c in ipairs(M.COUNTS) do
      all[c] = all[c] + t[c]
    end
    for _, r in ipairs(M.REASONS) do
      all.rejected[r] = all.rejected[r] + t.rejected[r]
    end
    table.move(t.latencies, 1, #t.latencies, #all.latencies + 1, all.latencies)
    if t.parsing_success_rate then
      rate_sum, rates = rate_sum + t.parsing_success_rate, rates + 1
    end
  end
  local totals = tenant_summary(self, all)
  totals.tenant, totals.status, totals.pipeline = nil, nil, nil
  -- tenants of one run usually read the same input: the mean is that rate
  totals.parsing_success_rate = rates > 0 and rate_sum / rates or nil
  return {
    pipeline = self.pipeline,
    run_id = self.run_id,
    workflow = self.workflow,
    status = self.status or status,
    started_at = self.started_at,
    finished_at = self.finished_at,
    timestamp = self.finished_unix or os.time(),
    duration_s = math.floor((self.duration or (cp.now() - self.started)) * 1000 + 0.5) / 1000,
    totals = totals,
    tenants = tenants,
  }
end

-- The webhook body for one tenant of a summary (or the whole run when
-- tenant is nil): the richer fields, and the names the receivers of the
-- original workflows parse -- dataset: uploadLatencyMs, parsingSuccessRate,
-- status, datasetId, timestamp; intent batches: intent_id, submitted_count,
-- accepted_count, rejected_count, upload_latency_ms, retrain_job_id, status,
-- timestamp. Unknown values are JSON null, never left out.
function M.webhook_body(summary, tenant)
  local t = summary.totals
  if tenant then
    t = nil
    for _, x in ipairs(summary.tenants) do
      if x.tenant == tenant then
        t = x
      end
    end
    if not t then
      error(string.format("metrics.webhook_body: no tenant '%s' in the summary", tostring(tenant)), 2)
    end
  elseif not t then
    error("metrics.webhook_body: this summary has no totals; name a tenant", 2)
  end
  local status = tenant and t.status or summary.status
  local latency = t.latency_ms or {}
  local training = type(t.training) == "table" and t.training or {}
  -- job ids as this module keeps them, or as the sinks of the runner do
  local jobs = training.job_ids or training.jobs or {}
  local job = training.retrain_job_id or jobs[#jobs]
  local intents = t.intent_ids or { t.intent_id }
  local dataset = t.dataset_id or training.dataset_id
  local null = json.null
  local body = {
    event = "run.completed",
    pipeline = summary.pipeline, run_id = summary.run_id, tenant = tenant or null,
    workflow = summary.workflow or null,
    started_at = summary.started_at, finished_at = summary.finished_at, duration_s = summary.duration_s,
    submitted = t.submitted, accepted = t.accepted, rejected = t.rejected,
    rejected_by_reason = t.rejected_by_reason, present = t.present,
    uploaded = t.uploaded, failed = t.failed, unknown = t.unknown, requests = t.requests,
    latency_ms = { p50 = latency.p50, p95 = latency.p95, max = latency.max },
    parsing_success_rate = t.parsing_success_rate or null,
    training = t.training or null,
    -- where the audit chain stood when this was sent (audit verify --head)
    audit = summary.audit or null,
    -- both original workflows
    status = status,
    timestamp = summary.finished_at or cp.audit.timestamp(),
  }
  if summary.workflow ~= "intent" then
    body.uploadLatencyMs = latency.max or 0
    body.parsingSuccessRate = t.parsing_success_rate or null
    body.datasetId = dataset or null
  end
  if summary.workflow ~= "dataset" then
    body.intent_id = #intents == 1 and intents[1] or null
    body.intent_ids = json.array(table.move(intents, 1, #intents, 1, {}))
    body.submitted_count = t.submitted
    body.accepted_count = t.accepted
    body.rejected_count = t.rejected
    body.upload_latency_ms = latency.max or 0
    body.retrain_job_id = job or null
  end
  return body
end

function Metrics:webhook_body(tenant)
  return M.webhook_body(self:summary(), tenant)
end

-- ---- Prometheus text exposition (version 0.0.4) -----------------------------------

local function number(v)
  if v ~= v then
    return "NaN"
  elseif v == math.huge then
    return "+Inf"
  elseif v == -math.huge then
    return "-Inf"
  elseif math.type(v) == "integer" then
    return string.format("%d", v)
  end
  for _, f in ipairs({ "%.15g", "%.16g", "%.17g" }) do
    local s = string.format(f, v)
    if tonumber(s) == v then
      return s
    end
  end
  return string.format("%.17g", v)
end

local function label_value(s)
  s = cp.secrets.redact(tostring(s))
  return (s:gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function labels(list)
  local parts = {}
  for i = 1, #list, 2 do
    parts[#parts + 1] = string.format('%s="%s"', list[i], label_value(list[i + 1]))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- The exposition of a summary (metrics:summary(), or any table of the same
-- shape). Counters end in _total; a summary metric per tenant carries the
-- latency quantiles, _sum and _count.
function M.prometheus_text(summary)
  local out = {}
  local function family(name, mtype, help)
    out[#out + 1] = string.format("# HELP %s %s", name, help)
    out[#out + 1] = string.format("# TYPE %s %s", name, mtype)
  end
  local function sample(name, lbls, v)
    out[#out + 1] = name .. labels(lbls) .. " " .. number(v)
  end
  local p = summary.pipeline
  local counters = {
    { "submitted", "Examples submitted to the pipeline's checks in the last run." },
    { "accepted", "Examples that passed every check in the last run." },
    { "uploaded", "Examples the platform confirmed in the last run." },
    { "failed", "Examples the platform refused or that could not be sent in the last run." },
    { "unknown", "Examples whose upload outcome is unknown (may or may not be stored) after the last run." },
  }
  for _, c in ipairs(counters) do
    local name = "cogpipe_examples_" .. c[1] .. "_total"
    family(name, "counter", c[2])
    for _, t in ipairs(summary.tenants) do
      sample(name, { "pipeline", p, "tenant", t.tenant }, t[c[1]] or 0)
    end
  end
  family("cogpipe_examples_rejected_total", "counter", "Examples rejected before upload in the last run, by reason.")
  for _, t in ipairs(summary.tenants) do
    for _, r in ipairs(M.REASONS) do
      sample("cogpipe_examples_rejected_total", { "pipeline", p, "tenant", t.tenant, "reason", r },
        (t.rejected_by_reason or {})[r] or 0)
    end
  end
  family("cogpipe_requests_total", "counter", "Requests made to the platform in the last run, retries included.")
  for _, t in ipairs(summary.tenants) do
    sample("cogpipe_requests_total", { "pipeline", p, "tenant", t.tenant }, t.requests or 0)
  end
  family("cogpipe_request_latency_seconds", "summary", "Latency of the last run's requests to the platform.")
  for _, t in ipairs(summary.tenants) do
    local l = t.latency_seconds
    if not l and t.latency_ms then
      local m = t.latency_ms
      l = { p50 = (m.p50 or 0) / 1000, p95 = (m.p95 or 0) / 1000, max = (m.max or 0) / 1000,
        count = m.count, sum = m.sum and m.sum / 1000 }
    end
    l = l or { p50 = 0, p95 = 0, max = 0, count = 0, sum = 0 }
    local base = { "pipeline", p, "tenant", t.tenant }
    sample("cogpipe_request_latency_seconds", { "pipeline", p, "tenant", t.tenant, "quantile", "0.5" }, l.p50)
    sample("cogpipe_request_latency_seconds", { "pipeline", p, "tenant", t.tenant, "quantile", "0.95" }, l.p95)
    sample("cogpipe_request_latency_seconds_sum", base, l.sum or 0)
    sample("cogpipe_request_latency_seconds_count", base, l.count or t.requests or 0)
  end
  family("cogpipe_request_latency_max_seconds", "gauge", "Slowest request of the last run.")
  for _, t in ipairs(summary.tenants) do
    local l = t.latency_seconds or { max = ((t.latency_ms or {}).max or 0) / 1000 }
    sample("cogpipe_request_latency_max_seconds", { "pipeline", p, "tenant", t.tenant }, l.max)
  end
  family("cogpipe_parsing_success_ratio", "gauge",
    "Unique non-blank lines over all lines of the last run's input (0..1).")
  for _, t in ipairs(summary.tenants) do
    if t.parsing_success_rate then
      sample("cogpipe_parsing_success_ratio", { "pipeline", p, "tenant", t.tenant }, t.parsing_success_rate / 100)
    end
  end
  family("cogpipe_training_status", "gauge", "Final status of the last run's training task (1 for the status).")
  for _, t in ipairs(summary.tenants) do
    if t.training and t.training.status then
      sample("cogpipe_training_status", { "pipeline", p, "tenant", t.tenant, "status", t.training.status }, 1)
    end
  end
  family("cogpipe_tenant_last_run_success", "gauge", "1 when the tenant's part of the last run succeeded.")
  for _, t in ipairs(summary.tenants) do
    sample("cogpipe_tenant_last_run_success", { "pipeline", p, "tenant", t.tenant }, t.status == "ok" and 1 or 0)
  end
  if summary.audit and summary.audit.seq then
    family("cogpipe_audit_head_seq", "gauge",
      "Records in the audit chain when the last run wrote this; the hash label is the last record's SHA-256.")
    sample("cogpipe_audit_head_seq", { "pipeline", p, "hash", summary.audit.hash or "" }, summary.audit.seq)
  end
  family("cogpipe_last_run_duration_seconds", "gauge", "Wall time of the last run.")
  sample("cogpipe_last_run_duration_seconds", { "pipeline", p }, summary.duration_s or 0)
  family("cogpipe_last_run_timestamp_seconds", "gauge", "Unix time the last run ended.")
  sample("cogpipe_last_run_timestamp_seconds", { "pipeline", p }, summary.timestamp or os.time())
  family("cogpipe_last_run_success", "gauge", "1 when the last run succeeded, 0 when it failed.")
  sample("cogpipe_last_run_success", { "pipeline", p }, summary.status == "ok" and 1 or 0)
  family("cogpipe_last_run_status", "gauge", "The last run's status (1 for the status it ended with).")
  sample("cogpipe_last_run_status", { "pipeline", p, "status", summary.status or "unknown" }, 1)
  return table.concat(out, "\n") .. "\n"
end

-- Writes the exposition atomically (temporary file, fsync, rename), so the
-- collector never reads half a file. Returns true or nil, err.
function M.write_prometheus(path, summary)
  return cp.fs.write_atomic(path, M.prometheus_text(summary))
end

function Metrics:write_prometheus(path)
  return M.write_prometheus(path, self:summary())
end

return M
