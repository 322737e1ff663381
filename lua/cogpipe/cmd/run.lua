-- cogpipe run: loads a script as the main task. A script that returns a
-- pipeline (cogpipe.pipeline.new) is run for each --tenant; any other script
-- just runs, and sees what follows it on the command line in `arg`.
local M = {}

M.usage = [[
usage: cogpipe run PIPELINE.lua --tenant NAME|FILE... [--dry-run] [--json]
                   [--audit FILE] [--audit-fsync always|batch|off]
                   [--metrics-file FILE] [--state-dir DIR]
                   [--resend-unknown] [--no-progress] [-- ARGS]
       cogpipe run SCRIPT.lua [-- ARGS]

Runs a pipeline (a script that returns pipeline.new{...}) for each tenant,
concurrently; any other script just runs, and sees ARGS in `arg`.

options (for pipelines):
  --tenant NAME|FILE     a tenant config (repeat for several, run concurrently);
                         NAME is looked up in tenants/ beside the pipeline;
                         required: there is no default tenant
  --dry-run              validate, dedupe and plan; write nothing to the platform
  --json                 print the summary as one JSON document
  --audit FILE           append the audit log to FILE (FILE.head anchors it)
  --audit-fsync MODE     always | batch (default) | off
  --metrics-file FILE    write Prometheus text-format metrics to FILE
  --state-dir DIR        journals and pending webhooks (default $XDG_STATE_HOME/cogpipe)
  --resend-unknown       send again, once, an upload whose outcome an earlier run
                         could not learn (targets that cannot be asked what they
                         hold: the dataset upload); without it such a run stops
  --no-progress          no progress bar even on a terminal

exit status: 0 all good; 1 something failed (remotely, or a write); 2 usage
or config error; 3 input rejected by validation (nothing was sent)
]]

local flags = {
  ["--tenant"] = { key = "tenants", value = true, list = true },
  ["--dry-run"] = { key = "dry_run" },
  ["--json"] = { key = "json" },
  ["--audit"] = { key = "audit", value = true },
  ["--audit-fsync"] = { key = "audit_fsync", value = true, choices = { always = true, batch = true, off = true } },
  ["--metrics-file"] = { key = "metrics_file", value = true },
  ["--state-dir"] = { key = "state_dir", value = true },
  ["--no-progress"] = { key = "no_progress" },
  ["--resend-unknown"] = { key = "resend_unknown" },
}

-- Returns script, options, script arguments; or nil, message.
function M.parse(argv)
  local script = argv[1]
  if not script or script == "" or script:sub(1, 1) == "-" then
    return nil, "run: a script is required"
  end
  local opts = { tenants = {} }
  local rest = {}
  local i = 2
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      table.move(argv, i + 1, #argv, 1, rest)
      break
    end
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    local spec = flags[name]
    if not spec then
      if a:sub(1, 1) == "-" then
        return nil, "run: unknown option '" .. a .. "'"
      end
      table.move(argv, i, #argv, 1, rest)
      break
    end
    local value = true
    if spec.value then
      value = inline
      if not value then
        i = i + 1
        value = argv[i]
      end
      if not value or value == "" then
        return nil, "run: " .. name .. " needs a value"
      end
      if spec.choices and not spec.choices[value] then
        return nil, string.format("run: %s: '%s' is not one of always, batch, off", name, value)
      end
    end
    if spec.list then
      table.insert(opts[spec.key], value)
    else
      opts[spec.key] = value
    end
    i = i + 1
  end
  return script, opts, rest
end

function M.main(argv)
  local script, opts, rest = M.parse(argv)
  if not script then
    io.stderr:write("cogpipe: ", opts, "\n", M.usage)
    return 2
  end
  local chunk, err = loadfile(script, "t")
  if not chunk then
    io.stderr:write("cogpipe: ", err, "\n")
    return 2
  end
  local script_arg = { [0] = script }
  table.move(rest, 1, #rest, 1, script_arg)
  _G.arg = script_arg
  local result = chunk(table.unpack(rest))
  local pipeline = require "cogpipe.pipeline"
  if pipeline.is(result) then
    return require("cogpipe.runner").run(result, opts, script)
  end
  return 0
end

return M
