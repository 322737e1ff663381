-- cogpipe.metrics: what a run accumulates, its summary, the webhook body
-- with the original workflows' field names, and the Prometheus file, read
-- back with a small parser of the text format and checked against the
-- summary.
local cp = require "cogpipe"
local t = require "t"
local metrics = require "cogpipe.metrics"
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

local function sample_run()
  local m = metrics.new({ pipeline = "intent-batches", run_id = "run-7", workflow = "intent" })
  m:add("acme", "submitted", 10)
  m:add("acme", "accepted", 6)
  m:reject("acme", "invalid", 1)
  m:reject("acme", "duplicate", 2)
  m:reject("acme", "semantic")
  m:add("acme", "uploaded", 5)
  m:add("acme", "failed", 1)
  m:add("acme", "requests", 3)
  for _, s in ipairs({ 0.1, 0.2, 0.3, 0.4, 1.5 }) do
    m:latency("acme", s)
  end
  m:parsing("acme", 9, 10)
  m:set("acme", "intent_id", "intent-1")
  m:retrain("acme", { job_id = "job-1", status = "running" })
  m:retrain("acme", { job_id = "job-1", status = "done" })
  m:add("beta", "submitted", 4)
  m:add("beta", "accepted", 4)
  m:add("beta", "uploaded", 4)
  m:latency("beta", 0.05)
  m:reject("beta", "over_limit", 0)
  m:finish()
  return m
end

t.test("the summary adds up per tenant and in total", function()
  local s = sample_run():summary()
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
  t.eq(a.unknown, 0)
  t.eq(a.latency_ms.p50, 300)
  t.eq(a.latency_ms.p95, 1500)
  t.eq(a.latency_ms.max, 1500)
  t.eq(a.latency_ms.count, 5)
  t.near(a.parsing_success_rate, 90, 1e-9)
  t.eq(a.training.status, "done")
  t.eq(#a.training.job_ids, 1)
  t.eq(s.tenants[2].status, "ok")
  t.eq(s.totals.submitted, 14)
  t.eq(s.totals.uploaded, 9)
  t.eq(s.totals.rejected, 4)
  t.eq(s.totals.latency_ms.count, 6)
  t.eq(s.totals.latency_ms.max, 1500)
  t.eq(s.totals.latency_ms.p50, 200)
  t.ok(s.duration_s >= 0)
  t.ok(s.finished_at:match("Z$"))
  -- and it is JSON
  t.eq(json.decode(json.encode(s)).totals.submitted, 14)
end)

t.test("misuse raises", function()
  local m = metrics.new({ pipeline = "p" })
  t.raises(function() m:add("a", "nonsense", 1) end, "unknown count")
  t.raises(function() m:reject("a", "ugly") end, "unknown rejection reason")
  t.raises(function() m:add("a", "submitted", -1) end, "whole number")
  t.raises(function() m:add("a", "submitted", 1.5) end, "whole number")
  t.raises(function() m:latency("a", -1) end, "latency")
  t.raises(function() m:add(nil, "submitted") end, "tenant name")
  t.raises(function() metrics.new({ pipeline = 5 }) end, "pipeline")
end)

t.test("the status can be given; training not done fails a tenant", function()
  local m = metrics.new({ pipeline = "p" })
  m:add("a", "uploaded", 1)
  m:retrain("a", { task_id = "t1", status = "error" })
  m:finish()
  t.eq(m:summary().status, "failed")
  m:finish({ status = "rejected" })
  t.eq(m:summary().status, "rejected")
end)

t.test("the webhook body keeps both original workflows' field names", function()
  local s = sample_run():summary()
  local b = metrics.webhook_body(s, "acme")
  -- intent batch workflow
  t.eq(b.intent_id, "intent-1")
  t.eq(b.submitted_count, 10)
  t.eq(b.accepted_count, 6)
  t.eq(b.rejected_count, 4)
  t.eq(b.upload_latency_ms, 1500)
  t.eq(b.retrain_job_id, "job-1")
  t.eq(b.status, "failed")
  t.ok(b.timestamp:match("^%d%d%d%d%-%d%d%-%d%dT.*Z$"), b.timestamp)
  -- the richer ones beside them
  t.eq(b.tenant, "acme")
  t.eq(b.run_id, "run-7")
  t.eq(b.rejected_by_reason.duplicate, 2)
  t.eq(b.uploadLatencyMs, nil, "the dataset names only for dataset runs")

  local d = metrics.new({ pipeline = "dataset", workflow = "dataset" })
  d:add("t", "submitted", 3)
  d:add("t", "uploaded", 3)
  d:latency("t", 2.5)
  d:parsing("t", 3, 4)
  d:set("t", "dataset_id", "ds-9")
  d:finish()
  local db = metrics.webhook_body(d:summary(), "t")
  t.eq(db.uploadLatencyMs, 2500)
  t.near(db.parsingSuccessRate, 75, 1e-9)
  t.eq(db.status, "ok")
  t.eq(db.datasetId, "ds-9")
  t.ok(db.timestamp)
  t.eq(db.intent_id, nil)
  -- unknown values are present as null
  local e = metrics.new({ pipeline = "x" })
  e:add("t", "submitted", 0)
  e:finish()
  local eb = e:webhook_body("t")
  t.eq(eb.datasetId, json.null)
  t.eq(eb.retrain_job_id, json.null)
  t.ok(json.encode(eb):find('"datasetId":null', 1, true))
end)

t.test("the Prometheus file parses and matches the summary", function()
  local m = sample_run()
  local path = os.tmpname()
  assert(m:write_prometheus(path))
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  os.remove(path)
  t.eq(text:sub(-1), "\n")
  local p = parse_prometheus(text)
  local s = m:summary()

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
  t.eq(find(p, "cogpipe_last_run_timestamp_seconds", run).value, s.timestamp)
  t.eq(find(p, "cogpipe_last_run_success", run).value, 0)
  t.eq(find(p, "cogpipe_last_run_status", { pipeline = "intent-batches", status = "failed" }).value, 1)
  t.near(find(p, "cogpipe_last_run_duration_seconds", run).value, s.duration_s, 1e-9)
  t.eq(find(p, "cogpipe_training_status", { pipeline = "intent-batches", tenant = "acme", status = "done" }).value, 1)
end)

t.test("label values are escaped", function()
  local m = metrics.new({ pipeline = 'we"ird\\pipe\nline' })
  m:add("t", "submitted", 1)
  m:finish()
  local p = parse_prometheus(metrics.prometheus_text(m:summary()))
  local smp = find(p, "cogpipe_examples_submitted_total", { pipeline = 'we"ird\\pipe\nline', tenant = "t" })
  t.ok(smp, "escaped label read back")
  t.eq(smp.value, 1)
end)

t.done()
