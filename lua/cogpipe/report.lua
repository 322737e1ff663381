-- What a run tells its user: the summary (one table per tenant, also the
-- --json document and the webhook body), the human table printed at the
-- end, and validation problems. Computes nothing about the data itself.
local cp = require "cogpipe"
local json = cp.json

local M = {}

local function percentile(sorted, p)
  if #sorted == 0 then
    return 0
  end
  local idx = math.max(1, math.ceil(p * #sorted))
  return sorted[idx]
end

local function latency(list)
  local sorted = {}
  for i, v in ipairs(list) do
    sorted[i] = v
  end
  table.sort(sorted)
  local function ms(v)
    return math.floor(v + 0.5)
  end
  return { p50 = ms(percentile(sorted, 0.5)), p95 = ms(percentile(sorted, 0.95)), max = ms(sorted[#sorted] or 0) }
end

local function sum(t)
  local n = 0
  for _, v in pairs(t) do
    n = n + v
  end
  return n
end

-- A list, not a map keyed by intent: an intent may be called anything,
-- reset_password included, and keys are what redaction looks at.
local function per_intent(records)
  local counts, order = {}, {}
  for _, r in ipairs(records or {}) do
    if not counts[r.intent] then
      counts[r.intent] = 0
      order[#order + 1] = r.intent
    end
    counts[r.intent] = counts[r.intent] + 1
  end
  table.sort(order)
  local list = json.array()
  for i, intent in ipairs(order) do
    list[i] = { intent = intent, count = counts[intent] }
  end
  return list
end

-- The summary of one tenant's run.
function M.tenant(def, ctx)
  local s = ctx.stats
  local failed = #ctx.errors > 0 or ctx.remote_failure
  local parsing = ctx.parsing or {}
  local t = {
    tenant = ctx.tenant.name,
    pipeline = def.name,
    status = failed and "failed" or "ok",
    errors = json.array(ctx.errors),
    notes = json.array(ctx.notes),
    submitted = s.submitted,
    accepted = s.accepted,
    rejected = sum(s.rejected),
    rejected_by_reason = s.rejected,
    present = s.present,
    uploaded = s.uploaded,
    failed = s.failed,
    unknown = s.unknown,
    requests = s.requests,
    latency_ms = latency(s.latencies),
    duration_s = math.floor((cp.now() - ctx.started) * 1000 + 0.5) / 1000,
    parsing_success_rate = parsing.parsing_success_rate,
    training = ctx.training,
    dry_run = ctx.dry_run,
    rejections = json.array({ table.unpack(ctx.rejections, 1, math.min(#ctx.rejections, 200)) }),
    left_out = ctx.left_out,
    unknown_entries = ctx.unknown_entries and json.array(ctx.unknown_entries) or nil,
  }
  if ctx.dry_run and ctx.accepted then
    t.would_send = per_intent(ctx.accepted)
  end
  return t
end

function M.summary(def, ctxs, info)
  local tenants = json.array()
  local status = "ok"
  for i, ctx in ipairs(ctxs) do
    tenants[i] = M.tenant(def, ctx)
    if tenants[i].status ~= "ok" then
      status = "failed"
    end
  end
  return {
    pipeline = def.name,
    run_id = info.run_id,
    status = status,
    dry_run = info.dry_run,
    duration_s = math.floor(info.duration * 1000 + 0.5) / 1000,
    source = info.source,
    tenants = tenants,
  }
end

local function pad(s, n)
  s = tostring(s)
  return s .. string.rep(" ", math.max(0, n - utf8.len(s)))
end

local function first_examples(records, n)
  local by = {}
  for _, r in ipairs(records or {}) do
    local list = by[r.intent] or {}
    if #list < n then
      list[#list + 1] = r.text
    end
    by[r.intent] = list
  end
  return by
end

function M.print(summary, ctxs)
  local out = io.stdout
  local cols = { "tenant", "status", "submitted", "accepted", "rejected", "present", "uploaded", "failed",
    "unknown", "p50 ms", "p95 ms", "training" }
  local widths = { 16, 7, 10, 9, 9, 8, 9, 7, 8, 7, 7, 10 }
  local header = {}
  for i, c in ipairs(cols) do
    header[i] = pad(c, widths[i])
  end
  out:write(string.format("pipeline %s, run %s%s, %.1f s\n", summary.pipeline, summary.run_id,
    summary.dry_run and " (dry run: nothing was sent)" or "", summary.duration_s))
  out:write(table.concat(header, " "), "\n")
  for _, t in ipairs(summary.tenants) do
    local row = { t.tenant, t.status, t.submitted, t.accepted, t.rejected, t.present, t.uploaded, t.failed,
      t.unknown, t.latency_ms.p50, t.latency_ms.p95, t.training and t.training.status or "-" }
    for i, v in ipairs(row) do
      row[i] = pad(v, widths[i])
    end
    out:write(table.concat(row, " "), "\n")
  end
  for i, t in ipairs(summary.tenants) do
    local reasons = {}
    for _, r in ipairs(require("cogpipe.runner").REASONS) do
      if (t.rejected_by_reason[r] or 0) > 0 then
        reasons[#reasons + 1] = r .. " " .. t.rejected_by_reason[r]
      end
    end
    if #reasons > 0 then
      out:write(string.format("%s: rejected %s\n", t.tenant, table.concat(reasons, ", ")))
    end
    for _, e in ipairs(t.errors) do
      out:write(string.format("%s: error: %s\n", t.tenant, e))
    end
    for _, n in ipairs(t.notes) do
      out:write(string.format("%s: note: %s\n", t.tenant, n))
    end
    if t.unknown > 0 and t.unknown_entries then
      out:write(string.format("%s: %d example(s) have an unknown outcome (journal entr%s %s); they are not sent "
        .. "again by themselves: check the platform, then run with --resend-unknown to send them again\n",
        t.tenant, t.unknown, #t.unknown_entries == 1 and "y" or "ies", table.concat(t.unknown_entries, ", ")))
    elseif t.unknown > 0 then
      out:write(string.format("%s: %d example(s) have an unknown outcome (the platform may or may not have "
        .. "stored them); the next run reconciles them before sending\n", t.tenant, t.unknown))
    end
    for _, l in ipairs(t.left_out or {}) do
      out:write(string.format("%s: over the flow's cap, left out of intent %s: %d (kept %d)\n", t.tenant,
        l.intent, l.left_out, l.kept))
    end
    if t.would_send then
      out:write(string.format("%s: would send, per intent:\n", t.tenant))
      local firsts = first_examples(ctxs[i].accepted, 2)
      for _, w in ipairs(t.would_send) do
        out:write(string.format("  %-24s %5d  e.g. %s\n", w.intent, w.count,
          table.concat(firsts[w.intent] or {}, " | ")))
      end
    end
  end
end

-- Validation problems of the input (nothing was sent).
function M.problems(problems, path)
  local err = io.stderr
  if type(problems) == "table" and problems.message then
    err:write("cogpipe: ", problems.message, "\n")
    return
  end
  local list = problems and problems.problems or {}
  for _, p in ipairs(list) do
    err:write(string.format("%s:%d:%d: %s (byte %d)\n", p.file or path, p.line or 0, p.column or 0,
      p.reason or p.message or "?", p.offset or 0))
  end
  local total = problems and (problems.problem_count or #list) or 0
  if total > #list then
    err:write(string.format("... and %d more\n", total - #list))
  end
  err:write(string.format("cogpipe: %s: %d problem(s); nothing was sent\n", path, total))
end

return M
