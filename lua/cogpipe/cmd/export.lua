-- cogpipe export: everything the platform holds for a tenant's intents
-- (v2: every page of every intent of the flow; the intent API: the
-- examples of the intents the tenant or the pipeline names), written as
-- JSON Lines in the stable order of cogpipe.snapshot, which diffs well in
-- git and is itself a pipeline input and a snapshot for `cogpipe plan`.
-- Reads only; intents are read concurrently within the tenant's limits.
local cp = require "cogpipe"
local json = cp.json
local runner = require "cogpipe.runner"
local args = require "cogpipe.cmd.args"
local run_cmd = require "cogpipe.cmd.run"
local client_mod = require "cogpipe.cognigy.client"
local snapshot = require "cogpipe.snapshot"

local M = {}

M.usage = [[
usage: cogpipe export --tenant NAME|FILE [--pipeline PIPELINE.lua] [-o FILE] [OPTIONS]

Writes what the platform holds for the tenant's intents as JSON Lines, one
sentence a line: {"intent","text","id","slots","locale"} (v2) or
{"intent","text","id","annotations"} (intent API), intents in name order and
each intent's sentences by text, so that the file diffs well in git. The file
is a pipeline input, and a snapshot for `cogpipe plan --snapshot`.

options:
  --tenant NAME|FILE     the tenant (required: sandbox is the local emulator)
  --pipeline FILE        the pipeline whose target (its sink) is exported, and
                         whose source names intents too; without it the v2 API
                         when the tenant has v2.flow_id, else the intent API
  -o, --output FILE      write to FILE (atomically) instead of standard output
  --json                 with -o: print a summary (counts, requests) as JSON
  --state-dir DIR        as for run
  --no-progress          no progress bar even on a terminal

The v2 API lists the flow's intents; the intent API cannot, so its intents are
the tenant's intent_ids and those of the pipeline's source.

exit status: 0 written; 1 the platform could not be read (nothing written);
2 usage or config error
]]

local FLAGS = {
  ["--tenant"] = { key = "tenant", value = true },
  ["--pipeline"] = { key = "pipeline", value = true },
  ["-o"] = { key = "output", value = true },
  ["--output"] = { key = "output", value = true },
  ["--json"] = { key = "json" },
  ["--state-dir"] = { key = "state_dir", value = true },
  ["--no-progress"] = { key = "no_progress" },
}

local function parse(argv)
  local opts, rest = {}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      table.move(argv, i + 1, #argv, 1, rest)
      break
    end
    local name, spec, value, last = args.read(argv, i, FLAGS)
    if not name then
      return nil, "export: " .. spec
    elseif not spec then
      return nil, "export: unknown argument '" .. a .. "'"
    end
    opts[spec.key] = value
    i = last + 1
  end
  if opts.json and not opts.output then
    return nil, "export: --json goes with -o FILE (without it standard output is the export)"
  end
  return opts, rest
end

local function fail(code, msg)
  io.stderr:write("cogpipe: export: ", msg, "\n")
  return code
end

-- The target to read and the intents the pipeline's source names.
local function target(opts, rest, tenant)
  if opts.pipeline then
    local def, err = run_cmd.load(opts.pipeline, rest)
    if not require("cogpipe.pipeline").is(def) then
      return nil, err or (opts.pipeline .. " does not return a pipeline (cogpipe.pipeline.new{...})")
    end
    local source, problems = def.source.read({ pipeline = def, opts = {} })
    if not source then
      return nil, string.format("%s: the pipeline's source %s cannot be read: %s", opts.pipeline, def.source.path,
        tostring(type(problems) == "table" and (problems.message or (problems.problem_count or 0) .. " problem(s)")
          or problems))
    end
    local named = {}
    for _, r in ipairs(source.records) do
      named[r.intent] = true
    end
    return def.sink, def.name, named
  end
  if type(tenant.v2) == "table" and tenant.v2.flow_id then
    return require("cogpipe.cognigy.v2").sink({}), "export", {}
  end
  return require("cogpipe.cognigy.intents").sink({}), "export", {}
end

function M.main(argv)
  if argv[1] == "--help" or argv[1] == "-h" then
    io.stdout:write(M.usage)
    return 0
  end
  local opts, rest = parse(argv)
  if not opts then
    io.stderr:write("cogpipe: ", rest, "\n", M.usage)
    return 2
  end
  local tenants, code = runner.tenants({ tenants = { opts.tenant }, command = "export" }, opts.pipeline)
  if not tenants then
    return code
  end
  local tenant = tenants[1]
  local sink, name, named = target(opts, rest, tenant)
  if not sink then
    return fail(2, name)
  end
  if not sink.read then
    return fail(2, string.format("%s cannot be asked what it holds, so there is nothing to export; export works "
      .. "with the v2 sentences API and the intent example API", runner.api_of(sink)))
  end
  local shared = assert(runner.shared({ name = name }, { state_dir = opts.state_dir, no_progress = opts.no_progress }))
  local ctx = runner.context({ name = name }, tenant, {}, shared)
  local started = cp.now()
  local ok, oerr = sink:open(ctx)
  if not ok then
    return fail(oerr.kind == "config" and 2 or 1, tostring(oerr.message))
  end
  local labels, lerr = sink:intents(ctx)
  if not labels then
    return fail(1, tostring(lerr.message))
  end
  local all = {}
  for _, l in ipairs(labels) do
    all[l] = true
  end
  for l in pairs(named) do
    all[l] = true
  end
  labels = {}
  for l in pairs(all) do
    labels[#labels + 1] = l
  end
  table.sort(labels)
  if #labels == 0 and not (type(tenant.v2) == "table" and sink.can_delete) then
    return fail(2, string.format("%s cannot list intents: name them in tenant %s's intent_ids, or give --pipeline "
      .. "whose source names them", runner.api_of(sink), tenant.name))
  end
  ctx:set_progress({ phase = "exporting", total = #labels, done = 0 })
  local read, rerr = client_mod.read_intents(ctx, labels, function(c, label)
    local got, err = sink:read(c, { label })
    c:advance(1)
    return got and got[label], err
  end)
  shared.progress:finish()
  if not read then
    return fail(1, "reading the platform: " .. tostring(rerr.message) .. "; nothing was written")
  end
  local by_intent = {}
  for _, label in ipairs(labels) do
    by_intent[label] = read[label].items
  end
  local content, lines, intents = snapshot.render(by_intent)
  if opts.output then
    local wok, werr = cp.fs.write_atomic(opts.output, content)
    if not wok then
      return fail(1, tostring(werr.message))
    end
  else
    io.stdout:write(content)
  end
  local summary = { tenant = tenant.name, api = runner.api_of(sink), intents = intents, sentences = lines,
    requests = ctx.stats.requests, duration_s = math.floor((cp.now() - started) * 1000 + 0.5) / 1000,
    file = opts.output or json.null }
  io.stderr:write(string.format("cogpipe: exported %d sentence(s) of %d intent(s) of tenant %s from %s in %d "
    .. "request(s), %.1f s%s\n", lines, intents, tenant.name, summary.api, summary.requests, summary.duration_s,
    opts.output and (" to " .. opts.output) or ""))
  if opts.json then
    io.stdout:write(json.encode(cp.secrets.redact(summary)), "\n")
  end
  return 0
end

return M
