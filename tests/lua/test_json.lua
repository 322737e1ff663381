-- cogpipe.json: integers stay integers, explicit arrays, no silent rounding.
local cp = require "cogpipe"
local t = require "t"
local json = cp.json

t.test("decoded integers are Lua integers", function()
  local v = json.decode('{"a":150}')
  t.eq(math.type(v.a), "integer")
  t.eq(v.a, 150)
  t.eq(math.type(json.decode("-0")), "integer")
  t.eq(json.decode("9007199254740993"), 9007199254740993) -- 2^53 + 1, exact
  t.eq(json.decode("9223372036854775807"), math.maxinteger)
  t.eq(json.decode("-9223372036854775808"), math.mininteger)
end)

t.test("numbers with a fraction or exponent are floats", function()
  t.eq(math.type(json.decode("1.0")), "float")
  t.eq(json.decode("1.5e2"), 150.0)
  t.eq(math.type(json.decode("1e2")), "float")
end)

t.test("an integer JSON cannot carry exactly is an error, not rounded", function()
  local v, err = json.decode('{"n": 18446744073709551616}')
  t.eq(v, nil)
  t.eq(err.kind, "json")
  t.ok(err.message:find("out of range", 1, true), err.message)
  t.eq(err.line, 1)
  t.eq(err.column, 7)
  local _, err2 = json.decode("1e400")
  t.ok(err2.message:find("out of range", 1, true), err2.message)
end)

t.test("integers encode exactly, floats stay floats", function()
  t.eq(json.encode(9007199254740993), "9007199254740993")
  t.eq(json.encode(math.maxinteger), "9223372036854775807")
  t.eq(json.encode(150), "150")
  t.eq(json.encode(150.0), "150.0")
  t.eq(json.encode(0.1), "0.1")
  t.eq(json.encode(1e300), "1e+300")
  t.raises(function() json.encode(0 / 0) end, "cannot be represented")
  t.raises(function() json.encode(math.huge) end, "cannot be represented")
end)

t.test("json.array encodes as an array, [] when empty", function()
  t.eq(json.encode(json.array()), "[]")
  t.eq(json.encode({ slots = json.array() }), '{"slots":[]}')
  t.eq(json.encode(json.array({ 1, 2 })), "[1,2]")
  t.eq(json.encode({}), "{}")
  t.ok(json.is_array(json.array()))
  t.ok(not json.is_array({}))
end)

t.test("decoded arrays keep their kind through a round trip", function()
  local v = json.decode('{"slots":[],"o":{}}')
  t.eq(json.encode(v), '{"o":{},"slots":[]}')
  t.ok(json.is_array(v.slots))
end)

t.test("null decodes to json.null and encodes back", function()
  local v = json.decode("[1,null,3]")
  t.eq(#v, 3)
  t.eq(v[2], json.null)
  t.eq(json.encode(v), "[1,null,3]")
end)

t.test("object keys are sorted, so output is stable", function()
  t.eq(json.encode({ b = 1, a = 2, c = { z = 1, y = 2 } }), '{"a":2,"b":1,"c":{"y":2,"z":1}}')
end)

t.test("strings: escapes, unicode, surrogate pairs", function()
  t.eq(json.encode('a"b\\c\n\t\1'), '"a\\"b\\\\c\\n\\t\\u0001"')
  t.eq(json.decode('"\\u00e9\\ud83d\\ude00"'), "é😀")
  t.eq(json.encode("é😀"), '"é😀"')
  local _, err = json.decode('"\\ud800"')
  t.ok(err.message:find("surrogate", 1, true), err.message)
  t.raises(function() json.encode("\xff") end, "not valid UTF-8")
  local _, err2 = json.decode('"\xc3\x28"')
  t.ok(err2.message:find("UTF-8", 1, true), err2.message)
end)

t.test("what JSON cannot carry is an error naming where", function()
  t.raises(function() json.encode({ a = { b = print } }) end, "cannot encode a function at $.a.b")
  t.raises(function() json.encode({ 1, nil, 3 }) end, "sparse array")
  t.raises(function() json.encode({ 1, x = 2 }) end, "mixes array items and object keys")
  t.raises(function() json.encode({ [1.5] = 1 }) end, "key of type number")
  local cyc = {}
  cyc.self = cyc
  t.raises(function() json.encode(cyc) end, "nested deeper")
  t.raises(function() json.encode({ json.array({ 1, nil, 3 }) }) end, "hole")
end)

t.test("syntax errors report line and column", function()
  local v, err = json.decode('{\n  "a": 1,\n  "b": tru\n}')
  t.eq(v, nil)
  t.eq(err.line, 3)
  t.eq(err.column, 8)
  local cases = { "", "[1,]", "{\"a\"}", "01", "1.", "[1] x", "{'a':1}", "\"abc" }
  for _, c in ipairs(cases) do
    local r, e = json.decode(c)
    t.eq(r, nil, c)
    t.eq(e.kind, "json", c)
  end
end)

t.test("a repeated key is an error with its path, not a silent last-wins", function()
  local v, err = json.decode('{"text":"a","text":"b"}')
  t.eq(v, nil)
  t.eq(err.kind, "json")
  t.ok(err.message:find("duplicate key at $.text", 1, true), err.message)
  t.eq(err.column, 13)
  v, err = json.decode('{"examples":[{"text":"a","annotations":[{"start":0,"start":1}]}]}')
  t.eq(v, nil)
  t.ok(err.message:find("$.examples[0].annotations[0].start", 1, true), err.message)
  t.eq(json.decode('[{"a":1},{"a":2}]')[2].a, 2)
end)

t.test("misuse raises", function()
  t.raises(function() json.decode(nil) end, "string expected")
  t.raises(function() json.array(5) end, "table expected")
end)

t.done()
