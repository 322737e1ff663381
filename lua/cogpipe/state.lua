-- Where cogpipe keeps what must outlive a run (journals, the webhook
-- outbox, the embeddings cache): one answer for every part that asks.
local M = {}

-- The given directory, else $COGPIPE_STATE_DIR, else
-- $XDG_STATE_HOME/cogpipe, else ~/.local/state/cogpipe.
function M.dir(override)
  if override and override ~= "" then
    return override
  end
  local env = os.getenv("COGPIPE_STATE_DIR")
  if env and env ~= "" then
    return env
  end
  local xdg = os.getenv("XDG_STATE_HOME")
  if xdg and xdg ~= "" then
    return xdg .. "/cogpipe"
  end
  return (os.getenv("HOME") or ".") .. "/.local/state/cogpipe"
end

return M
