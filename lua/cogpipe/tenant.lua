-- Tenant configs: pipelines/tenants/<name>.lua returns a table that says
-- where a tenant's platform is and how to reach it. The file is evaluated in
-- a sandbox of its own (cogpipe._sandbox: bounded in memory, time and
-- instructions; pure functions only, no io, no os.execute, no require, no
-- bytecode, no pcall; undefined globals raise), and every error of the file
-- names the file and the line in it. Secrets come only through env("NAME"),
-- and every value read that way is registered as a secret so that no output
-- can show it.
local cp = require "cogpipe"
local sandbox = require "cogpipe._sandbox"

local M = {}

local function config_error(fmt, ...)
  return setmetatable({ kind = "config", message = string.format(fmt, ...) }, {
    __tostring = function(e) return e.message end,
  })
end
M.config_error = config_error

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

-- `where` is "<file>:<line>" of the statement that returned the table.
local function check_type(where, path, v, want, optional)
  if v == nil and optional then
    return
  end
  if type(v) ~= want then
    error(config_error("%s: %s must be a %s, not %s", where, path, want, type(v)), 0)
  end
end

local function check_url(where, path, v, optional)
  check_type(where, path, v, "string", optional)
  if v ~= nil and not v:match("^https?://[^/]+") then
    error(config_error("%s: %s must be an http(s) URL, got '%s'", where, path, v), 0)
  end
end

-- Checks what the runner relies on, so a typo fails before anything is sent.
local function check(t, where)
  check_type(where, "the config", t, "table")
  check_type(where, "name", t.name, "string", true)
  check_url(where, "base_url", t.base_url, true)
  for _, section in ipairs({ "dataset", "intents", "v2" }) do
    check_type(where, section, t[section], "table", true)
    if t[section] then
      check_url(where, section .. ".base_url", t[section].base_url, true)
    end
  end
  check_type(where, "auth", t.auth, "table", true)
  if t.auth then
    local a = t.auth
    if a.api_key == nil and (a.client_id == nil or a.client_secret == nil) then
      error(config_error("%s: auth needs api_key, or client_id and client_secret", where), 0)
    end
    check_type(where, "auth.api_key", a.api_key, "string", true)
    check_type(where, "auth.client_id", a.client_id, "string", true)
    check_type(where, "auth.client_secret", a.client_secret, "string", true)
  end
  check_type(where, "limits", t.limits, "table", true)
  if t.limits then
    for _, k in ipairs({ "rate", "burst", "max_in_flight", "timeout" }) do
      check_type(where, "limits." .. k, t.limits[k], "number", true)
    end
  end
  check_type(where, "intent_cap", t.intent_cap, "number", true)
  check_type(where, "dedupe", t.dedupe, "table", true)
  check_type(where, "intent_ids", t.intent_ids, "table", true)
  check_type(where, "embeddings", t.embeddings, "table", true)
  check_type(where, "webhooks", t.webhooks, "table", true)
  for i, w in ipairs(t.webhooks or {}) do
    check_type(where, "webhooks[" .. i .. "]", w, "table")
    check_url(where, "webhooks[" .. i .. "].url", w.url)
  end
end

-- A message may quote what the file read through env(): those values are
-- secrets from the moment they are read, whether or not the file loads.
local function redacted(err, secrets)
  for _, v in ipairs(secrets) do
    cp.secrets.add(v)
  end
  err.message = cp.secrets.redact(err.message)
  return err
end

local function read(path)
  local f, ferr = io.open(path, "r")
  if not f then
    return nil, config_error("%s", ferr)
  end
  -- a file too large for the sandbox is not read into the caller's memory
  local size = f:seek("end")
  if size and size > sandbox.MEMORY_LIMIT then
    f:close()
    return nil, config_error("%s: a tenant file may have at most %d bytes, this one has %d", path,
      sandbox.MEMORY_LIMIT, size)
  end
  f:seek("set")
  local src, rerr = f:read("a")
  f:close()
  if not src then
    return nil, config_error("%s: %s", path, rerr)
  end
  return src
end

-- Loads a tenant; returns the config table and the list of secret values
-- read through env(), or nil and a config error.
function M.load(spec, pipeline_path)
  local path, rerr = M.resolve(spec, pipeline_path)
  if not path then
    return nil, rerr
  end
  local src, ferr = read(path)
  if not src then
    return nil, ferr
  end
  local t, secrets, line = sandbox.eval(src, path)
  if not t then
    -- nil, the error, and the secrets read before it
    return nil, redacted(secrets, line)
  end
  local cok, cerr = pcall(check, t, line > 0 and path .. ":" .. line or path)
  if not cok then
    cerr = type(cerr) == "table" and cerr or config_error("%s", tostring(cerr))
    cerr.file, cerr.line = path, line > 0 and line or nil
    return nil, redacted(cerr, secrets)
  end
  t.name = t.name or path:match("([^/]+)%.lua$") or path
  t.path = path
  return t, secrets
end

return M
