-- A first pipeline: reads utterances, and checks them concurrently, one task
-- per intent, then prints a JSON summary. Run it with
--   cogpipe run examples/first_pipeline.lua [-- FILE]
-- FILE has one "intent<TAB>utterance" a line; without one, a small built-in
-- sample is used.
local cp = require "cogpipe"

local sample = {
  { "greeting", "hello there" },
  { "greeting", "good morning" },
  { "greeting", "Hello there" },
  { "billing", "update my credit card details" },
  { "billing", "why was I charged twice" },
  { "billing", "update my credit card details" },
  { "goodbye", "see you later" },
}

local function read_pairs(path)
  local pairs_ = {}
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    local intent, text = line:match("^([^\t]+)\t(.+)$")
    if not intent then
      io.stderr:write(string.format("%s:%d: expected intent<TAB>utterance\n", path, n))
      cp.exit_status(3)
      return nil
    end
    pairs_[#pairs_ + 1] = { intent, text }
  end
  return pairs_
end

local rows = arg[1] and read_pairs(arg[1]) or sample
if not rows then
  return
end

local by_intent = {}
for _, row in ipairs(rows) do
  local list = by_intent[row[1]] or {}
  list[#list + 1] = row[2]
  by_intent[row[1]] = list
end

-- One task per intent; each finds the exact duplicates of its examples.
local tasks, names = {}, {}
for intent, texts in pairs(by_intent) do
  names[#names + 1] = intent
  tasks[#tasks + 1] = cp.spawn(function()
    local seen, dups = {}, 0
    for _, text in ipairs(texts) do
      if seen[text] then
        dups = dups + 1
      end
      seen[text] = true
      cp.sleep(0) -- let the other intents' tasks run
    end
    return { intent = intent, examples = #texts, duplicates = dups }
  end)
end

local summary = cp.json.array()
for i, task in ipairs(tasks) do
  local result, err = cp.wait(task)
  summary[i] = result or { intent = names[i], error = err.message }
end
table.sort(summary, function(a, b) return a.intent < b.intent end)
print(cp.json.encode({ intents = summary }))
