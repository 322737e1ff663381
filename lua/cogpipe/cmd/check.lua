-- cogpipe check: validates and deduplicates utterance files and reports,
-- without sending anything. The work is one native pass over all the files
-- (cp.dedupe.file); this module only reads the command line and prints.
-- Called as require("cogpipe.cmd.check").main(args), args being the words
-- after `check`; returns the exit status.
local cp = require "cogpipe"
local json = cp.json

local M = {}

M.usage = [=[
usage: cogpipe check FILE... [--format lines|jsonl|csv] [--normalize MODE]
                             [--max-bytes N] [--max-chars N] [--max-listed N]
                             [--near THRESHOLD] [--semantic THRESHOLD
                              --embeddings URL|FILE [--model NAME]] [--json]

Checks every record of the files -- size, UTF-8, byte order mark, control
characters, length in characters, blank lines, and the syntax of JSON Lines
and CSV -- then finds texts that repeat (duplicates) and texts given two
different intents (conflicts), across all the files. Nothing is sent.

  --format F       lines: one utterance a line;
                   jsonl: {"text", "intent", "annotations"?} a line;
                   csv: a header naming the columns text and intent;
                   default: from each file's extension (.jsonl, .ndjson,
                   .csv; anything else is lines)
  --normalize M    how texts are compared: none, trim (default), collapse
                   (trim + inner white space), casefold (collapse + Unicode
                   NFKC case folding)
  --max-bytes N    size limit of each file (default 52428800); a file over
                   it is reported too large, and nothing past it is read
  --max-chars N    length limit of each text in characters (default 500;
                   0 for none)
  --max-listed N   problems, duplicates and conflicts listed (default 1000
                   each; all are counted; the texts of the duplicates
                   listed, and of the conflicts, stop at 2 MiB)
  --near T         also list near-duplicates: pairs whose character
                   shingles have a Jaccard similarity >= T (e.g. 0.8)
  --semantic T     also list semantic duplicates: pairs whose embeddings
                   have a cosine similarity >= T (e.g. 0.85), from
  --embeddings E   an OpenAI-compatible server (URL; POST URL/v1/embeddings)
                   or a vectors file
  --model NAME     the embedding model to ask the server for
  --json           print one JSON document instead of the report

Only regular files are read: a FIFO, a device or a directory is refused.
Texts longer than 1 MiB are reported, not deduplicated. A check keeps
within 50 MiB of memory however many distinct texts the files hold: when
they are too many for that at once, it reads the files again, a share of
the texts at a time.

exit status: 0 valid (duplicates alone are reported, not fatal); 3 a
problem or a conflict was found; 2 usage error or a file cannot be read;
1 a failure of the machine (out of memory, out of file descriptors)
]=]

local MODES = { none = true, trim = true, collapse = true, casefold = true }
local FORMATS = { lines = true, jsonl = true, csv = true }
local SHOWN = 20 -- duplicates the human report shows

local function usage_error(fmt, ...)
  io.stderr:write("cogpipe: check: ", string.format(fmt, ...), " (see cogpipe check --help)\n")
  return nil, 2
end

local function count_arg(name, value)
  local n = value and value:match("^%d+$") and math.tointeger(tonumber(value))
  if not n then
    return usage_error("%s needs a non-negative whole number, got '%s'", name, tostring(value))
  end
  return n
end

-- Returns the options table, or nil and the exit status.
local function parse(args)
  local o = { files = {}, normalize = "trim" }
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    local function value()
      if inline then
        return inline
      end
      i = i + 1
      return args[i]
    end
    if name == "--help" or name == "-h" then
      io.stdout:write(M.usage)
      return nil, 0
    elseif name == "--json" then
      o.json = true
    elseif name == "--format" then
      local v = value()
      if not FORMATS[v or ""] then
        return usage_error("--format must be lines, jsonl or csv, got '%s'", tostring(v))
      end
      o.format = v
    elseif name == "--normalize" then
      local v = value()
      if not MODES[v or ""] then
        return usage_error("--normalize must be none, trim, collapse or casefold, got '%s'", tostring(v))
      end
      o.normalize = v
    elseif name == "--near" or name == "--semantic" then
      local v = tonumber(value() or "")
      if not v or v <= 0 or v > 1 then
        return usage_error("%s takes a similarity threshold in (0, 1]", name)
      end
      o[name:sub(3)] = v
    elseif name == "--embeddings" or name == "--model" then
      local v = value()
      if not v or v == "" then
        return usage_error("%s needs a value", name)
      end
      o[name:sub(3)] = v
    elseif name == "--max-bytes" or name == "--max-chars" or name == "--max-listed" then
      local n, status = count_arg(name, value())
      if not n then
        return nil, status
      end
      o[name:sub(3):gsub("-", "_")] = n
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      return usage_error("unknown option '%s'", a)
    else
      o.files[#o.files + 1] = a
    end
    i = i + 1
  end
  if #o.files == 0 then
    return usage_error("no file to check")
  end
  if o.semantic and not o.embeddings then
    return usage_error("--semantic needs --embeddings URL|FILE")
  end
  return o
end

-- A text as it can be printed on one line: quoted, control characters
-- escaped, long texts cut.
local function show(text)
  local s = text
  if #s > 80 then
    s = s:sub(1, 77):gsub("[\128-\191]+$", "") .. "..."
  end
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then
      return "\\" .. c
    end
    return string.format("\\x%02X", c:byte())
  end)
  return '"' .. s .. '"'
end

local function plural(n, word)
  return string.format("%d %s%s", n, word, n == 1 and "" or "s")
end

local function rate(r)
  return math.floor(r.parsing_success_rate * 100 + 0.5) / 100
end

local function where(file, line, same_file)
  if same_file then
    return "line " .. line
  end
  return file .. ":" .. line
end

local function human(r, o)
  local out = io.stdout
  out:write(string.format("checked %s (%d bytes): %s, %d blank, %d invalid, %s\n", plural(r.files, "file"),
    r.bytes, plural(r.lines, "line"), r.blank_lines, r.invalid, plural(r.utterances, "utterance")))
  out:write(string.format("normalize %s: %d unique, %s, %s; parsing success rate %.2f%%\n", o.normalize, r.unique,
    plural(r.duplicates, "duplicate"), plural(r.conflicts, "conflict"), rate(r)))
  if r.problem_count > 0 then
    out:write(string.format("\nproblems (%d):\n", r.problem_count))
    for _, p in ipairs(r.problems) do
      out:write(string.format("  %s:%d:%d: %s [%s]\n", p.file, p.line, p.column, p.reason, p.kind))
    end
    if #r.problems < r.problem_count then
      out:write(string.format("  ... and %d more\n", r.problem_count - #r.problems))
    end
  end
  if r.duplicates > 0 then
    out:write(string.format("\nduplicates (%d):\n", r.duplicates))
    for k, d in ipairs(r.duplicate_list) do
      if k > SHOWN then
        break
      end
      out:write(string.format("  %s:%d: %s repeats %s\n", d.file, d.line, show(d.text),
        where(d.first_file, d.first_line, d.first_file == d.file)))
    end
    local shown = math.min(SHOWN, #r.duplicate_list)
    if shown < r.duplicates then
      out:write(string.format("  ... and %d more (--json lists up to --max-listed)\n", r.duplicates - shown))
    end
  end
  if r.conflicts > 0 then
    out:write(string.format("\nconflicts (%d):\n", r.conflicts))
    for _, c in ipairs(r.conflict_list) do
      out:write(string.format("  %s:%d: %s is intent %s here but %s at %s\n", c.file, c.line, show(c.text),
        show(c.intent), show(c.first_intent), where(c.first_file, c.first_line, c.first_file == c.file)))
    end
    if #r.conflict_list < r.conflicts then
      out:write(string.format("  ... and %d more\n", r.conflicts - #r.conflict_list))
    end
  end
  local bad = r.problem_count + r.conflicts
  if bad == 0 then
    out:write("\nvalid\n")
  else
    out:write(string.format("\ninvalid: %s, %s\n", plural(r.problem_count, "problem"),
      plural(r.conflicts, "conflict")))
  end
end

-- Near and semantic pairs over the valid records of every file; nil, a
-- message and the exit status when a file or the embeddings cannot be had.
local function similar_pairs(o)
  if not o.near and not o.semantic then
    return {}
  end
  local records = {}
  for _, path in ipairs(o.files) do
    local rep, err = cp.validate.file(path, { format = o.format, records = true, max_bytes = o.max_bytes,
      max_chars = o.max_chars })
    if not rep then
      return nil, err.message, err.kind == "resource" and 1 or 2
    end
    for _, r in ipairs(rep.records) do
      r.file = path
      records[#records + 1] = r
    end
  end
  local found = {}
  if o.near then
    found.near = require("cogpipe.neardup").pairs(records, { threshold = o.near, normalize = o.normalize })
  end
  if o.semantic then
    local list, err = require("cogpipe.semdup").pairs(records, { threshold = o.semantic,
      embeddings = o.embeddings, model = o.model, normalize = o.normalize })
    if not list then
      return nil, type(err) == "table" and err.message or tostring(err), 2
    end
    found.semantic = list
  end
  return found
end

local function pair_doc(list)
  local out = json.array()
  for i, p in ipairs(list or {}) do
    out[i] = { file = p.b.file, line = p.b.line, text = p.b.text, intent = p.b.intent,
      first_file = p.a.file, first_line = p.a.line, first_text = p.a.text, first_intent = p.a.intent,
      score = math.floor(p.score * 10000 + 0.5) / 10000 }
  end
  return out
end

local function human_pairs(found)
  local out = io.stdout
  for _, kind in ipairs({ "near", "semantic" }) do
    local list = found[kind]
    if list then
      out:write(string.format("\n%s duplicates (%d):\n", kind, #list))
      for k, p in ipairs(list) do
        if k > SHOWN then
          out:write(string.format("  ... and %d more (--json lists them all)\n", #list - SHOWN))
          break
        end
        out:write(string.format("  %s:%d: %s is %.3f like %s at %s\n", p.b.file, p.b.line, show(p.b.text),
          p.score, show(p.a.text), where(p.a.file, p.a.line, p.a.file == p.b.file)))
      end
    end
  end
end

local function as_json(r, o)
  local doc = {
    files = json.array(o.files),
    normalize = o.normalize,
    bytes = r.bytes,
    lines = r.lines,
    blank_lines = r.blank_lines,
    invalid = r.invalid,
    utterances = r.utterances,
    unique = r.unique,
    duplicates = r.duplicates,
    conflicts = r.conflicts,
    problems = r.problem_count,
    parsing_success_rate = rate(r),
    valid = r.problem_count == 0 and r.conflicts == 0,
    problem_list = json.array(r.problems),
    duplicate_list = json.array(r.duplicate_list),
    conflict_list = json.array(r.conflict_list),
  }
  if o.found.near then
    doc.near = #o.found.near
    doc.near_list = pair_doc(o.found.near)
  end
  if o.found.semantic then
    doc.semantic = #o.found.semantic
    doc.semantic_list = pair_doc(o.found.semantic)
  end
  io.stdout:write(json.encode(doc), "\n")
end

function M.main(args)
  local o, status = parse(args or {})
  if not o then
    return status
  end
  local report, err = cp.dedupe.file(o.files, {
    format = o.format,
    normalize = o.normalize,
    max_bytes = o.max_bytes,
    max_chars = o.max_chars,
    max_problems = o.max_listed,
    max_items = o.max_listed,
  })
  if not report then
    io.stderr:write("cogpipe: check: ", err.message, "\n")
    return err.kind == "resource" and 1 or 2
  end
  local found, ferr, fstatus = similar_pairs(o)
  if not found then
    io.stderr:write("cogpipe: check: ", tostring(ferr), "\n")
    return fstatus
  end
  o.found = found
  if o.json then
    as_json(report, o)
  else
    human(report, o)
    human_pairs(found)
  end
  return (report.problem_count > 0 or report.conflicts > 0) and 3 or 0
end

return M
