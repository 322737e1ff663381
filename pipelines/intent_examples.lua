-- Intent example batches (DESIGN 4.2): labelled examples checked, cleaned
-- and deduplicated, then sent to each intent in atomic batches of at most
-- 100, with retraining triggered and followed.
--   cogpipe run pipelines/intent_examples.lua --tenant sandbox [-- FILE]
-- FILE: JSON Lines {"text","intent","annotations"?}, CSV text,intent, or a
-- JSON file of [text, intent] pairs (CLINC150's data_full.json); default:
-- the sample dataset beside this file.
local pipeline = require "cogpipe.pipeline"

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."

return pipeline.new {
  name = "intent_examples",
  source = pipeline.source { path = arg[1] or (here .. "/data/sample_intents.jsonl") },
  steps = {
    pipeline.normalize "collapse",          -- the text sent: trimmed, single spaces
    pipeline.validate { max_chars = 500 },  -- the platform's rules, before anything is sent
    pipeline.exact { key = "casefold" },    -- duplicates, and conflicts across intents
    pipeline.existing(),                    -- what the platform already holds is not re-sent
    pipeline.near { threshold = 0.65 },     -- rewrites: shingles and words of the near form
    pipeline.semantic { threshold = 0.85 }, -- paraphrases by meaning (tenant's embeddings)
    pipeline.cap(),                         -- the per-intent cap, counting what is there
  },
  sink = pipeline.sink.intent_batches { batch_size = 100, retrain = true },
  notify = { pipeline.webhooks() },
}
