-- cogpipe.auth: credentials for cp.http.request{auth = ...}: an API key
-- header, or OAuth2 client credentials (RFC 6749 4.4) with a token cache.
-- Secrets live in a private table, never in fields: no message, tostring,
-- log line or error table made here contains a secret or a token.
--
--   local auth = require "cogpipe.auth"
--   local key = auth.api_key{key = env("COGNIGY_API_KEY")}      -- X-API-Key
--   local oa = auth.oauth2{
--     token_url = base .. "/auth/oauth2/token",
--     client_id = "...", client_secret = env("CLIENT_SECRET"),
--     scope = "intent:read intent:write",   -- optional
--     skew = 30,          -- refresh this many seconds before expiry
--     basic = false,      -- true: client_secret_basic instead of the body
--     timeout = 30, ca_file = nil, insecure = nil, limiter = nil,
--     retry = {tries = 5},  -- for the token request (false: no retry)
--     observe = function(info) end,  -- after each token request: method,
--                                    -- url, status, attempts, elapsed, outcome
--   }
--   cp.http.request{url = ..., auth = oa}
--
-- An oauth2 object fetches a token on first use and again shortly before it
-- expires. Requests that need a token while one is being fetched wait for
-- that same fetch (one token request however many wait). The token lives in
-- a credential (cp.http.credential) that each request reads when it goes on
-- the wire, not when it was queued, so a token refreshed meanwhile is the
-- one sent. A 401 for a token already replaced just replays with the current
-- one; a 401 for the current token drops it, and the one refresh that
-- follows serves every request that saw it. Credentials that cannot work
-- stop at once and for good -- a token request refused, a fresh token
-- refused (401) before any request succeeded with it, a 403 (a scope is
-- missing), an API key answered 401 -- and every request still waiting with
-- them ends unsent with the same error (kind "auth").
--
-- Protocol (what cp.http.request expects of `auth`): a method
-- perform(self, send, opts) that calls send(opts, headers, credential) and
-- returns its results.

local cp = require "cogpipe"
local http = require "cogpipe.http"

local auth = {}

-- Secrets and tokens by object; weak keys so objects can be collected.
local private = setmetatable({}, { __mode = "k" })

local function check_string(t, k, what, optional)
  local v = t[k]
  if v == nil and optional then
    return nil
  end
  if type(v) ~= "string" or v == "" then
    error(string.format("%s: %s must be a non-empty string", what, k), 3)
  end
  return v
end

-- Raises for an option the constructor does not know: a misspelt one
-- (`scopes`, `retries`) would otherwise be dropped without a word.
local function check_keys(t, known, what)
  local names = {}
  for _, k in ipairs(known) do
    names[k] = true
  end
  for k in pairs(t) do
    if not names[k] then
      local hint = type(k) == "string" and require("cogpipe.tenant_schema").suggest(k, names)
      error(string.format("%s: unknown option '%s'%s (known: %s)", what, tostring(k),
        hint and string.format(" (did you mean '%s'?)", hint) or "", table.concat(known, ", ")), 3)
    end
  end
end

-- Replaces every occurrence of each secret (as is, and form- or
-- percent-encoded) in s by "***".
local function redact(s, secrets)
  if type(s) ~= "string" then
    return s
  end
  for _, secret in ipairs(secrets) do
    if secret and #secret > 0 then
      local forms = {
        secret,
        http.form_encode({ x = secret }):sub(3),
        (http.form_encode({ x = secret }):sub(3):gsub("%+", "%%20")),
      }
      for _, f in ipairs(forms) do
        local from = 1
        while true do
          local i, j = s:find(f, from, true)
          if not i then
            break
          end
          s = s:sub(1, i - 1) .. "***" .. s:sub(j + 1)
          from = i + 3
        end
      end
    end
  end
  return s
end

-- Error tables made here print their message, like the runtime's.
local ErrorMT = { __tostring = function(e) return tostring(e.message) end }

local function failure(fields)
  return setmetatable(fields, ErrorMT)
end

-- Replays of one request after 401s: each needs a token newer than the one
-- refused, so a few are plenty; more means the platform refuses every token.
local MAX_REPLAYS = 6

local function redact_err(err, secrets)
  if type(err) == "table" then
    err.message = redact(err.message, secrets)
    err.body_excerpt = redact(err.body_excerpt, secrets)
  elseif type(err) == "string" then
    err = redact(err, secrets)
  end
  return err
end

---------------------------------------------------------------------------
-- API key

local ApiKey = {}
ApiKey.__index = ApiKey
ApiKey.__name = "cogpipe.auth.api_key"

function ApiKey:__tostring()
  return string.format("cogpipe.auth.api_key(header=%s)", self.header)
end

function ApiKey:perform(send, opts)
  local p = private[self]
  local resp, err = send(opts, nil, p.credential)
  if not resp and type(err) == "table" and (err.status == 401 or err.status == 403) then
    -- a key does not get better by asking again: stop every request using it
    local why = string.format("API key (%s) refused: %s", self.header, redact(tostring(err.message), { p.key }))
    p.credential:fail(why)
    err.kind, err.message, err.retryable = "auth", why, false
  end
  return resp, err
end

--- auth.api_key{key =, header = "X-API-Key", prefix = ""}: sends the key
-- in that header on every request (prefix e.g. "ApiKey " for schemes that
-- want one).
function auth.api_key(o)
  if type(o) ~= "table" then
    error("auth.api_key: options table expected", 2)
  end
  check_keys(o, { "key", "header", "prefix" }, "auth.api_key")
  local key = check_string(o, "key", "auth.api_key")
  local header = check_string(o, "header", "auth.api_key", true) or "X-API-Key"
  if not header:match("^[%w!#$%%&'*+%-.^_`|~]+$") then
    error("auth.api_key: header must be an HTTP header name", 2)
  end
  if key:find("[\r\n%z]") then
    error("auth.api_key: key contains a line break or NUL", 2)
  end
  local self = setmetatable({ header = header }, ApiKey)
  local credential = http.credential({ header = header })
  credential:set((o.prefix or "") .. key)
  private[self] = { key = key, prefix = o.prefix or "", credential = credential }
  return self
end

---------------------------------------------------------------------------
-- OAuth2 client credentials

local OAuth2 = {}
OAuth2.__index = OAuth2
OAuth2.__name = "cogpipe.auth.oauth2"

function OAuth2:__tostring()
  return string.format("cogpipe.auth.oauth2(client_id=%s, token_url=%s)", self.client_id,
    self.token_url)
end

-- Fetches a token and stores it; runs in its own task so that every request
-- that needs the token can wait for this one fetch. Returns true or nil, err.
local function fetch(self)
  local p = private[self]
  local form = { grant_type = "client_credentials" }
  local headers = {}
  if p.basic then
    headers.Authorization = "Basic " .. p.basic
  else
    form.client_id = self.client_id
    form.client_secret = p.secret
  end
  if self.scope then
    form.scope = self.scope
  end
  local started = cp.now()
  local resp, err = http.request({
    method = "POST",
    url = self.token_url,
    form = form,
    headers = headers,
    timeout = p.timeout,
    ca_file = p.ca_file,
    insecure = p.insecure,
    limiter = p.limiter,
    retry = p.retry,
  })
  if p.observe then
    local r = resp or err
    p.observe({ method = "POST", url = self.token_url, status = r.status, attempts = r.attempts,
      elapsed = r.elapsed, outcome = resp and "ok" or (err.outcome or "failed") })
  end
  if not resp then
    err = redact_err(err, p.secrets)
    if type(err) == "table" then
      err.message = "OAuth2 token request failed: " .. tostring(err.message)
      if err.status == 400 or err.status == 401 or err.status == 403 then
        err.kind = "auth"
      end
    end
    return nil, err
  end
  local body, jerr = resp:json()
  if type(body) ~= "table" or type(body.access_token) ~= "string" or body.access_token == "" then
    return nil, failure({
      kind = "auth",
      message = "OAuth2 token response from " .. self.token_url .. " has no access_token"
        .. (jerr and (": " .. tostring(jerr.message or jerr)) or ""),
      status = resp.status,
      retryable = false,
    })
  end
  local token_type = type(body.token_type) == "string" and body.token_type or "Bearer"
  if token_type:lower() == "bearer" then
    token_type = "Bearer"
  end
  local expires_in = tonumber(body.expires_in)
  local expires_at = math.huge -- no lifetime given: keep until a 401
  if expires_in and expires_in > 0 then
    -- counted from when the request left, refreshed `skew` early (at most
    -- half the lifetime early, so a short-lived token is still used)
    expires_at = started + expires_in - math.min(p.skew, expires_in / 2)
  end
  p.token, p.token_type, p.expires_at = body.access_token, token_type, expires_at
  p.credential:set(token_type .. " " .. body.access_token, expires_at)
  return true
end

-- Makes sure the credential holds a token that is not about to expire,
-- fetching one when it does not: one fetch (a task of its own) however many
-- requests wait for it. Returns true, or nil, err.
local function ensure(self)
  local p = private[self]
  local st = p.credential:state()
  if st.failed then
    return nil, failure({ kind = "auth", retryable = false, message = p.failed or "credentials refused" })
  end
  if st.valid and p.token and cp.now() < p.expires_at then
    return true
  end
  local task = p.refreshing
  if not task then
    task = cp.spawn(function()
      local ok, res, err = pcall(fetch, self)
      if not ok then
        return nil, failure({ kind = "auth", message = redact(tostring(res), p.secrets) })
      end
      return res, err
    end)
    p.refreshing = task
  end
  local ok, err = cp.wait(task)
  if p.refreshing == task then
    p.refreshing = nil
  end
  if not ok then
    if type(err) == "table" and err.kind == "auth" and not p.failed then
      -- the token endpoint refused these credentials: nothing will succeed
      p.failed = err.message
      p.credential:fail(err.message)
    end
    return nil, err
  end
  return true
end

--- The Authorization header value, fetching a token when there is none or
-- it is about to expire. May suspend the calling task. Returns the value,
-- or nil, err. (Requests do not need this: they read the credential.)
function OAuth2:header()
  local ok, err = ensure(self)
  if not ok then
    return nil, err
  end
  local p = private[self]
  return p.token_type .. " " .. p.token
end

--- Drops the cached token if it is the one in header_value (a 401 answered
-- a request made with it); a newer token is kept.
function OAuth2:invalidate(header_value)
  local p = private[self]
  if p.token and (header_value == nil or header_value == p.token_type .. " " .. p.token) then
    p.token = nil
    p.credential:invalidate(p.credential:state().generation)
  end
end

--- Seconds until the cached token is refreshed (nil when there is none);
-- for reports and tests, never the token itself.
function OAuth2:expires_in()
  local p = private[self]
  if not p.token then
    return nil
  end
  return p.expires_at - cp.now()
end

-- Stops these credentials for good with one error that every waiting
-- request shares.
local function refuse(self, err, why)
  local p = private[self]
  p.failed = p.failed or why
  p.credential:fail(p.failed)
  err.kind, err.retryable = "auth", false
  err.message = p.failed
  return nil, err
end

function OAuth2:perform(send, opts)
  local p = private[self]
  local resp, err
  for _ = 1, MAX_REPLAYS do
    local ok, eerr = ensure(self)
    if not ok then
      return nil, eerr
    end
    resp, err = send(opts, nil, p.credential)
    if resp then
      p.unproven = 0
      return resp
    elseif type(err) ~= "table" then
      return resp, err
    end
    if err.status == 403 then
      return refuse(self, err, "OAuth2 client " .. self.client_id .. " lacks a scope this request needs: "
        .. tostring(err.message))
    elseif err.status == 401 then
      local used, st = err.credential_generation, p.credential:state()
      if used == st.generation then
        -- the current token was refused: revoked or expired (it worked
        -- before), or not good at all (it never did)
        if st.proven then
          p.unproven = 0
        elseif p.unproven_gen ~= used then
          p.unproven, p.unproven_gen = (p.unproven or 0) + 1, used
          if p.unproven >= 2 then
            return refuse(self, err, "OAuth2 tokens from " .. self.token_url
              .. " are refused by the API right after they are issued (401): " .. tostring(err.message))
          end
        end
        p.token = nil
        p.credential:invalidate(used)
      end
      -- an older token: a newer one is there already, or being fetched
    elseif not err.need_credential then
      return resp, err
    end
  end
  return resp, err
end

function auth.oauth2(o)
  if type(o) ~= "table" then
    error("auth.oauth2: options table expected", 2)
  end
  check_keys(o, { "token_url", "client_id", "client_secret", "scope", "skew", "basic", "timeout",
    "ca_file", "insecure", "limiter", "retry", "observe" }, "auth.oauth2")
  local token_url = check_string(o, "token_url", "auth.oauth2")
  local client_id = check_string(o, "client_id", "auth.oauth2")
  local secret = check_string(o, "client_secret", "auth.oauth2")
  local scope = check_string(o, "scope", "auth.oauth2", true)
  local skew = o.skew == nil and 30 or o.skew
  if type(skew) ~= "number" or skew < 0 then
    error("auth.oauth2: skew must be a number of seconds >= 0", 2)
  end
  -- Asking for a token twice does no harm: retried even after a 5xx.
  local retry = { tries = 5, idempotent = true }
  if o.retry == false then
    retry = false
  elseif type(o.retry) == "table" then
    retry = { idempotent = true }
    for k, v in pairs(o.retry) do
      retry[k] = v
    end
  elseif o.retry ~= nil then
    error("auth.oauth2: retry must be false or a table", 2)
  end
  if o.observe ~= nil and type(o.observe) ~= "function" then
    error("auth.oauth2: observe must be a function", 2)
  end
  local basic
  if o.basic then
    -- RFC 6749 2.3.1: each half form-encoded, then base64 of "id:secret"
    local user = http.form_encode({ x = client_id }):sub(3)
    local pass = http.form_encode({ x = secret }):sub(3)
    basic = cp.base64.encode(user .. ":" .. pass)
  end
  local self = setmetatable({ token_url = token_url, client_id = client_id, scope = scope,
    skew = skew }, OAuth2)
  private[self] = {
    credential = http.credential({ header = "Authorization" }),
    secret = secret,
    -- the Basic credentials give the secret away to anyone who decodes
    -- them: kept out of messages like the secret itself
    basic = basic,
    secrets = { secret, basic },
    skew = skew,
    timeout = o.timeout or 30,
    ca_file = o.ca_file,
    insecure = o.insecure,
    limiter = o.limiter,
    retry = retry,
    expires_at = 0,
    observe = o.observe,
  }
  return self
end

return auth
