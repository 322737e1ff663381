-- cogpipe.webhook without a receiver: signing from Lua, target checks, the
-- event body, and the outbox (a closed port makes every delivery fail).
local cp = require "cogpipe"
local t = require "t"
local webhook = require "cogpipe.webhook"
local native = require "cogpipe._webhook"
local json = cp.json

local SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

local state = os.tmpname()
os.remove(state)

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

t.test("signatures from Lua match the specification's example", function()
  local body = '{"test": 2432232314}'
  local sig = native.sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
  t.eq(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
  t.eq(native.verify(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, sig), true)
  local two = native.sign({ SECRET, "a-raw-secret-that-is-long-enough" }, "msg_1", 1700000000, '{"a":1}')
  t.eq(two, native.sign(SECRET, "msg_1", 1700000000, '{"a":1}')
    .. " v1,1yOMq7hPcEHC5hW+oSZtLkmfVFnvhr/KfaCUImaJqkI=")
  local bad, err = native.sign("whsec_c2hvcnQ=", "msg_1", 1, "")
  t.eq(bad, nil)
  t.eq(err.kind, "config")
  t.ok(not err.message:find("c2hvcnQ", 1, true), err.message)
  t.raises(function() native.sign(42, "id", 1, "") end, "secret")
  t.raises(function() native.sign({}, "id", 1, "") end, "empty list")
  t.ok(native.new_id():match("^msg_[a-z2-7]+$"))
end)

t.test("targets are checked before anything is sent", function()
  t.eq(webhook.check_target({ url = "https://h/x", secret = SECRET }), true)
  local cases = {
    { { url = "ftp://h", secret = SECRET }, "url" },
    { { url = "https://h/x" }, "needs a secret" },
    { { url = "https://h/x", secret = "short-secret" }, "too short" },
    { { url = "https://h/x", secret = SECRET, tries = 0 }, "tries" },
    { { url = "https://h/x", secret = SECRET, tries = 10, timeout = 60 }, "5 minutes" },
  }
  for _, c in ipairs(cases) do
    local ok, err = webhook.check_target(c[1])
    t.eq(ok, nil, c[2])
    t.ok(err.message:find(c[2], 1, true), err.message)
    t.ok(not err.message:find("short-secret", 1, true))
  end
  t.eq(webhook.display_url("https://user:pw@h:8/p/q?token=abc#f"), "https://h:8/p/q")
end)

t.test("the event body is encoded once and redacted", function()
  cp.secrets.add("leaky-value-123")
  local ev = webhook.event({ note = "leaky-value-123", client_secret = "x", n = 1 })
  t.ok(ev.id:match("^msg_"))
  local body = json.decode(ev.body)
  t.eq(body.note, "[redacted]")
  t.eq(body.client_secret, "[redacted]")
  t.eq(body.n, 1)
  t.eq(webhook.event("{}", { id = "msg_fixed" }).id, "msg_fixed")
end)

t.test("a failed delivery waits in the outbox, without its secret", function()
  local target = { url = "http://127.0.0.1:9/_sink/webhooks/x", secret = SECRET, tries = 2, base = 0.01, cap = 0.02,
    timeout = 2 }
  local ev, results = webhook.send({ target }, { status = "ok" },
    { state_dir = state, tenant = "acme", pipeline = "p" })
  t.eq(#results, 1)
  t.eq(results[1].outcome, "retry")
  t.eq(results[1].queued, true)
  t.eq(results[1].id, ev.id)
  local pending = webhook.pending({ state_dir = state })
  t.eq(#pending, 1)
  t.eq(pending[1].id, ev.id)
  t.eq(pending[1].tenant, "acme")
  local text = read(webhook.outbox_dir(state) .. "/" .. pending[1].name)
  t.ok(not text:find(SECRET:sub(7), 1, true), "the secret is not in the outbox")
  t.eq(json.decode(text).body, ev.body)

  -- another tenant's flush leaves it alone
  local r = webhook.flush_outbox({ state_dir = state, targets = { target }, tenant = "other" })
  t.eq(#r.results, 0)
  -- without a secret it stays
  r = webhook.flush_outbox({ state_dir = state })
  t.eq(r.kept, 1)
  t.ok(r.results[1].error:find("no secret", 1, true))
  -- still unreachable: kept, attempts counted, same id
  r = webhook.flush_outbox({ state_dir = state, targets = { target }, tenant = "acme" })
  t.eq(r.kept, 1)
  t.eq(r.results[1].id, ev.id)
  pending = webhook.pending({ state_dir = state })
  t.eq(#pending, 1)
  t.eq(pending[1].attempts, 4)
  -- opting out of the outbox
  local _, res2 = webhook.send({ target }, { status = "ok" }, { state_dir = state, outbox = false })
  t.eq(res2[1].queued, nil)
  t.eq(#webhook.pending({ state_dir = state }), 1)
  -- a bad target fails without a request
  local _, res3 = webhook.send({ { url = target.url, secret = "tiny" } }, {}, { state_dir = state })
  t.eq(res3[1].outcome, "failed")
  t.eq(res3[1].attempts, 0)
end)

t.test("a URL that is a secret is kept only as a hash", function()
  local url = "http://127.0.0.1:9/hooks/T000/B000/secret-path-xyz"
  cp.secrets.add(url)
  local target = { url = url, secret = SECRET, tries = 1, timeout = 2 }
  local sdir = state .. "/secret-url"
  local ev, results = webhook.send({ target }, { n = 1 }, { state_dir = sdir, tenant = "acme" })
  t.eq(results[1].queued, true)
  t.eq(results[1].url, "[redacted]")
  local pending = webhook.pending({ state_dir = sdir })
  t.eq(#pending, 1)
  t.eq(pending[1].url, "(secret url)")
  local text = read(webhook.outbox_dir(sdir) .. "/" .. pending[1].name)
  t.ok(not text:find("secret-path-xyz", 1, true), text)
  -- the secrets alone cannot send it: the URL must come from the config
  local r = webhook.flush_outbox({ state_dir = sdir, secrets = { SECRET } })
  t.eq(r.kept, 1)
  t.ok(r.results[1].error:find("its URL is a secret", 1, true), r.results[1].error)
  r = webhook.flush_outbox({ state_dir = sdir, targets = { target } })
  t.eq(r.kept, 1)
  t.eq(r.results[1].id, ev.id)
  t.eq(webhook.pending({ state_dir = sdir })[1].attempts, 2)
end)

t.test("list returns sorted names and an empty list for a missing directory", function()
  t.same(native.list(state .. "/does-not-exist"), {})
  local names = native.list(webhook.outbox_dir(state), ".json")
  t.eq(#names, 1)
  t.eq(native.pid_alive(native.pid()), true)
end)

os.execute("rm -rf '" .. state .. "'")
t.done()
