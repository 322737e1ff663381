-- Sources of labelled examples for pipelines: JSON Lines, CSV and plain
-- lines go through the native streaming readers (cp.validate.records), which
-- locate every problem; a JSON file of [text, intent] pairs (as CLINC150
-- ships) is read here. Returns records {text, intent, annotations, line,
-- file} and the parsing statistics, or nil and the problems (nothing may be
-- sent then).
local cp = require "cogpipe"
local json = cp.json

local M = {}

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

local function read_all(path)
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
  local data, err = read_all(path)
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
  local unique = {}
  local n = 0
  for _, r in ipairs(records) do
    if r.text ~= "" and not unique[r.text] then
      unique[r.text] = true
      n = n + 1
    end
  end
  return records, {
    lines = #list,
    blank_lines = 0,
    parsing_success_rate = #list > 0 and math.floor(n / #list * 10000 + 0.5) / 100 or 0,
  }
end

-- opts: path, format, intent (for lines files), max_bytes, split.
function M.read(opts)
  local path = opts.path
  local format = format_of(path, opts.format)
  if format == "pairs" then
    local records, stats = read_pairs(path, opts)
    if not records then
      return nil, stats
    end
    return { records = records, stats = stats }
  end
  local report, err = cp.validate.records(path, {
    format = format,
    max_bytes = opts.max_bytes,
    max_chars = 0, -- per-example limits are the validate step's: they reject, not abort
  })
  if not report then
    return nil, err
  end
  if (report.problem_count or 0) > 0 then
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
    stats = {
      lines = report.lines,
      blank_lines = report.blank_lines,
      parsing_success_rate = report.parsing_success_rate,
    },
  }
end

return M
