-- Writes the sample dataset the ready pipelines use by default:
--   cogpipe run pipelines/data/make_sample.lua [-- OUT.jsonl]
-- Deterministic: the same program always writes the same file, so the copy
-- in the repository can be checked against it. About 300 examples over a
-- dozen intents, with something for every filter to find: exact duplicates,
-- case and space variants, paraphrases, a cross-intent conflict and a few
-- examples the platform would reject.
local cp = require "cogpipe"
local json = cp.json

local out_path = arg[1] or "pipelines/data/sample_intents.jsonl"

local cities = { "Paris", "Berlin", "Tokyo", "Lisbon", "Chicago", "Madrid", "Oslo", "Cairo" }
local days = { "monday", "friday", "tomorrow", "next week", "the weekend" }
local things = { "milk", "eggs", "bread", "coffee", "apples", "rice" }
local songs = { "jazz", "some rock", "relaxing piano", "the news podcast", "my workout playlist" }
local times = { "6 am", "7:30", "noon", "9 pm", "half past eight" }

local intents = {
  book_flight = { "book a flight to %c", "i need a plane ticket to %c for %d", "find me flights to %c",
    "are there cheap flights to %c %d", "reserve a seat on a flight to %c" },
  weather = { "what's the weather in %c", "will it rain in %c %d", "how hot will it be in %c %d",
    "do i need an umbrella in %c" },
  play_music = { "play %s", "put on %s", "i want to listen to %s", "can you play %s please" },
  set_alarm = { "set an alarm for %t", "wake me up at %t", "alarm at %t %d please" },
  shopping_list = { "add %g to my shopping list", "put %g on the list", "remove %g from my shopping list",
    "do i have %g on my list" },
  account_balance = { "show me my balance", "what do i have in savings", "balance of my savings account",
    "how much is in checking" },
  update_payment = { "update my credit card details", "change the card on file",
    "i need to replace my payment method", "my card expired, update it" },
  cancel_subscription = { "cancel my subscription", "stop my membership", "i want to end my plan",
    "how do i unsubscribe" },
  reset_password = { "reset my password", "i forgot my password", "help me log in, my password is lost",
    "change my login password" },
  track_package = { "where is my package", "track my order", "when will my parcel arrive %d",
    "has my delivery shipped" },
  tell_joke = { "tell me a joke", "make me laugh", "say something funny", "do you know any jokes" },
  greeting = { "hello", "hi there", "good morning", "hey, how are you" },
}

local order = {}
for name in pairs(intents) do
  order[#order + 1] = name
end
table.sort(order)

-- A small deterministic generator (LCG), so no run depends on math.random.
local seed = 20261123
local function rnd(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end

local prefixes = { "", "", "", "please ", "could you ", "hey, ", "i'd like you to " }
local suffixes = { "", "", "", " please", " for me", " now", " thanks" }

local function fill(template)
  local body = template:gsub("%%(%a)", function(k)
    if k == "c" then
      return cities[rnd(#cities)]
    elseif k == "d" then
      return days[rnd(#days)]
    elseif k == "s" then
      return songs[rnd(#songs)]
    elseif k == "t" then
      return times[rnd(#times)]
    elseif k == "g" then
      return things[rnd(#things)]
    end
  end)
  return prefixes[rnd(#prefixes)] .. body .. suffixes[rnd(#suffixes)]
end

local rows = {}
local function add(text, intent, annotations)
  rows[#rows + 1] = { text = text, intent = intent, annotations = annotations }
end

-- The bulk: unique fillings of each intent's templates.
for _, name in ipairs(order) do
  local seen, made, tries = {}, 0, 0
  while made < 24 and tries < 2000 do
    tries = tries + 1
    local templates = intents[name]
    local text = fill(templates[rnd(#templates)])
    if not seen[text] then
      seen[text] = true
      made = made + 1
      local anns
      local city = text:find("%u%l+")
      if name == "book_flight" and city then
        local word = text:match("%u%l+", city)
        -- offsets count code points; these texts are ASCII
        anns = { { entity_id = "city", start = city - 1, ["end"] = city - 1 + #word } }
      end
      add(text, name, anns)
    end
  end
end

-- Exact duplicates.
add("tell me a joke", "tell_joke")
add("reset my password", "reset_password")
add("where is my package", "track_package")
add("hello", "greeting")
-- Case and space variants: duplicates once normalised.
add("Tell me a JOKE", "tell_joke")
add("where   is my  package", "track_package")
add("  Reset my password", "reset_password")
add("HELLO", "greeting")
-- Paraphrases: near or semantic duplicates, not exact ones.
add("Update my credit card details", "update_payment")
add("update my credit-card details please", "update_payment")
add("What is my account balance", "account_balance") -- same meaning, other words
add("how much money do I have in my account", "account_balance")
add("what is my account balance?", "account_balance")
add("cancel my subscription please", "cancel_subscription")
-- A cross-intent conflict: the same words under two intents.
add("change my login password", "update_payment")
-- Examples the platform would reject.
add(string.rep("very ", 110) .. "long", "tell_joke") -- over 500 characters
add("ring the bell \7 now", "set_alarm") -- a control character
add("book a flight to Rome", "book_flight", { { entity_id = "city", start = 17, ["end"] = 40 } })
add("", "greeting") -- empty

local f = assert(io.open(out_path, "w"))
for _, r in ipairs(rows) do
  local rec = { text = r.text, intent = r.intent }
  if r.annotations then
    rec.annotations = r.annotations
  end
  f:write(json.encode(rec), "\n")
end
f:close()
print(string.format("wrote %d examples over %d intents to %s", #rows, #order, out_path))
