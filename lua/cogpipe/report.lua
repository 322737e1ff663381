-- What a run tells its user: the summary (one table per tenant, also the
-- --json document and the webhook body), with the per-intent table of what
-- was there, added, rejected, over the cap and pruned (a dry run's plan
-- lists the texts too), the human table printed at the end, the plan of a
-- dry run, the read-back, and validation problems; and what every report
-- shares with `cogpipe check`: the definition of the counts and rates
-- (M.counts) and the matches across intents (M.ambiguity). Computes
-- nothing about the data itself: it is given the counts and rejections.
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

-- Request latencies in ms: p50, p95, max, and the count and sum that a
-- Prometheus summary carries.
local function latency(list)
  local sorted, total = {}, 0
  for i, v in ipairs(list) do
    sorted[i] = v
    total = total + v
  end
  table.sort(sorted)
  local function ms(v)
    return math.floor(v + 0.5)
  end
  return { p50 = ms(percentile(sorted, 0.5)), p95 = ms(percentile(sorted, 0.95)), max = ms(sorted[#sorted] or 0),
    count = #sorted, sum = ms(total) }
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

local function grouped(records)
  local by = {}
  for _, r in ipairs(records or {}) do
    by[r.intent] = by[r.intent] or {}
    table.insert(by[r.intent], r)
  end
  return by
end

-- What the run meant to send per intent: the sink's plan where it groups
-- records, else what the steps accepted.
local function planned(ctx)
  local plan = ctx.plan
  if plan and plan.by_intent then
    return plan.by_intent
  end
  return grouped(ctx.accepted)
end

local function count(list)
  return list and #list or 0
end

-- One row per intent of the source or of the prune: on the platform
-- before (existing), to add, already there (present), rejected by reason,
-- over the cap, to prune; after a run also what was added and pruned.
local function intent_rows(ctx)
  local adds = planned(ctx)
  local sent = ctx.sent or {}
  if next(sent) == nil and ctx.stats.uploaded > 0 and ctx.stats.uploaded == ctx.stats.accepted then
    -- a target that sends everything in one request (the dataset upload)
    sent = adds
  end
  local prune = {}
  for _, p in ipairs(ctx.prune_plan or {}) do
    prune[p.intent] = p.items
  end
  local labels, seen = {}, {}
  local function add(label)
    if label and label ~= "?" and not seen[label] then
      seen[label] = true
      labels[#labels + 1] = label
    end
  end
  for label in pairs(ctx.existing or {}) do
    add(label)
  end
  for label in pairs(ctx.by_intent or {}) do
    add(label)
  end
  for label in pairs(adds) do
    add(label)
  end
  for label in pairs(prune) do
    add(label)
  end
  table.sort(labels)
  local rows = json.array()
  for i, label in ipairs(labels) do
    local held = (ctx.held or ctx.existing or {})[label]
    local c = (ctx.by_intent or {})[label] or { present = 0, rejected = {} }
    local rejected, total = {}, 0
    for reason, n in pairs(c.rejected) do
      if reason ~= "over_limit" then
        rejected[reason] = n
        total = total + n
      end
    end
    local row = {
      intent = label,
      existing = held and (held.items and #held.items or held.active) or 0,
      add = count(adds[label]),
      present = c.present,
      rejected = total,
      rejected_by_reason = rejected,
      over_cap = c.rejected.over_limit or 0,
      prune = count(prune[label]),
    }
    if not ctx.dry_run then
      row.added = count(sent[label])
      row.pruned = count(ctx.pruned_items and ctx.pruned_items[label])
    end
    rows[i] = row
  end
  return rows
end

-- A dry run's plan in full: per intent the texts to add and the sentences
-- to delete.
local function changes(ctx)
  local adds = planned(ctx)
  local prune = {}
  for _, p in ipairs(ctx.prune_plan or {}) do
    prune[p.intent] = p.items
  end
  local labels = {}
  for label in pairs(adds) do
    labels[#labels + 1] = label
  end
  for label in pairs(prune) do
    if not adds[label] then
      labels[#labels + 1] = label
    end
  end
  table.sort(labels)
  local out = json.array()
  for _, label in ipairs(labels) do
    local add, del = json.array(), json.array()
    for i, r in ipairs(adds[label] or {}) do
      add[i] = r.text
    end
    for i, item in ipairs(prune[label] or {}) do
      del[i] = { id = item.id, text = item.text }
    end
    if #add > 0 or #del > 0 then
      out[#out + 1] = { intent = label, add = add, prune = del }
    end
  end
  return out
end

-- Why a record is rejected, in the order reports list them.
M.REASONS = { "invalid", "duplicate", "conflict", "near", "semantic", "over_limit" }

-- A share in percent with two decimals, or nil when there is nothing to
-- take a share of (an empty file has no rate, not 0%).
local function percent(n, of)
  if not n or not of or of <= 0 then
    return nil
  end
  return math.floor(n * 10000 / of + 0.5) / 100
end

-- The counts of one input as every report gives them -- `cogpipe check`,
-- the run summary, its printed table, the webhook body and the progress
-- bar -- so that they mean one thing (the README's "Counts"):
--   lines      records read, blank ones included: lines of a lines or JSON
--              Lines file, rows of a CSV file after its header
--   blank      lines with no text (empty, white space only, "text": "");
--              skipped, counted nowhere else
--   submitted  lines - blank: the records the checks judge
--   valid      submitted - rejected invalid
--   unique     distinct texts among the valid records, compared as exact
--              dedupe compares them (casefold by default)
--   rejected   by reason (REASONS); each record once, for the first
--              reason found
--   present    already on the platform: not sent, not rejected (a run)
--   accepted   submitted - rejected - present: what is (or would be) sent
-- and the rates: valid / submitted, unique / valid, accepted / submitted,
-- and DESIGN 4.1's parsing success rate, unique / lines (the dataset
-- workflow's parsingSuccessRate), each nil when its divisor is 0.
-- c: {lines, blank, unique, rejected_by_reason, present, accepted?}; accepted
-- is derived when not given.
function M.counts(c)
  local by, rejected = {}, 0
  for _, reason in ipairs(M.REASONS) do
    by[reason] = (c.rejected_by_reason or {})[reason] or 0
    rejected = rejected + by[reason]
  end
  local submitted = c.lines - c.blank
  local valid = submitted - by.invalid
  local present = c.present or 0
  local accepted = c.accepted or (submitted - rejected - present)
  return {
    lines = c.lines,
    blank = c.blank,
    submitted = submitted,
    valid = valid,
    unique = c.unique,
    rejected = rejected,
    rejected_by_reason = by,
    present = present,
    accepted = accepted,
    rates = { valid = percent(valid, submitted), unique = percent(c.unique, valid),
      accepted = percent(accepted, submitted) },
    parsing_success_rate = percent(c.unique, c.lines),
  }
end

-- The rates of M.counts for a JSON document: a rate that cannot be had is
-- null there, not left out.
function M.rates_doc(counts)
  local r = counts.rates
  return { valid = r.valid or json.null, unique = r.unique or json.null, accepted = r.accepted or json.null }
end

-- The rates in words, for the printed reports (from M.counts, or a
-- summary's rates document: null is "n/a").
function M.rates_text(counts)
  local function pc(v)
    return type(v) == "number" and string.format("%.2f%%", v) or "n/a"
  end
  local r = counts.rates
  return string.format("valid %s of submitted, unique %s of valid, accepted %s of submitted; parsing success "
    .. "rate %s (the dataset API's: unique texts / all lines)", pc(r.valid), pc(r.unique), pc(r.accepted),
    pc(counts.parsing_success_rate))
end

local AMBIGUOUS_LISTED = 200 -- pairs a summary carries (all are counted)
local OVERLAP_LISTED = 50 -- pairs of intents

-- Near and semantic matches across intents, from the rejections: conflicts
-- in waiting (a model is taught two intents with nearly one text). Returns
-- the pairs, closest first -- {kind, score, text, intent, file, line,
-- other_text, other_intent, other_file, other_line, existing} --, and per
-- pair of intents {intents = {a, b}, pairs = n, closest = pair}, the
-- intents with the most such pairs first.
function M.ambiguity(rejections)
  local list, by = {}, {}
  for _, r in ipairs(rejections or {}) do
    local other = r.nearest_intent
    if (r.reason == "near" or r.reason == "semantic" or r.reason == "conflict") and r.score and r.nearest
      and type(r.intent) == "string" and type(other) == "string" and other ~= r.intent then
      local p = { kind = r.reason == "semantic" and "semantic" or "near", score = r.score, text = r.text,
        intent = r.intent, file = r.file, line = r.line, other_text = r.nearest, other_intent = other,
        other_file = r.nearest_file, other_line = r.nearest_line, existing = r.existing }
      list[#list + 1] = p
      local a, b = r.intent, other
      if b < a then
        a, b = b, a
      end
      local k = a .. "\0" .. b
      local o = by[k]
      if not o then
        o = { intents = json.array({ a, b }), pairs = 0 }
        by[k] = o
      end
      o.pairs = o.pairs + 1
      if not o.closest or p.score > o.closest.score then
        o.closest = p
      end
    end
  end
  table.sort(list, function(x, y)
    if x.score ~= y.score then
      return x.score > y.score
    end
    return (x.line or 0) < (y.line or 0)
  end)
  local overlap = {}
  for _, o in pairs(by) do
    overlap[#overlap + 1] = o
  end
  table.sort(overlap, function(x, y)
    if x.pairs ~= y.pairs then
      return x.pairs > y.pairs
    end
    if x.closest.score ~= y.closest.score then
      return x.closest.score > y.closest.score
    end
    return x.intents[1] .. "\0" .. x.intents[2] < y.intents[1] .. "\0" .. y.intents[2]
  end)
  return list, overlap
end

-- The summary of one tenant's run.
function M.tenant(def, ctx)
  local s = ctx.stats
  local failed = #ctx.errors > 0 or ctx.remote_failure
  local input = ctx.input or {}
  local c = M.counts({ lines = input.lines or s.submitted, blank = input.blank or 0, unique = input.unique,
    rejected_by_reason = s.rejected, present = s.present, accepted = s.accepted })
  local t = {
    tenant = ctx.tenant.name,
    pipeline = def.name,
    status = failed and "failed" or "ok",
    errors = json.array(ctx.errors),
    notes = json.array(ctx.notes),
    lines = c.lines,
    blank = c.blank,
    submitted = s.submitted,
    accepted = s.accepted,
    rejected = sum(s.rejected),
    rejected_by_reason = s.rejected,
    present = s.present,
    unique = c.unique,
    uploaded = s.uploaded,
    failed = s.failed,
    unknown = s.unknown,
    requests = s.requests,
    latency_ms = latency(s.latencies),
    duration_s = math.floor((cp.now() - ctx.started) * 1000 + 0.5) / 1000,
    -- DESIGN 4.1's figure (nil until the checks ran) and the rates beside it
    parsing_success_rate = c.parsing_success_rate,
    rates = M.rates_doc(c),
    training = ctx.training,
    dry_run = ctx.dry_run,
    -- a plan shows every rejection; a run's summary travels (webhook, audit)
    rejections = json.array(table.move(ctx.rejections, 1, ctx.dry_run and #ctx.rejections
      or math.min(#ctx.rejections, 200), 1, {})),
    left_out = ctx.left_out,
    unknown_entries = ctx.unknown_entries and json.array(ctx.unknown_entries) or nil,
    intents = intent_rows(ctx),
    -- the platform's ids of the intents that received records, in order
    intent_ids = json.array(ctx.sent_ids),
    read_back = ctx.readback,
  }
  local ambiguous, overlap = M.ambiguity(ctx.rejections)
  t.ambiguous = #ambiguous
  t.ambiguous_list = json.array(table.move(ambiguous, 1, math.min(#ambiguous, AMBIGUOUS_LISTED), 1, {}))
  t.intent_overlap = json.array(table.move(overlap, 1, math.min(#overlap, OVERLAP_LISTED), 1, {}))
  if ctx.prune_plan then
    local n = 0
    for _, p in ipairs(ctx.prune_plan) do
      n = n + #p.items
    end
    t.prune = { planned = n, pruned = s.pruned, failed = s.prune_failed, refused = ctx.prune_refused ~= nil }
  end
  if ctx.dry_run and ctx.accepted then
    t.would_send = per_intent(ctx.accepted)
    t.changes = changes(ctx)
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

local function quoted(text, n)
  text = tostring(text or "")
  if utf8.len(text) and utf8.len(text) > n then
    text = text:sub(1, utf8.offset(text, n + 1) - 1) .. "..."
  end
  return (string.format("%q", text):gsub("\\\n", "\\n"))
end

-- Why a record was rejected, in a few words: the nearest text and score,
-- the other intent of a conflict, the problem found.
function M.why(r)
  if r.reason == "conflict" then
    return "also under intent " .. tostring(r.other_intent or r.nearest_intent or "?") ..
      (r.nearest and (" as " .. quoted(r.nearest, 60)) or "")
  elseif r.nearest then
    return string.format("%s %s%s", r.score and string.format("%.2f", r.score) or "", quoted(r.nearest, 60),
      r.nearest_intent and r.nearest_intent ~= r.intent and (" (intent " .. r.nearest_intent .. ")") or "")
  elseif r.first_line then
    return "first at line " .. tostring(r.first_line)
  elseif r.cap then
    return string.format("cap %d%s", r.cap, r.scope and (" per " .. r.scope) or " per intent")
  end
  return tostring(r.problem or "")
end

local SHOWN = 20

-- The intents whose examples overlap most (M.ambiguity's view), the five
-- first: what to look at first. Shared by the run's summary and check.
function M.print_overlap(out, prefix, ambiguous, overlap)
  if (ambiguous or 0) == 0 then
    return
  end
  out:write(string.format("%s%d near or semantic match(es) across intents (ambiguous); intents that overlap "
    .. "most:\n", prefix, ambiguous))
  for k, o in ipairs(overlap) do
    if k > 5 then
      out:write(string.format("  ... and %d more pair(s) of intents (--json lists them)\n", #overlap - 5))
      break
    end
    local c = o.closest
    out:write(string.format("  %s / %s: %d pair(s); closest %.2f: %s (%s:%s) / %s (%s:%s)\n", o.intents[1],
      o.intents[2], o.pairs, c.score, quoted(c.text, 50), tostring(c.file or "?"), tostring(c.line or "?"),
      quoted(c.other_text, 50), tostring(c.other_file or (c.existing and "platform") or "?"),
      tostring(c.other_line or "-")))
  end
end

-- A dry run's plan: one line per intent, then the rejections.
local function print_plan(out, t)
  out:write(string.format("%s: plan, per intent%s\n", t.tenant, t.prune and " (with --prune)" or ""))
  local cols = { "intent", "platform", "add", "present", "rejected", "over cap", "prune" }
  local w = { 28, 9, 7, 8, 9, 9, 7 }
  local function row(values)
    local cells = {}
    for i, v in ipairs(values) do
      cells[i] = i == 1 and pad(v, w[i]) or string.rep(" ", math.max(0, w[i] - #tostring(v))) .. tostring(v)
    end
    out:write("  ", table.concat(cells, " "), "\n")
  end
  row(cols)
  local totals = { 0, 0, 0, 0, 0, 0 }
  for _, r in ipairs(t.intents or {}) do
    local v = { r.existing, r.add, r.present, r.rejected, r.over_cap, r.prune }
    for i, x in ipairs(v) do
      totals[i] = totals[i] + x
    end
    row({ r.intent, table.unpack(v) })
  end
  row({ "total", table.unpack(totals) })
  local list = t.rejections or {}
  for i = 1, math.min(#list, SHOWN) do
    local r = list[i]
    out:write(string.format("  %-10s %s:%s %s %s %s\n", r.reason, tostring(r.file or "?"), tostring(r.line or "?"),
      tostring(r.intent or "?"), quoted(r.text, 60), M.why(r)))
  end
  if #list > SHOWN then
    out:write(string.format("  ... and %d more rejection(s) (--json or --html shows them all)\n", #list - SHOWN))
  end
end

function M.print(summary)
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
  for _, t in ipairs(summary.tenants) do
    local reasons = {}
    for _, r in ipairs(M.REASONS) do
      if (t.rejected_by_reason[r] or 0) > 0 then
        reasons[#reasons + 1] = r .. " " .. t.rejected_by_reason[r]
      end
    end
    if #reasons > 0 then
      out:write(string.format("%s: rejected %s\n", t.tenant, table.concat(reasons, ", ")))
    end
    if t.lines then
      out:write(string.format("%s: %d line(s): %d blank, %d submitted; %d accepted\n", t.tenant, t.lines, t.blank,
        t.submitted, t.accepted))
      out:write(string.format("%s: %s\n", t.tenant, M.rates_text({ rates = t.rates,
        parsing_success_rate = t.parsing_success_rate })))
    end
    M.print_overlap(out, t.tenant .. ": ", t.ambiguous, t.intent_overlap)
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
    if t.prune and not summary.dry_run then
      out:write(string.format("%s: pruned %d of %d sentence(s)%s\n", t.tenant, t.prune.pruned, t.prune.planned,
        t.prune.failed > 0 and string.format(", %d failed", t.prune.failed) or ""))
    end
    -- every intent when they are few; else the total and those that differ
    local rows, held, sent = t.read_back or {}, 0, 0
    for _, rb in ipairs(rows) do
      held, sent = held + rb.held, sent + rb.sent
      if #rows <= 20 or rb.held < rb.sent or #rb.still_there > 0 then
        out:write(string.format("%s: intent %s: platform holds %d of %d sent%s\n", t.tenant, rb.intent, rb.held,
          rb.sent, rb.pruned > 0 and string.format(", %d of %d pruned gone", rb.pruned - #rb.still_there, rb.pruned)
          or ""))
      end
    end
    if #rows > 20 then
      out:write(string.format("%s: read-back of %d intents: platform holds %d of %d sent\n", t.tenant, #rows, held,
        sent))
    end
    if summary.dry_run and t.intents then
      print_plan(out, t)
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
