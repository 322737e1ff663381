-- A production tenant on Cognigy.AI's shared SaaS. Every secret comes from
-- the environment. A run asks only for the variables its pipeline reads
-- (the intent pipeline: the OAuth2 client; the v2 pipeline: the API key,
-- flow and locale), names every missing one at once, never a value, and
-- stops before anything is sent (exit 2).
--   COGNIGY_API_BASE      e.g. https://api-trial.cognigy.ai
--   COGNIGY_CLIENT_ID, COGNIGY_CLIENT_SECRET   OAuth2 client credentials
--   COGNIGY_API_KEY       a v2 API key (Profile > API keys)
--   COGNIGY_FLOW_ID, COGNIGY_LOCALE_ID          the flow and locale to train
--   COGPIPE_WEBHOOK_URL, COGPIPE_WEBHOOK_SECRET (whsec_...) for run reports;
--                         optional: no webhook when the URL is not set
local api = env("COGNIGY_API_BASE", "https://api-trial.cognigy.ai")
local webhook_url = env("COGPIPE_WEBHOOK_URL", "")

return {
  name = "production",
  base_url = api,
  auth = {
    client_id = env("COGNIGY_CLIENT_ID"),
    client_secret = env("COGNIGY_CLIENT_SECRET"),
  },
  v2 = {
    flow_id = env("COGNIGY_FLOW_ID"),
    locale_id = env("COGNIGY_LOCALE_ID"),
    auth = { api_key = env("COGNIGY_API_KEY") },
    json_body_max = 60000,     -- the platform's "60 kB" of JSON request body
    flow_cap = 10000,          -- example sentences per flow
  },
  -- The per-intent cap is documented both as 200 and as 2,000.
  intent_cap = 2000,
  -- Shared SaaS allows 1,000 requests per 5 minutes per client IP.
  limits = { rate = 3, burst = 10, max_in_flight = 4, timeout = 120 },
  dedupe = { near = 0.65, semantic = 0.85 },
  webhooks = webhook_url ~= "" and {
    { url = webhook_url, secret = env("COGPIPE_WEBHOOK_SECRET") },
  } or nil,
}
