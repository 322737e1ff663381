-- cogpipe check: says what the ready pipelines would reject from utterance
-- files, and why, without sending anything. One native pass over all the
-- files (cp.dedupe.file) reads, validates and counts repeats within bounded
-- memory; when the answer needs the records themselves -- a text under two
-- intents, --near, --semantic -- they are read again and judged by the
-- pipelines' own steps (pipeline.exact, neardup.filter, semdup.filter), and
-- counted and summarised by report.counts and report.ambiguity, as a run
-- is. This module reads the command line, joins the two and prints.
-- Called as require("cogpipe.cmd.check").main(args), args being the words
-- after `check`; returns the exit status.
local cp = require "cogpipe"
local report = require "cogpipe.report"
local json = cp.json

local M = {}

M.usage = [=[
usage: cogpipe check FILE... [--format lines|jsonl|csv] [--normalize MODE]
                             [--max-bytes N] [--max-chars N] [--max-listed N]
                             [--near[=T]] [--semantic[=T]
                              --embeddings URL|FILE [--model NAME]] [--json]

Says what the ready pipelines would reject from the files, and why, with
their rules and defaults; nothing is sent. Every record is checked -- size,
UTF-8, byte order mark, control characters, length in characters,
annotations, and the syntax of JSON Lines and CSV; blank lines are skipped
-- then compared with the others, across all the files, as the pipelines'
steps compare them:

  duplicate  the same text as an earlier record of the same intent (the
             first is kept)
  conflict   the same text under two intents: every copy is rejected, the
             first too (a model cannot learn both); with --near, also a
             record near one kept before it under another intent
  near       (--near) a record near one kept before it, same intent
  semantic   (--semantic) a record as close as T to one kept before it

A record is compared only with the records kept before it: one rejected
itself (a duplicate, say) never gets a later one rejected. Near and
semantic matches across intents are also listed as ambiguous, with both
texts, both intents, both file:line and the score, and the pairs of intents
whose examples overlap most.

  --format F       lines: one utterance a line;
                   jsonl: {"text", "intent", "annotations"?} a line;
                   csv: a header naming the columns text and intent;
                   default: from each file's extension (.jsonl, .ndjson,
                   .csv; anything else is lines)
  --normalize M    how texts are compared: none, trim, collapse (trim +
                   inner white space), casefold (collapse + Unicode NFKC
                   case folding; the default, as the pipelines: "PIN
                   blocked", "pin  blocked" and the full-width "ＰＩＮ
                   blocked" are one text)
  --max-bytes N    size limit of each file (default 52428800); a file over
                   it is reported too large, and nothing past it is read
  --max-chars N    length limit of each text in characters (default 500,
                   as the pipelines; 0 for none)
  --max-listed N   entries each list holds -- problems, duplicates,
                   conflicts, near, semantic, ambiguous (default 1000; all
                   are counted; the texts of the duplicates listed stop at
                   2 MiB)
  --near[=T]       the pipelines' near step: the Jaccard similarity of the
                   two texts' features (see docs/) is T or more (default
                   0.65, the pipelines' threshold)
  --semantic[=T]   the pipelines' semantic step: the cosine similarity of
                   the two texts' embeddings is T or more (default 0.85),
                   embeddings from
  --embeddings E   an OpenAI-compatible server (URL; POST URL/v1/embeddings)
                   or a vectors file
  --model NAME     the embedding model to ask the server for
  --json           print one JSON document instead of the report

Counts, as in every report: lines (blank ones included) = blank +
submitted; submitted = valid + invalid; accepted = submitted - rejected.
Rates: valid / submitted, unique texts / valid, accepted / submitted, and
the dataset API's parsing success rate, unique texts / lines; n/a (null)
when there is nothing to divide by.

Only regular files are read: a FIFO, a device or a directory is refused.
Texts longer than 1 MiB are reported, not deduplicated. Without --near and
--semantic, and with no text under two intents, a check keeps within 50 MiB
of memory however many distinct texts the files hold: when they are too
many for that at once, it reads the files again, a share at a time.

exit status: 0 valid (duplicates, near and semantic duplicates are reported,
not fatal); 3 an invalid record or a conflict was found; 2 usage error, or
a file (input or vectors) cannot be read; 1 a failure: the embeddings server
failed, or the machine did (out of memory, out of file descriptors)
]=]

local MODES = { none = true, trim = true, collapse = true, casefold = true }
local FORMATS = { lines = true, jsonl = true, csv = true }
local SHOWN = 20 -- entries of a long list the human report shows
local MAX_TEXT = 1 << 20 -- as the native pass: longer texts are not deduplicated
local LISTED = 1000

-- The pipelines' thresholds, for --near and --semantic without a value.
local function default_threshold(kind)
  if kind == "near" then
    return require("cogpipe.neardup").DEFAULT_THRESHOLD
  end
  return require("cogpipe.semdup").DEFAULT_THRESHOLD
end

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
  local o = { files = {}, normalize = "casefold" }
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
      -- the threshold is optional: the next word is it when it is a number
      local v = inline
      if not v and args[i + 1] and tonumber(args[i + 1]) then
        i = i + 1
        v = args[i]
      end
      local t = v and tonumber(v) or default_threshold(name:sub(3))
      if not t or t <= 0 or t > 1 then
        return usage_error("%s takes a similarity threshold in (0, 1], got '%s'", name, tostring(v))
      end
      o[name:sub(3)] = t
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
  o.listed = o.max_listed or LISTED
  return o
end

-- ---- the records, judged as the pipelines judge them ------------------------------

local function place(file, line)
  return tostring(file) .. "\0" .. tostring(line)
end

-- The valid records of every file, as the native pass counted them: a text
-- with nothing left once normalised is blank there, one over 1 MiB
-- invalid. Returns the records and the counts, or nil and the error.
local function read_records(o)
  local records = {}
  local c = { lines = 0, blank = 0, invalid = 0 }
  for _, path in ipairs(o.files) do
    local rep, err = cp.validate.file(path, { format = o.format, records = true, max_bytes = o.max_bytes,
      max_chars = o.max_chars, max_problems = 1 })
    if not rep then
      return nil, err
    end
    c.lines, c.blank, c.invalid = c.lines + rep.lines, c.blank + rep.blank_lines, c.invalid + rep.invalid
    for _, r in ipairs(rep.records) do
      local key = cp.dedupe.normalize(r.text, o.normalize)
      if key == "" then
        c.blank = c.blank + 1
      elseif #r.text > MAX_TEXT or #key > MAX_TEXT then
        c.invalid = c.invalid + 1
      else
        r.file, r.key, r.labelled = path, key, r.intent ~= nil
        records[#records + 1] = r
      end
    end
  end
  -- A record without an intent (a lines file) never conflicts: it takes
  -- the intent of its text where a labelled file gives one.
  local intent_of = {}
  for _, r in ipairs(records) do
    if r.labelled and not intent_of[r.key] then
      intent_of[r.key] = r.intent
    end
  end
  for i, r in ipairs(records) do
    r.order = i
    if not r.labelled then
      r.intent = intent_of[r.key] or ""
    end
  end
  return records, c
end

-- What the runner's context gives the steps, with the rejections kept in
-- the runner's shape (report.ambiguity reads them).
local function new_context()
  local ctx = { existing = {}, tenant = {}, rejections = {}, notes = {} }
  function ctx.reject(self, rec, reason, info)
    local entry = { reason = reason, text = rec.text, intent = rec.intent, line = rec.line, file = rec.file,
      record = rec.record or rec }
    for k, v in pairs(info or {}) do
      entry[k] = v
    end
    self.rejections[#self.rejections + 1] = entry
  end
  function ctx.note(self, msg)
    self.notes[#self.notes + 1] = msg
  end
  return ctx
end

-- The semantic step over the texts a pipeline sends (white space
-- collapsed), the rejections naming the records as they were read.
-- Returns nil, the message and the exit status when the embeddings cannot
-- be had.
local function semantic_step(o, ctx, kept)
  local embeddings = require "cogpipe.embeddings"
  local ok, provider = pcall(embeddings.provider, o.embeddings, { model = o.model })
  if not ok then
    return nil, tostring(provider), 2
  end
  local sent = {}
  for i, r in ipairs(kept) do
    sent[i] = { text = cp.dedupe.normalize(r.text, "collapse"), intent = r.intent, line = r.line, file = r.file,
      record = r }
  end
  local done, result = pcall(require("cogpipe.semdup").filter, ctx, sent, { threshold = o.semantic,
    provider = provider })
  if not done then
    local err = result
    if type(err) ~= "table" or err.kind == "memory" then
      error(err, 0) -- a bug, or memory: not the embeddings' failure
    end
    -- a server that fails is a failure (1); a vectors file that cannot be
    -- read or lacks a text is the user's to fix (2)
    local remote = o.embeddings:match("^https?://") ~= nil
    return nil, tostring(err.message or err.kind), (remote or err.kind == "resource") and 1 or 2
  end
  local out = {}
  for i, r in ipairs(result) do
    out[i] = r.record
  end
  return out
end

-- Runs the pipelines' exact, near and semantic steps over the records.
-- Returns the context (its rejections) and the records kept, or nil, the
-- message and the exit status.
local function judge(o, records)
  local ctx = new_context()
  local kept = require("cogpipe.pipeline").exact({ key = o.normalize }).run(ctx, records)
  if o.near then
    kept = require("cogpipe.neardup").filter(ctx, kept, { threshold = o.near })
  end
  if o.semantic then
    local err, status
    kept, err, status = semantic_step(o, ctx, kept)
    if not kept then
      return nil, err, status
    end
  end
  return ctx, kept
end

local function score4(s)
  return math.floor(s * 10000 + 0.5) / 10000
end

-- The lists and counts of a judged check, from the steps' rejections.
local function summarise(o, records, ctx)
  local at, first, first_as = {}, {}, {}
  for _, r in ipairs(records) do
    at[place(r.file, r.line)] = r
    first[r.key] = first[r.key] or r
    first_as[r.key] = first_as[r.key] or {}
    first_as[r.key][r.intent] = first_as[r.key][r.intent] or r
  end
  local function intent_of(r)
    return r.labelled and r.intent or nil
  end
  local by = { duplicate = 0, conflict = 0, near = 0, semantic = 0 }
  local lists = { duplicate = {}, conflict = {}, near = {}, semantic = {} }
  local matches = {} -- near and semantic matches, as report.ambiguity reads them
  for _, e in ipairs(ctx.rejections) do
    local r = e.record
    by[e.reason] = by[e.reason] + 1
    local item
    local other = e.score and (at[place(e.nearest_file, e.nearest_line)] or { text = e.nearest,
      intent = e.nearest_intent, file = e.nearest_file, line = e.nearest_line, labelled = true })
    if e.reason == "duplicate" then
      local f = first[r.key]
      item = { file = r.file, line = r.line, text = r.key, first_file = f.file, first_line = f.line }
    elseif e.reason == "conflict" then
      -- the same text under another intent (the first record of that
      -- intent), or with --near a near match kept before it
      other = other or first_as[r.key][e.other_intent]
      item = { kind = e.score and "near" or "exact", file = r.file, line = r.line, text = r.text,
        intent = intent_of(r), other_file = other.file, other_line = other.line, other_text = other.text,
        other_intent = intent_of(other), score = e.score }
    else
      item = { file = r.file, line = r.line, text = r.text, intent = intent_of(r), first_file = other.file,
        first_line = other.line, first_text = other.text, first_intent = intent_of(other), score = e.score }
    end
    if e.score and r.labelled and other.labelled then
      matches[#matches + 1] = { reason = e.reason, score = e.score, text = r.text, intent = r.intent, file = r.file,
        line = r.line, nearest = other.text, nearest_intent = other.intent, nearest_file = other.file,
        nearest_line = other.line }
    end
    item.order = r.order
    local list = lists[e.reason]
    list[#list + 1] = item
  end
  for _, list in pairs(lists) do
    table.sort(list, function(a, b)
      return a.order < b.order
    end)
    for i = #list, o.listed + 1, -1 do
      list[i] = nil
    end
    for _, item in ipairs(list) do
      item.order = nil
    end
  end
  local ambiguous, overlap = report.ambiguity(matches)
  return { by = by, lists = lists, ambiguous = ambiguous, overlap = overlap }
end

-- ---- the report ---------------------------------------------------------------------

-- A text as it can be printed on one line: quoted, control characters
-- escaped, long texts cut.
local function show(text)
  local s = text
  if #s > 80 then
    s = s:sub(1, 77):gsub("[\128-\191]+$", "") .. "..."
  end
  s = s:gsub('[%c"\\]', function(ch)
    if ch == '"' or ch == "\\" then
      return "\\" .. ch
    end
    return string.format("\\x%02X", ch:byte())
  end)
  return '"' .. s .. '"'
end

-- An intent as the report names it; a record of a lines file has none.
local function intent_label(intent)
  return intent and show(intent) or "(none)"
end

local function plural(n, word)
  return string.format("%d %s%s", n, word, n == 1 and "" or "s")
end

local function where(file, line, same_file)
  if same_file then
    return "line " .. line
  end
  return file .. ":" .. line
end

local function more(out, listed, total, how)
  if listed < total then
    out:write(string.format("  ... and %d more%s\n", total - listed, how or ""))
  end
end

local function human(res, o)
  local out = io.stdout
  local c, r = res.counts, res.native
  out:write(string.format("checked %s (%d bytes): %s: %d blank, %d submitted (%d valid, %d invalid)\n",
    plural(r.files, "file"), r.bytes, plural(c.lines, "line"), c.blank, c.submitted, c.valid,
    c.rejected_by_reason.invalid))
  local how = { "compared after " .. o.normalize }
  if o.near then
    how[#how + 1] = string.format("near >= %.2f", o.near)
  end
  if o.semantic then
    how[#how + 1] = string.format("semantic >= %.2f", o.semantic)
  end
  local reasons = {}
  for _, reason in ipairs(res.reasons) do
    reasons[#reasons + 1] = string.format("%d %s", c.rejected_by_reason[reason], reason)
  end
  out:write(string.format("%s: %d unique; rejected %d (%s); accepted %d\n", table.concat(how, ", "), c.unique,
    c.rejected, table.concat(reasons, ", "), c.accepted))
  out:write(report.rates_text(c), "\n")
  if r.problem_count > 0 then
    out:write(string.format("\nproblems (%d):\n", r.problem_count))
    for _, p in ipairs(r.problems) do
      out:write(string.format("  %s:%d:%d: %s [%s]\n", p.file, p.line, p.column, p.reason, p.kind))
    end
    more(out, #r.problems, r.problem_count)
  end
  local dups = res.lists.duplicate
  if c.rejected_by_reason.duplicate > 0 then
    out:write(string.format("\nduplicates (%d):\n", c.rejected_by_reason.duplicate))
    for k = 1, math.min(SHOWN, #dups) do
      local d = dups[k]
      out:write(string.format("  %s:%d: %s repeats %s\n", d.file, d.line, show(d.text),
        where(d.first_file, d.first_line, d.first_file == d.file)))
    end
    more(out, math.min(SHOWN, #dups), c.rejected_by_reason.duplicate, " (--json lists up to --max-listed)")
  end
  local conflicts = res.lists.conflict
  if c.rejected_by_reason.conflict > 0 then
    out:write(string.format("\nconflicts (%d):\n", c.rejected_by_reason.conflict))
    for _, x in ipairs(conflicts) do
      out:write(string.format("  %s:%d: %s is intent %s here but %s at %s:%d: %s%s\n", x.file, x.line, show(x.text),
        intent_label(x.intent), intent_label(x.other_intent), x.other_file, x.other_line, show(x.other_text),
        x.score and string.format(" (near, %.3f)", x.score) or ""))
    end
    more(out, #conflicts, c.rejected_by_reason.conflict)
  end
  for _, kind in ipairs({ "near", "semantic" }) do
    if o[kind] then
      local list = res.lists[kind]
      out:write(string.format("\n%s duplicates (%d):\n", kind, c.rejected_by_reason[kind]))
      for k = 1, math.min(SHOWN, #list) do
        local p = list[k]
        out:write(string.format("  %s:%d: %s is %.3f like %s at %s\n", p.file, p.line, show(p.text), p.score,
          show(p.first_text), where(p.first_file, p.first_line, p.first_file == p.file)))
      end
      more(out, math.min(SHOWN, #list), c.rejected_by_reason[kind], " (--json lists up to --max-listed)")
    end
  end
  if #res.ambiguous > 0 then
    out:write("\n")
    report.print_overlap(out, "", #res.ambiguous, res.overlap)
  end
  if res.valid then
    out:write("\nvalid\n")
  else
    out:write(string.format("\ninvalid: %s, %s\n", plural(r.problem_count, "problem"),
      plural(c.rejected_by_reason.conflict, "conflict")))
  end
end

local function as_json(res, o)
  local c, r = res.counts, res.native
  local by = {}
  for _, reason in ipairs(res.reasons) do
    by[reason] = c.rejected_by_reason[reason]
  end
  local function capped(list)
    return json.array(table.move(list, 1, math.min(#list, o.listed), 1, {}))
  end
  -- scores to four decimals: what a float of the similarity can tell
  local function scored(list)
    local out = json.array()
    for i, item in ipairs(list) do
      local copy = {}
      for k, v in pairs(item) do
        copy[k] = v
      end
      copy.score = item.score and score4(item.score)
      out[i] = copy
    end
    return out
  end
  local doc = {
    files = json.array(o.files),
    normalize = o.normalize,
    bytes = r.bytes,
    lines = c.lines,
    blank = c.blank,
    blank_lines = c.blank,
    submitted = c.submitted,
    invalid = c.rejected_by_reason.invalid,
    utterances = c.valid,
    unique = c.unique,
    duplicates = c.rejected_by_reason.duplicate,
    conflicts = c.rejected_by_reason.conflict,
    rejected = c.rejected,
    rejected_by_reason = by,
    accepted = c.accepted,
    problems = r.problem_count,
    parsing_success_rate = c.parsing_success_rate or json.null,
    rates = report.rates_doc(c),
    valid = res.valid,
    problem_list = json.array(r.problems),
    duplicate_list = json.array(res.lists.duplicate),
    conflict_list = scored(res.lists.conflict),
    ambiguous = #res.ambiguous,
    ambiguous_list = capped(res.ambiguous),
    intent_overlap = capped(res.overlap),
  }
  for _, kind in ipairs({ "near", "semantic" }) do
    if o[kind] then
      doc[kind] = c.rejected_by_reason[kind]
      doc[kind .. "_threshold"] = o[kind]
      doc[kind .. "_list"] = scored(res.lists[kind])
    end
  end
  io.stdout:write(json.encode(doc), "\n")
end

-- ---- the command ------------------------------------------------------------------

local function fail(message, status)
  io.stderr:write("cogpipe: check: ", tostring(message), "\n")
  return status
end

function M.main(args)
  local o, status = parse(args or {})
  if not o then
    return status
  end
  local native, err = cp.dedupe.file(o.files, {
    format = o.format,
    normalize = o.normalize,
    max_bytes = o.max_bytes,
    max_chars = o.max_chars,
    max_problems = o.listed,
    max_items = o.listed,
  })
  if not native then
    return fail(err.message, err.kind == "resource" and 1 or 2)
  end
  local res = { native = native, reasons = { "invalid", "duplicate", "conflict" } }
  local input = { lines = native.lines, blank = native.blank_lines, unique = native.unique,
    rejected_by_reason = { invalid = native.invalid, duplicate = native.duplicates } }
  if o.near or o.semantic or native.conflicts > 0 then
    -- Texts under two intents (every copy is rejected), or the near and
    -- semantic steps: the records are judged one by one, by the steps.
    local records, counts = read_records(o)
    if not records then
      return fail(counts.message, counts.kind == "resource" and 1 or 2)
    end
    local ctx, jerr, jstatus = judge(o, records)
    if not ctx then
      return fail(jerr, jstatus)
    end
    local s = summarise(o, records, ctx)
    local unique = {}
    for _, r in ipairs(records) do
      unique[r.key] = true
    end
    local n = 0
    for _ in pairs(unique) do
      n = n + 1
    end
    input = { lines = counts.lines, blank = counts.blank, unique = n, rejected_by_reason = s.by }
    s.by.invalid = counts.invalid
    res.lists, res.ambiguous, res.overlap = s.lists, s.ambiguous, s.overlap
    for _, kind in ipairs({ "near", "semantic" }) do
      if o[kind] then
        res.reasons[#res.reasons + 1] = kind
      end
    end
  else
    -- One intent per text: the native pass's duplicates are the exact
    -- step's, and there is no conflict.
    res.lists = { duplicate = native.duplicate_list, conflict = {}, near = {}, semantic = {} }
    res.ambiguous, res.overlap = {}, {}
  end
  res.counts = report.counts(input)
  res.valid = native.problem_count == 0 and res.counts.rejected_by_reason.conflict == 0
  if o.json then
    as_json(res, o)
  else
    human(res, o)
  end
  return res.valid and 0 or 3
end

return M
