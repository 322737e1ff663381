-- cp.near and cogpipe.neardup: near-duplicates found at the Jaccard values
-- counted by hand (shingle sets of 3 code points over " <form> "), the
-- index API and its misuse, and the record-level step and pairs.
local cp = require "cogpipe"
local t = require "t"
local neardup = require "cogpipe.neardup"

local CARD = "Update my credit card details"
local CARD2 = "update my credit-card details please"

t.test("hand-made pairs have the Jaccard values counted by hand", function()
  -- features: the shingles of 3 code points over " <near form> " and the
  -- words of the form. " update my credit card details " has 29 shingles
  -- and 5 words; " please" adds 7 shingles and a word, drops "ls ": 34 of 42
  t.eq(cp.near.jaccard(CARD, CARD2), 34 / 42)
  t.eq(cp.near.jaccard(CARD, CARD2, { words = false }), 29 / 36)
  -- contractions, numbers and punctuation are gone from the near form
  t.eq(cp.near.form("What's my account balance??"), "what is my acount balance")
  t.eq(cp.near.jaccard("what is my account balance", "whats my account balance"), 1.0)
  t.eq(cp.near.jaccard("set an alarm for 7 am", "set an alarm for 8 am"), 1.0)
  t.eq(cp.near.jaccard("Reset my password", "reset my password!"), 1.0)
  -- " bok a flight to paris " and "... london ": 15 shingles and 4 words
  -- shared, 34 in all
  t.eq(cp.near.jaccard("book a flight to paris", "book a flight to london"), 19 / 34)
  -- 5-grams: " reset my pasword " has 14 and 3 words, "...paswords " 15 and
  -- 3; 13 windows and 2 words shared
  t.eq(cp.near.jaccard("reset my password", "reset my passwords", { shingle = 5 }), 15 / 20)
end)

t.test("an index finds the pairs at or above its threshold", function()
  local idx <close> = cp.near.new({ threshold = 0.8 })
  t.eq(idx:add(CARD, "billing", "ex-1"), 1)
  t.eq(idx:add("book a flight to paris", "travel"), 2)
  t.eq(idx:add(CARD2, "billing", 77), 3)
  local item, same = idx:add("  update my CREDIT card details ", "billing")
  t.eq(item, 4)
  t.eq(same, 1, "same shingle form as item 1")
  t.eq(idx:add("book a flight to london", "travel"), 5) -- 0.55: not near
  t.eq(#idx, 5)
  t.eq(idx:distinct(), 4)

  local pairs = idx:find_all()
  t.same(pairs, { { a = 1, b = 3, score = 34 / 42 }, { a = 1, b = 4, score = 1.0 } })
  local nearest = idx:find_all({ nearest = true })
  t.same(nearest, pairs, "each later item has one earlier match here")

  local m = idx:query("UPDATE my credit card details, please!", 3)
  t.eq(#m, 2)
  t.eq(m[1].item, 3)
  t.eq(m[1].score, 1.0)
  t.eq(m[1].text, CARD2)
  t.eq(m[1].intent, "billing")
  t.eq(m[1].id, 77)
  t.eq(m[2].item, 1)
  t.eq(m[2].id, "ex-1")
  t.eq(m[2].score, 34 / 42)
  t.same(idx:query("cancel my subscription"), {})
  t.eq(#idx:query(CARD, 0), 0)

  t.eq(idx:text(3), CARD2)
  t.eq(idx:intent(2), "travel")
  t.eq(idx:id(2), nil)
  local o = idx:options()
  t.eq(o.perms, 256)
  t.eq(o.bands, 28)
  t.eq(o.rows, 9)
  t.eq(o.min_bands, 1)
  t.eq(o.shingle, 3)
  t.eq(o.words, true)
  t.ok(tostring(idx):find("5 texts", 1, true))
end)

t.test("the default threshold is the one measured on rewrites", function()
  t.eq(cp.near.DEFAULT_THRESHOLD, 0.65)
  t.eq(neardup.DEFAULT_THRESHOLD, cp.near.DEFAULT_THRESHOLD)
  local idx <close> = cp.near.new()
  local o = idx:options()
  t.eq(o.threshold, 0.65)
  t.eq(o.bands, 51)
  t.eq(o.rows, 5)
  t.eq(o.min_bands, 2, "two bands to agree on keep 98% at the threshold")
  t.raises(function() cp.near.new({ words = 1 }) end, "'words' must be a boolean")
  t.raises(function() cp.near.new({ bands = 4, min_bands = 5 }) end, "min_bands exceeds bands")
end)

t.test("admit keeps the first of two new paraphrases", function()
  local idx <close> = cp.near.new({})
  local ok, item = idx:admit(CARD, "billing", "a")
  t.eq(ok, true)
  t.eq(item, 1)
  local ok2, match = idx:admit(CARD2, "billing", "b")
  t.eq(ok2, false)
  t.eq(match.item, 1)
  t.eq(match.id, "a")
  t.eq(match.score, 34 / 42)
  t.eq(#idx, 1, "the rejected text is not added")
  t.eq((idx:admit("reset my password", "pw")), true)
  t.eq(#idx, 2)
end)

t.test("misuse raises; a closed index refuses work", function()
  t.raises(function() cp.near.new({ threshold = 2 }) end, "threshold")
  t.raises(function() cp.near.new({ treshold = 0.8 }) end, "unknown option 'treshold'")
  t.raises(function() cp.near.new({ shingle = 0 }) end, "shingle")
  t.raises(function() cp.near.new({ bands = 30, rows = 10 }) end, "exceeds perms")
  t.raises(function() cp.near.new("x") end, "table expected")
  local idx = cp.near.new()
  t.raises(function() idx:add(42 and {}) end, "string expected")
  t.raises(function() idx:add("x", 5) end, "string expected")
  t.raises(function() idx:text(1) end, "no such item")
  t.raises(function() idx:query("x", -1) end, "k must be")
  idx:add("x")
  idx:close()
  idx:close()
  t.eq(#idx, 0)
  t.raises(function() idx:add("y") end, "closed")
  t.raises(function() idx:find_all() end, "closed")
end)

t.test("big jobs run on the thread pool while other tasks go on", function()
  -- variants of a few sentences: a word appended, prepended, or with a made
  -- up word of its own (spelled in letters: numbers are all alike to the
  -- index, and so are letters repeated)
  local function word(i)
    return (tostring(i):gsub("%d", function(d)
      return "q" .. string.char(97 + tonumber(d))
    end))
  end
  local base = { "i want to book a flight to paris next week", "what is the balance of my savings account",
    "please reset the password of my email account", "play some relaxing jazz music in the kitchen" }
  local extra = { "please", "now", "today", "again", "quickly" }
  local texts = {}
  for i = 1, 13000 do
    local b = base[i % #base + 1]
    local e = extra[i % #extra + 1]
    local v = (i % 3 == 0) and (b .. " " .. e) or (i % 3 == 1) and (e .. " " .. b) or (b .. " " .. e .. " " .. word(i))
    texts[i] = v
  end
  local function fill()
    local idx = cp.near.new({ threshold = 0.7 })
    for _, s in ipairs(texts) do
      idx:add(s)
    end
    return idx
  end
  local function other_task_ran_during(fn)
    local ran = false
    local other = cp.spawn(function()
      ran = true
    end)
    local r = table.pack(fn())
    local during = ran
    cp.wait(other)
    return during, table.unpack(r, 1, r.n)
  end

  -- a query after 13000 adds (4000+ distinct) indexes them off the loop first
  local idx <close> = fill()
  local during, m = other_task_ran_during(function()
    return idx:query(texts[1], 2)
  end)
  t.ok(during, "the query suspended its task")
  t.eq(m[1].item, 1)
  t.eq(m[1].score, 1.0)
  local idx2 <close> = fill()
  local during2, ok, match = other_task_ran_during(function()
    return idx2:admit(texts[3] .. "!", "x")
  end)
  t.ok(during2, "admit suspended its task")
  t.eq(ok, false)
  t.eq(match.score, 1.0)

  local during3, pairs = other_task_ran_during(function()
    return idx:find_all({ nearest = true })
  end)
  t.ok(during3, "find_all suspended its task")
  t.ok(#pairs > 12000, "#pairs = " .. #pairs)
  for _, p in ipairs(pairs) do
    t.ok(p.a < p.b and p.score >= 0.7)
    t.eq(p.score, cp.near.jaccard(texts[p.a], texts[p.b]))
  end
  -- outside a task (a plain coroutine) the same calls run in place
  local co = coroutine.wrap(function()
    return #idx:find_all({ nearest = true })
  end)
  t.eq(co(), #pairs)
end)

t.test("neardup.pairs: one pair per record with an earlier near-duplicate", function()
  local records = {
    { text = CARD, intent = "billing", line = 1 },
    { text = "book a flight to paris", intent = "travel", line = 2 },
    { text = CARD2, intent = "billing", line = 3 },
    { text = "book a flight to paris please", intent = "travel", line = 4 },
  }
  local pairs = neardup.pairs(records, { threshold = 0.75 })
  t.eq(#pairs, 2)
  t.eq(pairs[1].a.line, 1)
  t.eq(pairs[1].b.line, 3)
  t.eq(pairs[1].score, 34 / 42)
  t.eq(pairs[2].a.line, 2)
  t.eq(pairs[2].b.line, 4)
  t.eq(pairs[2].score, 26 / 34)
  t.eq(#neardup.pairs(records, { threshold = 0.81 }), 0)
  -- an exact duplicate (under the exact-dedupe mode) is exact dedupe's to report
  records[5] = { text = " " .. CARD .. " ", intent = "billing", line = 5 }
  local with = neardup.pairs(records, { threshold = 0.81 })
  t.eq(#with, 1)
  t.eq(with[1].a.line, 1)
  t.eq(with[1].b.line, 5)
  t.eq(with[1].score, 1.0)
  t.eq(#neardup.pairs(records, { threshold = 0.81, normalize = "trim" }), 0)
  t.eq(#neardup.pairs(records, { threshold = 0.81, normalize = "none" }), 1)
end)

t.test("neardup.filter: near under the same intent, conflict under another, existing corpus", function()
  local rejected = {}
  local ctx = {
    existing = {
      billing = { texts = { "cancel my subscription today" }, keys = {} },
      travel = { texts = { "book a flight to paris" }, keys = { ["book a flight to paris"] = true } },
    },
    reject = function(_, rec, reason, info)
      rejected[#rejected + 1] = { rec = rec, reason = reason, info = info }
    end,
  }
  local records = {
    { text = CARD, intent = "billing", line = 1 },
    { text = CARD2, intent = "billing", line = 2 },
    { text = "update my credit card details please", intent = "payments", line = 3 },
    { text = "cancel my subscription today!", intent = "billing", line = 4 },
    { text = "book a flight to paris", intent = "travel", line = 5 }, -- present: passes
    { text = "reset my password", intent = "account", line = 6 },
  }
  local kept = neardup.filter(ctx, records, { threshold = 0.8 })
  t.eq(#kept, 3)
  t.eq(kept[1].line, 1)
  t.eq(kept[2].line, 5)
  t.eq(kept[3].line, 6)
  t.eq(#rejected, 3)
  t.eq(rejected[1].reason, "near")
  t.eq(rejected[1].rec.line, 2)
  t.eq(rejected[1].info.nearest, CARD)
  t.eq(rejected[1].info.nearest_line, 1)
  t.eq(rejected[1].info.score, 34 / 42)
  t.eq(rejected[2].reason, "conflict")
  t.eq(rejected[2].info.other_intent, "billing")
  t.eq(rejected[2].info.score, 34 / 42)
  t.eq(rejected[3].reason, "near")
  t.eq(rejected[3].info.existing, true)
  t.eq(rejected[3].info.nearest, "cancel my subscription today")
end)

t.done()
