-- cogpipe.base64: standard base64 with padding (RFC 4648) both ways, and
-- decode errors that say where, never what: the text may be a secret.
local cp = require "cogpipe"
local t = require "t"
local b64 = cp.base64

t.test("the RFC 4648 test vectors", function()
  local vectors = {
    { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
    { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
  }
  for _, v in ipairs(vectors) do
    t.eq(b64.encode(v[1]), v[2])
    t.eq(b64.decode(v[2]), v[1])
  end
end)

t.test("every byte value goes there and back", function()
  local bytes = {}
  for i = 0, 255 do
    bytes[#bytes + 1] = string.char(i)
  end
  local all = table.concat(bytes)
  for cut = 0, 3 do
    local s = all:sub(1, #all - cut)
    local enc = b64.encode(s)
    t.eq(#enc % 4, 0)
    t.ok(enc:match("^[A-Za-z0-9+/]*=?=?$"), enc)
    t.eq(b64.decode(enc), s)
  end
end)

t.test("text that is not base64 is nil, err: where, and not the text", function()
  local secret = "c2VjcmV0LXZhbHVl!"
  local v, err = b64.decode(secret)
  t.eq(v, nil)
  t.eq(err.kind, "base64")
  t.eq(err.offset, 16)
  t.ok(err.message:find("alphabet", 1, true), err.message)
  t.ok(not err.message:find("c2Vjc", 1, true), "the text is not quoted")
  local _, e2 = b64.decode("Zm9")
  t.eq(e2.offset, 3)
  t.ok(e2.message:find("multiple of 4", 1, true), e2.message)
  local _, e3 = b64.decode("Zm=v")
  t.eq(e3.offset, 2)
  t.ok(e3.message:find("padding", 1, true), e3.message)
  -- white space is not skipped: a strict decoder
  t.eq((b64.decode("Zm9v\nYmFy")), nil)
end)

t.test("misuse raises", function()
  t.raises(function() b64.encode() end, "string expected")
  t.raises(function() b64.decode({}) end, "string expected")
end)

t.done()
