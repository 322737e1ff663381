-- The dataset upload target (DESIGN 4.1): the accepted examples become one
-- utterance file and a metadata payload, validated first and sent in one
-- atomic multipart POST, with autoRetrain when asked and the retraining job
-- followed. The platform cannot be asked what it holds, so the run journal
-- decides: the same content already committed is not sent again. An upload
-- with the same datasetIdReference replaces the dataset, which makes a
-- re-send after an unknown outcome safe.
local cp = require "cogpipe"
local json = cp.json
local client_mod = require "cogpipe.cognigy.client"

local M = {}
local Sink = {}
Sink.__index = Sink

local SCOPE = "cognigy:dataset:write cognigy:dataset:read cognigy:admin:retrain"
local MAX_BYTES = 52428800

function M.sink(opts)
  return setmetatable({
    name = "dataset",
    reference = opts.reference,
    retrain = opts.retrain ~= false,
    label_type = opts.label_type or "intent",
  }, Sink)
end

function Sink:open(ctx)
  local client, err = client_mod.new(ctx, ctx.tenant.dataset, { token_path = "/oauth/token", scope = SCOPE })
  if not client then
    return nil, err
  end
  ctx.target = { client = client, jobs = {} }
  return true
end

-- Nothing to read: the dataset API has no listing.
function Sink:prepare(ctx, intents)
  for _, label in ipairs(intents) do
    ctx.existing[label] = { keys = {}, texts = {}, active = 0 }
  end
  return true
end

function Sink:payload(ctx, records)
  local counts, labels = {}, {}
  for _, r in ipairs(records) do
    if not counts[r.intent] then
      counts[r.intent] = 0
      labels[#labels + 1] = r.intent
    end
    counts[r.intent] = counts[r.intent] + 1
  end
  table.sort(labels)
  local directives = json.array()
  for i, label in ipairs(labels) do
    directives[i] = { label = label, type = self.label_type, priority = i - 1 }
  end
  local section = ctx.tenant.dataset or {}
  return {
    datasetIdReference = self.reference or section.reference or ctx.pipeline.name,
    utteranceCountMatrix = counts,
    labelTaxonomyDirectives = directives,
    metadata = { pipeline = ctx.pipeline.name, tenant = ctx.tenant.name, examples = tostring(#records) },
  }
end

function Sink:plan(ctx, records)
  local lines = {}
  for i, r in ipairs(records) do
    lines[i] = r.text
  end
  local content = table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
  local payload = self:payload(ctx, records)
  local key = cp.hash(payload.datasetIdReference .. "\0" .. content)
  local plan = { payload = payload, content = content, key = key, total = #records }
  if #records == 0 then
    plan.skip = true
  elseif ctx.journal:is_committed(key) then
    for _, r in ipairs(records) do
      ctx:skip(r, "present")
    end
    ctx.stats.accepted = 0
    plan.skip = true
  end
  return plan
end

function Sink:send(ctx, plan)
  if plan.skip then
    return
  end
  local ok, problems = cp.validate.dataset_payload(plan.payload)
  if not ok then
    ctx:fail("dataset payload invalid: " .. tostring(problems and problems.message or "?"))
    ctx.stats.failed = plan.total
    return
  end
  if #plan.content > MAX_BYTES then
    ctx:fail(string.format("dataset file is %d bytes, over the platform's %d", #plan.content, MAX_BYTES))
    ctx.stats.failed = plan.total
    return
  end
  -- The file goes from disk: the platform takes up to 50 MiB.
  local dir = ctx.state_dir .. "/tmp"
  assert(cp.fs.mkdir(dir))
  local path = string.format("%s/%s-%s.txt", dir, ctx.tenant.name:gsub("[^%w_.-]", "_"), plan.key)
  assert(cp.fs.write_atomic(path, plan.content))
  local id = plan.payload.datasetIdReference .. "@" .. plan.key
  ctx.journal:pending(id, { plan.key }, { reference = plan.payload.datasetIdReference })
  local resp, err = ctx.target.client:request({
    method = "POST",
    path = "/datasets/upload",
    query = self.retrain and { autoRetrain = "true" } or nil,
    multipart = {
      { name = "metadata", value = json.encode(plan.payload), content_type = "application/json" },
      { name = "dataset", file = path, filename = "utterances.txt", content_type = "text/plain; charset=utf-8" },
    },
  })
  os.remove(path)
  local n = plan.total
  if not resp then
    if err.outcome == "unknown" then
      ctx.journal:unknown(id)
      ctx.stats.unknown = n
    else
      ctx.journal:failed(id)
      ctx.stats.failed = n
    end
    ctx:fail("dataset upload: " .. err.message)
    ctx:event("batch", { dataset = plan.payload.datasetIdReference, examples = n, outcome = err.outcome or "failed" })
    return
  end
  local body = resp:json() or {}
  ctx.journal:committed_batch(id)
  ctx.stats.uploaded = n
  ctx:advance(n)
  ctx.target.dataset_id = body.datasetId or body.id
  local job = body.retrainJobId
  if job and job ~= json.null then
    ctx.target.jobs[1] = job
  end
  ctx:event("batch", { dataset = plan.payload.datasetIdReference, dataset_id = ctx.target.dataset_id, examples = n,
    outcome = "uploaded", retrain_job_id = job })
end

function Sink:train(ctx)
  if not self.retrain then
    return
  end
  local job = ctx.target.jobs[1]
  ctx.training = { dataset_id = ctx.target.dataset_id }
  if not job then
    ctx.training.status = "error"
    ctx:fail("the platform answered the upload without a retrain job id")
    return
  end
  ctx.training.retrain_job_id = job
  local status, info = ctx.target.client:follow("/jobs/" .. client_mod.segment(job), client_mod.job_state)
  ctx.training.status = status
  ctx:event("training", { job = job, status = status, info = info })
  if status ~= "done" then
    ctx:fail(string.format("retraining job %s: %s %s", job, status, tostring(info or "")))
  end
end

return M
