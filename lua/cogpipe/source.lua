-- Sources of labelled examples for pipelines: JSON Lines, CSV and plain
-- lines go through the native streaming readers (cp.validate.records), which
-- locate every problem; a JSON file of [text, intent] pairs (as CLINC150
-- ships) is read here. Returns records {text, intent, annotations, line,
-- file}, one entry per invalid record and the lines read, or nil and the
-- problems (nothing may be sent then).
local cp = require "cogpipe"
local json = cp.json

local M = {}

local DEFAULT_MAX_BYTES = 52428800 -- as cp.validate.file's

local function format_of(path, given)
  if given then
    return given
  end
  if path:match("%.jsonl$") then
    return "jsonl"
  elseif path:match("%.csv$") then
    return "csv"
  elseif path:match("%.json$") then
    return "pairs"
  end
  return "lines"
end

-- The whole of a regular file no larger than max_bytes (0: no limit).
-- Anything else is refused before it is opened: a FIFO would wait for a
-- writer, a device would never end.
local function read_all(path, max_bytes)
  local st, serr = cp.fs.stat(path)
  if not st then
    return nil, { message = serr.message }
  end
  if st.type ~= "file" then
    return nil, { message = string.format("%s: not a regular file", path) }
  end
  if max_bytes > 0 and st.size > max_bytes then
    return nil, { message = string.format("%s: file is %d bytes; the limit is %d bytes", path, st.size,
      max_bytes) }
  end
  local f, err = io.open(path, "rb")
  if not f then
    return nil, { message = err }
  end
  local data = f:read("a")
  f:close()
  return data
end

-- [[text, intent], ...], or {"train": [[text, intent], ...], ...} (split
-- picks the part; default "train").
local function read_pairs(path, opts)
  local data, err = read_all(path, opts.max_bytes or DEFAULT_MAX_BYTES)
  if not data then
    return nil, err
  end
  local doc, jerr = json.decode(data)
  if doc == nil then
    return nil, { message = string.format("%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.message) }
  end
  local list = doc
  if not json.is_array(doc) then
    local split = opts.split or "train"
    list = doc[split]
    if type(list) ~= "table" then
      return nil, { message = string.format("%s: no \"%s\" list of [text, intent] pairs", path, split) }
    end
  end
  local records, problems = {}, {}
  for i, pair in ipairs(list) do
    if type(pair) ~= "table" or type(pair[1]) ~= "string" or type(pair[2]) ~= "string" then
      problems[#problems + 1] = { file = path, line = i, column = 1, offset = 0,
        reason = string.format("item %d is not a [text, intent] pair of strings", i) }
    else
      records[#records + 1] = { text = pair[1], intent = pair[2], line = i, file = path }
    end
  end
  if #problems > 0 then
    return nil, { problems = problems, problem_count = #problems }
  end
  return records, { lines = #list, blank_lines = 0 }
end

-- Problems that make the whole file untrustworthy; anything else is one
-- record's problem, and that record is rejected as invalid on its own.
local FILE_LEVEL = { too_large = true, bom = true, utf8 = true, syntax = true }

-- opts: path, format, intent (for lines files), max_bytes, split.
function M.read(opts)
  local path = opts.path
  local format = format_of(path, opts.format)
  if format == "pairs" then
    local records, stats = read_pairs(path, opts)
    if not records then
      return nil, stats
    end
    return { records = records, stats = stats, invalid = {} }
  end
  local report, err = cp.validate.file(path, {
    format = format,
    records = true,
    max_bytes = opts.max_bytes,
    max_chars = 0, -- per-example limits are the validate step's: they reject, not abort
    max_problems = 100000,
  })
  if not report then
    return nil, err
  end
  -- one entry per invalid record, however many problems it has: the
  -- first, and all of them in `problems`
  local fatal, invalid, at = {}, {}, {}
  for _, p in ipairs(report.problems) do
    if FILE_LEVEL[p.kind] then
      fatal[#fatal + 1] = p
    elseif at[p.line] then
      table.insert(at[p.line].problems, p)
    else
      local entry = { file = p.file, line = p.line, column = p.column, offset = p.offset, kind = p.kind,
        reason = p.reason, problems = { p } }
      at[p.line] = entry
      invalid[#invalid + 1] = entry
    end
  end
  if #fatal > 0 or report.problem_count > #report.problems then
    report.problems = #fatal > 0 and fatal or report.problems
    report.problem_count = #fatal > 0 and #fatal or report.problem_count
    return nil, report
  end
  local records = report.records
  for _, r in ipairs(records) do
    r.file = path
    r.intent = r.intent or opts.intent
    if not r.intent then
      return nil, { message = string.format("%s: a lines file has no intents; give pipeline.source{intent=...}", path) }
    end
  end
  return {
    records = records,
    invalid = invalid,
    -- the counts of report.counts that reading decides
    stats = { lines = report.lines, blank_lines = report.blank_lines },
  }
end

return M
