-- The report of a run or a plan as one self-contained HTML file: per-intent
-- bars (on the platform, added, rejected by reason, over the cap, pruned),
-- the sortable rejection table, conflicts and near/semantic pairs side by
-- side, the read-back, the totals, the run id and the audit head. No
-- external asset and no network: inline CSS and script, and a Content
-- Security Policy that forbids every fetch and runs only the report's own
-- script. Every text is escaped: examples are untrusted input, and a
-- <script> in one stays text. Renders a summary; computes nothing.
local cp = require "cogpipe"

local M = {}

local ENTITIES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

local function esc(v)
  return (tostring(v == nil and "" or v):gsub("[&<>\"']", ENTITIES))
end
M.escape = esc

local REASON_ORDER = { "invalid", "duplicate", "conflict", "near", "semantic" }

local CSS = [[
:root{--fg:#1d2330;--muted:#5d6675;--line:#d9dde4;--bg:#fff;--alt:#f5f7fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);
margin:0;padding:24px 32px;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:var(--muted);font-size:12px}.meta code{font-size:12px;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.ok{background:#2e7d32}.failed,.refused{background:#c62828}.plan{background:#1565c0}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--alt);font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
th[data-sort]{cursor:pointer;user-select:none}th[data-sort]::after{content:" \2195";color:var(--muted)}
.totals{display:grid;grid-template-columns:repeat(auto-fill,minmax(130px,1fr));gap:8px;margin:8px 0}
.totals div{background:var(--alt);border-radius:6px;padding:6px 10px}
.totals b{display:block;font-size:18px}.totals span{color:var(--muted);font-size:12px}
.bar{display:flex;height:14px;min-width:240px;background:var(--alt);border-radius:3px;overflow:hidden}
.seg{height:100%}.s-existing{background:#9aa5b4}.s-add{background:#2e7d32}.s-prune{background:#c62828}
.s-over{background:#ef6c00}.s-invalid{background:#6a1b9a}.s-duplicate{background:#8d6e63}
.s-conflict{background:#d81b60}.s-near{background:#f9a825}.s-semantic{background:#00838f}
.legend span{display:inline-flex;align-items:center;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;border-radius:2px}
.pairs{display:grid;grid-template-columns:1fr 1fr;gap:0;border:1px solid var(--line);border-radius:6px;
margin:6px 0 12px;overflow:hidden}
.pairs>div{padding:4px 8px;border-bottom:1px solid var(--line)}.pairs>div:nth-child(odd){background:var(--alt)}
.pairs .h{font-weight:600;background:#e8ecf2 !important}
.text{white-space:pre-wrap;word-break:break-word}.name{white-space:nowrap}
ul.msgs{margin:4px 0 12px;padding-left:20px}.err{color:#b71c1c}
details{margin:4px 0}summary{cursor:pointer}
]]

-- Sorts a table by the column whose header was clicked: numbers as
-- numbers, the rest as text; a second click reverses.
local SCRIPT = [[
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th[data-sort]").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var num = th.getAttribute("data-sort") === "num", dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v") || a.cells[col].textContent;
        var y = b.cells[col].getAttribute("data-v") || b.cells[col].textContent;
        if (num) { return dir * ((parseFloat(x) || 0) - (parseFloat(y) || 0)); }
        return dir * x.localeCompare(y);
      });
      table.querySelectorAll("th[data-sort]").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
]]

local function cell(v, class, attrs)
  return string.format("<td%s%s>%s</td>", class and (' class="' .. class .. '"') or "", attrs or "", esc(v))
end

local function totals(out, t, dry)
  local items = {
    { "submitted", t.submitted }, { dry and "to add" or "uploaded", dry and t.accepted or t.uploaded },
    { "already there", t.present }, { "rejected", t.rejected },
  }
  if not dry then
    items[#items + 1] = { "failed", t.failed }
    items[#items + 1] = { "unknown", t.unknown }
  end
  if t.prune then
    items[#items + 1] = { dry and "to prune" or "pruned", dry and t.prune.planned or t.prune.pruned }
  end
  items[#items + 1] = { "requests", t.requests }
  out[#out + 1] = '<div class="totals">'
  for _, it in ipairs(items) do
    out[#out + 1] = string.format('<div data-total="%s"><b>%s</b><span>%s</span></div>', esc(it[1]), esc(it[2] or 0),
      esc(it[1]))
  end
  out[#out + 1] = "</div>"
end

local function legend(out)
  out[#out + 1] = '<p class="legend">'
  local keys = { { "existing", "on the platform" }, { "add", "added" }, { "prune", "pruned" },
    { "over", "over the cap" } }
  for _, r in ipairs(REASON_ORDER) do
    keys[#keys + 1] = { r, r }
  end
  for _, k in ipairs(keys) do
    out[#out + 1] = string.format('<span><i class="s-%s"></i>%s</span>', k[1], esc(k[2]))
  end
  out[#out + 1] = "</p>"
end

-- One row per intent, the bar's segments in the same scale for every row.
local function intents(out, t, dry)
  local rows = t.intents or {}
  if #rows == 0 then
    return
  end
  local scale = 1
  for _, r in ipairs(rows) do
    scale = math.max(scale, r.existing + (dry and r.add or r.added or 0) + r.rejected + r.over_cap)
  end
  out[#out + 1] = "<h3>Per intent</h3>"
  legend(out)
  out[#out + 1] = '<table class="sortable intents"><thead><tr><th data-sort="text">intent</th>'
    .. '<th class="n" data-sort="num">on the platform</th><th class="n" data-sort="num">to add</th>'
    .. (dry and "" or '<th class="n" data-sort="num">added</th>')
    .. '<th class="n" data-sort="num">already there</th><th class="n" data-sort="num">rejected</th>'
    .. '<th class="n" data-sort="num">over cap</th><th class="n" data-sort="num">'
    .. (dry and "to prune" or "pruned") .. "</th><th>by reason</th><th></th></tr></thead><tbody>"
  for _, r in ipairs(rows) do
    local prune = dry and r.prune or r.pruned or 0
    local added = dry and r.add or r.added or 0
    local segs = {}
    local function seg(class, n, title)
      if n > 0 then
        segs[#segs + 1] = string.format('<span class="seg s-%s" style="width:%.3f%%" title="%s: %d"></span>', class,
          n * 100 / scale, esc(title), n)
      end
    end
    seg("existing", r.existing - prune, "on the platform, kept")
    seg("prune", prune, dry and "to prune" or "pruned")
    seg("add", added, dry and "to add" or "added")
    local reasons = {}
    for _, reason in ipairs(REASON_ORDER) do
      local n = r.rejected_by_reason and r.rejected_by_reason[reason] or 0
      seg(reason, n, reason)
      if n > 0 then
        reasons[#reasons + 1] = reason .. " " .. n
      end
    end
    seg("over", r.over_cap, "over the cap")
    out[#out + 1] = string.format('<tr class="intent" data-intent="%s">', esc(r.intent))
      .. cell(r.intent, "name")
      .. cell(r.existing, "n", ' data-k="existing"') .. cell(r.add, "n", ' data-k="add"')
      .. (dry and "" or cell(r.added or 0, "n", ' data-k="added"'))
      .. cell(r.present, "n", ' data-k="present"') .. cell(r.rejected, "n", ' data-k="rejected"')
      .. cell(r.over_cap, "n", ' data-k="over_cap"')
      .. cell(prune, "n", dry and ' data-k="prune"' or ' data-k="pruned"')
      .. cell(table.concat(reasons, ", "))
      .. '<td><div class="bar">' .. table.concat(segs) .. "</div></td></tr>"
  end
  out[#out + 1] = "</tbody></table>"
end

local function fmt_score(v)
  return type(v) == "number" and string.format("%.3f", v) or ""
end

local function where(r)
  if not r.file and not r.line then
    return ""
  end
  return string.format("%s:%s", tostring(r.file or "?"), tostring(r.line or "?"))
end

local function rejections(out, list)
  if #list == 0 then
    return
  end
  out[#out + 1] = string.format("<h3>Rejected (%d)</h3>", #list)
  out[#out + 1] = '<table class="sortable rejections"><thead><tr><th data-sort="text">reason</th>'
    .. '<th data-sort="text">intent</th><th data-sort="text">text</th><th data-sort="text">nearest / other</th>'
    .. '<th class="n" data-sort="num">score</th><th data-sort="text">where</th><th>why</th></tr></thead><tbody>'
  for _, r in ipairs(list) do
    local other = r.nearest or (r.other_intent and ("intent " .. r.other_intent)) or r.first_text or ""
    local why = r.problem or (r.cap and ("cap " .. tostring(r.cap) .. (r.scope and (" per " .. r.scope) or
      " per intent"))) or (r.other_intent and ("also under intent " .. r.other_intent))
      or (r.first_line and ("first at line " .. tostring(r.first_line))) or ""
    out[#out + 1] = '<tr class="rejection">' .. cell(r.reason) .. cell(r.intent or "") .. cell(r.text or "", "text")
      .. cell(other, "text") .. cell(fmt_score(r.score), "n", r.score and (' data-v="' .. esc(r.score) .. '"') or "")
      .. cell(where(r), nil, r.line and (' data-v="' .. esc(where(r)) .. '"') or "") .. cell(why) .. "</tr>"
  end
  out[#out + 1] = "</tbody></table>"
end

local function pairs_of(out, list)
  local conflicts, similar = {}, {}
  for _, r in ipairs(list) do
    if r.reason == "conflict" then
      conflicts[#conflicts + 1] = r
    elseif (r.reason == "near" or r.reason == "semantic") and r.nearest then
      similar[#similar + 1] = r
    end
  end
  if #conflicts > 0 then
    out[#out + 1] = string.format("<h3>Conflicts (%d): the same text under two intents</h3>", #conflicts)
    out[#out + 1] = '<div class="pairs conflicts"><div class="h">this record</div><div class="h">the other intent</div>'
    for _, r in ipairs(conflicts) do
      out[#out + 1] = string.format('<div class="text">%s <span class="meta">(intent %s, %s)</span></div>'
        .. '<div class="text">%s <span class="meta">(intent %s)</span></div>', esc(r.text), esc(r.intent),
        esc(where(r)), esc(r.nearest or r.text), esc(r.other_intent or r.nearest_intent or "?"))
    end
    out[#out + 1] = "</div>"
  end
  if #similar > 0 then
    out[#out + 1] = string.format("<h3>Near and semantic duplicates (%d)</h3>", #similar)
    out[#out + 1] = '<div class="pairs similar"><div class="h">rejected</div><div class="h">too close to</div>'
    for _, r in ipairs(similar) do
      out[#out + 1] = string.format('<div class="text">%s <span class="meta">(intent %s, %s)</span></div>'
        .. '<div class="text">%s <span class="meta">(%s %s%s)</span></div>', esc(r.text), esc(r.intent),
        esc(where(r)), esc(r.nearest), esc(r.reason), esc(fmt_score(r.score)),
        r.nearest_intent and (", intent " .. esc(r.nearest_intent)) or "")
    end
    out[#out + 1] = "</div>"
  end
end

local function read_back(out, rows)
  if not rows or #rows == 0 then
    return
  end
  out[#out + 1] = "<h3>Read-back</h3><table class=\"readback\"><thead><tr><th>intent</th>"
    .. '<th class="n">sent</th><th class="n">platform holds</th><th>missing</th></tr></thead><tbody>'
  for _, r in ipairs(rows) do
    out[#out + 1] = string.format('<tr data-intent="%s">', esc(r.intent)) .. cell(r.intent) ..
      cell(r.sent, "n", ' data-k="sent"') .. cell(r.held, "n", ' data-k="held"') ..
      cell(table.concat(r.missing or {}, " | "), "text") .. "</tr>"
  end
  out[#out + 1] = "</tbody></table>"
end

local function changes(out, list)
  if not list or #list == 0 then
    return
  end
  out[#out + 1] = "<h3>Changes, per intent</h3>"
  for _, c in ipairs(list) do
    out[#out + 1] = string.format("<details><summary>%s: add %d, prune %d</summary>", esc(c.intent), #c.add, #c.prune)
    if #c.add > 0 then
      out[#out + 1] = '<ul class="add">'
      for _, text in ipairs(c.add) do
        out[#out + 1] = '<li class="text">+ ' .. esc(text) .. "</li>"
      end
      out[#out + 1] = "</ul>"
    end
    if #c.prune > 0 then
      out[#out + 1] = '<ul class="prune">'
      for _, p in ipairs(c.prune) do
        out[#out + 1] = '<li class="text">- ' .. esc(p.text) .. "</li>"
      end
      out[#out + 1] = "</ul>"
    end
    out[#out + 1] = "</details>"
  end
end

local function messages(out, t)
  if #t.errors + #t.notes == 0 then
    return
  end
  out[#out + 1] = '<ul class="msgs">'
  for _, e in ipairs(t.errors) do
    out[#out + 1] = '<li class="err">' .. esc(e) .. "</li>"
  end
  for _, n in ipairs(t.notes) do
    out[#out + 1] = "<li>" .. esc(n) .. "</li>"
  end
  out[#out + 1] = "</ul>"
end

-- The page for a summary (report.summary, as redacted for output);
-- rejections: per tenant the full list of rejections (the summary of a run
-- keeps the first 200), default the summary's.
-- The intents whose examples overlap (near or semantic matches across
-- intents), most pairs first, each with its closest pair.
local function overlap(out, t)
  local list = t.intent_overlap or {}
  if #list == 0 then
    return
  end
  out[#out + 1] = string.format("<h3>Intents that overlap (%d match(es) across intents)</h3>", t.ambiguous or 0)
  out[#out + 1] = '<table class="sortable overlap"><thead><tr><th data-sort="text">intents</th>'
    .. '<th class="n" data-sort="num">pairs</th><th class="n" data-sort="num">closest</th>'
    .. '<th data-sort="text">text</th><th data-sort="text">other text</th></tr></thead><tbody>'
  for _, o in ipairs(list) do
    local c = o.closest
    out[#out + 1] = '<tr class="overlap">' .. cell(o.intents[1] .. " / " .. o.intents[2])
      .. cell(o.pairs, "n", ' data-v="' .. esc(o.pairs) .. '"')
      .. cell(fmt_score(c.score), "n", ' data-v="' .. esc(c.score) .. '"')
      .. cell(string.format("%s (intent %s, %s)", c.text, c.intent, where(c)), "text")
      .. cell(string.format("%s (intent %s, %s)", c.other_text, c.other_intent,
        where({ file = c.other_file, line = c.other_line })), "text") .. "</tr>"
  end
  out[#out + 1] = "</tbody></table>"
end

function M.render(summary, rejections_of)
  local dry = summary.dry_run
  local nonce = (cp.audit.run_id():gsub("%-", ""))
  local out = {
    "<!DOCTYPE html>",
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    string.format('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
      .. "style-src 'unsafe-inline'; script-src 'nonce-%s'; img-src data:; base-uri 'none'; form-action 'none'\">",
      nonce),
    string.format("<title>cogpipe %s %s</title>", dry and "plan" or "run", esc(summary.run_id)),
    "<style>" .. CSS .. "</style></head><body>",
    string.format('<h1>%s of pipeline %s <span class="badge %s">%s</span></h1>', dry and "Plan" or "Run",
      esc(summary.pipeline), dry and "plan" or esc(summary.status),
      esc(dry and "plan, nothing sent" or summary.status)),
  }
  local audit = summary.audit
  out[#out + 1] = string.format('<p class="meta">run <code id="run-id">%s</code> · %s s%s</p>', esc(summary.run_id),
    esc(summary.duration_s),
    audit and string.format(' · audit <code>%s</code>, %s record(s), head <code id="audit-head">%s</code>',
      esc(audit.path), esc(audit.records), esc(audit.hash)) or "")
  for i, t in ipairs(summary.tenants) do
    out[#out + 1] = string.format('<section class="tenant" data-tenant="%s"><h2>Tenant %s '
      .. '<span class="badge %s">%s</span></h2>', esc(t.tenant), esc(t.tenant), esc(t.status), esc(t.status))
    totals(out, t, dry)
    messages(out, t)
    intents(out, t, dry)
    read_back(out, t.read_back)
    local list = rejections_of and rejections_of[i] or t.rejections or {}
    overlap(out, t)
    pairs_of(out, list)
    rejections(out, list)
    changes(out, t.changes)
    out[#out + 1] = "</section>"
  end
  out[#out + 1] = string.format('<script nonce="%s">%s</script></body></html>\n', nonce, SCRIPT)
  return table.concat(out, "\n")
end

-- Writes the page to path (atomically); true, or nil, err.
function M.write(path, summary, rejections_of)
  return cp.fs.write_atomic(path, M.render(summary, rejections_of))
end

return M
