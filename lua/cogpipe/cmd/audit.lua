-- cogpipe audit: commands on audit logs. `verify` checks the hash chain of
-- one log, or of a rotated series given oldest first, and reports the first
-- broken line; it only reads the files.
local cp = require "cogpipe"
local json = cp.json

local M = {}

M.usage = [[
usage: cogpipe audit verify [--json] FILE...

Checks that every line of the audit log is a record chained to the one
before it. Give a rotated series oldest first (LOG.000001 LOG.000002 LOG)
to check the links between the files too.

  --json    print the report as one JSON document

exit status: 0 the chain is intact (warnings allowed); 3 it is broken;
2 usage error or a file cannot be read
]]

local function plural(n, word)
  return string.format("%d %s%s", n, word, n == 1 and "" or "s")
end

local function human(report)
  local out = io.stdout
  for _, f in ipairs(report.files) do
    out:write(string.format("%s: %s\n", f.path, plural(f.records, "record")))
  end
  for _, w in ipairs(report.warnings) do
    out:write(string.format("warning: %s:%d: %s\n", w.file, w.line, w.message))
  end
  if report.ok then
    out:write(string.format("intact: %s in %s", plural(report.records, "record"), plural(#report.files, "file")))
    if report.last_hash then
      out:write(string.format(", last seq %d, last hash %s", report.last_seq, report.last_hash))
    end
    out:write("\n")
  else
    local p = report.problem
    out:write(string.format("broken: %s:%d: %s\n", p.file, p.line, p.message))
  end
end

local function verify(args)
  local files, as_json = {}, false
  for _, a in ipairs(args) do
    if a == "--json" then
      as_json = true
    elseif a == "--help" or a == "-h" then
      io.stdout:write(M.usage)
      return 0
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      io.stderr:write("cogpipe: audit verify: unknown option '", a, "'\n", M.usage)
      return 2
    else
      files[#files + 1] = a
    end
  end
  if #files == 0 then
    io.stderr:write("cogpipe: audit verify: at least one FILE is required\n", M.usage)
    return 2
  end
  local report, err = cp.audit.verify(table.unpack(files))
  if not report then
    io.stderr:write("cogpipe: audit verify: ", err.message, "\n")
    return 2
  end
  if as_json then
    report.warnings = json.array(report.warnings)
    report.files = json.array(report.files)
    io.stdout:write(json.encode(report), "\n")
  else
    human(report)
  end
  return report.ok and 0 or 3
end

function M.main(args)
  local sub = args[1]
  if sub == "verify" then
    return verify({ table.unpack(args, 2) })
  end
  if sub == "--help" or sub == "-h" or sub == "help" then
    io.stdout:write(M.usage)
    return 0
  end
  io.stderr:write("cogpipe: audit: ", sub and ("unknown subcommand '" .. sub .. "'") or "a subcommand is required",
    "\n", M.usage)
  return 2
end

return M
