-- Dataset upload (DESIGN 4.1): the accepted utterances become one file and a
-- metadata payload, sent in one atomic multipart request with autoRetrain.
--   cogpipe run pipelines/dataset_upload.lua --tenant sandbox [-- FILE]
local pipeline = require "cogpipe.pipeline"

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."

return pipeline.new {
  name = "dataset_upload",
  source = pipeline.source { path = arg[1] or (here .. "/data/sample_intents.jsonl") },
  steps = {
    pipeline.normalize "collapse",
    pipeline.validate { max_chars = 500 },
    pipeline.exact { key = "casefold" },
    pipeline.near { threshold = 0.65 },
  },
  sink = pipeline.sink.dataset { retrain = true },
  notify = { pipeline.webhooks() },
}
