-- cogpipe.http and cogpipe.auth without a server: argument checking, form
-- encoding, limiters, connection failures and the error tables they give.
-- (The emulator-backed behaviour is in tests/e2e/test_http_*.py.)
local cp = require "cogpipe"
local t = require "t"
local http = cp.http
local auth = require "cogpipe.auth"

-- Nothing listens on port 1 of the loopback: connections are refused.
local DEAD = "http://127.0.0.1:1/x"

t.test("form encoding follows RFC 6749 / HTML", function()
  t.eq(http.form_encode({ grant_type = "client_credentials" }), "grant_type=client_credentials")
  t.eq(http.form_encode({ s = "a&b=c+d%e f" }), "s=a%26b%3Dc%2Bd%25e+f")
  t.eq(http.form_encode({ s = "é~-._*" }), "s=%C3%A9~-._%2A")
  -- keys sorted, lists repeat the key, numbers and booleans as text
  t.eq(http.form_encode({ b = { 1, 2 }, a = true, c = 1.5 }), "a=true&b=1&b=2&c=1.5")
  t.eq(http.form_encode({}), "")
  t.raises(function() http.form_encode({ x = {} , [1] = "y" }) end, "keys must be strings")
  t.raises(function() http.form_encode({ x = print }) end, "field 'x'")
end)

t.test("misuse raises before anything is sent", function()
  t.raises(function() http.request({}) end, "url is required")
  t.raises(function() http.request({ url = DEAD, body = "a", json = {} }) end, "at most one of")
  t.raises(function() http.request({ url = DEAD, headers = { X = "a\r\nInjected: 1" } }) end,
    "line break")
  t.raises(function() http.request({ url = DEAD, headers = { ["Bad Name"] = "v" } }) end, "tokens")
  t.raises(function() http.request({ url = DEAD, json = { f = print } }) end, "json")
  t.raises(function() http.request({ url = DEAD, multipart = { { value = "v" } } }) end, "needs a name")
  t.raises(function() http.request({ url = DEAD, multipart = { { name = "a", value = "v", file = "f" } } }) end,
    "exactly one of")
  t.raises(function() http.request({ url = DEAD, retry = "yes" }) end, "retry")
  t.raises(function() http.request({ url = DEAD, timeout = -1 }) end, "timeout")
  t.raises(function() http.request({ url = DEAD, auth = 42 }) end, "auth")
  t.raises(function() http.limiter({}) end, "rate or max_in_flight")
  t.raises(function() auth.oauth2({ token_url = DEAD, client_id = "x" }) end, "client_secret")
  t.raises(function() auth.api_key({ key = "" }) end, "key")
end)

t.test("a request outside a task raises", function()
  local co = coroutine.wrap(function() return http.request({ url = DEAD }) end)
  t.raises(co, "outside a cogpipe task")
end)

t.test("connection refused: retried, then nil and a connect error", function()
  local start = cp.now()
  local resp, err = http.request({ method = "POST", url = DEAD, body = "x",
    retry = { tries = 3, base = 0.01, cap = 0.02 } })
  t.eq(resp, nil)
  t.eq(err.kind, "connect")
  t.eq(err.attempts, 3)
  t.eq(err.retryable, true)
  t.eq(err.outcome, nil, "nothing was sent, so the outcome is known")
  t.ok(err.message:find("POST http://127.0.0.1:1/x", 1, true), err.message)
  t.ok(tostring(err):find("127.0.0.1:1", 1, true))
  t.ok(cp.now() - start < 5)
  local _, once = http.request({ url = DEAD, retry = false })
  t.eq(once.attempts, 1)
end)

t.test("the query string never reaches an error message", function()
  local _, err = http.request({ url = DEAD .. "?token=abc", query = { api_key = "zzz" }, retry = false })
  t.ok(not err.message:find("abc", 1, true))
  t.ok(not err.message:find("zzz", 1, true))
end)

t.test("a missing multipart file is an io error, not a raise", function()
  local resp, err = http.request({ url = DEAD, multipart = {
    { name = "metadata", value = "{}", content_type = "application/json" },
    { name = "dataset", file = "/nonexistent/utterances.txt", filename = "u.txt" } } })
  t.eq(resp, nil)
  t.eq(err.kind, "io")
  t.eq(err.attempts, 0)
  t.ok(err.message:find("dataset", 1, true))
end)

t.test("limiter objects", function()
  local lim = http.limiter({ rate = 2, burst = 1 })
  t.ok(tostring(lim):find("rate=2", 1, true))
  local s = lim:stats()
  t.eq(s.rate, 2)
  t.eq(s.in_flight, 0)
  -- two requests through a 2/s bucket of 1: the second waits about 0.5 s
  local start = cp.now()
  local a = cp.spawn(function() return http.request({ url = DEAD, limiter = lim, retry = false }) end)
  local b = cp.spawn(function() return http.request({ url = DEAD, limiter = lim, retry = false }) end)
  cp.wait(a)
  cp.wait(b)
  t.ok(cp.now() - start >= 0.45, "waited " .. (cp.now() - start))
  t.eq(lim:stats().in_flight, 0)
  lim:close()
  t.raises(function() lim:stats() end, "closed")
  do
    local scoped <close> = http.limiter({ max_in_flight = 2 })
    t.eq(scoped:stats().max_in_flight, 2)
  end
end)

t.test("auth objects never show their secrets", function()
  local k = auth.api_key({ key = "k-123-secret" })
  local o = auth.oauth2({ token_url = DEAD, client_id = "cid", client_secret = "shh-secret",
    retry = false })
  for _, obj in ipairs({ k, o }) do
    t.ok(not tostring(obj):find("secret", 1, true), tostring(obj))
    for key, v in pairs(obj) do
      t.ok(not tostring(v):find("secret", 1, true), "field " .. key)
    end
  end
  -- the token endpoint is unreachable: the error names it, not the secret
  local resp, err = http.request({ url = DEAD, auth = o, retry = false })
  t.eq(resp, nil)
  t.ok(err.message:find("OAuth2 token request failed", 1, true), err.message)
  t.ok(not err.message:find("shh", 1, true))
end)

t.done()
