-- The export format: what a platform holds for a tenant's intents, one
-- sentence a line as JSON Lines, in a stable order (intent, then text, then
-- id) with the keys in a fixed order (intent, text, id, slots or
-- annotations, locale), so that a file diffs well in git and is itself a
-- pipeline input. Writes it and reads it back (a snapshot a plan works
-- from); knows nothing of the network or of any one target.
--
--   {"intent":"greet","text":"hi there","id":"65f...","slots":[],"locale":"en-US"}      v2
--   {"intent":"greet","text":"hi there","id":"ex_...","annotations":[]}                intent API
local cp = require "cogpipe"
local json = cp.json

local M = {}

-- An item is {id, text, slots?, annotations?, locale?, active?} as a target
-- reads it; active is false only for an example that is not active.
function M.line(intent, item)
  local parts = { '{"intent":', json.encode(intent), ',"text":', json.encode(item.text) }
  if item.id ~= nil then
    parts[#parts + 1] = ',"id":' .. json.encode(item.id)
  end
  if item.slots ~= nil then
    parts[#parts + 1] = ',"slots":' .. json.encode(json.array(item.slots))
  end
  if item.annotations ~= nil then
    parts[#parts + 1] = ',"annotations":' .. json.encode(json.array(item.annotations))
  end
  if item.locale ~= nil then
    parts[#parts + 1] = ',"locale":' .. json.encode(item.locale)
  end
  if item.active == false then
    parts[#parts + 1] = ',"is_active":false'
  end
  parts[#parts + 1] = "}"
  return table.concat(parts)
end

local function before(a, b)
  if a.text ~= b.text then
    return a.text < b.text
  end
  return tostring(a.id or "") < tostring(b.id or "")
end

-- The whole file for {label -> items}: intents in name order, each
-- intent's items by text (bytes), then id.
function M.render(by_intent)
  local labels = {}
  for label in pairs(by_intent) do
    labels[#labels + 1] = label
  end
  table.sort(labels)
  local out, n = {}, 0
  for _, label in ipairs(labels) do
    local items = { table.unpack(by_intent[label]) }
    table.sort(items, before)
    for _, item in ipairs(items) do
      n = n + 1
      out[n] = M.line(label, item)
    end
  end
  return table.concat(out, "\n") .. (n > 0 and "\n" or ""), n, #labels
end

local function problem(path, line, fmt, ...)
  return nil, { kind = "usage", message = string.format("%s:%d: " .. fmt, path, line, ...) }
end

local function check_list(path, line, doc, key)
  local v = doc[key]
  if v ~= nil and not (type(v) == "table" and json.is_array(v)) then
    return false, problem(path, line, '"%s" must be an array', key)
  end
  return true
end

-- Reads a snapshot written by M.render: {intents = {label -> items},
-- count = lines}, or nil, err naming the file and line of the first
-- problem (a snapshot is read whole or not at all).
function M.read(path)
  local f, ferr = io.open(path, "rb")
  if not f then
    return nil, { kind = "usage", message = "snapshot " .. tostring(ferr) }
  end
  local intents, count, line = {}, 0, 0
  for text in f:lines() do
    line = line + 1
    if text:find("%S") then
      local doc, jerr = json.decode(text)
      if type(doc) ~= "table" or json.is_array(doc) then
        f:close()
        return problem(path, line, "not a JSON object%s", jerr and (": " .. tostring(jerr.message)) or "")
      end
      if type(doc.intent) ~= "string" or doc.intent == "" then
        f:close()
        return problem(path, line, '"intent" must be a non-empty string')
      end
      if type(doc.text) ~= "string" then
        f:close()
        return problem(path, line, '"text" must be a string')
      end
      for _, key in ipairs({ "slots", "annotations" }) do
        local ok, err = check_list(path, line, doc, key)
        if not ok then
          f:close()
          return nil, err
        end
      end
      if doc.id ~= nil and type(doc.id) ~= "string" then
        f:close()
        return problem(path, line, '"id" must be a string')
      end
      local list = intents[doc.intent] or {}
      intents[doc.intent] = list
      list[#list + 1] = { id = doc.id, text = doc.text, slots = doc.slots, annotations = doc.annotations,
        locale = doc.locale, active = doc.is_active ~= false }
      count = count + 1
    end
  end
  f:close()
  return { intents = intents, count = count, path = path }
end

return M
