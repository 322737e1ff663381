-- A tenant's connection to one Cognigy target: base URL, auth, the tenant's
-- limiter and TLS settings, applied to every request; latency and attempts
-- reported to the run. Also the polling of long-running jobs and tasks.
-- Retries are the HTTP layer's (DESIGN 4.4); this file decides none.
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
    })
  elseif opts.api_key_ok then
    return nil, { kind = "config", message = "tenant " .. t.name .. ": auth needs api_key or client_id/client_secret" }
  else
    return nil, { kind = "config", message = "tenant " .. t.name .. ": auth needs client_id and client_secret" }
  end
  local limits = t.limits or {}
  local limiter = ctx.limiter
  if not limiter then
    limiter = cp.http.limiter({
      rate = limits.rate or 20,
      burst = limits.burst or 40,
      max_in_flight = limits.max_in_flight or 8,
    })
    ctx.limiter = limiter -- one limiter per tenant, shared by its targets
  end
  return setmetatable({ ctx = ctx, base = base, auth = authobj, limiter = limiter, tls = tls,
    timeout = limits.timeout }, Client)
end

-- spec: method, path, query, json | multipart | body, headers, retry.
function Client:request(spec)
  local resp, err = cp.http.request({
    method = spec.method,
    url = self.base .. spec.path,
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
  return resp, err
end

-- GET that decodes JSON; nil, err for failures and non-JSON answers.
function Client:get_json(path, query)
  local resp, err = self:request({ method = "GET", path = path, query = query })
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
-- timeout seconds (default 600, the platform's cap on training).
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

return M
