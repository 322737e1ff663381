-- cogpipe help [COMMAND]: the top-level usage and each command's own. Every
-- command module carries its usage text (M.usage, starting with its synopsis);
-- this module only gathers them, so that `cogpipe help X`, `cogpipe X
-- --help` and the README's command block (checked by a test against
-- `cogpipe help --synopsis`) say the same thing.
local M = {}

-- The commands in the order they are listed; each is cogpipe.cmd.<name>.
M.COMMANDS = {
  { "run", "run a pipeline (for each --tenant) or any script" },
  { "check", "what the pipelines would reject from files, and why; nothing is sent" },
  { "init", "write a tenant file, a pipeline and sample data to start from" },
  { "tenant", "check a tenant file offline; list every tenant setting" },
  { "export", "write what the platform holds as JSON Lines" },
  { "plan", "what a run would do, per intent; offline from a snapshot" },
  { "undo", "reverse what a run changed on the platform (v2)" },
  { "audit", "verify an audit log's hash chain" },
  { "webhook", "send or list webhook deliveries kept for later" },
  { "help", "this text, or a command's own" },
}

M.usage = [[
usage: cogpipe help [COMMAND] [--synopsis]

Shows what cogpipe can do, or the usage of COMMAND (the same text as
`cogpipe COMMAND --help`). --synopsis prints every command's usage lines.
]]

local function module_of(name)
  if name == "help" then
    return M
  end
  local ok, mod = pcall(require, "cogpipe.cmd." .. name)
  if ok and type(mod) == "table" and mod.usage then
    return mod
  end
  return nil
end

-- The usage lines of a command: its usage text up to the first blank line,
-- without the "usage: " in front.
function M.synopsis(name)
  local mod = module_of(name)
  if not mod then
    return nil
  end
  local lines = {}
  for line in mod.usage:gmatch("([^\n]*)\n") do
    if line == "" then
      break
    end
    lines[#lines + 1] = (line:gsub("^usage: ", ""):gsub("^       ", ""))
  end
  return table.concat(lines, "\n")
end

function M.overview()
  local out = { "usage: cogpipe COMMAND [ARGS]", "", "commands:" }
  for _, c in ipairs(M.COMMANDS) do
    if module_of(c[1]) then
      out[#out + 1] = string.format("  %-9s %s", c[1], c[2])
    end
  end
  out[#out + 1] = ""
  out[#out + 1] = "  cogpipe COMMAND --help      a command's usage (also: cogpipe help COMMAND)"
  out[#out + 1] = "  cogpipe --version           the version"
  out[#out + 1] = ""
  out[#out + 1] = "exit status: 0 all good; 1 the run finished but something failed (remotely, a"
  out[#out + 1] = "write, a task); 2 usage or configuration error; 3 input rejected by validation"
  out[#out + 1] = "(nothing was sent)."
  return table.concat(out, "\n") .. "\n"
end

function M.main(args)
  local name = args[1]
  if name == nil then
    io.stdout:write(M.overview())
    return 0
  end
  if name == "--usage-error" then
    -- what the command prints when it is given nothing to do
    io.stderr:write(M.overview())
    return 2
  end
  if name == "--synopsis" then
    local all = {}
    for _, c in ipairs(M.COMMANDS) do
      local s = M.synopsis(c[1])
      if s then
        all[#all + 1] = s
      end
    end
    all[#all + 1] = "cogpipe --version"
    io.stdout:write(table.concat(all, "\n"), "\n")
    return 0
  end
  if name == "--help" or name == "-h" then
    io.stdout:write(M.usage)
    return 0
  end
  local mod = module_of(name)
  if not mod then
    io.stderr:write("cogpipe: help: no command '", name, "' (see cogpipe help)\n")
    return 2
  end
  io.stdout:write(mod.usage)
  return 0
end

return M
