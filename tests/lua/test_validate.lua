-- cogpipe.validate: problems located in files, strings and lists; the
-- readers' records; and the three payload validators with JSON paths.
local cp = require "cogpipe"
local t = require "t"
local V = cp.validate

local tmpdir = os.getenv("TMPDIR") or "/tmp"
local function write_tmp(name, body)
  local path = string.format("%s/cp_validate_%d_%s", tmpdir, math.random(1 << 30), name)
  local f = assert(io.open(path, "wb"))
  f:write(body)
  f:close()
  return path
end

local function find(problems, kind)
  for _, p in ipairs(problems) do
    if p.kind == kind then
      return p
    end
  end
end

t.test("text: each problem with line, column and offset", function()
  local r = V.text("fine\n\nctl\1x\ncaf\195\169 \255\n", { name = "mem" })
  t.eq(r.lines, 4)
  t.eq(r.blank_lines, 1)
  t.eq(r.invalid, 2)
  t.eq(r.problem_count, 2)
  local c = find(r.problems, "control")
  t.same(c, { file = "mem", line = 3, column = 4, offset = 9, kind = "control",
    reason = "control character U+0001" })
  local u = find(r.problems, "utf8")
  t.eq(u.line, 4)
  t.eq(u.column, 6)
  t.eq(u.offset, 18)
end)

t.test("limits are options", function()
  local r = V.text("abcdef\n", { max_chars = 3 })
  t.eq(r.problems[1].kind, "too_long")
  t.eq(r.problems[1].column, 4)
  r = V.text("abcdef\n", { max_chars = 0, max_bytes = 4 })
  t.eq(r.problem_count, 1)
  t.eq(r.problems[1].kind, "too_large")
  t.eq(r.problems[1].offset, 4)
  r = V.text("\1\2\3\4\n", { max_problems = 2 })
  t.eq(r.problem_count, 4)
  t.eq(#r.problems, 2)
  t.raises(function() V.text("x", { max_chars = "many" }) end, "max_chars")
  t.raises(function() V.text("x", { format = "xml" }) end, "format")
  t.raises(function() V.text({}) end)
end)

t.test("texts: a list, line = index", function()
  local r = V.texts({ "ok", "", "tab\tok", "bad\0" })
  t.eq(r.lines, 4)
  t.eq(r.blank_lines, 1)
  t.eq(r.invalid, 1)
  t.eq(r.problems[1].line, 4)
  t.eq(r.problems[1].column, 4)
  t.raises(function() V.texts({ "a", 2 }) end, "texts[2]")
end)

t.test("file: JSON Lines records and problems", function()
  local path = write_tmp("x.jsonl", table.concat({
    '{"text":"book a flight","intent":"travel","annotations":[{"entity_id":"e","start":0,"end":4}]}',
    '{"text":"hi","intent":"greet"}',
    '{"text":"x","intent":"greet","annotations":[{"entity_id":"e","start":0,"end":2}]}',
    'not json',
  }, "\n") .. "\n")
  local r = V.file(path, { records = true })
  os.remove(path)
  t.eq(r.format, "jsonl")
  t.eq(r.lines, 4)
  t.eq(#r.records, 2)
  t.eq(r.records[1].text, "book a flight")
  t.eq(r.records[1].intent, "travel")
  t.eq(r.records[1].annotations[1].end_, nil)
  t.eq(r.records[1].annotations[1]["end"], 4)
  t.eq(r.records[2].line, 2)
  t.eq(r.problem_count, 2)
  local a = find(r.problems, "annotation")
  t.eq(a.line, 3)
  t.ok(a.reason:find("annotations[0].end", 1, true), a.reason)
  local s = find(r.problems, "syntax")
  t.eq(s.line, 4)
  t.eq(s.column, 1)
end)

t.test("file: CSV with quoting and an embedded newline", function()
  local path = write_tmp("x.csv", 'text,intent\n"hello, ""you""",greet\n"two\nlines",x\nbye,farewell\n')
  local r = V.file(path, { records = true })
  os.remove(path)
  t.eq(r.format, "csv")
  t.eq(r.records[1].text, 'hello, "you"')
  t.eq(r.records[2].text, "bye")
  t.eq(r.records[2].line, 5)
  t.eq(r.problems[1].kind, "control")
  t.eq(r.problems[1].line, 3)
  t.eq(r.problems[1].column, 5)
end)

t.test("file: errors of the world are nil, err", function()
  local r, err = V.file(tmpdir .. "/no/such/file.txt")
  t.eq(r, nil)
  t.eq(err.kind, "io")
  t.eq(err.path, tmpdir .. "/no/such/file.txt")
  t.ok(err.message:find("No such file", 1, true), err.message)
  t.raises(function() V.file() end)
end)

t.test("dataset payload", function()
  local good = {
    datasetIdReference = "ds-1",
    utteranceCountMatrix = { greet = 10 },
    labelTaxonomyDirectives = { { label = "greet", type = "intent", priority = 1 } },
    metadata = { source = "crm" },
  }
  t.eq(V.dataset_payload(good), true)
  good.utteranceCountMatrix.greet = 100001
  good.labelTaxonomyDirectives[1].priority = 1.5
  local ok, err = V.dataset_payload(good)
  t.eq(ok, nil)
  t.eq(err.kind, "validation")
  t.eq(#err.errors, 2)
  t.eq(err.errors[1].path, "utteranceCountMatrix.greet")
  t.eq(err.errors[2].path, "labelTaxonomyDirectives[0].priority")
  t.ok(err.message:find("utteranceCountMatrix.greet", 1, true), err.message)
  -- JSON text works too, and bad JSON is its own kind of error.
  t.eq(V.dataset_payload('{"datasetIdReference":"a","utteranceCountMatrix":{},'
    .. '"labelTaxonomyDirectives":[{"label":"l","type":"t","priority":0}],"metadata":{}}'), true)
  local _, jerr = V.dataset_payload("{oops")
  t.eq(jerr.kind, "json")
  t.raises(function() V.dataset_payload(42) end)
end)

t.test("intent batch: every rule, with paths", function()
  local batch = {
    examples = {
      { text = "book a flight to Paris", annotations = { { entity_id = "city", start = 17, ["end"] = 22 } } },
      { text = " padded", annotations = cp.json.array() },
      { text = "BOOK A FLIGHT TO PARIS", is_active = true },
      { text = "x", annotations = { { entity_id = "e", start = 0, ["end"] = 2 } } },
    },
    trigger_retrain = true,
  }
  local ok, err = V.intent_batch(batch)
  t.eq(ok, nil)
  local paths = {}
  for _, e in ipairs(err.errors) do
    paths[e.path] = e.message
  end
  t.ok(paths["examples[1].text"]:find("start with white space", 1, true))
  t.ok(paths["examples[2].text"]:find("equals examples[0].text", 1, true))
  t.ok(paths["examples[3].annotations[0].end"]:find("text's length (1 characters)", 1, true))
  t.eq(#err.errors, 3)
  batch.examples[2].text = "padded"
  batch.examples[3].text = "another"
  batch.examples[4].annotations[1]["end"] = 1
  t.eq(V.intent_batch(batch), true)
  -- The cap counts what the intent already has.
  t.eq(V.intent_batch(batch, { existing_active = 1996 }), true)
  local _, cap = V.intent_batch(batch, { existing_active = 1997 })
  t.ok(cap.errors[1].message:find("cap is 2000", 1, true))
  local _, small = V.intent_batch(batch, { existing_active = 198, cap = 200 })
  t.ok(small.errors[1].message:find("cap is 200", 1, true))
  t.raises(function() V.intent_batch(batch, { cap = -1 }) end, "cap")
end)

t.test("v2 sentence: slots must be an array, [] when empty", function()
  t.eq(V.v2_sentence({ text = "hello", localeId = "en", slots = cp.json.array() }), true)
  local _, err = V.v2_sentence({ text = "hello", localeId = "en", slots = {} })
  t.eq(err.errors[1].path, "slots")
  t.ok(err.errors[1].message:find("got object", 1, true))
  local _, err2 = V.v2_sentence({ slots = cp.json.array() })
  t.eq(#err2.errors, 2)
end)

t.done()
