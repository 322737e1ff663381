-- cogpipe undo: reverses exactly what one run changed on a tenant's v2 flow,
-- from what the run's journal kept: the sentences it created are deleted
-- (found by the ids its read-back learned, since PATCH answers carry counts
-- only, else by their text) and those it pruned are created again. Refuses,
-- naming the sentence, when the platform changed since (a created sentence
-- edited or deleted, a pruned one back), and refuses where the target has
-- no delete (the intent example and dataset APIs). The undo is a run of its
-- own: journaled (so it can be undone), audited, read back.
local cp = require "cogpipe"
local json = cp.json
local runner = require "cogpipe.runner"
local args = require "cogpipe.cmd.args"
local journal_mod = require "cogpipe.journal"

local M = {}

M.usage = [[
usage: cogpipe undo RUN_ID --tenant NAME|FILE [OPTIONS]

Reverses what run RUN_ID (the run id of its summary) changed on the tenant's
v2 flow: deletes the sentences it created and creates again those it pruned.
Nothing is changed when the platform changed since in a way the undo would
overwrite; each such sentence is named.

options:
  --tenant NAME|FILE     the tenant the run was for (required)
  --state-dir DIR        where the run's journal is (as for run)
  --dry-run              say what would be done; change nothing
  --json                 print the summary as one JSON document
  --audit FILE           append the audit log to FILE
  --no-progress          no progress bar even on a terminal

The locale is not trained afterwards: run the pipeline (or train) when the
restored data should go live.

exit status: 0 undone; 1 refused because the platform changed since, or a
request failed; 2 usage error, no record of the run, or a target without delete
]]

local FLAGS = {
  ["--tenant"] = { key = "tenant", value = true },
  ["--state-dir"] = { key = "state_dir", value = true },
  ["--dry-run"] = { key = "dry_run" },
  ["--json"] = { key = "json" },
  ["--audit"] = { key = "audit", value = true },
  ["--no-progress"] = { key = "no_progress" },
}

local function parse(argv)
  local opts = {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, spec, value, last = args.read(argv, i, FLAGS)
    if not name then
      return nil, "undo: " .. spec
    elseif spec then
      opts[spec.key] = value
      i = last
    elseif a:sub(1, 1) == "-" then
      return nil, "undo: unknown option '" .. a .. "'"
    elseif opts.run then
      return nil, "undo: one run id at a time ('" .. opts.run .. "' and '" .. a .. "')"
    else
      opts.run = a
    end
    i = i + 1
  end
  if not opts.run then
    return nil, "undo: the id of the run to undo is required"
  end
  return opts
end

local function fail(code, msg)
  io.stderr:write("cogpipe: undo: ", msg, "\n")
  return code
end

-- What a run without v2 changes sent to, for the refusal.
local function target_of(info, pipeline)
  for _, b in ipairs(info.batches) do
    if b.info and b.info.reference then
      return "the dataset upload API"
    end
  end
  return string.format("the intent example batch API (pipeline %s)", pipeline)
end

-- The flow the run changed, and the platform ids of its intents.
local function flow_of(info)
  local flow, ids = nil, {}
  for _, b in ipairs(info.batches) do
    if b.change then
      flow = flow or b.change.flow
      ids[b.change.intent] = b.change.intent_id
    end
  end
  return flow, ids
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do
    c[k] = v
  end
  return c
end

function M.main(argv)
  if argv[1] == "--help" or argv[1] == "-h" then
    io.stdout:write(M.usage)
    return 0
  end
  local opts, perr = parse(argv)
  if not opts then
    io.stderr:write("cogpipe: ", perr, "\n", M.usage)
    return 2
  end
  local tenants, code = runner.tenants({ tenants = { opts.tenant }, command = "undo" })
  if not tenants then
    return code
  end
  local tenant = tenants[1]
  local state_dir = require("cogpipe.state").dir(opts.state_dir)
  local jr, info = journal_mod.find_run(state_dir, tenant.name, opts.run)
  if not jr then
    return fail(2, info.message)
  end
  local flow, intent_ids = flow_of(info)
  if not flow then
    jr:close()
    return fail(2, string.format("run %s sent to %s, which has no delete operation: what it added cannot be "
      .. "taken back from here", opts.run, target_of(info, jr.pipeline)))
  end
  if info.undone_by then
    jr:close()
    return fail(2, string.format("run %s was undone already, by run %s", opts.run, info.undone_by))
  end
  info.id = opts.run
  -- the flow and intents the run changed, whatever the tenant file says today
  local t = copy(tenant)
  t.v2 = copy(tenant.v2)
  t.v2.flow_id = flow
  t.v2.intent_ids = intent_ids
  local def = { name = jr.pipeline }
  local shared, scode = runner.shared(def, opts)
  if not shared then
    jr:close()
    return scode
  end
  local ctx = runner.context(def, t, opts, shared)
  jr.run_id = shared.run_id
  jr.on_error = function(err)
    ctx:stop(err)
  end
  ctx.journal = jr
  local audit = shared.audit
  if audit then
    audit:record("run_start", { undo = opts.run, tenants = json.array({ tenant.name }),
      options = { dry_run = opts.dry_run or false } })
    audit:sync()
  end
  local sink = require("cogpipe.cognigy.v2").sink({})
  local status, plan = "ok", nil
  local ok, oerr = sink:open(ctx)
  if not ok then
    ctx:fail(oerr)
    status = oerr.kind == "config" and "config" or "failed"
  else
    ctx:set_progress({ phase = "reading" })
    local problems
    plan, problems = sink:undo_plan(ctx, info)
    if not plan then
      status = "refused"
      for _, p in ipairs(problems) do
        ctx:fail(p)
      end
      ctx:event("undo_refused", { undoes = opts.run, reasons = json.array(problems) })
    else
      for _, n in ipairs(plan.notes) do
        ctx:note(n)
      end
      if not opts.dry_run then
        ctx:set_progress({ phase = "undoing", total = plan.total, done = 0 })
        sink:send(ctx, plan)
        ctx:sync()
        runner.read_back(ctx, sink)
        if #ctx.errors == 0 and ctx.stats.failed + ctx.stats.unknown + ctx.stats.prune_failed == 0 then
          jr:undone(opts.run)
        else
          status = "failed"
        end
      end
    end
  end
  shared.progress:finish()
  jr:close()
  local summary = {
    run_id = shared.run_id, undoes = opts.run, tenant = tenant.name, pipeline = jr.pipeline, flow = flow,
    status = status == "ok" and #ctx.errors == 0 and "ok" or (status == "ok" and "failed" or status),
    dry_run = opts.dry_run and true or false,
    delete = plan and plan.pruning or 0, recreate = plan and plan.total or 0,
    deleted = ctx.stats.pruned, recreated = ctx.stats.uploaded,
    failed = ctx.stats.failed + ctx.stats.unknown + ctx.stats.prune_failed,
    errors = json.array(ctx.errors), notes = json.array(ctx.notes), read_back = ctx.readback,
  }
  if audit then
    audit:record("run_end", { status = summary.status, summary = summary })
    local h = audit:head()
    audit:close()
    summary.audit = h and { path = h.path, head_path = h.head_path, seq = h.seq, hash = h.hash, records = h.records }
    if audit.error then
      summary.status = "failed"
      summary.errors[#summary.errors + 1] = audit.error.message
    end
  end
  summary = cp.secrets.redact(summary)
  if opts.json then
    io.stdout:write(json.encode(summary), "\n")
  else
    local out = io.stdout
    out:write(string.format("undo of run %s (run %s, tenant %s, flow %s): %s%s\n", opts.run, shared.run_id,
      tenant.name, flow, summary.status, summary.dry_run and " (dry run: nothing was changed)" or ""))
    if summary.dry_run then
      out:write(string.format("  would delete %d sentence(s) the run created and create again %d it deleted\n",
        summary.delete, summary.recreate))
    else
      out:write(string.format("  deleted %d of %d sentence(s) the run created; created again %d of %d it deleted\n",
        summary.deleted, summary.delete, summary.recreated, summary.recreate))
    end
    for _, e in ipairs(summary.errors) do
      out:write("  error: ", e, "\n")
    end
    for _, n in ipairs(summary.notes) do
      out:write("  note: ", n, "\n")
    end
    if summary.status == "refused" then
      out:write("  nothing was undone\n")
    end
  end
  if summary.status == "config" then
    return 2
  end
  return summary.status == "ok" and 0 or 1
end

return M
