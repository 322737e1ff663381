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
  -- a misspelt option is not dropped without a word
  t.raises(function() auth.oauth2({ token_url = DEAD, client_id = "x", client_secret = "s", scopes = "a" }) end,
    "unknown option 'scopes' (did you mean 'scope'?)")
  t.raises(function() auth.api_key({ key = "k", heder = "X-Key" }) end, "unknown option 'heder'")
end)

t.test("an unknown option raises, naming the option meant", function()
  -- the typo a new user made: it used to be ignored, and the request retried
  t.raises(function() http.request({ url = DEAD, retries = 0 }) end,
    "http.request: unknown option 'retries' (did you mean 'retry'?")
  t.raises(function() http.request({ url = DEAD, tiemout = 3 }) end,
    "unknown option 'tiemout' (did you mean 'timeout'?)")
  t.raises(function() http.request({ url = DEAD, conect_timeout = 3 }) end, "did you mean 'connect_timeout'?")
  t.raises(function() http.request({ url = DEAD, timeout_ms = 3000 }) end, "did you mean 'timeout'?")
  t.raises(function() http.request({ url = DEAD, header = {} }) end, "did you mean 'headers'?")
  t.raises(function() http.request({ url = DEAD, params = {} }) end, "did you mean 'query'?")
  t.raises(function() http.request({ url = DEAD, tries = 2 }) end, "it belongs in retry = {tries = ...}")
  -- nothing near: the known names are listed
  t.raises(function() http.request({ url = DEAD, zzz = 1 }) end,
    "unknown option 'zzz' (known: url, method, headers")
  t.raises(function() http.request({ DEAD }) end, "options are given by name")
  -- the same through an auth object, and for send
  t.raises(function() http.request({ url = DEAD, auth = auth.api_key({ key = "k" }), retries = 1 }) end,
    "unknown option 'retries'")
  t.raises(function() http.send({ url = DEAD, retries = 1 }) end, "http.send: unknown option 'retries'")
  -- the tables inside a request, and the other functions that take one
  t.raises(function() http.request({ url = DEAD, retry = { tires = 3 } }) end,
    "http.request: retry: unknown option 'tires' (did you mean 'tries'?)")
  t.raises(function() http.request({ url = DEAD, multipart = { { name = "a", value = "v", contenttype = "x" } } }) end,
    "http.request: multipart[1]: unknown option 'contenttype' (did you mean 'content_type'?)")
  t.raises(function() http.limiter({ rate = 1, brust = 2 }) end,
    "http.limiter: unknown option 'brust' (did you mean 'burst'?)")
  t.raises(function() http.limiter({ max_inflight = 2 }) end, "did you mean 'max_in_flight'?")
  t.raises(function() http.credential({ header = "X-Key", value = "v" }) end, "http.credential: unknown option 'value'")
  t.raises(function() http.origin_limit(DEAD, { rate = 1, brst = 2 }) end,
    "http.origin_limit: unknown option 'brst' (did you mean 'burst'?)")
end)

t.test("a value of the wrong type or range raises, naming the option", function()
  local cases = {
    { { timeout = "10" }, "option 'timeout' must be a number (got string)" },
    { { timeout = 0 }, "option 'timeout' must be at least 0.001 (got 0)" },
    { { timeout = 0 / 0 }, "option 'timeout' must be at least 0.001" },
    { { attempt_timeout = -1 }, "option 'attempt_timeout' must be at least 0.001 (got -1)" },
    { { connect_timeout = true }, "option 'connect_timeout' must be a number (got boolean)" },
    { { insecure = "yes" }, "option 'insecure' must be true or false (got string)" },
    { { headers = "X: 1" }, "option 'headers' must be a table (got string)" },
    { { method = 1 }, "option 'method' must be a string (got 1)" },
    { { limiter = {} }, "option 'limiter' must be an http.limiter (got table)" },
    { { retry = "yes" }, "option 'retry' must be false, true, a number of tries or a table (got string)" },
    { { retry = 0 }, "option 'retry' as a number is the tries in all, a whole number from 1 to 100 (got 0" },
    { { retry = 2.5 }, "option 'retry' as a number is the tries in all, a whole number from 1 to 100 (got 2.5" },
    { { retry = { tries = 2.5 } }, "retry: option 'tries' must be a whole number (got 2.5)" },
    { { retry = { tries = 0 } }, "retry: option 'tries' must be from 1 to 100 (got 0)" },
    { { retry = { base = -1 } }, "retry: option 'base' must be at least 0 (got -1)" },
    { { retry = { idempotent = 1 } }, "retry: option 'idempotent' must be true or false (got 1)" },
    { { multipart = { { name = 1, value = "v" } } }, "multipart[1]: option 'name' must be a string (got 1)" },
  }
  for _, case in ipairs(cases) do
    local opts = case[1]
    opts.url = DEAD
    t.raises(function() http.request(opts) end, "http.request: " .. case[2])
  end
  t.raises(function() http.limiter({ max_in_flight = 1.5 }) end,
    "http.limiter: option 'max_in_flight' must be a whole number (got 1.5)")
  t.raises(function() http.limiter({ rate = "5" }) end, "http.limiter: option 'rate' must be a number (got string)")
  t.raises(function() http.credential({ header = 42 }) end, "http.credential: option 'header' must be a string")
  t.raises(function() http.credential({}) end, "http.credential: header is required")
end)

t.test("a name that cannot be looked up fails fast, kind resolve", function()
  -- .invalid never resolves (RFC 6761): offline or not, the answer is the
  -- same, and it must come within the timeout, not after eight tries
  local start = cp.now()
  local resp, err = http.request({ url = "https://cogpipe-test.invalid/x", timeout = 3 })
  local took = cp.now() - start
  t.eq(resp, nil)
  t.eq(err.kind, "resolve")
  t.ok(err.message:find("cogpipe-test.invalid", 1, true), err.message)
  t.ok(err.attempts >= 1 and err.attempts <= 2, "attempts " .. err.attempts)
  t.eq(err.retryable, true)
  t.eq(err.outcome, nil, "nothing was sent")
  t.ok(took < 3.5, "took " .. took)
end)

t.test("connection refused: the retries stop when the timeout is up", function()
  local start = cp.now()
  local resp, err = http.request({ url = DEAD, timeout = 1, retry = { tries = 100, base = 0.05, cap = 0.2 } })
  local took = cp.now() - start
  t.eq(resp, nil)
  t.eq(err.kind, "connect")
  t.ok(err.attempts > 2 and err.attempts < 100, "attempts " .. err.attempts)
  t.ok(err.message:find("no time left to retry within the timeout of 1 s", 1, true), err.message)
  t.ok(err.message:find(err.attempts .. " attempts", 1, true), err.message)
  t.ok(took < 1.2, "took " .. took)
  -- the default policy too: eight tries with backoff would take ~30 s
  start = cp.now()
  resp, err = http.request({ url = DEAD, timeout = 2 })
  t.eq(resp, nil)
  t.ok(cp.now() - start < 2.2, "took " .. (cp.now() - start))
  t.eq(err.kind, "connect")
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
