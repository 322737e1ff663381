-- cp.semantic, the vectors-file provider and cogpipe.semdup, without a
-- network: rejections with the right nearest neighbour and score on the
-- emulator's fixture vectors (cosines computed beforehand from the
-- fixture), the in-run case, vectors files, and misuse. The HTTP provider
-- and its cache are tested against the emulator in tests/e2e.
local cp = require "cogpipe"
local t = require "t"
local embeddings = require "cogpipe.embeddings"
local semdup = require "cogpipe.semdup"

local CARD = "Update my credit card details"
local CARD2 = "update my credit-card details please"
local BAL = "What is my account balance"
local BAL2 = "how much money do I have in my account"
-- cosines of the fixture's unit vectors, to 6 places
local COS_CARD = 0.949981
local COS_BAL = 0.919983

local fixture
do
  local f = assert(io.open(t.source_dir .. "/tests/emulator/fixtures/embeddings.json"))
  fixture = cp.json.decode(f:read("a"))
  f:close()
end

local function vectors(texts, intents)
  local v = cp.semantic.vectors()
  for i, s in ipairs(texts) do
    assert(v:add(s, fixture.vectors[s], intents and intents[i]))
  end
  return v
end

local tmp = os.tmpname()
os.remove(tmp)

t.test("a vector set keeps unit rows, texts and intents", function()
  local v <close> = cp.semantic.vectors()
  t.eq(v:add("a", { 3, 4 }, "ia"), 1)
  t.eq(v:add("b", { 0, 2 }), 2)
  t.eq(#v, 2)
  t.eq(v:dim(), 2)
  t.near(v:vector(1)[1], 0.6, 1e-7)
  t.near(v:vector(1)[2], 0.8, 1e-7)
  t.eq(v:text(2), "b")
  t.eq(v:intent(1), "ia")
  t.eq(v:intent(2), nil)
  t.eq(v:find("b"), 2)
  t.eq(v:find("c"), nil)
  local r, err = v:add("z", { 0, 0 })
  t.eq(r, nil)
  t.eq(err.kind, "vectors")
  t.ok(err.message:find("zero", 1, true))
  r, err = v:add("w", { 1, 2, 3 })
  t.eq(r, nil)
  t.ok(err.message:find("3 values, expected 2", 1, true), err.message)
  t.same(v:missing({ "a", "x", "b", "x", "y" }), { "x", "y" })
  local s = v:select({ "b", "a", "b" }, { "i1", nil, "i3" })
  t.eq(#s, 3)
  t.eq(s:text(1), "b")
  t.eq(s:intent(1), "i1")
  t.eq(s:intent(2), "ia", "no intent given: the row keeps its own")
  t.eq(s:vector(3)[2], 1.0)
  local none, serr = v:select({ "a", "nope" })
  t.eq(none, nil)
  t.eq(serr.kind, "missing")
  t.eq(serr.text, "nope")
  t.ok(tostring(v):find("2 x 2", 1, true))
end)

t.test("misuse raises", function()
  local v <close> = cp.semantic.vectors()
  t.raises(function() v:add("a", "not a table") end, "table expected")
  t.raises(function() v:add("a", { 1, "x" }) end, "only numbers")
  t.raises(function() v:add("a", {}) end, "1..65536")
  t.raises(function() v:text(1) end, "no such row")
  t.raises(function() cp.semantic.filter({}) end, "'new' must be a vector set")
  t.raises(function() cp.semantic.filter({ new = v, threshold = 2 }) end, "threshold")
  t.raises(function() cp.semantic.search({ query = v }) end, "'corpus' must be")
  t.raises(function() cp.semantic.vectors(-1) end, "dimension")
  local a = cp.semantic.vectors()
  a:add("x", { 1, 0 })
  local b = cp.semantic.vectors()
  b:add("y", { 1, 0, 0 })
  t.raises(function() cp.semantic.filter({ new = a, existing = b }) end, "dimensions")
  a:close()
  t.raises(function() a:add("x", { 1, 0 }) end, "closed")
  t.raises(function() cp.semantic.search({ query = a, corpus = b }) end, "closed")
  t.raises(function() embeddings.openai({ url = "ftp://x" }) end, "http(s) URL")
  t.raises(function() embeddings.openai({ url = "http://x", batch = 0 }) end, "batch")
end)

t.test("semantic rejections name the nearest existing text, its intent and the score", function()
  local existing <close> = vectors({ CARD, BAL, "tell me a joke" }, { "billing", "balance", "fun" })
  local new <close> = vectors({ CARD2, "book a flight to paris", BAL2 })
  local v = cp.semantic.filter({ new = new, existing = existing, threshold = 0.85 })
  t.eq(#v, 3)
  t.eq(v[1].accepted, false)
  t.eq(v[1].from, "existing")
  t.eq(v[1].row, 1)
  t.eq(v[1].text, CARD)
  t.eq(v[1].intent, "billing")
  t.near(v[1].score, COS_CARD, 2e-6)
  t.eq(v[2].accepted, true)
  t.ok(v[2].score < 0.85)
  t.eq(v[3].accepted, false)
  t.eq(v[3].text, BAL)
  t.eq(v[3].intent, "balance")
  t.near(v[3].score, COS_BAL, 2e-6)
  -- the threshold is the caller's: at 0.93 the balance pair passes
  local w = cp.semantic.filter({ new = new, existing = existing, threshold = 0.93 })
  t.eq(w[1].accepted, false)
  t.eq(w[3].accepted, true)
  t.eq(w[3].text, BAL, "accepted rows still name their nearest")
  -- the default threshold is 0.85
  t.eq(cp.semantic.DEFAULT_THRESHOLD, 0.85)
  t.eq(cp.semantic.filter({ new = new, existing = existing })[3].accepted, false)
end)

t.test("two paraphrases new in one run: only the first is accepted", function()
  local new <close> = vectors({ CARD, "play some jazz music", CARD2, BAL2, BAL })
  local v = cp.semantic.filter({ new = new, threshold = 0.85 })
  t.eq(v[1].accepted, true)
  t.eq(v[1].row, nil, "nothing before it")
  t.eq(v[2].accepted, true)
  t.eq(v[3].accepted, false)
  t.eq(v[3].from, "new")
  t.eq(v[3].row, 1)
  t.eq(v[3].text, CARD)
  t.near(v[3].score, COS_CARD, 2e-6)
  t.eq(v[4].accepted, true)
  t.eq(v[5].accepted, false)
  t.eq(v[5].row, 4)
  t.near(v[5].score, COS_BAL, 2e-6)
end)

t.test("search gives the k nearest rows, best first", function()
  local all = {}
  for s in pairs(fixture.vectors) do
    all[#all + 1] = s
  end
  table.sort(all)
  local corpus <close> = vectors(all)
  local q <close> = vectors({ CARD, BAL2 })
  local hits = cp.semantic.search({ query = q, corpus = corpus, k = 2 })
  t.eq(corpus:text(hits[1][1].row), CARD)
  t.near(hits[1][1].score, 1.0, 1e-6)
  t.eq(corpus:text(hits[1][2].row), CARD2)
  t.near(hits[1][2].score, COS_CARD, 2e-6)
  t.eq(corpus:text(hits[2][2].row), BAL)
  t.near(hits[2][2].score, COS_BAL, 2e-6)
  t.ok(cp.semantic.backend() == "openblas" or cp.semantic.backend() == "blas" or cp.semantic.backend() == "builtin")
end)

t.test("vectors files: JSON Lines and the binary format read back the same", function()
  local jsonl = tmp .. ".jsonl"
  local f = assert(io.open(jsonl, "w"))
  local names = {}
  for s in pairs(fixture.vectors) do
    names[#names + 1] = s
  end
  table.sort(names)
  for _, s in ipairs(names) do
    f:write(cp.json.encode({ text = s, vector = cp.json.array(fixture.vectors[s]), intent = "i:" .. s }), "\n")
  end
  f:close()
  local v <close> = assert(cp.semantic.load(jsonl))
  t.eq(#v, #names)
  t.eq(v:dim(), 8)
  t.eq(v:intent(v:find(CARD)), "i:" .. CARD)
  local bin = tmp .. ".d/sub/v.cpvec"
  t.eq(v:save(bin), true)
  local w <close> = assert(cp.semantic.load(bin))
  t.eq(#w, #v)
  for i = 1, #v do
    t.eq(w:text(i), v:text(i))
    t.eq(w:intent(i), v:intent(i))
    t.same(w:vector(i), v:vector(i))
  end
  local none, err = cp.semantic.load(tmp .. ".absent")
  t.eq(none, nil)
  t.eq(err.kind, "vectors")
  t.eq(err.path, tmp .. ".absent")
  f = assert(io.open(tmp .. ".bad", "w"))
  f:write('{"text": "a", "vector": [1, 0]}\n{"text": "b", "vector": [1]}\n')
  f:close()
  none, err = cp.semantic.load(tmp .. ".bad")
  t.eq(none, nil)
  t.ok(err.message:find(".bad:2: vector has 1 values, expected 2", 1, true), err.message)
  os.remove(jsonl)
  os.remove(bin)
  os.remove(tmp .. ".d/sub")
  os.remove(tmp .. ".d")
  os.remove(tmp .. ".bad")
end)

t.test("semantic with a vectors file: check, pairs and the pipeline step", function()
  local path = tmp .. ".vec.jsonl"
  local f = assert(io.open(path, "w"))
  for s, vec in pairs(fixture.vectors) do
    f:write(cp.json.encode({ text = s, vector = cp.json.array(vec) }), "\n")
  end
  f:close()
  local p = embeddings.file(path)
  local accepted, rejected = semdup.check({
    new = { { text = CARD2, line = 1 }, { text = "tell me a joke", line = 2 }, { text = BAL2, line = 3 } },
    existing = { { text = CARD, intent = "billing" } },
    provider = p,
  })
  t.eq(#accepted, 2)
  t.eq(accepted[1].line, 2)
  t.eq(#rejected, 1)
  t.eq(rejected[1].record.line, 1)
  t.eq(rejected[1].nearest.text, CARD)
  t.eq(rejected[1].from, "existing")
  t.near(rejected[1].score, COS_CARD, 2e-6)

  local records = { { text = BAL, line = 1 }, { text = CARD, line = 2 }, { text = BAL2, line = 3 },
    { text = CARD2, line = 4 } }
  local pairs = semdup.pairs(records, { threshold = 0.9, embeddings = path })
  t.eq(#pairs, 2)
  t.eq(pairs[1].a.line, 1)
  t.eq(pairs[1].b.line, 3)
  t.near(pairs[1].score, COS_BAL, 2e-6)
  t.eq(pairs[2].a.line, 2)
  t.eq(pairs[2].b.line, 4)
  t.eq(#semdup.pairs(records, { threshold = 0.95, embeddings = path }), 0)

  -- a text the file has no vector for is an error, not a silent pass
  local none, err = semdup.pairs({ { text = "not in the file" } }, { embeddings = path })
  t.eq(none, nil)
  t.ok(err.message:find('no vector for "not in the file"', 1, true), err.message)

  local rejections = {}
  local ctx = {
    existing = { billing = { texts = { CARD }, keys = { [cp.dedupe.normalize(CARD, "casefold")] = true } } },
    reject = function(_, rec, reason, info)
      rejections[#rejections + 1] = { rec = rec, reason = reason, info = info }
    end,
  }
  local kept = semdup.filter(ctx, {
    { text = CARD2, intent = "payments", line = 1 },
    { text = CARD, intent = "billing", line = 2 }, -- on the platform already: passes
    { text = "play some jazz music", intent = "music", line = 3 },
  }, { threshold = 0.85, provider = { file = path } })
  t.eq(#kept, 2)
  t.eq(kept[1].line, 2)
  t.eq(kept[2].line, 3)
  t.eq(#rejections, 1)
  t.eq(rejections[1].reason, "semantic")
  t.eq(rejections[1].info.nearest, CARD)
  t.eq(rejections[1].info.nearest_intent, "billing")
  t.eq(rejections[1].info.existing, true)
  t.near(rejections[1].info.score, COS_CARD, 2e-6)
  -- a provider that fails stops the step: nothing unfiltered goes on
  t.raises(function()
    semdup.filter(ctx, { { text = "unknown text", intent = "x" } }, { provider = { file = path } })
  end, "semantic dedupe")
  os.remove(path)
end)

t.test("a set is busy while a search on the thread pool reads it", function()
  local big <close> = cp.semantic.vectors()
  local seed = 7
  local function rnd()
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed / 2147483648 - 0.5
  end
  for i = 1, 5000 do
    local v = {}
    for k = 1, 128 do
      v[k] = rnd()
    end
    big:add("row " .. i, v)
  end
  local task = cp.spawn(function()
    return cp.semantic.filter({ new = big, threshold = 0.85 })
  end)
  cp.sleep(0)
  t.eq(task:status(), "waiting", "the filter is on the thread pool")
  do
    t.raises(function() big:add("more", { 1 }) end, "busy")
  end
  local verdicts = cp.wait(task)
  t.eq(#verdicts, 5000)
  t.ok(big:add("more", big:vector(1)), "usable again afterwards")
end)

t.done()
