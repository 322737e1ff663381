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
local schema = require "cogpipe.tenant_schema"

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

-- The line of the source where path (limits.rate) is set, for messages:
-- each key of the path looked for from the line of the one before it. A
-- good guess; the return line when it finds nothing.
local function line_of(src, path, fallback)
  local lines = {}
  for line in (src .. "\n"):gmatch("([^\n]*)\n") do
    lines[#lines + 1] = line
  end
  local at, found = 1, nil
  for key in path:gmatch("[%a_][%w_]*") do
    for n = at, #lines do
      if lines[n]:find("%f[%w_]" .. key .. "%s*=") then
        at, found = n, n
        break
      end
    end
  end
  return found or fallback
end

-- Every place in t whose string holds a missing variable's marker: a list
-- of {path, name}, and a function that removes one.
local function markers(t)
  local found = {}
  local mark = sandbox.MISSING:gsub("%p", "%%%0")
  local function walk(v, path, parent, key)
    if type(v) == "string" then
      for name in v:gmatch(mark .. "(.-)" .. mark) do
        found[#found + 1] = { path = path, name = name, parent = parent, key = key }
      end
    elseif type(v) == "table" then
      local keys = {}
      for k in pairs(v) do
        keys[#keys + 1] = k
      end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      for _, k in ipairs(keys) do
        local p = math.type(k) == "integer" and string.format("%s[%d]", path, k)
          or (path == "" and tostring(k) or path .. "." .. tostring(k))
        walk(v[k], p, v, k)
      end
    end
  end
  walk(t, "", nil, nil)
  return found
end

local function plural(n, one, many)
  return n == 1 and one or many
end

-- Variables the file read but are not set: an error listing those the
-- pipeline (needs, from tenant_schema.needs) reads, all at once; the others
-- are dropped from t, since nothing will read them. Without needs every
-- one counts.
local function resolve_missing(t, missing, needs, where)
  if #missing == 0 then
    return true
  end
  local lines = {}
  for _, m in ipairs(missing) do
    lines[m.name] = lines[m.name] or m.line
  end
  local wanted, seen, first = {}, {}, nil
  for _, f in ipairs(markers(t)) do
    if not needs or schema.reads(needs, t, f.path) then
      if not seen[f.name] then
        seen[f.name] = true
        wanted[#wanted + 1] = { name = f.name, what = f.path, line = lines[f.name] or 0 }
        first = math.min(first or math.huge, lines[f.name] or math.huge)
      end
    else
      t[f.path:match("^([^.%[]+)")] = nil -- this pipeline never reads that setting
    end
  end
  if #wanted > 0 then
    return nil, M.unset(where:match("^(.-):%d+$") or where, wanted, first)
  end
  return true
end

-- The error naming every variable in list ({name, what?, line}) at once.
function M.unset(path, list, line)
  local names = {}
  for i, m in ipairs(list) do
    names[i] = m.what and string.format("%s (%s, line %d)", m.name, m.what, m.line)
      or string.format("%s (line %d)", m.name, m.line)
  end
  local err = config_error("%s:%d: environment %s not set: %s", path, line or list[1].line,
    plural(#list, "variable", "variables"), table.concat(names, ", "))
  err.unset, err.file, err.line = list, path, line or list[1].line
  return err
end

-- Loads a tenant; returns the config table and the list of secret values
-- read through env(), or nil and a config error. def, the pipeline the
-- tenant is for (optional), says which settings and variables it needs:
-- only those must be there.
function M.load(spec, pipeline_path, def)
  local path, rerr = M.resolve(spec, pipeline_path)
  if not path then
    return nil, rerr
  end
  local src, ferr = read(path)
  if not src then
    return nil, ferr
  end
  local t, secrets, line, missing = sandbox.eval(src, path)
  if not t then
    -- nil, the error, the secrets read before it, the missing variables
    local err, read_secrets, unset = secrets, line, missing
    if unset and #unset > 0 then
      -- what failed next most likely failed for want of them
      local cause = err.message
      err = M.unset(path, unset)
      err.message = err.message .. "\n  (and then: " .. cause .. ")"
    end
    return nil, redacted(err, read_secrets)
  end
  local where = line > 0 and path .. ":" .. line or path
  local needs = def and schema.needs(def) or nil
  local ok, merr = resolve_missing(t, missing, needs, where)
  if not ok then
    return nil, redacted(merr, secrets)
  end
  local problems = schema.check(t)
  if #problems == 0 then
    -- what a receiver needs of a secret (whsec_<base64>, 24 bytes and more)
    for i, w in ipairs(t.webhooks or {}) do
      local path_i = string.format("webhooks[%d]", i)
      local usable, werr = require("cogpipe.webhook").check_target(w, path_i)
      if not usable then
        local why = werr.message:gsub("^" .. path_i:gsub("%p", "%%%0") .. "[:.]?%s*", "")
        problems[#problems + 1] = { path = path_i, message = "is not usable: " .. why }
      end
    end
  end
  if #problems > 0 then
    local parts = {}
    for _, p in ipairs(problems) do
      p.line = line_of(src, p.path, line)
    end
    table.sort(problems, function(a, b)
      if a.line ~= b.line then
        return a.line < b.line
      end
      return a.path < b.path
    end)
    for i, p in ipairs(problems) do
      parts[i] = string.format("%s:%d: %s %s", path, p.line, p.path, p.message)
    end
    local err = config_error("%s", table.concat(parts, "\n"))
    err.file, err.line, err.problems = path, problems[1].line, problems
    return nil, redacted(err, secrets)
  end
  if needs then
    local gaps = M.gaps(t, needs)
    if #gaps > 0 then
      return nil, redacted(config_error("%s: %s", where, table.concat(gaps, "; ")), secrets)
    end
  end
  t.name = t.name or path:match("([^/]+)%.lua$") or path
  t.path = path
  return t, secrets
end

-- What a pipeline needs that the tenant does not say (a base URL, the
-- credentials, a v2 flow): a list of messages, empty when nothing lacks.
function M.gaps(t, needs)
  local gaps = {}
  local target = needs.target
  if target then
    local section = type(t[target]) == "table" and t[target] or {}
    if not (section.base_url or t.base_url) then
      gaps[#gaps + 1] = string.format("base_url (or %s.base_url) is needed by the %s target", target, target)
    end
    local a = section.auth or t.auth
    if type(a) ~= "table" or not (a.client_id or (target == "v2" and a.api_key)) then
      gaps[#gaps + 1] = string.format("auth (or %s.auth) with %s is needed by the %s target", target,
        target == "v2" and "api_key or client_id and client_secret" or "client_id and client_secret", target)
    end
    if target == "v2" and not (section.flow_id and section.locale_id) then
      gaps[#gaps + 1] = "v2.flow_id and v2.locale_id are needed by the v2 target"
    end
  end
  return gaps
end

return M
