-- cogpipe tenant: tenant files without a network. `check` loads one as a run
-- would (the sandbox, the schema, the variables the pipeline reads) and says
-- what it found; `keys` lists every setting a tenant file may have, from the
-- one schema (cogpipe.tenant_schema).
local cp = require "cogpipe"
local tenant_mod = require "cogpipe.tenant"
local schema = require "cogpipe.tenant_schema"

local M = {}

M.usage = [[
usage: cogpipe tenant check NAME|FILE [--pipeline PIPELINE.lua]
       cogpipe tenant keys [--markdown]

check   loads a tenant file as a run would -- in its sandbox, against the
        schema -- and reports every problem with file:line (an unknown key,
        with the key probably meant; a value of the wrong type or range; the
        environment variables that are not set). With --pipeline only what
        that pipeline reads must be there. Nothing is sent; secrets are not
        shown.
keys    lists every setting: type, default, which pipelines read it, what
        it is for (--markdown: the table the README shows).

exit status: 0 the tenant is good; 2 it is not (or a usage error)
]]

local function usage_error(msg)
  io.stderr:write("cogpipe: tenant: ", msg, "\n", M.usage)
  return 2
end

-- The pipeline definition a file returns, without running it.
local function pipeline_of(path)
  local chunk, err = loadfile(path, "t")
  if not chunk then
    return nil, err
  end
  local saved = _G.arg
  _G.arg = { [0] = path }
  local ok, def = pcall(chunk)
  _G.arg = saved
  if not ok then
    return nil, tostring(def)
  end
  if not require("cogpipe.pipeline").is(def) then
    return nil, path .. " does not return a pipeline (pipeline.new{...})"
  end
  return def
end

local function describe(t, needs)
  local out = {}
  local function add(k, v)
    out[#out + 1] = string.format("  %-22s %s", k, v)
  end
  add("name", t.name)
  local target = needs and needs.target
  local section = target and type(t[target]) == "table" and t[target] or {}
  local base = section.base_url or t.base_url
  if base then
    add(target and (target .. " base URL") or "base URL", base)
  end
  local a = section.auth or t.auth
  if type(a) == "table" then
    add("auth", a.api_key and "API key (X-API-Key)" or a.client_id and ("OAuth2 client " .. a.client_id) or "-")
  end
  if target == "v2" then
    add("flow / locale", string.format("%s / %s", tostring(section.flow_id), tostring(section.locale_id)))
  end
  local l = t.limits or {}
  add("limits", string.format("rate %s/s, burst %s, %s in flight, timeout %s s", l.rate or 20, l.burst or 40,
    l.max_in_flight or 8, l.timeout or 300))
  add("intent cap", tostring(t.intent_cap or 2000))
  add("webhooks", tostring(t.webhooks and #t.webhooks or 0))
  if t.embeddings then
    add("embeddings", t.embeddings.url or t.embeddings.file or "-")
  end
  return table.concat(out, "\n")
end

local function check(args)
  local spec, pipeline
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--pipeline" then
      pipeline = args[i + 1]
      if not pipeline then
        return usage_error("--pipeline needs a file")
      end
      i = i + 1
    elseif a:sub(1, 1) == "-" then
      return usage_error("unknown option '" .. a .. "'")
    elseif spec then
      return usage_error("one tenant at a time")
    else
      spec = a
    end
    i = i + 1
  end
  if not spec then
    return usage_error("a tenant NAME or FILE is required")
  end
  local def
  if pipeline then
    local perr
    def, perr = pipeline_of(pipeline)
    if not def then
      io.stderr:write("cogpipe: tenant check: ", tostring(perr), "\n")
      return 2
    end
  end
  local t, secrets = tenant_mod.load(spec, pipeline, def)
  if not t then
    io.stderr:write(tostring(secrets.message or secrets), "\n")
    return 2
  end
  for _, v in ipairs(secrets) do
    cp.secrets.add(v)
  end
  local needs = def and schema.needs(def)
  io.stdout:write(string.format("%s: good%s\n", t.path, def and (" for " .. def.name .. " (" ..
    tostring(needs.target) .. ")") or ""))
  io.stdout:write(cp.secrets.redact(describe(t, needs)), "\n")
  return 0
end

local function keys(args)
  if args[1] == "--markdown" then
    io.stdout:write(schema.markdown())
    return 0
  elseif args[1] then
    return usage_error("unknown option '" .. args[1] .. "'")
  end
  for _, r in ipairs(schema.rows()) do
    io.stdout:write(string.format("%-28s %s%s\n    used by: %s. %s\n", r.key, r.type,
      r.default ~= "" and (", default " .. r.default) or "", r.used_by, r.doc))
  end
  return 0
end

function M.main(args)
  local sub = args[1]
  local rest = { table.unpack(args, 2) }
  if sub == "check" then
    return check(rest)
  elseif sub == "keys" then
    return keys(rest)
  end
  return usage_error(sub and ("unknown subcommand '" .. sub .. "'") or "a subcommand is required")
end

return M
