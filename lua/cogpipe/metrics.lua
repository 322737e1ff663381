-- What a run's summary (report.summary, which the runner builds) becomes
-- for the world outside: the webhook body, with the field names receivers
-- of the original workflows parse beside the richer ones, and the
-- Prometheus text exposition for node_exporter's textfile collector.
-- Computes no figure of its own and sends nothing.
--
--   local body = metrics.webhook_body(summary, "acme")   -- one tenant
--   local ok, err = metrics.write_prometheus("/var/lib/node_exporter/textfile/cogpipe.prom", summary)
local cp = require "cogpipe"
local json = cp.json

local M = {}

-- The reasons an example is rejected for, each a label of its own.
M.REASONS = { "invalid", "duplicate", "near", "semantic", "conflict", "over_limit" }

-- The webhook body for one tenant of a summary (or the whole run when
-- tenant is nil): the richer fields, and the names the receivers of the
-- original workflows parse -- dataset: uploadLatencyMs, parsingSuccessRate,
-- status, datasetId, timestamp; intent batches: intent_id, submitted_count,
-- accepted_count, rejected_count, upload_latency_ms, retrain_job_id, status,
-- timestamp. Unknown values are JSON null, never left out. intent_id is the
-- platform's id of the intent that received examples when there was one,
-- null when there were several (intent_ids lists them all).
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
  local job = training.retrain_job_id
  local intents = t.intent_ids or { t.intent_id }
  local dataset = t.dataset_id or training.dataset_id
  local null = json.null
  local body = {
    event = "run.completed",
    pipeline = summary.pipeline, run_id = summary.run_id, tenant = tenant or null,
    workflow = summary.workflow or null,
    started_at = summary.started_at, finished_at = summary.finished_at, duration_s = summary.duration_s,
    -- the counts of report.counts, as the summary gives them
    lines = t.lines or null, blank = t.blank or null, rates = t.rates or null,
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

-- The exposition of a summary (report.summary). Counters end in _total; a summary metric per tenant carries the
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
    local m = t.latency_ms or {}
    local l = { p50 = (m.p50 or 0) / 1000, p95 = (m.p95 or 0) / 1000, count = m.count,
      sum = m.sum and m.sum / 1000 }
    local base = { "pipeline", p, "tenant", t.tenant }
    sample("cogpipe_request_latency_seconds", { "pipeline", p, "tenant", t.tenant, "quantile", "0.5" }, l.p50)
    sample("cogpipe_request_latency_seconds", { "pipeline", p, "tenant", t.tenant, "quantile", "0.95" }, l.p95)
    sample("cogpipe_request_latency_seconds_sum", base, l.sum or 0)
    sample("cogpipe_request_latency_seconds_count", base, l.count or t.requests or 0)
  end
  family("cogpipe_request_latency_max_seconds", "gauge", "Slowest request of the last run.")
  for _, t in ipairs(summary.tenants) do
    sample("cogpipe_request_latency_max_seconds", { "pipeline", p, "tenant", t.tenant },
      ((t.latency_ms or {}).max or 0) / 1000)
  end
  family("cogpipe_parsing_success_ratio", "gauge",
    "Parsing success rate: distinct texts (as exact dedupe compares them) over all lines "
      .. "of the last run's input (0..1).")
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

return M
