-- Webhook delivery: POSTs a run's report to each configured URL, signed the
-- Standard Webhooks way (cogpipe._webhook signs), with retries through
-- cp.http, and keeps what still fails in an outbox in the state directory
-- for the next run or `cogpipe webhook flush`. Never writes a secret to the
-- outbox, the audit log or an error: entries name their target, and the
-- secrets come from the configuration at send time.
--
--   local webhook = require "cogpipe.webhook"
--   webhook.flush_outbox{ targets = tenant.webhooks, audit = log }  -- at start
--   local results = webhook.send(tenant.webhooks, summary, { audit = log })
--
-- A target is { url =, secret = "whsec_..." | "raw" | {several, for rotation},
-- name = optional, timeout = 20, tries = 4, base = 1, cap = 15, max_wait = 45,
-- headers = optional extra headers, ca_file =, insecure = }.
local cp = require "cogpipe"
local native = require "cogpipe._webhook"
local json = cp.json

local M = {}

M.EVENT_TYPE = "cogpipe.run.completed"

-- Receivers reject a webhook-timestamp more than 5 minutes old, and the
-- signature is made once per delivery (cp.http replays the same request),
-- so a delivery with its retries must end well within that.
local TOLERANCE = 270

local DEFAULTS = { timeout = 20, tries = 4, base = 1, cap = 15, max_wait = 45 }

local function fail(kind, fmt, ...)
  return nil, setmetatable({ kind = kind, message = string.format(fmt, ...) }, {
    __tostring = function(e)
      return e.message
    end,
  })
end

-- ---- configuration --------------------------------------------------------------

local function secrets_of(target)
  local s = target.secret or target.secrets
  if type(s) == "string" then
    return s
  end
  if type(s) == "table" and #s > 0 then
    return s
  end
  return nil
end

-- The URL without its query and credentials, redacted (a URL read through
-- env() is a secret): what audit records and messages may show.
function M.display_url(url)
  if url == nil then
    return "(secret url)"
  end
  local scheme, rest = cp.secrets.redact(tostring(url)):match("^(%a[%w+.-]*://)(.*)$")
  if not scheme then
    return cp.secrets.REDACTED
  end
  rest = rest:gsub("^[^/@]*@", "") -- user:password@
  rest = rest:gsub("[?#].*$", "")
  return scheme .. rest
end

local function setting(target, k)
  local v = target[k]
  if v == nil then
    return DEFAULTS[k]
  end
  return v
end

-- Checks one target; returns true or nil, err (kind "config").
function M.check_target(target, where)
  where = where or "webhook"
  if type(target) ~= "table" then
    return fail("config", "%s must be a table", where)
  end
  if type(target.url) ~= "string" or not target.url:match("^https?://[^/]") then
    return fail("config", "%s.url must be an http:// or https:// URL", where)
  end
  local secrets = secrets_of(target)
  if not secrets then
    return fail("config", "%s needs a secret (whsec_<base64> or at least 24 bytes)", where)
  end
  local ok, err = native.check_secret(secrets)
  if not ok then
    return fail("config", "%s: %s", where, err.message)
  end
  for _, k in ipairs({ "timeout", "tries", "base", "cap", "max_wait" }) do
    local v = setting(target, k)
    if type(v) ~= "number" or v < 0 or (k == "tries" and (v < 1 or v > 20 or math.type(v) ~= "integer")) then
      return fail("config", "%s.%s must be a %s", where, k, k == "tries" and "whole number 1..20" or "number >= 0")
    end
  end
  local tries, timeout = setting(target, "tries"), setting(target, "timeout")
  local wait = math.max(setting(target, "cap"), setting(target, "max_wait") * 1.1 + 1)
  if tries * timeout + (tries - 1) * wait > TOLERANCE then
    return fail("config", "%s: tries x timeout plus the waits between them could take more than %d s, and "
      .. "receivers reject a signature older than 5 minutes; lower tries, timeout or max_wait", where, TOLERANCE)
  end
  return true
end

-- ---- the state directory and the outbox --------------------------------------------

-- The state directory (cogpipe.state), kept here for callers of this module.
M.state_dir = require("cogpipe.state").dir

function M.outbox_dir(state_dir)
  return M.state_dir(state_dir) .. "/webhooks/outbox"
end

-- Deliveries that failed for good (410, a 4xx, a broken entry): kept for a
-- person to look at, never sent again.
function M.failed_dir(state_dir)
  return M.state_dir(state_dir) .. "/webhooks/failed"
end

local seq = 0

local function entry_name(entry)
  seq = seq + 1
  -- sortable by the time of the event: the outbox is sent oldest first
  return string.format("%010d-%04d-%s-%s.json", entry.created_unix, seq % 10000, entry.id,
    entry.url_sha256:sub(1, 8))
end

local function write_entry(dir, name, entry)
  local ok, err = cp.fs.mkdir(dir)
  if not ok then
    return nil, err
  end
  return cp.fs.write_atomic(dir .. "/" .. name, json.encode(entry))
end

local function read_entry(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read("a")
  f:close()
  local entry = json.decode(text)
  if type(entry) ~= "table" or type(entry.id) ~= "string" or type(entry.url_sha256) ~= "string"
      or (entry.url ~= nil and type(entry.url) ~= "string") or type(entry.body) ~= "string" then
    return nil
  end
  return entry
end

-- ---- delivery ---------------------------------------------------------------------------

local function classify(resp, err)
  if resp then
    if resp.status >= 200 and resp.status < 300 then
      return "delivered"
    end
    return "failed" -- a redirect: the URL is wrong, resending will not help
  end
  if err.status == 410 then
    return "gone" -- the receiver asks us to stop
  end
  if err.retryable or err.kind == "connect" or err.kind == "timeout" or err.kind == "network" then
    return "retry"
  end
  return "failed"
end

-- Sends one event to one target, retries included. Returns a result:
-- { outcome = "delivered"|"retry"|"gone"|"failed", status, attempts, error }.
local function deliver(target, ev)
  local secrets = secrets_of(target)
  local timestamp = os.time()
  local signature, serr = native.sign(secrets or "", ev.id, timestamp, ev.body)
  if not signature then
    return { outcome = "failed", attempts = 0, error = serr.message }
  end
  local headers = {}
  for k, v in pairs(target.headers or {}) do
    headers[k] = v
  end
  headers["content-type"] = "application/json"
  headers["user-agent"] = "cogpipe/" .. cp.version
  headers["webhook-id"] = ev.id
  headers["webhook-timestamp"] = tostring(timestamp)
  headers["webhook-signature"] = signature
  local resp, err = cp.http.request({
    method = "POST",
    url = target.url,
    headers = headers,
    body = ev.body,
    -- the target's timeout is a try's; the signature bounds the whole
    attempt_timeout = setting(target, "timeout"),
    timeout = TOLERANCE,
    connect_timeout = math.min(10, setting(target, "timeout")),
    ca_file = target.ca_file,
    insecure = target.insecure,
    -- a replay is harmless: receivers drop repeats by webhook-id
    retry = {
      tries = setting(target, "tries"), base = setting(target, "base"), cap = setting(target, "cap"),
      max_wait = setting(target, "max_wait"), idempotent = true,
    },
  })
  local outcome = classify(resp, err)
  local r = {
    outcome = outcome,
    status = resp and resp.status or err.status,
    attempts = (resp or err).attempts or 1,
    elapsed = (resp or err).elapsed,
  }
  if outcome ~= "delivered" then
    r.error = cp.secrets.redact(err and err.message or ("answered " .. tostring(r.status)))
  end
  return r
end

local function audit_delivery(audit, ctx, target, ev, r, extra)
  if not audit then
    return
  end
  local fields = {
    webhook_id = ev.id, url = M.display_url(target.url), outcome = r.outcome, status = r.status,
    attempts = r.attempts, error = r.error, body_sha256 = cp.audit.sha256(ev.body),
  }
  for k, v in pairs(extra or {}) do
    fields[k] = v
  end
  audit:record("webhook", fields, ctx)
end

-- Makes the event once: its id (kept by every retry and re-send) and the
-- exact body bytes that are signed.
function M.event(payload, opts)
  opts = opts or {}
  local body
  if type(payload) == "string" then
    body = cp.secrets.redact(payload)
  else
    body = json.encode(cp.secrets.redact(payload))
  end
  return { id = opts.id or native.new_id(), type = opts.type or M.EVENT_TYPE, body = body }
end

-- An outbox entry. A URL that is itself a secret (read through env()) is
-- kept only as its hash: flushing it then needs the configuration that
-- names it (the tenant), which is where the signing secret comes from too.
local function new_entry(target, ev, r, opts)
  local url = target.url
  if cp.secrets.redact(url) ~= url then
    url = nil
  end
  return {
    v = 1, id = ev.id, type = ev.type, url = url, url_sha256 = cp.audit.sha256(target.url), target = target.name,
    tenant = opts.tenant, pipeline = opts.pipeline, body = ev.body,
    created = cp.audit.timestamp(), created_unix = os.time(),
    attempts = r.attempts, last_status = r.status, last_error = r.error,
  }
end

-- Sends payload (a table, encoded once, or a JSON string) to every target
-- at the same time. A delivery that still fails after its retries for a
-- reason time may fix (network, 408, 429, 5xx) is put in the outbox, unless
-- opts.outbox == false. opts: state_dir, audit, tenant, pipeline, id, type.
-- Returns the event and a list of results, one per target:
-- { url (display form), outcome, status, attempts, error, queued }.
function M.send(targets, payload, opts)
  opts = opts or {}
  local ev = M.event(payload, opts)
  local tasks = {}
  for i, target in ipairs(targets or {}) do
    tasks[i] = cp.spawn(function()
      local ok, cerr = M.check_target(target, "webhooks[" .. i .. "]")
      local r
      if not ok then
        r = { outcome = "failed", attempts = 0, error = cerr.message }
      else
        r = deliver(target, ev)
      end
      r.url = M.display_url(target.url)
      r.id = ev.id
      if r.outcome == "retry" and ok and opts.outbox ~= false then
        local entry = new_entry(target, ev, r, opts)
        local name = entry_name(entry)
        local wrote, werr = write_entry(M.outbox_dir(opts.state_dir), name, entry)
        r.queued = wrote and true or false
        if not wrote then
          r.error = r.error .. "; and it could not be kept for later: " .. tostring(werr and werr.message)
        end
      end
      audit_delivery(opts.audit, { tenant = opts.tenant, pipeline = opts.pipeline }, target, ev, r,
        { queued = r.queued })
      return r
    end)
  end
  local results = {}
  for i, task in ipairs(tasks) do
    local r, err = cp.wait(task)
    results[i] = r or { outcome = "failed", attempts = 0, error = tostring(err and err.message or err),
      url = M.display_url(targets[i].url), id = ev.id }
  end
  return ev, results
end

-- ---- the outbox ---------------------------------------------------------------------------

local function find_target(entry, opts)
  for _, t in ipairs(opts.targets or {}) do
    if entry.target and t.name == entry.target then
      return t
    end
  end
  for _, t in ipairs(opts.targets or {}) do
    if type(t.url) == "string" and cp.audit.sha256(t.url) == entry.url_sha256 then
      return t
    end
  end
  if entry.url and opts.secrets and #opts.secrets > 0 then
    return { url = entry.url, secret = opts.secrets }
  end
  return nil
end

-- Claims whose process is gone (it crashed mid-send) go back to the queue.
local function reclaim(dir)
  for _, name in ipairs(native.list(dir, ".sending") or {}) do
    local orig, pid = name:match("^(.*%.json)%.(%d+)%.sending$")
    if orig and not native.pid_alive(tonumber(pid)) then
      os.rename(dir .. "/" .. name, dir .. "/" .. orig)
    end
  end
end

-- Pending entries, oldest first: { name, id, url (display), target, tenant,
-- pipeline, created, attempts, last_status, last_error }.
function M.pending(opts)
  opts = opts or {}
  local dir = M.outbox_dir(opts.state_dir)
  local list = {}
  for _, name in ipairs(native.list(dir, ".json") or {}) do
    local e = read_entry(dir .. "/" .. name)
    list[#list + 1] = e and {
      name = name, id = e.id, url = M.display_url(e.url), target = e.target, tenant = e.tenant,
      pipeline = e.pipeline, created = e.created, attempts = e.attempts, last_status = e.last_status,
      last_error = e.last_error,
    } or { name = name, error = "unreadable entry" }
  end
  return list
end

-- Sends what earlier runs could not deliver, oldest first. Secrets come
-- from opts.targets (matched by name, then URL) or opts.secrets (used for
-- any entry). opts: state_dir, targets, secrets, audit; tenant = name: only
-- that tenant's entries (and those of no tenant), so that a URL two tenants
-- share is never signed with the wrong tenant's secret; only =
-- function(entry) -> boolean to pick entries otherwise. Returns a report:
-- { delivered, kept, failed, results = { {id, url, outcome, status, attempts, error} } }.
function M.flush_outbox(opts)
  opts = opts or {}
  local dir = M.outbox_dir(opts.state_dir)
  local report = { delivered = 0, kept = 0, failed = 0, results = json.array() }
  reclaim(dir)
  local names, lerr = native.list(dir, ".json")
  if not names then
    report.error = lerr.message
    return report
  end
  local me = native.pid()
  for _, name in ipairs(names) do
    local path = dir .. "/" .. name
    local entry = read_entry(path)
    if not entry then
      -- unreadable: kept aside for a person, never sent blind
      cp.fs.mkdir(M.failed_dir(opts.state_dir))
      os.rename(path, M.failed_dir(opts.state_dir) .. "/" .. name)
      report.failed = report.failed + 1
      report.results[#report.results + 1] = { name = name, outcome = "failed", error = "unreadable outbox entry" }
    elseif (not opts.tenant or entry.tenant == nil or entry.tenant == opts.tenant)
        and (not opts.only or opts.only(entry)) then
      local target = find_target(entry, opts)
      local claim = path .. "." .. me .. ".sending"
      if not target then
        report.kept = report.kept + 1
        report.results[#report.results + 1] = {
          id = entry.id, url = M.display_url(entry.url), outcome = "kept",
          error = entry.url and "no secret configured for this webhook target"
            or "no webhook target configured for this entry (its URL is a secret: give its tenant)",
        }
      elseif os.rename(path, claim) then -- another process may have taken it
        local ev = { id = entry.id, type = entry.type, body = entry.body }
        local send_to = { url = target.url, secret = secrets_of(target), name = entry.target }
        for k, v in pairs(target) do
          if send_to[k] == nil then
            send_to[k] = v
          end
        end
        local r = deliver(send_to, ev)
        r.id, r.url = entry.id, M.display_url(target.url)
        entry.attempts = (entry.attempts or 0) + (r.attempts or 0)
        entry.last_status, entry.last_error = r.status, r.error
        if r.outcome == "delivered" then
          os.remove(claim)
          report.delivered = report.delivered + 1
        elseif r.outcome == "retry" then
          local ok = write_entry(dir, name, entry)
          if ok then
            os.remove(claim)
          else
            os.rename(claim, path)
          end
          report.kept = report.kept + 1
          r.queued = true
        else
          local ok = write_entry(M.failed_dir(opts.state_dir), name, entry)
          if ok then
            os.remove(claim)
          else
            os.rename(claim, path)
          end
          report.failed = report.failed + 1
        end
        audit_delivery(opts.audit, { tenant = entry.tenant, pipeline = entry.pipeline }, send_to, ev, r,
          { from_outbox = true, queued = r.queued })
        report.results[#report.results + 1] = r
      end
    end
  end
  return report
end

return M
