-- A tenant's connection to one Cognigy target: base URL, auth, the tenant's
-- limiter and TLS settings, applied to every request; latency and attempts
-- reported to the run (token requests included). Also the polling of
-- long-running jobs and tasks. Retries, the shared per-origin gate and the
-- token taken at send time are the HTTP layer's (DESIGN 4.4); this file
-- decides none. An authentication failure stops the tenant: it is reported
-- once, and no request of the tenant is sent after it.
local cp = require "cogpipe"
local auth = require "cogpipe.auth"

local M = {}
local Client = {}
Client.__index = Client

-- Percent-encodes a path segment (an intent id may hold anything).
function M.segment(s)
  return (tostring(s):gsub("[^%w%-._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

local function strip(url)
  return (url:gsub("/+$", ""))
end

-- opts: base_url, and either token_path + scope (OAuth2 client credentials
-- with the tenant's auth.client_id/secret) or api_key use. section is the
-- tenant's table for this target (it may override base_url and auth).
function M.new(ctx, section, opts)
  local t = ctx.tenant
  section = section or {}
  local base = section.base_url or t.base_url
  if not base then
    return nil, { kind = "config", message = "tenant " .. t.name .. " has no base_url for this target" }
  end
  base = strip(base)
  local a = section.auth or t.auth or {}
  local tls = { ca_file = t.ca_file, insecure = t.insecure_skip_verify }
  local authobj
  if a.api_key and opts.api_key_ok then
    authobj = auth.api_key({ header = "X-API-Key", key = a.api_key })
  elseif a.client_id then
    authobj = auth.oauth2({
      token_url = base .. opts.token_path,
      client_id = a.client_id,
      client_secret = a.client_secret,
      scope = opts.scope,
      ca_file = tls.ca_file,
      insecure = tls.insecure,
      observe = function(info)
        ctx:request_done({ method = info.method, path = opts.token_path, status = info.status,
          attempts = info.attempts, elapsed = info.elapsed, outcome = info.outcome })
      end,
    })
  elseif opts.api_key_ok then
    return nil, { kind = "config", message = "tenant " .. t.name .. ": auth needs api_key or client_id/client_secret" }
  else
    return nil, { kind = "config", message = "tenant " .. t.name .. ": auth needs client_id and client_secret" }
  end
  local limits = t.limits or {}
  local rate, burst = limits.rate or 20, limits.burst or 40
  local limiter = ctx.limiter
  if not limiter then
    limiter = cp.http.limiter({ rate = rate, burst = burst, max_in_flight = limits.max_in_flight or 8 })
    ctx.limiter = limiter -- one limiter per tenant, shared by its targets
  end
  -- The platform counts requests per client: tenants of one run that reach
  -- the same origin share its gate, at the lowest rate any of them allows.
  cp.http.origin_limit(base, { rate = rate, burst = burst })
  return setmetatable({ ctx = ctx, base = base, auth = authobj, limiter = limiter, tls = tls,
    timeout = limits.timeout }, Client)
end

-- spec: method, path, query, json | multipart | body, headers, retry.
function Client:request(spec)
  if self.ctx.stopped then
    -- not sent: the tenant stopped (its error was reported once)
    return nil, { kind = "stopped", message = "not sent: " .. self.ctx.stopped.message, attempts = 0 }
  end
  local resp, err = cp.http.request({
    method = spec.method,
    url = spec.url or (self.base .. spec.path),
    query = spec.query,
    json = spec.json,
    body = spec.body,
    multipart = spec.multipart,
    headers = spec.headers,
    auth = self.auth,
    limiter = self.limiter,
    ca_file = self.tls.ca_file,
    insecure = self.tls.insecure,
    timeout = spec.timeout or self.timeout,
    retry = spec.retry,
  })
  local r = resp or err
  self.ctx:request_done({
    method = spec.method,
    path = spec.path,
    status = r.status,
    attempts = r.attempts,
    elapsed = r.elapsed,
    outcome = err and (err.outcome or "failed") or "ok",
  })
  if err and err.kind == "auth" then
    self.ctx:stop(err)
  end
  return resp, err
end

-- GET that decodes JSON; nil, err for failures and non-JSON answers.
-- path is below the base URL, or a whole URL on the same origin.
function Client:get_json(path, query)
  local url = path:match("^https?://") and path or nil
  local resp, err = self:request({ method = "GET", path = path, url = url, query = query })
  if not resp then
    return nil, err
  end
  local body, jerr = resp:json()
  if body == nil then
    return nil, { kind = "protocol", status = resp.status,
      message = "GET " .. path .. ": answer is not JSON: " .. tostring(jerr and jerr.message) }
  end
  return body
end

-- The final status of a retraining job as the dataset and intent APIs
-- report it (queued, running, then completed, failed or cancelled), for
-- Client:follow; nil while it runs.
function M.job_state(body)
  if body.status == "completed" then
    return "done"
  elseif body.status == "failed" then
    return "error", body.error
  elseif body.status == "cancelled" then
    return "cancelled"
  end
end

-- Polls path until state(body) returns a final status ("done", "error",
-- "cancelled"), starting near 2 s and backing off to 15 s, for at most
-- timeout seconds (default 600, the platform's cap on training). With
-- opts.optional a 404 means the platform does not say: "unavailable".
function Client:follow(path, state, opts)
  opts = opts or {}
  local deadline = cp.now() + (opts.timeout or 600)
  local interval = opts.interval or 2
  while true do
    local body, err = self:get_json(path)
    if body then
      local status, info = state(body)
      if status then
        return status, info, body
      end
    elseif err.status == 404 and opts.optional then
      return "unavailable", "the status URL answered 404: the platform does not report this job"
    elseif not err.retryable then
      return "error", err.message
    end
    if cp.now() + interval > deadline then
      return "timeout", string.format("still running after %d s", opts.timeout or 600)
    end
    cp.sleep(interval)
    interval = math.min(interval * 1.5, opts.max_interval or 15)
  end
end

-- Reads every intent at once (read(ctx, label) -> have | nil, err), the
-- limiter bounding the requests. Waits for all of them, so that no read
-- outlives the phase that started it, and returns {label = have}, or nil
-- and the first error in label order.
function M.read_intents(ctx, labels, read)
  local tasks = {}
  for i, label in ipairs(labels) do
    tasks[i] = cp.spawn(read, ctx, label)
  end
  local out, first = {}, nil
  for i, task in ipairs(tasks) do
    local have, err = cp.wait(task)
    if have then
      out[labels[i]] = have
    else
      first = first or err
    end
  end
  if first then
    return nil, first
  end
  return out
end

-- The URL a tenant names to follow a retraining job (retrain_status_url in
-- the target's section or at the top; {api_base}, {tenant_url} and
-- {base_url} stand for the target's base URL, {id} for the job id), or
-- nil: the contract defines no such endpoint, so without one a job is
-- reported as triggered. Returns nil, err when the URL would leave the
-- target's origin (the request carries the tenant's credentials).
function M.status_url(ctx, section, base, id)
  local tpl = (section or {}).retrain_status_url or ctx.tenant.retrain_status_url
  if tpl == nil then
    return nil
  end
  if type(tpl) ~= "string" then
    return nil, { kind = "config", message = "tenant " .. ctx.tenant.name .. ": retrain_status_url must be a string" }
  end
  local url = tpl:gsub("{([%w_]+)}", function(k)
    if k == "id" then
      return M.segment(id or "ID")
    elseif k == "api_base" or k == "tenant_url" or k == "base_url" then
      return base
    end
  end)
  local origin = base:match("^(https?://[^/]+)")
  if url:sub(1, #origin + 1) ~= origin .. "/" then
    return nil, { kind = "config", message = string.format("tenant %s: retrain_status_url must stay on %s "
      .. "(it is sent the tenant's credentials)", ctx.tenant.name, origin) }
  end
  return url
end

-- The training report of retraining jobs the platform took (ids in
-- order): followed where the tenant names a status URL, else "triggered".
-- Sets ctx.training and returns it.
function Client:retraining(section, jobs)
  local ctx = self.ctx
  local training = { jobs = cp.json.array(), retrain_job_id = jobs[#jobs] and jobs[#jobs].id }
  ctx.training = training
  for i, job in ipairs(jobs) do
    training.jobs[i] = job.id
  end
  if not M.status_url(ctx, section, self.base, "x") then
    training.status = "triggered"
    for _, job in ipairs(jobs) do
      ctx:event("training", { job = job.id, intent = job.intent, status = "triggered" })
    end
    return training
  end
  training.status = "done"
  local tasks = {}
  for i, job in ipairs(jobs) do
    tasks[i] = cp.spawn(function()
      return self:follow(assert(M.status_url(ctx, section, self.base, job.id)), M.job_state, { optional = true })
    end)
  end
  local rank = { done = 0, unavailable = 1, cancelled = 2, timeout = 3, error = 4 }
  for i, task in ipairs(tasks) do
    local status, info = cp.wait(task)
    status = status or "error"
    ctx:event("training", { job = jobs[i].id, intent = jobs[i].intent, status = status, info = info })
    if (rank[status] or 4) > (rank[training.status] or 4) then
      training.status = status
    end
    if require("cogpipe.runner").TRAINING_FAILED[status] then
      ctx:fail(string.format("retraining job %s%s: %s %s", jobs[i].id,
        jobs[i].intent and (" (intent " .. jobs[i].intent .. ")") or "", status, tostring(info or "")))
    elseif status == "unavailable" then
      ctx:note(string.format("retraining job %s: %s", jobs[i].id, tostring(info)))
    end
  end
  return training
end

return M
