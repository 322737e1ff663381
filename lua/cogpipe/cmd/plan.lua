-- cogpipe plan: what a run of a pipeline would do for a tenant, per intent
-- -- to add, already there, rejected (why, nearest text and score, the
-- other intent of a conflict), over the cap, and with --prune what would be
-- deleted -- without writing anything to the platform. It is `run
-- --dry-run`: the same runner, the same steps; with --snapshot it reads an
-- export instead of the platform and needs no network.
local run_cmd = require "cogpipe.cmd.run"

local M = {}

M.usage = [[
usage: cogpipe plan PIPELINE.lua --tenant NAME|FILE [OPTIONS] [-- ARGS]

Shows what `cogpipe run` would do, per intent: sentences to add, already on
the platform, rejected (with the reason, the nearest text and its score, the
other intent of a conflict), over the cap, and with --prune those the platform
holds that the source no longer has. Nothing is written to the platform.

options:
  --tenant NAME|FILE     the tenant (as for run)
  --snapshot FILE        plan against an export (cogpipe export -o FILE) instead
                         of reading the platform: works with no network (semantic
                         dedupe then needs its vectors cached by an earlier plan
                         or run, or a vectors file)
  --prune                also list what a run --prune would delete
  --prune-max PERCENT    as for run: the largest share of an intent a prune takes
  --prune-allow INTENT   as for run (repeatable)
  --json                 the plan as one JSON document (per tenant: intents,
                         changes with every text, rejections)
  --html FILE            the plan as one self-contained HTML file
  --state-dir DIR        journals and the embeddings cache
  --audit FILE           append the audit log to FILE
  --no-progress          no progress bar even on a terminal

exit status: 0 the run would go; 1 the platform could not be read; 2 usage or
config error, or the run would be refused (a prune over its limit); 3 input
rejected by validation
]]

local FLAGS = {}
for name, spec in pairs(run_cmd.FLAGS) do
  FLAGS[name] = spec
end
FLAGS["--html"] = FLAGS["--report"]
FLAGS["--report"] = nil
FLAGS["--dry-run"] = nil
FLAGS["--resend-unknown"] = nil
FLAGS["--metrics-file"] = nil

function M.main(argv)
  if argv[1] == "--help" or argv[1] == "-h" then
    io.stdout:write(M.usage)
    return 0
  end
  -- a plan is a dry run: --snapshot is checked as with --dry-run
  local script, opts, rest = run_cmd.parse({ argv[1], "--dry-run", table.unpack(argv, 2) },
    setmetatable({ ["--dry-run"] = run_cmd.FLAGS["--dry-run"] }, { __index = FLAGS }), "plan")
  if not script then
    io.stderr:write("cogpipe: ", opts, "\n", M.usage)
    return 2
  end
  local result, err = run_cmd.load(script, rest)
  if result == nil and err then
    io.stderr:write("cogpipe: ", err, "\n")
    return 2
  end
  if not require("cogpipe.pipeline").is(result) then
    io.stderr:write("cogpipe: plan: ", script, " does not return a pipeline (cogpipe.pipeline.new{...})\n")
    return 2
  end
  return require("cogpipe.runner").run(result, opts, script)
end

return M
