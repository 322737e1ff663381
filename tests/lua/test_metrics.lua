-- cogpipe.metrics on the summary a run makes (report.lua): the latency
-- percentiles it carries, the webhook body with the original workflows'
-- field names, and the Prometheus file, read back with a small parser of
-- the text format and checked against the summary.
local cp = require "cogpipe"
local t = require "t"
local metrics = require "cogpipe.metrics"
local report = require "cogpipe.report"
local runner = require "cogpipe.runner"
local json = cp.json

-- ---- a parser of the Prometheus text exposition format (0.0.4) ------------------

-- Returns { types = {family = type}, helps = {family = text}, samples =
-- { {name, labels = {k = v}, value} } }, or raises naming the bad line.
local function parse_prometheus(text)
  local out = { types = {}, helps = {}, samples = {} }
  local ln = 0
  for line in text:gmatch("([^\n]*)\n") do
    ln = ln + 1
    if line:match("^#") then
      local kind, name, rest = line:match("^# (%u+) ([%a_:][%w_:]*) (.*)$")
      if kind == "TYPE" then
        assert(rest == "counter" or rest == "gauge" or rest == "summary" or rest == "histogram"
          or rest == "untyped", "line " .. ln .. ": bad type " .. tostring(rest))
        assert(not out.types[name], "line " .. ln .. ": second TYPE for " .. name)
        out.types[name] = rest
      elseif kind == "HELP" then
        out.helps[name] = rest
      end
    elseif line ~= "" then
      local name, rest = line:match("^([%a_:][%w_:]*)(.*)$")
      assert(name, "line " .. ln .. ": no metric name")
      local labels = {}
      if rest:sub(1, 1) == "{" then
        local i = 2
        while rest:sub(i, i) ~= "}" do
          local k, after = rest:match('^([%a_][%w_]*)="()', i)
          assert(k, "line " .. ln .. ": bad label at " .. i)
          local v, j = {}, after
          while true do
            local c = rest:sub(j, j)
            assert(c ~= "", "line " .. ln .. ": unterminated label value")
            if c == "\\" then
              local e = rest:sub(j + 1, j + 1)
              v[#v + 1] = ({ n = "\n", ["\\"] = "\\", ['"'] = '"' })[e]
              assert(v[#v], "line " .. ln .. ": bad escape")
              j = j + 2
            elseif c == '"' then
              break
            else
              v[#v + 1] = c
              j = j + 1
            end
          end
          assert(labels[k] == nil, "line " .. ln .. ": label " .. k .. " twice")
          labels[k] = table.concat(v)
          i = j + 1
          if rest:sub(i, i) == "," then
            i = i + 1
          end
        end
        rest = rest:sub(i + 1)
      end
      local value = rest:match("^ (%S+)$") or rest:match("^ (%S+) %-?%d+$")
      assert(value, "line " .. ln .. ": bad value part '" .. rest .. "'")
      local v = value == "NaN" and 0 / 0 or value == "+Inf" and math.huge or value == "-Inf" and -math.huge
        or tonumber(value)
      assert(v, "line " .. ln .. ": value is not a number: " .. value)
      out.samples[#out.samples + 1] = { name = name, labels = labels, value = v }
    end
  end
  return out
end

-- The family a sample belongs to (summaries add _sum and _count).
local function family_of(p, name)
  if p.types[name] then
    return name
  end
  local base = name:match("^(.*)_sum$") or name:match("^(.*)_count$")
  if base and p.types[base] == "summary" then
    return base
  end
  return nil
end

local function find(p, name, want)
  local found
  for _, s in ipairs(p.samples) do
    if s.name == name then
      local match = true
      for k, v in pairs(want) do
        if s.labels[k] ~= v then
          match = false
        end
      end
      for k in pairs(s.labels) do
        if want[k] == nil then
          match = false
        end
      end
      if match then
        assert(not found, "two samples " .. name .. " " .. json.encode(want))
        found = s
      end
    end
  end
  return found
end

-- ---- a run ---------------------------------------------------------------------------

-- A tenant's context as the runner makes it, with n requests that took
-- the given seconds each.
local function context(def, shared, name, seconds)
  local ctx = runner.context(def, { name = name }, {}, shared)
  for _, s in ipairs(seconds or {}) do
    ctx:request_done({ elapsed = s })
  end
  return ctx
end

local function records(n, intent)
  local list = {}
  for i = 1, n do
    list[i] = { text = "text " .. i, intent = intent }
  end
  return list
end

-- Two tenants: acme with rejections, a failed example and training, and
-- beta with everything through.
local function sample_run(name)
  local def = { name = name or "intent-batches" }
  local shared = { run_id = "run-7", ctxs = {} }
  local acme = context(def, shared, "acme", { 0.4, 0.1, 1.5, 0.3, 0.2 })
  acme.stats.submitted, acme.stats.accepted = 10, 6
  acme:reject({ text = "", intent = "book" }, "invalid")
  acme:reject({ text = "a", intent = "book" }, "duplicate")
  acme:reject({ text = "b", intent = "book" }, "duplicate")
  acme:reject({ text = "c", intent = "book" }, "semantic")
  acme:uploaded("book", records(5, "book"))
  acme.stats.failed = 1
  acme.remote_failure = true -- as the runner marks a tenant with a failed example
  acme.input = { lines = 10, blank = 0, unique = 9 } -- DESIGN 4.1: 9 distinct texts in 10 lines, 90%
  acme.training = { jobs = json.array({ { id = "job-1" } }), retrain_job_id = "job-1", status = "done" }
  local beta = context(def, shared, "beta", { 0.05 })
  beta.stats.submitted, beta.stats.accepted = 4, 4
  beta:uploaded("greet", records(4, "greet"))
  return report.summary(def, shared.ctxs, { run_id = "run-7", duration = 1.25 })
end

t.test("the summary carries each tenant's counts and latency percentiles", function()
  local s = sample_run()
  t.eq(s.pipeline, "intent-batches")
  t.eq(s.run_id, "run-7")
  t.eq(s.status, "failed", "acme has a failed example")
  t.eq(#s.tenants, 2)
  local a = s.tenants[1]
  t.eq(a.tenant, "acme")
  t.eq(a.status, "failed")
  t.eq(a.submitted, 10)
  t.eq(a.accepted, 6)
  t.eq(a.rejected, 4)
  t.same(a.rejected_by_reason, { invalid = 1, duplicate = 2, near = 0, semantic = 1, conflict = 0, over_limit = 0 })
  t.eq(a.uploaded, 5)
  t.eq(a.failed, 1)
  t.eq(a.requests, 5)
  -- 100 200 300 400 1500 ms: the value at rank ceil(p * n)
  t.same(a.latency_ms, { p50 = 300, p95 = 1500, max = 1500, count = 5, sum = 2500 })
  t.near(a.parsing_success_rate, 90, 1e-9)
  t.eq(s.tenants[2].status, "ok")
  t.same(s.tenants[2].latency_ms, { p50 = 50, p95 = 50, max = 50, count = 1, sum = 50 })
  t.eq(s.duration_s, 1.25)
  t.eq(json.decode(json.encode(s)).tenants[1].submitted, 10)
end)

t.test("latency percentiles at the edges", function()
  local def = { name = "p" }
  local shared = { ctxs = {} }
  context(def, shared, "none")
  local twenty = {}
  for i = 1, 20 do
    twenty[i] = i / 1000
  end
  context(def, shared, "twenty", twenty)
  local s = report.summary(def, shared.ctxs, { duration = 0 })
  t.same(s.tenants[1].latency_ms, { p50 = 0, p95 = 0, max = 0, count = 0, sum = 0 })
  t.same(s.tenants[2].latency_ms, { p50 = 10, p95 = 19, max = 20, count = 20, sum = 210 })
end)

t.test("the webhook body keeps both original workflows' field names", function()
  local s = sample_run()
  local b = metrics.webhook_body(s, "acme")
  -- intent batch workflow
  t.eq(b.submitted_count, 10)
  t.eq(b.accepted_count, 6)
  t.eq(b.rejected_count, 4)
  t.eq(b.upload_latency_ms, 1500)
  t.eq(b.retrain_job_id, "job-1")
  t.eq(b.status, "failed")
  t.ok(b.timestamp:match("^%d%d%d%d%-%d%d%-%d%dT.*Z$"), b.timestamp)
  -- dataset workflow, beside them when the summary names no workflow
  t.eq(b.uploadLatencyMs, 1500)
  t.near(b.parsingSuccessRate, 90, 1e-9)
  -- the richer ones
  t.eq(b.tenant, "acme")
  t.eq(b.run_id, "run-7")
  t.eq(b.rejected_by_reason.duplicate, 2)
  t.same(b.latency_ms, { p50 = 300, p95 = 1500, max = 1500 })

  s.workflow = "intent"
  t.eq(metrics.webhook_body(s, "acme").uploadLatencyMs, nil, "the dataset names only for dataset runs")
  s.workflow = "dataset"
  s.tenants[1].training.dataset_id = "ds-9"
  local db = metrics.webhook_body(s, "acme")
  t.eq(db.datasetId, "ds-9")
  t.eq(db.submitted_count, nil, "the intent names only for intent runs")
  -- unknown values are present as null
  s.workflow = nil
  local eb = metrics.webhook_body(s, "beta")
  t.eq(eb.status, "ok")
  t.eq(eb.datasetId, json.null)
  t.eq(eb.retrain_job_id, json.null)
  t.eq(eb.parsingSuccessRate, json.null)
  t.ok(json.encode(eb):find('"datasetId":null', 1, true))
  t.raises(function() metrics.webhook_body(s, "gamma") end, "no tenant 'gamma'")
end)

t.test("the Prometheus file parses and matches the summary", function()
  local s = sample_run()
  local path = os.tmpname()
  assert(metrics.write_prometheus(path, s))
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  os.remove(path)
  t.eq(text:sub(-1), "\n")
  local p = parse_prometheus(text)

  -- every sample belongs to a declared family with HELP; counters end in _total
  for _, smp in ipairs(p.samples) do
    local fam = family_of(p, smp.name)
    t.ok(fam, "no TYPE for " .. smp.name)
    t.ok(p.helps[fam], "no HELP for " .. fam)
    if p.types[fam] == "counter" then
      t.ok(fam:match("_total$"), fam)
    end
    t.eq(smp.labels.pipeline, "intent-batches", smp.name)
  end

  for _, ts in ipairs(s.tenants) do
    local l = { pipeline = "intent-batches", tenant = ts.tenant }
    for _, c in ipairs({ "submitted", "accepted", "uploaded", "failed", "unknown" }) do
      local smp = find(p, "cogpipe_examples_" .. c .. "_total", l)
      t.ok(smp, c .. " for " .. ts.tenant)
      t.eq(smp.value, ts[c], c)
    end
    for reason, n in pairs(ts.rejected_by_reason) do
      local smp = find(p, "cogpipe_examples_rejected_total",
        { pipeline = "intent-batches", tenant = ts.tenant, reason = reason })
      t.ok(smp, reason)
      t.eq(smp.value, n, reason)
    end
    t.eq(find(p, "cogpipe_requests_total", l).value, ts.requests)
    local q50 = find(p, "cogpipe_request_latency_seconds",
      { pipeline = "intent-batches", tenant = ts.tenant, quantile = "0.5" })
    local q95 = find(p, "cogpipe_request_latency_seconds",
      { pipeline = "intent-batches", tenant = ts.tenant, quantile = "0.95" })
    t.near(q50.value * 1000, ts.latency_ms.p50, 0.5)
    t.near(q95.value * 1000, ts.latency_ms.p95, 0.5)
    t.eq(find(p, "cogpipe_request_latency_seconds_count", l).value, ts.latency_ms.count)
    t.near(find(p, "cogpipe_request_latency_seconds_sum", l).value * 1000, ts.latency_ms.sum, 0.5)
    t.near(find(p, "cogpipe_request_latency_max_seconds", l).value * 1000, ts.latency_ms.max, 0.5)
    t.eq(find(p, "cogpipe_tenant_last_run_success", l).value, ts.status == "ok" and 1 or 0)
    if ts.parsing_success_rate then
      t.near(find(p, "cogpipe_parsing_success_ratio", l).value * 100, ts.parsing_success_rate, 1e-9)
    end
  end
  t.eq(p.types.cogpipe_request_latency_seconds, "summary")
  t.eq(p.types.cogpipe_examples_rejected_total, "counter")
  t.eq(p.types.cogpipe_last_run_timestamp_seconds, "gauge")
  local run = { pipeline = "intent-batches" }
  t.near(find(p, "cogpipe_last_run_timestamp_seconds", run).value, os.time(), 5)
  t.eq(find(p, "cogpipe_last_run_success", run).value, 0)
  t.eq(find(p, "cogpipe_last_run_status", { pipeline = "intent-batches", status = "failed" }).value, 1)
  t.near(find(p, "cogpipe_last_run_duration_seconds", run).value, s.duration_s, 1e-9)
  t.eq(find(p, "cogpipe_training_status", { pipeline = "intent-batches", tenant = "acme", status = "done" }).value, 1)
end)

t.test("label values are escaped", function()
  local odd = 'we"ird\\pipe\nline'
  local p = parse_prometheus(metrics.prometheus_text(sample_run(odd)))
  local smp = find(p, "cogpipe_examples_submitted_total", { pipeline = odd, tenant = "beta" })
  t.ok(smp, "escaped label read back")
  t.eq(smp.value, 4)
end)

t.done()
