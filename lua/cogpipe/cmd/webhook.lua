-- cogpipe webhook: the webhook outbox from the command line. `flush` sends
-- what earlier runs could not deliver (signing with the secrets of the
-- tenants given, or of --secret-env variables); `list` shows what waits.
-- Delivery itself is cogpipe.webhook's.
local cp = require "cogpipe"
local json = cp.json
local webhook = require "cogpipe.webhook"
local args = require "cogpipe.cmd.args"

local M = {}

M.usage = [[
usage: cogpipe webhook flush [--tenant NAME|FILE]... [--secret-env VAR]...
                             [--state-dir DIR] [--audit FILE] [--json]
       cogpipe webhook list [--state-dir DIR] [--json]

flush   sends the pending deliveries, oldest first. Each is signed with the
        secret of the tenant webhook with the same URL (--tenant), else with
        the secret in each --secret-env variable (several: one signature
        each), else with $COGPIPE_WEBHOOK_SECRET. Deliveries with no secret
        stay pending.
list    shows the pending deliveries.

  --state-dir DIR   default $COGPIPE_STATE_DIR, $XDG_STATE_HOME/cogpipe or
                    ~/.local/state/cogpipe
  --audit FILE      append the deliveries to this audit log
  --json            print one JSON document

exit status: 0 nothing left pending; 1 some deliveries are still pending or
failed for good; 2 usage or configuration error
]]

local function usage_error(msg)
  io.stderr:write("cogpipe: webhook: ", msg, "\n", M.usage)
  return 2
end

local FLAGS = {
  ["--json"] = { key = "json" },
  ["--tenant"] = { key = "tenants", value = true, list = true },
  ["--secret-env"] = { key = "secret_envs", value = true, list = true },
  ["--state-dir"] = { key = "state_dir", value = true },
  ["--audit"] = { key = "audit", value = true },
}

local function parse(argv)
  local o = { tenants = {}, secret_envs = {} }
  local i = 1
  while i <= #argv do
    local name, spec, value, last = args.read(argv, i, FLAGS)
    if not name then
      return nil, spec
    elseif not spec then
      return nil, "unknown argument '" .. argv[i] .. "'"
    elseif spec.list then
      table.insert(o[spec.key], value)
    else
      o[spec.key] = value
    end
    i = last + 1
  end
  return o
end

local function list(o)
  local pending = webhook.pending({ state_dir = o.state_dir })
  if o.json then
    io.stdout:write(json.encode({ pending = json.array(pending), outbox = webhook.outbox_dir(o.state_dir) }), "\n")
  else
    for _, e in ipairs(pending) do
      io.stdout:write(string.format("%s  %s  %s  tenant %s  %d attempt(s)%s\n", e.created or "?", e.id or e.name,
        e.url or "?", tostring(e.tenant), e.attempts or 0,
        e.last_error and ("  last: " .. e.last_error) or (e.error and ("  " .. e.error) or "")))
    end
    io.stdout:write(string.format("%d pending in %s\n", #pending, webhook.outbox_dir(o.state_dir)))
  end
  return 0
end

local function flush(o)
  local targets, secrets = {}, {}
  local tenant_mod = require "cogpipe.tenant"
  for _, spec in ipairs(o.tenants) do
    local t, tsecrets = tenant_mod.load(spec)
    if not t then
      io.stderr:write("cogpipe: webhook: ", tostring(tsecrets.message or tsecrets), "\n")
      return 2
    end
    for _, s in ipairs(tsecrets) do
      cp.secrets.add(s)
    end
    for _, w in ipairs(t.webhooks or {}) do
      targets[#targets + 1] = w
    end
  end
  local envs = o.secret_envs
  if #envs == 0 and #o.tenants == 0 and os.getenv("COGPIPE_WEBHOOK_SECRET") then
    envs = { "COGPIPE_WEBHOOK_SECRET" }
  end
  for _, var in ipairs(envs) do
    local v = os.getenv(var)
    if not v or v == "" then
      io.stderr:write("cogpipe: webhook: environment variable ", var, " is not set\n")
      return 2
    end
    cp.secrets.add(v)
    local ok, err = require("cogpipe._webhook").check_secret(v)
    if not ok then
      io.stderr:write("cogpipe: webhook: ", var, ": ", err.message, "\n")
      return 2
    end
    secrets[#secrets + 1] = v
  end
  local log
  if o.audit then
    local err
    log, err = cp.audit.open(o.audit, { pipeline = "webhook-flush" })
    if not log then
      io.stderr:write("cogpipe: webhook: ", err.message, "\n")
      return 2
    end
  end
  local report = webhook.flush_outbox({ state_dir = o.state_dir, targets = targets, secrets = secrets, audit = log })
  if log then
    log:close()
  end
  if o.json then
    io.stdout:write(json.encode(report), "\n")
  else
    for _, r in ipairs(report.results) do
      io.stdout:write(string.format("%s %s to %s%s%s\n", r.outcome, r.id or r.name or "?", r.url or "?",
        r.attempts and string.format(" (%d attempt(s))", r.attempts) or "",
        r.error and (": " .. r.error) or ""))
    end
    if report.error then
      io.stdout:write("outbox: ", report.error, "\n")
    end
    io.stdout:write(string.format("%d delivered, %d still pending, %d failed for good\n", report.delivered,
      report.kept, report.failed))
  end
  return (report.kept == 0 and report.failed == 0 and not report.error) and 0 or 1
end

function M.main(argv)
  local sub = argv[1]
  if sub == "--help" or sub == "-h" or sub == "help" then
    io.stdout:write(M.usage)
    return 0
  end
  if sub ~= "flush" and sub ~= "list" then
    return usage_error(sub and ("unknown subcommand '" .. sub .. "'") or "a subcommand is required")
  end
  local o, err = parse({ table.unpack(argv, 2) })
  if not o then
    return usage_error(err)
  end
  if sub == "list" then
    return list(o)
  end
  return flush(o)
end

return M
