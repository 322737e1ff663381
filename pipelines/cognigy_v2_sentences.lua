-- Example sentences through the Cognigy.AI REST API v2.0 (DESIGN 4.3): the
-- intents' existing sentences are read first (every page), only what is
-- missing is created, in bulk requests kept under the platform's 60 kB, and
-- the flow is trained for the tenant's locale.
--   cogpipe run pipelines/cognigy_v2_sentences.lua --tenant sandbox [-- FILE]
local pipeline = require "cogpipe.pipeline"

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."

return pipeline.new {
  name = "cognigy_v2_sentences",
  source = pipeline.source { path = arg[1] or (here .. "/data/sample_intents.jsonl") },
  steps = {
    pipeline.normalize "collapse",
    pipeline.validate { max_chars = 500 },
    pipeline.exact { key = "casefold" },
    pipeline.existing(),
    pipeline.near { threshold = 0.65 },
    pipeline.semantic { threshold = 0.85 },
    pipeline.cap(),
  },
  sink = pipeline.sink.v2_sentences { method = "patch", train_mode = "full" },
  notify = { pipeline.webhooks() },
}
