-- cogpipe.cmd.args: one option of a command line, read the same way by
-- every command that takes "--name value" and "--name=value" alike. Knows
-- no command's options and prints nothing: the command says what is wrong.

local M = {}

--- M.read(argv, i, flags) -> name, spec, value, last | nil, message
-- The word argv[i] against flags (name -> spec; spec.value when the option
-- takes a value): its name, its spec (nil for a name flags does not have),
-- its value (true for a switch) and the index of the last word it used.
-- nil and "<name> needs a value" when a value is due and missing or empty.
function M.read(argv, i, flags)
  local name, inline = argv[i]:match("^(%-%-[%w-]+)=(.*)$")
  name = name or argv[i]
  local spec = flags[name]
  if not spec then
    return name, nil, nil, i
  end
  if not spec.value then
    return name, spec, true, i
  end
  local value = inline
  if not value then
    i = i + 1
    value = argv[i]
  end
  if not value or value == "" then
    return nil, name .. " needs a value"
  end
  return name, spec, value, i
end

return M
