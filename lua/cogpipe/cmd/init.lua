-- cogpipe init: a starting point for a real Cognigy.AI project. Writes a
-- commented tenant file (every secret through env(), every setting
-- explained from the tenant schema), a pipeline for the chosen target and a
-- small data file, and says what to set and run next. Never overwrites a
-- file unless told to.
local schema = require "cogpipe.tenant_schema"

local M = {}

M.usage = [[
usage: cogpipe init [DIR] [--target intents|v2|dataset] [--name NAME] [--force]

Writes, into DIR (default: the current directory):
  tenants/NAME.lua   a tenant file for your Cognigy.AI project (NAME default:
                     production); secrets are read with env(), never written
  pipeline.lua       a pipeline for the target, reading data/examples.jsonl
  data/examples.jsonl  a few labelled examples to try it with
and prints the environment variables to set and the commands to run next.

  --target T   intents  the intent example batch API (OAuth2 client)
               v2       the Cognigy.AI REST API v2.0 (API key, flow, locale)
               dataset  the dataset upload API (OAuth2 client)
               (default: v2)
  --force      overwrite files that exist
]]

local TARGETS = {
  intents = {
    sink = "pipeline.sink.intent_batches { batch_size = 100, retrain = true }",
    vars = { "COGNIGY_API_BASE", "COGNIGY_CLIENT_ID", "COGNIGY_CLIENT_SECRET" },
    about = "intent example batches: POST {tenant_url}/api/v1/intents/{id}/examples/batch",
  },
  v2 = {
    sink = "pipeline.sink.v2_sentences { method = \"patch\", train_mode = \"full\" }",
    vars = { "COGNIGY_API_BASE", "COGNIGY_API_KEY", "COGNIGY_FLOW_ID", "COGNIGY_LOCALE_ID" },
    about = "the Cognigy.AI REST API v2.0: sentences of a flow's intents, then training",
  },
  dataset = {
    sink = "pipeline.sink.dataset { retrain = true }",
    vars = { "COGNIGY_API_BASE", "COGNIGY_CLIENT_ID", "COGNIGY_CLIENT_SECRET" },
    about = "the dataset upload: one multipart POST {api_base}/datasets/upload",
  },
}

local function usage_error(msg)
  io.stderr:write("cogpipe: init: ", msg, "\n", M.usage)
  return 2
end

-- A comment block from a schema node's doc, wrapped.
local function comment(indent, text)
  local out, line = {}, indent .. "--"
  for word in text:gmatch("%S+") do
    if #line + #word + 1 > 78 then
      out[#out + 1] = line
      line = indent .. "--"
    end
    line = line .. " " .. word
  end
  out[#out + 1] = line
  return table.concat(out, "\n") .. "\n"
end

local function doc(path)
  local node = schema.keys
  local n
  for part in path:gmatch("[^.]+") do
    n = node[part]
    node = n and n.fields or {}
  end
  return n and n.doc or ""
end

local function tenant_file(name, target)
  local out = {}
  local function add(s)
    out[#out + 1] = s
  end
  add(string.format([[
-- The tenant %q: your Cognigy.AI project, for the %s target.
-- Secrets are read from the environment with env("NAME") -- never write a
-- secret into this file. A run asks only for the variables its pipeline
-- reads and names every missing one (exit 2). Check it offline with
--   cogpipe tenant check tenants/%s.lua --pipeline pipeline.lua
-- and see every setting a tenant may have with `cogpipe tenant keys`.
local webhook_url = env("COGPIPE_WEBHOOK_URL", "") -- optional: none when unset

return {
  name = %q,
]], name, target, name, name))
  add(comment("  ", doc("base_url") .. ". Where to find it: the API base of your Cognigy.AI "
    .. "environment, e.g. https://api-trial.cognigy.ai (shared SaaS) or your own installation's"))
  add("  base_url = env(\"COGNIGY_API_BASE\"),\n")
  if target == "v2" then
    add(comment("  ", "v2: " .. doc("v2") .. ". The flow id is in the flow editor's URL; the locale id in "
      .. "Manage > Locales; the API key in your profile (Profile > API Keys)"))
    add([[
  v2 = {
    flow_id = env("COGNIGY_FLOW_ID"),
    locale_id = env("COGNIGY_LOCALE_ID"),
    auth = { api_key = env("COGNIGY_API_KEY") },
]])
    add(comment("    ", doc("v2.intent_ids") .. ": the pipeline's labels to the intents' ids in the flow"))
    add("    -- intent_ids = { book_flight = \"<intent id>\" },\n")
    add(comment("    ", doc("v2.flow_cap")))
    add("    flow_cap = 10000,\n")
    add("  },\n")
  else
    add(comment("  ", doc("auth") .. ": an OAuth2 client with the target's scopes"))
    add([[
  auth = {
    client_id = env("COGNIGY_CLIENT_ID"),
    client_secret = env("COGNIGY_CLIENT_SECRET"),
  },
]])
    if target == "dataset" then
      add(comment("  ", doc("dataset.reference")))
      add(string.format("  dataset = { reference = %q },\n", name .. "-intents"))
    else
      add(comment("  ", doc("intent_ids") .. ": the pipeline's labels to the intents' ids"))
      add("  -- intent_ids = { book_flight = \"<intent id>\" },\n")
    end
  end
  add(comment("  ", doc("intent_cap")))
  add("  intent_cap = 2000,\n")
  add(comment("  ", doc("limits") .. ": shared SaaS allows 1,000 requests per 5 minutes per client IP"))
  add("  limits = { rate = 3, burst = 10, max_in_flight = 4, timeout = 120 },\n")
  add(comment("  ", doc("dedupe")))
  add("  dedupe = { near = 0.65, semantic = 0.85 },\n")
  add(comment("  ", doc("embeddings") .. " -- for semantic dedupe; without it that step is skipped"))
  add("  -- embeddings = { url = \"http://127.0.0.1:8080\", model = \"bge-small-en-v1.5\" },\n")
  add(comment("  ", doc("webhooks") .. " (secret: whsec_<base64>)"))
  add([[
  webhooks = webhook_url ~= "" and {
    { url = webhook_url, secret = env("COGPIPE_WEBHOOK_SECRET") },
  } or nil,
}
]])
  return table.concat(out)
end

local function pipeline_file(target)
  local t = TARGETS[target]
  -- the dataset API has no listing to compare with, nor a corpus for meanings
  local reads = target ~= "dataset"
  local semantic = reads and "    pipeline.semantic { threshold = 0.85 }, -- by meaning (tenant's embeddings)\n" or ""
  local existing = reads and "    pipeline.existing(),                    -- what the platform holds\n" or ""
  return string.format([[
-- Training examples for %s.
--   cogpipe run pipeline.lua --tenant production [--dry-run] [-- FILE]
-- FILE: JSON Lines {"text", "intent"}, CSV text,intent, or [text, intent]
-- pairs; default: data/examples.jsonl beside this file.
local pipeline = require "cogpipe.pipeline"

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."

return pipeline.new {
  name = "examples",
  source = pipeline.source { path = arg[1] or (here .. "/data/examples.jsonl") },
  steps = {
    pipeline.normalize "collapse",          -- the text sent: trimmed, single spaces
    pipeline.validate { max_chars = 500 },  -- the platform's rules
    pipeline.exact { key = "casefold" },    -- duplicates, and conflicts across intents
%s    pipeline.near { threshold = 0.65 },     -- rewrites: shingles and words of the near form
%s    pipeline.cap(),                         -- the per-intent cap
  },
  sink = %s,
  notify = { pipeline.webhooks() },
}
]], t.about, existing, semantic, t.sink)
end

local EXAMPLES = {
  { "book a flight to paris", "book_flight" },
  { "I need a plane ticket to Rome for Friday", "book_flight" },
  { "find me a flight from Boston to Denver", "book_flight" },
  { "what is my account balance", "account_balance" },
  { "how much money do I have in checking", "account_balance" },
  { "show me my savings balance", "account_balance" },
  { "will it rain tomorrow", "weather" },
  { "what's the weather like in Berlin", "weather" },
  { "do I need an umbrella today", "weather" },
}

local function data_file()
  local json = require("cogpipe").json
  local out = {}
  for i, e in ipairs(EXAMPLES) do
    out[i] = json.encode({ text = e[1], intent = e[2] })
  end
  return table.concat(out, "\n") .. "\n"
end

local function exists(path)
  local f = io.open(path, "r")
  if f then
    f:close()
    return true
  end
end

function M.main(args)
  local dir, target, name, force = ".", "v2", "production", false
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--target" or a == "--name" then
      local v = args[i + 1]
      if not v then
        return usage_error(a .. " needs a value")
      end
      if a == "--target" then
        target = v
      else
        name = v
      end
      i = i + 1
    elseif a == "--force" then
      force = true
    elseif a:sub(1, 1) == "-" then
      return usage_error("unknown option '" .. a .. "'")
    else
      dir = a
    end
    i = i + 1
  end
  if not TARGETS[target] then
    return usage_error("--target must be intents, v2 or dataset")
  end
  if not name:match("^[%w_.-]+$") then
    return usage_error("--name may hold letters, digits, _ . - only")
  end
  local cp = require "cogpipe"
  local files = {
    { dir .. "/tenants/" .. name .. ".lua", tenant_file(name, target) },
    { dir .. "/pipeline.lua", pipeline_file(target) },
    { dir .. "/data/examples.jsonl", data_file() },
  }
  if not force then
    for _, f in ipairs(files) do
      if exists(f[1]) then
        io.stderr:write("cogpipe: init: ", f[1], " exists (--force overwrites it)\n")
        return 2
      end
    end
  end
  for _, f in ipairs(files) do
    local parent = f[1]:match("^(.*)/[^/]*$")
    local ok, err = cp.fs.mkdir(parent, 493) -- 0755: nothing secret is written
    if ok then
      ok, err = cp.fs.write_atomic(f[1], f[2])
    end
    if not ok then
      io.stderr:write("cogpipe: init: ", tostring(err.message), "\n")
      return 1
    end
    io.stdout:write("wrote ", f[1], "\n")
  end
  local exports = {}
  for k, var in ipairs(TARGETS[target].vars) do
    exports[k] = var .. "=..."
  end
  io.stdout:write(string.format([[

Next:
  1. set the variables the %s target reads:
       export %s
     (and COGPIPE_WEBHOOK_URL, COGPIPE_WEBHOOK_SECRET for run reports)
  2. check the tenant, offline:
       cogpipe tenant check %s/tenants/%s.lua --pipeline %s/pipeline.lua
  3. see what a run would send, sending nothing:
       cogpipe run %s/pipeline.lua --tenant %s --dry-run
  4. upload:
       cogpipe run %s/pipeline.lua --tenant %s --audit audit.jsonl
     a second run sends nothing: the platform already holds it all.
]], target, table.concat(exports, " "), dir, name, dir, dir, name, dir, name))
  return 0
end

return M
