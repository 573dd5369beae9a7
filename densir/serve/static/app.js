// densir search page: POST /search, render hits (title, snippet with the query terms marked, score,
// the rank the first stage gave each re-ranked hit) and the latency of each stage. No dependencies.
"use strict";
const $ = (id) => document.getElementById(id);
const STOP = new Set("a an and are as at be by do does for from has have how in is it of on or that the this to was were what when where which who why with".split(" "));
const SNIPPET = 260;

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function queryTerms(query) {
  const terms = (query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((t) => t.length > 1 && !STOP.has(t));
  return [...new Set(terms)].sort((a, b) => b.length - a.length);
}

function termRegex(terms) {
  if (!terms.length) return null;
  const alt = terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|");
  return new RegExp(`(?<![\\p{L}\\p{N}])(${alt})[\\p{L}\\p{N}]*`, "giu");  // a term and the rest of its word
}

// a window of the text around its first query term, the terms marked (text escaped first)
function snippet(text, re) {
  text = (text || "").replace(/\s+/g, " ").trim();
  let start = 0;
  if (re) {
    re.lastIndex = 0;
    const m = re.exec(text);
    if (m && m.index > SNIPPET / 3) start = text.lastIndexOf(" ", m.index - SNIPPET / 4) + 1;
  }
  let cut = text.slice(start, start + SNIPPET);
  if (start + SNIPPET < text.length) cut = cut.slice(0, cut.lastIndexOf(" ") > 0 ? cut.lastIndexOf(" ") : cut.length) + " …";
  if (start > 0) cut = "… " + cut;
  if (!re) return escapeHtml(cut);
  let out = "", last = 0;
  re.lastIndex = 0;
  for (const m of cut.matchAll(re)) {
    out += escapeHtml(cut.slice(last, m.index)) + "<mark>" + escapeHtml(m[0]) + "</mark>";
    last = m.index + m[0].length;
  }
  return out + escapeHtml(cut.slice(last));
}

function movement(hit, reranked) {
  if (!reranked || hit.first_rank == null) return "";
  const d = hit.first_rank - hit.rank;
  if (d > 0) return `<span class="move up" title="first stage rank ${hit.first_rank}">▲ ${d} (was ${hit.first_rank})</span>`;
  if (d < 0) return `<span class="move down" title="first stage rank ${hit.first_rank}">▼ ${-d} (was ${hit.first_rank})</span>`;
  return `<span class="move same" title="first stage rank ${hit.first_rank}">= ${hit.first_rank}</span>`;
}

function render(body, query) {
  const re = termRegex(queryTerms(query));
  const reranked = body.rerank_depth > 0;
  $("hits").innerHTML = body.hits.map((h) => `
    <li class="hit" data-docid="${escapeHtml(h.docid)}">
      <div class="rank">${h.rank}</div>
      <div class="title">${escapeHtml(h.title || "(untitled)")}<span class="docid">${escapeHtml(h.docid)}</span></div>
      <div class="meta"><span class="score">${h.score.toFixed(4)}</span><br>${movement(h, reranked)}</div>
      <div class="snippet">${snippet(h.text, re)}</div>
    </li>`).join("");
  const t = body.timings_ms;
  const stages = [["queue", t.queue], ["encode", t.encode], ["first stage", t.first_stage]];
  if (reranked) stages.push(["re-rank", t.rerank]);
  stages.push(["texts", t.texts], ["server total", t.batch + (t.queue || 0)], ["round trip", body.round_trip_ms]);
  $("timings").innerHTML = stages.filter(([, v]) => v != null)
    .map(([n, v]) => `<span class="stage" data-stage="${n}">${n} ${v.toFixed(1)} ms</span>`).join("");
}

async function search(ev) {
  if (ev) ev.preventDefault();
  const query = $("q").value.trim();
  if (!query) return;
  const req = { query, k: +$("k").value || 10, hybrid: $("hybrid").checked };
  req.rerank_depth = $("rerank").checked && !$("rerank").disabled ? Math.max(+$("depth").value || 100, req.k) : 0;
  const headers = { "Content-Type": "application/json" };
  if ($("key").value) headers["Authorization"] = "Bearer " + $("key").value;
  $("status").className = "";
  $("status").textContent = "searching…";
  const t0 = performance.now();
  try {
    const res = await fetch("/search", { method: "POST", headers, body: JSON.stringify(req) });
    const body = await res.json();
    if (!res.ok) {
      if (res.status === 401) $("key").hidden = false;
      throw new Error(body.error || res.statusText);
    }
    body.round_trip_ms = performance.now() - t0;
    render(body, query);
    $("status").textContent = `${body.hits.length} hits for “${query}”` +
      (req.rerank_depth ? `, re-ranked from the first stage's top ${req.rerank_depth}` : "") + (req.hybrid ? ", hybrid" : "");
  } catch (e) {
    $("status").className = "error";
    $("status").textContent = "error: " + e.message;
  }
}

async function init() {
  $("search-form").addEventListener("submit", search);
  try {
    const h = await (await fetch("/health")).json();
    if (!h.reranker) { $("rerank").checked = false; $("rerank").disabled = true; }
    if (!h.bm25) $("hybrid").disabled = true;
    $("status").textContent = h.status === "ready" ? `${h.passages} passages` : h.status;
  } catch (e) { /* the search itself reports errors */ }
}
init();
