-- The dataset upload target (DESIGN 4.1): the accepted examples become one
-- utterance file and a metadata payload, validated first and sent in one
-- atomic multipart POST, with autoRetrain when asked (the job reported as
-- triggered, followed only where the tenant names a status URL). The
-- platform cannot be asked what it holds, and may keep a second upload
-- with the same datasetIdReference as a second dataset, so the run journal
-- decides: content already committed is not sent again, and an upload whose
-- outcome is unknown (a timeout or reset after the body, a 5xx, a crash
-- while it was pending) is never sent again by itself -- the run reports
-- it and says how to send it again on purpose (--resend-unknown).
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
  local _, uerr = client_mod.status_url(ctx, ctx.tenant.dataset, client.base, "x")
  if uerr then
    return nil, uerr
  end
  ctx.target = { client = client, jobs = {} }
  return true
end

-- Nothing to read: the dataset API has no listing. What the journal does
-- not know the outcome of is found here, before anything is planned.
function Sink:prepare(ctx, intents)
  for _, label in ipairs(intents) do
    ctx.existing[label] = { keys = {}, texts = {}, active = 0 }
  end
  self.open_uploads = ctx.journal:open_batches()
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

-- Uploads of an earlier run whose outcome nobody saw: the platform may hold
-- them, and cannot be asked. They block this upload until the user says
-- what to do; --resend-unknown sends the current content once and closes
-- them. Returns true when the upload may go.
function Sink:settle_unknown(ctx, plan)
  local open = self.open_uploads or {}
  if #open == 0 then
    return true
  end
  local ids = {}
  for i, b in ipairs(open) do
    ids[i] = b.id
  end
  if ctx.opts.resend_unknown then
    for _, b in ipairs(open) do
      ctx.journal:resent(b.id)
      ctx:event("resend", { entry = b.id, was = b.state })
    end
    ctx:note(string.format("sent again on purpose (--resend-unknown) after an unknown outcome: journal %s "
      .. "entr%s %s", ctx.journal.path, #ids == 1 and "y" or "ies", table.concat(ids, ", ")))
    return true
  end
  ctx.stats.unknown = plan.total
  ctx.unknown_entries = ids
  for _, b in ipairs(open) do
    ctx:event("unknown", { entry = b.id, was = b.state })
  end
  ctx:fail(string.format("an earlier upload's outcome is unknown (journal %s, entr%s %s): the platform may "
    .. "hold it and would keep a second upload as a second dataset, so nothing was sent. Check the platform; "
    .. "to send the dataset again on purpose, run again with --resend-unknown", ctx.journal.path,
    #ids == 1 and "y" or "ies", table.concat(ids, ", ")))
  return false
end

function Sink:send(ctx, plan)
  if plan.skip or not self:settle_unknown(ctx, plan) then
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
  local path = ctx:temp_file(string.format("%s-%s.txt", ctx.tenant.name:gsub("[^%w_.-]", "_"), plan.key),
    plan.content)
  if not path then
    ctx.stats.failed = plan.total
    return
  end
  local id = plan.payload.datasetIdReference .. "@" .. plan.key
  if not ctx.journal:pending(id, { plan.key }, { reference = plan.payload.datasetIdReference }) then
    os.remove(path)
    ctx.stats.failed = plan.total -- not sent: the journal could not say it was about to be
    return
  end
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
      ctx.unknown_entries = { id }
      ctx:fail(string.format("dataset upload: %s. Its outcome is unknown (journal %s, entry %s); it is not sent "
        .. "again by itself: check the platform, and to send it again on purpose run again with --resend-unknown",
        err.message, ctx.journal.path, id))
    else
      ctx.journal:failed(id)
      ctx.stats.failed = n
      ctx:request_failed("dataset upload", err)
    end
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
  if not job then
    ctx.training = { status = "error", dataset_id = ctx.target.dataset_id }
    ctx:fail("the platform answered the upload without a retrain job id")
    return
  end
  local training = ctx.target.client:retraining(ctx.tenant.dataset, { { id = job } })
  training.dataset_id = ctx.target.dataset_id
end

return M
