-- cogpipe run: loads a script as the main task. A script that returns a
-- pipeline (cogpipe.pipeline.new) is run for each --tenant; any other script
-- just runs, and sees what follows it on the command line in `arg`. Also
-- the option parser and pipeline loader `cogpipe plan` shares: a plan is a
-- dry run.
local args = require "cogpipe.cmd.args"

local M = {}

M.usage = [=[
usage: cogpipe run PIPELINE.lua --tenant NAME|FILE... [--dry-run [--snapshot FILE]]
                   [--prune [--prune-max PERCENT] [--prune-allow INTENT]...]
                   [--report FILE] [--json] [--audit FILE]
                   [--audit-fsync always|batch|off] [--metrics-file FILE]
                   [--state-dir DIR] [--resend-unknown] [--no-progress] [-- ARGS]
       cogpipe run SCRIPT.lua [-- ARGS]

Runs a pipeline (a script that returns pipeline.new{...}) for each tenant,
concurrently; any other script just runs, and sees ARGS in `arg`.

options (for pipelines):
  --tenant NAME|FILE     a tenant config (repeat for several, run concurrently);
                         NAME is looked up in tenants/ beside the pipeline;
                         required: there is no default tenant
  --dry-run              validate, dedupe and plan; write nothing to the platform
                         (the plan: what a run would add, skip, reject and prune)
  --snapshot FILE        with --dry-run: plan against an export of the platform
                         (cogpipe export) instead of reading it: no network
  --prune                delete what the platform holds and the source no longer
                         has (v2 API only; every deleted sentence is journaled and
                         audited before it is deleted)
  --prune-max PERCENT    refuse a prune that takes more than PERCENT of an intent
                         (default 10); emptying an intent is always refused
  --prune-allow INTENT   let this intent lose any share, even all (repeatable)
  --report FILE          write the run's report as one self-contained HTML file
  --json                 print the summary as one JSON document
  --audit FILE           append the audit log to FILE (FILE.head anchors it)
  --audit-fsync MODE     always | batch (default) | off
  --metrics-file FILE    write Prometheus text-format metrics to FILE
  --state-dir DIR        journals and pending webhooks (default $XDG_STATE_HOME/cogpipe)
  --resend-unknown       send again, once, an upload whose outcome an earlier run
                         could not learn (targets that cannot be asked what they
                         hold: the dataset upload); without it such a run stops
  --no-progress          no progress bar even on a terminal

After sending, a run reads back every intent it changed and fails (exit 1),
naming the texts, when the platform does not hold what it said it stored.

exit status: 0 all good; 1 something failed (remotely, or a write); 2 usage
or config error (a refused prune included); 3 input rejected by validation
(nothing was sent)
]=]

M.FLAGS = {
  ["--tenant"] = { key = "tenants", value = true, list = true },
  ["--dry-run"] = { key = "dry_run" },
  ["--snapshot"] = { key = "snapshot", value = true },
  ["--prune"] = { key = "prune" },
  ["--prune-max"] = { key = "prune_max", value = true, percent = true },
  ["--prune-allow"] = { key = "prune_allow", value = true, list = true },
  ["--report"] = { key = "report", value = true },
  ["--json"] = { key = "json" },
  ["--audit"] = { key = "audit", value = true },
  ["--audit-fsync"] = { key = "audit_fsync", value = true, choices = { always = true, batch = true, off = true } },
  ["--metrics-file"] = { key = "metrics_file", value = true },
  ["--state-dir"] = { key = "state_dir", value = true },
  ["--no-progress"] = { key = "no_progress" },
  ["--resend-unknown"] = { key = "resend_unknown" },
}

-- Returns script, options, script arguments; or nil, message. flags: the
-- table of options (M.FLAGS by default); cmd names the command in messages.
function M.parse(argv, flags, cmd)
  flags, cmd = flags or M.FLAGS, cmd or "run"
  local script = argv[1]
  if not script or script == "" or script:sub(1, 1) == "-" then
    return nil, cmd .. ": a script is required"
  end
  local opts = { tenants = {}, prune_allow = {} }
  local rest = {}
  local i = 2
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      table.move(argv, i + 1, #argv, 1, rest)
      break
    end
    local name, spec, value, last = args.read(argv, i, flags)
    if not name then
      return nil, cmd .. ": " .. spec
    elseif not spec then
      if a:sub(1, 1) == "-" then
        return nil, cmd .. ": unknown option '" .. a .. "'"
      end
      table.move(argv, i, #argv, 1, rest)
      break
    end
    i = last
    if spec.value then
      if spec.choices and not spec.choices[value] then
        return nil, string.format("%s: %s: '%s' is not one of always, batch, off", cmd, name, value)
      end
      if spec.percent then
        local n = tonumber((value:gsub("%%$", "")))
        if not n or n < 0 or n > 100 then
          return nil, string.format("%s: %s: '%s' is not a percentage from 0 to 100", cmd, name, value)
        end
        value = n
      end
    end
    if spec.list then
      table.insert(opts[spec.key], value)
    else
      opts[spec.key] = value
    end
    i = i + 1
  end
  if (opts.prune_max or #opts.prune_allow > 0) and not opts.prune then
    return nil, cmd .. ": --prune-max and --prune-allow go with --prune"
  end
  if opts.snapshot and not opts.dry_run then
    return nil, cmd .. ": --snapshot plans from an export and sends nothing: it goes with --dry-run (or cogpipe plan)"
  end
  if opts.snapshot and #opts.tenants > 1 then
    return nil, cmd .. ": --snapshot is the export of one tenant: give one --tenant"
  end
  return script, opts, rest
end

-- Loads and runs a script with rest as its arguments (`arg` and `...`);
-- returns what it returned, or nil, message when it cannot be loaded.
function M.load(script, rest)
  local chunk, err = loadfile(script, "t")
  if not chunk then
    return nil, err
  end
  local script_arg = { [0] = script }
  table.move(rest, 1, #rest, 1, script_arg)
  _G.arg = script_arg
  return chunk(table.unpack(rest))
end

function M.main(argv)
  local script, opts, rest = M.parse(argv)
  if not script then
    io.stderr:write("cogpipe: ", opts, "\n", M.usage)
    return 2
  end
  local result, err = M.load(script, rest)
  if result == nil and err then
    io.stderr:write("cogpipe: ", err, "\n")
    return 2
  end
  local pipeline = require "cogpipe.pipeline"
  if pipeline.is(result) then
    return require("cogpipe.runner").run(result, opts, script)
  end
  return 0
end

return M
