-- Tenant configs: pipelines/tenants/<name>.lua returns a table that says
-- where a tenant's platform is and how to reach it. The file is evaluated in
-- a sandbox (no io, no os.execute, no require, no bytecode, undefined globals
-- raise, a budget of instructions); secrets come only through env("NAME"),
-- and every value read that way is registered as a secret so that no output
-- can show it.
local M = {}

local function config_error(fmt, ...)
  return setmetatable({ kind = "config", message = string.format(fmt, ...) }, {
    __tostring = function(e) return e.message end,
  })
end
M.config_error = config_error

local function copy(t)
  local c = {}
  for k, v in pairs(t) do
    c[k] = v
  end
  return c
end

local INSTRUCTION_BUDGET = 10000000

-- The allow list: pure functions only.
local function sandbox_env(name, secrets)
  local env = {
    -- no pcall: a config must not be able to swallow the instruction budget
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    select = select, tonumber = tonumber, tostring = tostring, type = type,
    math = copy(math), string = copy(string), table = copy(table), utf8 = copy(utf8),
    os = { time = os.time, date = os.date, clock = os.clock },
  }
  -- env("NAME") reads a variable (a missing one is a config error naming it);
  -- env("NAME", default) falls back to a default, which is not a secret.
  env.env = function(var, default)
    if type(var) ~= "string" or var == "" then
      error(config_error("tenant %s: env() needs a variable name", name), 2)
    end
    local v = os.getenv(var)
    if v == nil or v == "" then
      if default ~= nil then
        return default
      end
      error(config_error("tenant %s: environment variable %s is not set", name, var), 2)
    end
    secrets[#secrets + 1] = v
    return v
  end
  return setmetatable(env, {
    __index = function(_, k)
      error(string.format("tenant %s: undefined global '%s' (tenant files may only use env() and pure functions)",
        name, tostring(k)), 2)
    end,
    __newindex = function(_, k)
      error(string.format("tenant %s: assignment to global '%s' (use local)", name, tostring(k)), 2)
    end,
  })
end

local function exists(path)
  local f = io.open(path, "r")
  if f then
    f:close()
    return true
  end
  return false
end

-- NAME -> tenants/NAME.lua beside the pipeline, then in the working
-- directory, then in $COGPIPE_TENANTS_DIR; anything with a / or .lua is a path.
function M.resolve(spec, pipeline_path)
  if spec:find("/", 1, true) or spec:match("%.lua$") then
    return spec
  end
  if not spec:match("^[%w_.-]+$") then
    return nil, config_error("tenant name '%s' has characters other than letters, digits, _ . -", spec)
  end
  local dirs = {}
  local base = pipeline_path and pipeline_path:match("^(.*)/[^/]*$")
  dirs[#dirs + 1] = (base or ".") .. "/tenants"
  dirs[#dirs + 1] = "tenants"
  dirs[#dirs + 1] = "pipelines/tenants"
  if os.getenv("COGPIPE_TENANTS_DIR") then
    dirs[#dirs + 1] = os.getenv("COGPIPE_TENANTS_DIR")
  end
  for _, d in ipairs(dirs) do
    local p = d .. "/" .. spec .. ".lua"
    if exists(p) then
      return p
    end
  end
  return nil, config_error("tenant '%s' not found (looked in %s)", spec, table.concat(dirs, ", "))
end

local function check_type(name, path, v, want, optional)
  if v == nil and optional then
    return
  end
  if type(v) ~= want then
    error(config_error("tenant %s: %s must be a %s, not %s", name, path, want, type(v)), 0)
  end
end

local function check_url(name, path, v, optional)
  check_type(name, path, v, "string", optional)
  if v ~= nil and not v:match("^https?://[^/]+") then
    error(config_error("tenant %s: %s must be an http(s) URL, got '%s'", name, path, v), 0)
  end
end

-- Checks what the runner relies on, so a typo fails before anything is sent.
local function check(t, name)
  check_type(name, "the config", t, "table")
  check_type(name, "name", t.name, "string", true)
  check_url(name, "base_url", t.base_url, true)
  for _, section in ipairs({ "dataset", "intents", "v2" }) do
    check_type(name, section, t[section], "table", true)
    if t[section] then
      check_url(name, section .. ".base_url", t[section].base_url, true)
    end
  end
  check_type(name, "auth", t.auth, "table", true)
  if t.auth then
    local a = t.auth
    if a.api_key == nil and (a.client_id == nil or a.client_secret == nil) then
      error(config_error("tenant %s: auth needs api_key, or client_id and client_secret", name), 0)
    end
    check_type(name, "auth.api_key", a.api_key, "string", true)
    check_type(name, "auth.client_id", a.client_id, "string", true)
    check_type(name, "auth.client_secret", a.client_secret, "string", true)
  end
  check_type(name, "limits", t.limits, "table", true)
  if t.limits then
    for _, k in ipairs({ "rate", "burst", "max_in_flight", "timeout" }) do
      check_type(name, "limits." .. k, t.limits[k], "number", true)
    end
  end
  check_type(name, "intent_cap", t.intent_cap, "number", true)
  check_type(name, "dedupe", t.dedupe, "table", true)
  check_type(name, "intent_ids", t.intent_ids, "table", true)
  check_type(name, "embeddings", t.embeddings, "table", true)
  check_type(name, "webhooks", t.webhooks, "table", true)
  for i, w in ipairs(t.webhooks or {}) do
    check_url(name, "webhooks[" .. i .. "].url", w.url)
  end
end

-- Loads a tenant; returns the config table and the list of secret values
-- read through env(), or nil and a config error.
function M.load(spec, pipeline_path)
  local path, rerr = M.resolve(spec, pipeline_path)
  if not path then
    return nil, rerr
  end
  local name = path:match("([^/]+)%.lua$") or path
  local f, ferr = io.open(path, "r")
  if not f then
    return nil, config_error("tenant %s: %s", name, ferr)
  end
  local src = f:read("a")
  f:close()
  local secrets = {}
  local chunk, lerr = load(src, "@" .. path, "t", sandbox_env(name, secrets))
  if not chunk then
    return nil, config_error("tenant %s: %s", name, lerr)
  end
  debug.sethook(function()
    error(string.format("tenant %s: config ran too long (endless loop?)", name))
  end, "", INSTRUCTION_BUDGET)
  local ok, t = pcall(chunk)
  debug.sethook()
  if not ok then
    if type(t) == "table" and t.kind == "config" then
      return nil, t
    end
    return nil, config_error("%s", tostring(t))
  end
  local cok, cerr = pcall(check, t, name)
  if not cok then
    return nil, type(cerr) == "table" and cerr or config_error("%s", tostring(cerr))
  end
  t.name = t.name or name
  t.path = path
  return t, secrets
end

return M
