-- The sandbox tenant: the local Cognigy emulator (tests/emulator), which the
-- main job starts. Its URL comes from COGPIPE_EMULATOR_URL; its credentials
-- are the emulator's defaults, not secrets, so they have defaults here.
local base = env("COGPIPE_EMULATOR_URL", "http://127.0.0.1:8765")

return {
  name = "sandbox",
  base_url = base, -- dataset api_base and intent tenant_url alike
  auth = {
    client_id = env("COGPIPE_SANDBOX_CLIENT_ID", "cogpipe-sandbox"),
    client_secret = env("COGPIPE_SANDBOX_SECRET", "sandbox-secret"),
  },
  v2 = {
    flow_id = "sandbox-flow",
    locale_id = "en-US",
    auth = { api_key = env("COGPIPE_SANDBOX_API_KEY", "sandbox-api-key") },
  },
  dataset = { reference = "sandbox-intents" },
  intent_cap = 2000,
  limits = { rate = 50, burst = 100, max_in_flight = 16 },
  dedupe = { near = 0.65, semantic = 0.85 },
  embeddings = { url = base, model = "emulator-embed-8" },
  webhooks = {
    {
      url = base .. "/_sink/webhooks/sandbox",
      secret = env("COGPIPE_SANDBOX_WEBHOOK_SECRET", "whsec_c2FuZGJveC13ZWJob29rLXNlY3JldC0wMDAx"),
    },
  },
}
