-- The tenant schema: every key a tenant file may set, with its type, range,
-- default, what it is for and which pipelines read it. One table serves the
-- check of every tenant file (tenant.load), `cogpipe tenant check`, the
-- template `cogpipe init` writes and `cogpipe tenant keys` (which the README's
-- table is checked against). Checks values; reads no file and no variable.
local M = {}

-- Targets a pipeline can send to (its sink) and what else it can use.
--   intents  intent example batches (pipeline.sink.intent_batches)
--   dataset  dataset upload (pipeline.sink.dataset)
--   v2       the REST API v2.0 (pipeline.sink.v2_sentences)
--   webhooks a pipeline with pipeline.webhooks() in notify
--   semantic a pipeline with a pipeline.semantic step
local ALL = { "intents", "dataset", "v2" }

local function url(doc, extra)
  local n = { type = "url", doc = doc }
  for k, v in pairs(extra or {}) do
    n[k] = v
  end
  return n
end

local AUTH = {
  type = "table",
  doc = "credentials: OAuth2 client credentials, or an API key (v2 only)",
  fields = {
    client_id = { type = "string", doc = "OAuth2 client id", env = "COGNIGY_CLIENT_ID" },
    client_secret = { type = "string", secret = true, doc = "OAuth2 client secret", env = "COGNIGY_CLIENT_SECRET" },
    api_key = { type = "string", secret = true, doc = "API key, sent as X-API-Key (v2)", env = "COGNIGY_API_KEY" },
  },
}

local STATUS_URL = {
  type = "string",
  doc = "where a retraining job can be followed, e.g. \"{api_base}/jobs/{id}\" ({tenant_url}, {base_url} alike); "
    .. "without it a job is reported as triggered",
}

M.keys = {
  name = { type = "string", doc = "the tenant's name in summaries, journals and the audit log",
    default = "the file's name" },
  base_url = url("the platform's base URL: the dataset API base, the intent API tenant URL and the v2 base",
    { needed_by = ALL, env = "COGNIGY_API_BASE" }),
  auth = { type = "table", needed_by = ALL, doc = AUTH.doc, fields = AUTH.fields },
  intents = {
    type = "table", needed_by = { "intents" },
    doc = "intent example batches: settings that differ from the top level",
    fields = { base_url = url("this API's base URL"), auth = AUTH, retrain_status_url = STATUS_URL },
  },
  dataset = {
    type = "table", needed_by = { "dataset" },
    doc = "dataset upload",
    fields = {
      base_url = url("this API's base URL"),
      auth = AUTH,
      reference = { type = "string", doc = "the datasetIdReference", default = "the pipeline's name" },
      retrain_status_url = STATUS_URL,
    },
  },
  v2 = {
    type = "table", needed_by = { "v2" },
    doc = "the REST API v2.0",
    fields = {
      base_url = url("this API's base URL"),
      auth = AUTH,
      flow_id = { type = "string", doc = "the flow whose intents get the sentences (needed by v2)",
        env = "COGNIGY_FLOW_ID" },
      locale_id = { type = "string", doc = "the locale sentences are created in and trained (needed by v2)",
        env = "COGNIGY_LOCALE_ID" },
      intent_ids = { type = "map", doc = "intent name -> intent id on the platform (default: the name itself)" },
      json_body_max = { type = "integer", min = 1000, max = 10000000, default = 60000,
        doc = "largest JSON request body in bytes (the platform's 60 kB)" },
      flow_cap = { type = "integer", min = 1, max = 10000000, default = 10000,
        doc = "example sentences a flow may hold; shared round-robin across intents" },
      train_timeout = { type = "number", min = 1, max = 86400, default = 600,
        doc = "seconds to follow a training task" },
      train_after_failure = { type = "boolean", default = false,
        doc = "train the locale even when an upload of the run failed" },
    },
  },
  intent_ids = { type = "map", doc = "intent name -> intent id on the platform (default: the name itself)" },
  intent_cap = { type = "integer", min = 1, max = 100000, default = 2000,
    doc = "active examples an intent may hold (the platform documents 200 and 2000)" },
  retrain_status_url = STATUS_URL,
  limits = {
    type = "table", doc = "how hard to push the platform",
    fields = {
      rate = { type = "number", min = 0.001, max = 10000, default = 20,
        doc = "requests a second (shared by the tenants that reach one host, the lowest wins)" },
      burst = { type = "number", min = 1, max = 100000, default = 40, doc = "requests that may start back to back" },
      max_in_flight = { type = "integer", min = 1, max = 1000, default = 8, doc = "requests on the wire at once" },
      timeout = { type = "number", min = 0.1, max = 86400, default = 300,
        doc = "seconds a request may take once it is on the wire, its retries and the waits between them included" },
    },
  },
  dedupe = {
    type = "table", doc = "thresholds of the near and semantic steps",
    fields = {
      near = { type = "number", min = 0.01, max = 1, default = 0.65, doc = "Jaccard similarity of a near duplicate" },
      semantic = { type = "number", min = -1, max = 1, default = 0.85,
        doc = "cosine similarity of a semantic duplicate" },
    },
  },
  embeddings = {
    type = "table", needed_by = { "semantic" },
    doc = "an OpenAI-compatible embeddings endpoint (url) or a vectors file (file)",
    fields = {
      url = url("POST /v1/embeddings base URL"),
      file = { type = "string", doc = "a vectors file instead of an endpoint" },
      model = { type = "string", doc = "the model name sent with every request" },
      api_key = { type = "string", secret = true, doc = "sent as Authorization: Bearer" },
      batch = { type = "integer", min = 1, max = 100000, default = 64, doc = "texts a request" },
      concurrency = { type = "integer", min = 1, max = 256, default = 4, doc = "requests at once" },
      timeout = { type = "number", min = 0.1, max = 3600, default = 120, doc = "seconds a request" },
      tries = { type = "integer", min = 1, max = 100, default = 6, doc = "tries a request" },
      cache = { type = "boolean", default = true, doc = "keep vectors in the state directory" },
    },
  },
  webhooks = {
    type = "list", needed_by = { "webhooks" },
    doc = "receivers of the run's metrics, signed the Standard Webhooks way",
    item = {
      type = "table",
      fields = {
        url = url("the receiver", { required = true, env = "COGPIPE_WEBHOOK_URL" }),
        secret = { type = "secret_list", secret = true, required = true,
          doc = "whsec_<base64> (or at least 24 bytes); a list during key rotation", env = "COGPIPE_WEBHOOK_SECRET" },
        name = { type = "string", doc = "a name for the outbox and messages" },
        headers = { type = "map", doc = "extra headers" },
        timeout = { type = "number", min = 0.1, max = 300, default = 20, doc = "seconds a try" },
        tries = { type = "integer", min = 1, max = 20, default = 4, doc = "tries before the outbox" },
        base = { type = "number", min = 0, max = 300, default = 1, doc = "backoff base seconds" },
        cap = { type = "number", min = 0, max = 300, default = 15, doc = "backoff cap seconds" },
        max_wait = { type = "number", min = 0, max = 300, default = 45, doc = "longest Retry-After honoured" },
        ca_file = { type = "string", doc = "a PEM bundle to verify the receiver with" },
        insecure = { type = "boolean", default = false, doc = "no TLS verification (named on purpose)" },
      },
    },
  },
  ca_file = { type = "string", doc = "a PEM bundle to verify the platform with (besides the system's)" },
  insecure_skip_verify = { type = "boolean", default = false,
    doc = "no TLS verification of the platform at all (prints a warning)" },
}

-- The order keys are listed in (docs, the template).
M.order = { "name", "base_url", "auth", "intents", "dataset", "v2", "intent_ids", "intent_cap", "retrain_status_url",
  "limits", "dedupe", "embeddings", "webhooks", "ca_file", "insecure_skip_verify" }

-- What a pipeline definition needs of a tenant: its target and the extras.
function M.needs(def)
  local n = {}
  local sink = def and def.sink and def.sink.name
  local target = ({ intent_batches = "intents", dataset = "dataset", v2_sentences = "v2" })[sink]
  if target then
    n[target] = true
  end
  for _, x in ipairs(def and def.notify or {}) do
    if x.kind == "webhooks" then
      n.webhooks = true
    end
  end
  for _, s in ipairs(def and def.steps or {}) do
    if s.name == "semantic" then
      n.semantic = true
    end
  end
  n.target = target
  return n
end

-- ---- checking ----------------------------------------------------------------------

-- Edit distance of two short strings (keys), for "did you mean": the
-- optimal string alignment distance, where swapping two neighbours (tires,
-- tries) is one edit, as typing makes it.
local function distance(a, b)
  local d = {}
  for i = 0, #a do
    d[i] = { [0] = i }
  end
  for j = 0, #b do
    d[0][j] = j
  end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      d[i][j] = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:sub(i, i) == b:sub(j - 1, j - 1) and a:sub(i - 1, i - 1) == b:sub(j, j) then
        d[i][j] = math.min(d[i][j], d[i - 2][j - 2] + 1)
      end
    end
  end
  return d[#a][#b]
end

-- The known key nearest to k, when it is near enough to be a typo.
function M.suggest(k, fields)
  local best, bd = nil, math.huge
  for name in pairs(fields) do
    local d = distance(k:lower(), name)
    if d < bd or (d == bd and name < best) then
      best, bd = name, d
    end
  end
  if best and bd <= math.max(1, math.min(3, #k // 3)) then
    return best
  end
end

local function is_url(v)
  return type(v) == "string" and v:match("^https?://[^/%s]+") ~= nil
end

local function describe(node)
  local t = node.type
  if t == "integer" or t == "number" then
    return string.format("%s from %s to %s", t == "integer" and "a whole number" or "a number",
      tostring(node.min), tostring(node.max))
  end
  return ({ string = "a string", url = "an http(s) URL", boolean = "true or false", table = "a table",
    map = "a table of name = string", list = "a list of tables", secret_list = "a string or a list of strings" })[t]
    or t
end

-- Appends to problems each way v fails node; path names it.
local function check_value(node, v, path, problems)
  local t = node.type
  local ok
  if t == "string" then
    ok = type(v) == "string" and v ~= ""
  elseif t == "url" then
    ok = is_url(v)
  elseif t == "boolean" then
    ok = type(v) == "boolean"
  elseif t == "number" or t == "integer" then
    ok = type(v) == "number" and v == v and v > -math.huge and v < math.huge
      and (t == "number" or math.type(v) == "integer" or (v == math.floor(v)))
      and (node.min == nil or v >= node.min) and (node.max == nil or v <= node.max)
  elseif t == "map" then
    ok = type(v) == "table"
    if ok then
      for k, x in pairs(v) do
        if type(k) ~= "string" or type(x) ~= "string" then
          problems[#problems + 1] = { path = path, message = "must map names to strings" }
          return
        end
      end
    end
  elseif t == "secret_list" then
    ok = type(v) == "string" and v ~= ""
    if type(v) == "table" then
      ok = #v > 0
      for _, s in ipairs(v) do
        ok = ok and type(s) == "string" and s ~= ""
      end
    end
  elseif t == "table" then
    if type(v) ~= "table" then
      ok = false
    else
      M.check_fields(node.fields, v, path, problems)
      return
    end
  elseif t == "list" then
    if type(v) ~= "table" then
      ok = false
    else
      for k in pairs(v) do
        if math.type(k) ~= "integer" or k < 1 or k > #v then
          problems[#problems + 1] = { path = path, message = "must be a list { {...}, {...} }" }
          return
        end
      end
      for i, item in ipairs(v) do
        check_value(node.item, item, string.format("%s[%d]", path, i), problems)
      end
      return
    end
  end
  if not ok then
    local got = type(v) == "number" and (v ~= v and "NaN" or tostring(v))
      or type(v) == "string" and string.format("%q", v) or type(v)
    problems[#problems + 1] = { path = path, message = string.format("must be %s, not %s", describe(node), got) }
  end
end

-- Checks the keys of t against fields; unknown keys are problems too.
function M.check_fields(fields, t, prefix, problems)
  for k, v in pairs(t) do
    local path = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    local node = type(k) == "string" and fields[k]
    if not node then
      local hint = type(k) == "string" and M.suggest(k, fields)
      problems[#problems + 1] = { path = path, key = k, message = "is not a tenant setting"
        .. (hint and string.format(" (did you mean '%s'?)", hint) or "") }
    else
      check_value(node, v, path, problems)
    end
  end
  for k, node in pairs(fields) do
    if node.required and t[k] == nil then
      local path = prefix and (prefix .. "." .. k) or k
      problems[#problems + 1] = { path = path, message = "is required" }
    end
  end
end

-- Checks a tenant table; returns a list of problems {path, message}
-- (empty when it is good), in a stable order.
function M.check(t)
  local problems = {}
  M.check_fields(M.keys, t, nil, problems)
  local a = t.auth
  if type(a) == "table" and a.api_key == nil and (a.client_id == nil) ~= (a.client_secret == nil) then
    problems[#problems + 1] = { path = "auth", message = "needs client_id and client_secret together" }
  end
  table.sort(problems, function(x, y) return x.path < y.path end)
  return problems
end

-- Which top-level and section paths a pipeline with needs n reads: a path
-- the pipeline never reads may hold a missing variable without harm.
function M.reads(n, t, path)
  local top = path:match("^([^.%[]+)")
  local node = M.keys[top]
  if not node then
    return true
  end
  if not node.needed_by then
    return true
  end
  local target = n.target
  for _, who in ipairs(node.needed_by) do
    if n[who] then
      if (top == "base_url" or top == "auth") and target and type(t[target]) == "table"
          and t[target][top] ~= nil then
        return false -- the target's own section overrides it
      end
      return true
    end
  end
  return false
end

-- ---- the documentation ------------------------------------------------------------------

local function default_text(node)
  if node.default == nil then
    return ""
  end
  return tostring(node.default)
end

-- Rows {key, type, default, used by, doc} for every key, nested keys dotted.
function M.rows()
  local rows = {}
  local function walk(fields, order, prefix, used)
    local names = order
    if not names then
      names = {}
      for k in pairs(fields) do
        names[#names + 1] = k
      end
      table.sort(names)
    end
    for _, k in ipairs(names) do
      local node = fields[k]
      local key = prefix and (prefix .. "." .. k) or k
      local by = node.needed_by and table.concat(node.needed_by, ", ") or used or "all"
      rows[#rows + 1] = { key = key, type = describe(node), default = default_text(node), used_by = by,
        doc = (node.doc or "") .. (node.secret and " (a secret: use env())" or "")
          .. (node.required and " (required)" or "") }
      if node.type == "table" and node.fields and not (k == "auth" and prefix) then
        walk(node.fields, nil, key, by)
      elseif node.type == "list" and node.item then
        walk(node.item.fields, nil, key .. "[i]", by)
      end
    end
  end
  walk(M.keys, M.order, nil, nil)
  return rows
end

-- The rows as a Markdown table (what README.md shows).
function M.markdown()
  local out = { "| key | type | default | used by | what for |", "|---|---|---|---|---|" }
  for _, r in ipairs(M.rows()) do
    out[#out + 1] = string.format("| `%s` | %s | %s | %s | %s |", r.key, r.type, r.default, r.used_by, r.doc)
  end
  return table.concat(out, "\n") .. "\n"
end

return M
