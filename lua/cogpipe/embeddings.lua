-- Embedding providers for semantic dedupe: an OpenAI-compatible HTTP
-- endpoint (POST {url}/v1/embeddings, as text-embeddings-inference,
-- llama.cpp's server, Ollama and the hosted APIs speak it) and a vectors
-- file. Both give a cogpipe.vectors set (cp.semantic) whose rows follow the
-- texts asked for. Owns fetching and the on-disk cache; comparing vectors is
-- cp.semantic's job. Never writes an API key anywhere, errors included.
--
--   local embeddings = require "cogpipe.embeddings"
--   local p = embeddings.openai{ url = "http://127.0.0.1:8080", model = "bge-small-en",
--                                api_key = env("EMBEDDINGS_KEY") }
--   local p = embeddings.file("vectors.jsonl")
--   local p = embeddings.provider("http://...", { model = "..." })  -- URL or file
--   local vectors, err = p:embed(texts, intents)
--
-- The cache: every vector an endpoint returns is kept in
-- <state dir>/cache/embeddings/<model>-<hash>.cpvec (state dir:
-- $COGPIPE_STATE_DIR, else $XDG_STATE_HOME/cogpipe, else
-- ~/.local/state/cogpipe), keyed by model and text, written atomically; a
-- later run asks the endpoint only for texts it has never seen. The file is
-- the binary vectors format of src/embedio.h.
local cp = require "cogpipe"

local M = {}

M.DEFAULTS = { batch = 64, concurrency = 4, timeout = 120, tries = 6 }

-- The state directory (cogpipe.state), kept here for callers of this module.
M.state_dir = require("cogpipe.state").dir

-- The cache file of a model: readable name, plus a hash so that two models
-- whose names sanitise alike do not share it.
function M.cache_path(state_dir, model)
  local safe = model:gsub("[^%w_.-]", "_"):sub(1, 64)
  return M.state_dir(state_dir) .. "/cache/embeddings/" .. safe .. "-" .. cp.semantic.hash(model) .. ".cpvec"
end

-- {url}/v1/embeddings, whether url is the server, its /v1 or the endpoint.
local function endpoint(url)
  url = url:gsub("/+$", "")
  if url:match("/embeddings$") then
    return url
  elseif url:match("/v1$") then
    return url .. "/embeddings"
  end
  return url .. "/v1/embeddings"
end

-- ---- the HTTP provider ------------------------------------------------------------

local OpenAI = {}
OpenAI.__index = OpenAI

-- embeddings.openai{url=, model=, api_key=, headers=, batch=64, concurrency=4,
-- timeout=120, tries=6, cache=true, state_dir=, limiter=, ca_file=, insecure=}
-- model: sent with every request and the cache key (default: the URL, and
-- no "model" field is sent). cache = false keeps nothing on disk.
function M.openai(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" or not opts.url:match("^https?://") then
    error("embeddings.openai: url must be an http(s) URL", 2)
  end
  for _, k in ipairs({ "batch", "concurrency", "timeout", "tries" }) do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or v <= 0) then
      error("embeddings.openai: " .. k .. " must be a positive number", 2)
    end
  end
  if opts.model ~= nil and (type(opts.model) ~= "string" or opts.model == "") then
    error("embeddings.openai: model must be a non-empty string", 2)
  end
  if opts.api_key ~= nil and type(opts.api_key) ~= "string" then
    error("embeddings.openai: api_key must be a string", 2)
  end
  local headers = {}
  for k, v in pairs(opts.headers or {}) do
    headers[k] = v
  end
  if opts.api_key and opts.api_key ~= "" then
    headers["Authorization"] = "Bearer " .. opts.api_key
  end
  local self = setmetatable({
    url = endpoint(opts.url),
    model = opts.model,
    headers = headers,
    batch = math.tointeger(opts.batch) or M.DEFAULTS.batch,
    concurrency = math.tointeger(opts.concurrency) or M.DEFAULTS.concurrency,
    timeout = opts.timeout or M.DEFAULTS.timeout,
    tries = math.tointeger(opts.tries) or M.DEFAULTS.tries,
    limiter = opts.limiter,
    ca_file = opts.ca_file,
    insecure = opts.insecure,
    requests = 0, -- requests sent by this provider (retries not counted)
    fetched = 0, -- texts the endpoint was asked for
    cached = 0, -- texts found in the cache
  }, OpenAI)
  if opts.cache ~= false then
    self.cache_file = M.cache_path(opts.state_dir, self.model or self.url)
  end
  return self
end

-- The cached vectors of this model, or an empty set (a cache that cannot
-- be read is started afresh: it only costs requests).
function OpenAI:open_cache()
  if self.store then
    return self.store
  end
  local store
  if self.cache_file then
    local f = io.open(self.cache_file, "rb")
    if f then
      f:close()
      store = cp.semantic.load(self.cache_file)
    end
  end
  self.store = store or cp.semantic.vectors()
  return self.store
end

-- One request for texts (a batch), its vectors added to the store.
function OpenAI:fetch(store, texts)
  local body = { input = cp.json.array(texts) }
  body.model = self.model
  self.requests = self.requests + 1
  local resp, err = cp.http.request({
    method = "POST",
    url = self.url,
    headers = self.headers,
    json = body,
    timeout = self.timeout,
    -- the same input gives the same vectors: a replay is harmless
    retry = { tries = self.tries, idempotent = true },
    limiter = self.limiter,
    ca_file = self.ca_file,
    insecure = self.insecure,
  })
  if not resp then
    err.message = "embeddings: " .. tostring(err.message)
    return nil, err
  end
  local n, aerr = store:add_response(resp.body, texts)
  if not n then
    aerr.message = aerr.message .. " (from " .. self.url .. ")"
    if self.cache_file and #store > 0 then
      aerr.message = aerr.message .. "; if the model changed, remove " .. self.cache_file
    end
    return nil, aerr
  end
  self.fetched = self.fetched + n
  return true
end

-- provider:embed(texts [, intents]) -> vectors (a row per text, in order)
-- or nil, err. Texts the cache lacks are fetched in batches, `concurrency`
-- requests at a time; the cache is saved once they are all in.
function OpenAI:embed(texts, intents)
  local store = self:open_cache()
  local missing = store:missing(texts)
  self.cached = self.cached + (#texts - #missing)
  if #missing > 0 then
    local batches = {}
    for i = 1, #missing, self.batch do
      batches[#batches + 1] = table.move(missing, i, math.min(i + self.batch - 1, #missing), 1, {})
    end
    local next_batch, first_err = 1, nil
    local function worker()
      while not first_err and next_batch <= #batches do
        local b = batches[next_batch]
        next_batch = next_batch + 1
        local ok, err = self:fetch(store, b)
        if not ok then
          first_err = first_err or err
        end
      end
    end
    local tasks = {}
    for w = 1, math.min(self.concurrency, #batches) do
      tasks[w] = cp.spawn(worker)
    end
    for _, task in ipairs(tasks) do
      local _, werr = cp.wait(task)
      first_err = first_err or werr
    end
    -- what did arrive is worth keeping even when a batch failed
    if self.cache_file and #store > 0 then
      local saved, serr = store:save(self.cache_file)
      if not saved and not first_err then
        io.stderr:write("cogpipe: embeddings cache not saved: ", tostring(serr), "\n")
      end
    end
    if first_err then
      return nil, first_err
    end
  end
  return store:select(texts, intents)
end

-- ---- the vectors-file provider -------------------------------------------------------

local File = {}
File.__index = File

-- embeddings.file(path): vectors from a file (JSON Lines {"text", "vector"},
-- or the binary format; see src/embedio.h), loaded on first use.
function M.file(path)
  if type(path) ~= "string" or path == "" then
    error("embeddings.file: a path expected", 2)
  end
  return setmetatable({ path = path, requests = 0, fetched = 0, cached = 0 }, File)
end

function File:embed(texts, intents)
  if not self.store then
    local store, err = cp.semantic.load(self.path)
    if not store then
      return nil, err
    end
    self.store = store
  end
  local vectors, err = self.store:select(texts, intents)
  if not vectors then
    err.message = string.format("%s: %s", self.path, err.message)
    return nil, err
  end
  self.cached = self.cached + #texts
  return vectors
end

-- ---- choosing one -------------------------------------------------------------------------

-- embeddings.provider(spec [, opts]): spec is an http(s) URL (opts as for
-- openai), a file path, or a table {url=, model=, api_key=, ...} |
-- {file=} (the `embeddings` section of a tenant config).
function M.provider(spec, opts)
  if type(spec) == "table" then
    if spec.file then
      return M.file(spec.file)
    end
    local o = {}
    for k, v in pairs(opts or {}) do
      o[k] = v
    end
    for k, v in pairs(spec) do
      o[k] = v
    end
    return M.openai(o)
  end
  if type(spec) ~= "string" or spec == "" then
    error("embeddings.provider: a URL, a file or a table expected", 2)
  end
  if spec:match("^https?://") then
    local o = { url = spec }
    for k, v in pairs(opts or {}) do
      o[k] = v
    end
    return M.openai(o)
  end
  return M.file(spec)
end

return M
