-- cogpipe audit: commands on audit logs. `verify` checks the hash chain of
-- one log, or of a rotated series given oldest first, against the log's
-- head file or an anchor from a run's summary, and reports the first
-- broken line and the runs that never ended; it only reads the files.
local cp = require "cogpipe"
local json = cp.json

local M = {}

M.usage = [[
usage: cogpipe audit verify [--json] [--head SEQ:HASH] FILE...

Checks that every line of the audit log is a record chained to the one
before it, and that the chain ends at the record named by the log's head
file (FILE.head, written beside it with every record), so that a removed
or changed last record, a file cut at a line boundary and an emptied file
are found too. Give a rotated series oldest first (LOG.000001 LOG.000002
LOG) to check the links between the files too. Runs that started and
never ended are listed as interrupted.

  --json            print the report as one JSON document
  --head SEQ:HASH   a record the chain must pass through, as a run's summary
                    gives it (audit.seq and audit.hash); checks the end of a
                    log whose head file is gone. Records after it (later
                    runs) are fine.

Without a head file or --head the end of the chain cannot be checked; the
report says so in a warning.

exit status: 0 the chain is intact (warnings and interrupted runs
allowed); 3 it is broken; 2 usage error or a file cannot be read
]]

local function plural(n, word)
  return string.format("%d %s%s", n, word, n == 1 and "" or "s")
end

-- FILE:LINE, or FILE alone for a note about the file as a whole.
local function where(note)
  if note.line and note.line > 0 then
    return string.format("%s:%d", note.file, note.line)
  end
  return note.file
end

local function human(report)
  local out = io.stdout
  for _, f in ipairs(report.files) do
    out:write(string.format("%s: %s\n", f.path, plural(f.records, "record")))
  end
  for _, w in ipairs(report.warnings) do
    out:write(string.format("warning: %s: %s\n", where(w), w.message))
  end
  for _, r in ipairs(report.interrupted) do
    out:write(string.format("interrupted: run %s started at %s and has no run_end record\n", r.run_id, where(r)))
  end
  if report.ok then
    out:write(string.format("intact: %s in %s", plural(report.records, "record"), plural(#report.files, "file")))
    if report.last_hash then
      out:write(string.format(", last seq %d, last hash %s", report.last_seq, report.last_hash))
    end
    out:write("\n")
    if report.head and report.head.seq then
      out:write(string.format("end: the chain ends at record %d, as its head file %s says\n",
        report.head.seq, report.head.path))
    end
    local a = report.anchor
    if a and a.line then
      out:write(string.format("anchor: record %d is at %s:%d; %s after it\n", a.seq, a.file, a.line,
        plural(a.after, "record")))
    end
    if not report.end_checked then
      out:write("(give --head SEQ:HASH from the run's summary to check the end)\n")
    end
  else
    local p = report.problem
    out:write(string.format("broken: %s: %s\n", where(p), p.message))
  end
end

-- "SEQ:HASH" -> {seq=, hash=} | nil
local function parse_head(s)
  local seq, hash = s:match("^(%d+):(%x+)$")
  seq = seq and math.tointeger(tonumber(seq))
  if not seq or seq < 1 or #hash ~= 64 or hash:find("[A-F]") then
    return nil
  end
  return { seq = seq, hash = hash }
end

local function usage_error(msg)
  io.stderr:write("cogpipe: audit verify: ", msg, "\n", M.usage)
  return 2
end

local function verify(args)
  local files, as_json, head = {}, false, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    local value = a:match("^%-%-head=(.*)$")
    if a == "--head" then
      i = i + 1
      value = args[i]
      if not value then
        return usage_error("--head needs SEQ:HASH")
      end
    end
    if value then
      head = parse_head(value)
      if not head then
        return usage_error("--head wants SEQ:HASH (a record number from 1, a colon and 64 lower-case hex "
          .. "digits), not '" .. value .. "'")
      end
    elseif a == "--json" then
      as_json = true
    elseif a == "--help" or a == "-h" then
      io.stdout:write(M.usage)
      return 0
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      return usage_error("unknown option '" .. a .. "'")
    else
      files[#files + 1] = a
    end
    i = i + 1
  end
  if #files == 0 then
    return usage_error("at least one FILE is required")
  end
  files[#files + 1] = { head = head }
  local report, err = cp.audit.verify(table.unpack(files))
  if not report then
    io.stderr:write("cogpipe: audit verify: ", err.message, "\n")
    return 2
  end
  if as_json then
    report.warnings = json.array(report.warnings)
    report.files = json.array(report.files)
    report.interrupted = json.array(report.interrupted)
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
