-- cogpipe: the module pipeline scripts require. The native functions live in
-- cogpipe.core (C); this file is where Lua-level helpers join them.
local core = require "cogpipe.core"

local cp = {}
for name, value in pairs(core) do
  cp[name] = value
end

-- Functions an embedder registers after the module was loaded still show up.
return setmetatable(cp, { __index = core })
