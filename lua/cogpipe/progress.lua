-- Progress on a terminal: one line per tenant (done/total, rate, ETA),
-- redrawn in place on stderr at most ten times a second. Off when stderr is
-- not a terminal, so logs and CI output stay clean; NO_COLOR turns colour off.
local cp = require "cogpipe"

local Progress = {}
Progress.__index = Progress

local M = {}

function M.new(opts)
  opts = opts or {}
  local enabled = not opts.disabled and cp.fs.isatty(io.stderr)
  return setmetatable({
    enabled = enabled,
    color = enabled and (os.getenv("NO_COLOR") or "") == "" and os.getenv("TERM") ~= "dumb",
    rows = {},
    order = {},
    drawn = 0,
    last = 0,
  }, Progress)
end

-- A row per tenant; phase is a word like "reading", "uploading", "training";
-- `of` names the count the total is (report.counts: "submitted" while the
-- records are checked, "accepted" while they are sent).
function Progress:row(name)
  local r = self.rows[name]
  if not r then
    r = { name = name, done = 0, total = 0, phase = "starting", start = cp.now() }
    self.rows[name] = r
    self.order[#self.order + 1] = name
  end
  return r
end

function Progress:update(name, fields)
  local r = self:row(name)
  for k, v in pairs(fields) do
    r[k] = v
  end
  if fields.phase == "uploading" and not r.upload_start then
    r.upload_start = cp.now()
  end
  self:draw(false)
end

function Progress:add(name, n)
  local r = self:row(name)
  r.done = r.done + n
  self:draw(false)
end

local function fmt_eta(s)
  if s ~= s or s == math.huge then
    return "--"
  end
  s = math.floor(s + 0.5)
  if s >= 3600 then
    return string.format("%dh%02dm", s // 3600, (s % 3600) // 60)
  elseif s >= 60 then
    return string.format("%dm%02ds", s // 60, s % 60)
  end
  return s .. "s"
end

function Progress:line(r)
  local width = 24
  local frac = r.total > 0 and math.min(1, r.done / r.total) or 0
  local filled = math.floor(frac * width + 0.5)
  local elapsed = cp.now() - (r.upload_start or r.start)
  local rate = elapsed > 0 and r.done / elapsed or 0
  local eta = rate > 0 and (r.total - r.done) / rate or math.huge
  local bar = string.rep("#", filled) .. string.rep("-", width - filled)
  if self.color then
    bar = "\27[32m" .. string.rep("#", filled) .. "\27[2m" .. string.rep("-", width - filled) .. "\27[0m"
  end
  -- what the total counts, in the summary's words (submitted, accepted)
  return string.format("%-16s %-10s [%s] %6d/%-6d%s %7.1f/s ETA %s", r.name:sub(1, 16), r.phase, bar,
    r.done, r.total, r.of and (" " .. r.of) or "", rate, r.phase == "done" and "0s" or fmt_eta(eta))
end

function Progress:draw(force)
  if not self.enabled then
    return
  end
  local now = cp.now()
  if not force and now - self.last < 0.1 then
    return
  end
  self.last = now
  local out = {}
  if self.drawn > 0 then
    out[#out + 1] = string.format("\27[%dA", self.drawn)
  end
  for _, name in ipairs(self.order) do
    out[#out + 1] = "\r\27[2K" .. self:line(self.rows[name]) .. "\n"
  end
  self.drawn = #self.order
  io.stderr:write(table.concat(out))
  io.stderr:flush()
end

function Progress:finish()
  self:draw(true)
end

return M
