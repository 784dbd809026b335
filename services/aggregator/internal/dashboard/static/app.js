// Understudy dashboard: reads the aggregator's read API (same origin) and plots champion vs
// candidate with uPlot (bundled, no CDN). Every chart element gets data-points = the number of
// non-null values plotted and data-x = the number of x values, which the browser test checks.
"use strict";

// Names and values from the API are data: they reach the page only through textContent and
// DOM properties (never as markup), and the Content-Security-Policy allows no inline script.

const $ = (s) => document.querySelector(s);
const params = new URLSearchParams(location.search);
// The API token lives in this closure only (not in sessionStorage, where any script on the
// origin could read it); a ?token= is taken and removed from the address bar.
let token = params.get("token") || "";
if (params.has("token")) {
  params.delete("token");
  history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
}

// h builds an element: h("td", {className: "x"}, "text", child, ...). Strings become text nodes.
function h(tag, props, ...children) {
  const el = Object.assign(document.createElement(tag), props || {});
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return el;
}
const charts = {};
let timer = null;

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  let res = await fetch(path, { headers });
  if (res.status === 401) {
    token = prompt("This Understudy API requires a token:") || "";
    res = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  }
  if (!res.ok) throw new Error(path + ": " + res.status);
  return res.json();
}

const fmt = (v, d = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const pct = (v, d = 1) => (v === null || v === undefined ? "–" : (100 * v).toFixed(d) + " %");
const get = (o, path) => path.split(".").reduce((a, k) => (a == null ? null : a[k]), o);

function setStatus(s) { $("#status").textContent = s; }

async function loadExperiments() {
  const { experiments } = await api("/api/v1/experiments");
  const sel = $("#experiment");
  const want = params.get("experiment") || sel.value;
  sel.replaceChildren();
  for (const e of experiments) {
    const o = document.createElement("option");
    o.value = o.textContent = e.name;
    sel.appendChild(o);
  }
  if (want && experiments.some((e) => e.name === want)) sel.value = want;
  const range = params.get("range");
  if (range && [...$("#range").options].some((o) => o.value === range)) $("#range").value = range;
  return experiments.length;
}

function card(k, v, n) {
  return h("div", { className: "card" }, h("div", { className: "k" }, k), h("div", { className: "v" }, v), h("div", { className: "n" }, n || ""));
}

// versionList names a side's model versions with their answers, most first.
function versionList(vs) {
  const names = Object.keys(vs || {}).sort((a, b) => vs[b] - vs[a] || a.localeCompare(b));
  if (names.length === 0) return "–";
  const label = (n) => (n === "" ? "unversioned" : n);
  return names.length === 1 ? label(names[0]) : names.map((n) => `${label(n)} (${vs[n]})`).join(", ");
}

function renderCards(rep) {
  const s = rep.stats, f = rep.noise_floor;
  const fl = (path, d) => (f ? "noise floor " + fmt(get(f, path), d) : "no noise baseline");
  const diff = s.labels.difference;
  $("#cards").replaceChildren(
    card("requests", s.requests, "coverage " + pct(s.coverage) + (s.paced == null ? "" : ", calls paced " + pct(s.paced))),
    card("PSI", fmt(s.predictions.psi), fl("predictions.psi")),
    card("KS", fmt(s.predictions.ks), fl("predictions.ks")),
    card("agreement", pct(s.predictions.agreement), f ? "noise floor " + pct(f.predictions.agreement) : ""),
    card("latency p99 (ms)", fmt(s.latency.shadow_ms.p99, 2) + " / " + fmt(s.latency.champion_ms.p99, 2), "ratio " + fmt(s.latency.ratio.p99, 2)),
    card("error rate", pct(s.shadow_errors.rate, 2), "champion " + pct(s.champion_errors.rate, 2)),
    card("model versions", versionList(s.versions.shadow), "champion " + versionList(s.versions.champion)),
    card(diff ? diff.metric + " Δ (shadow − champion)" : "labels", diff ? fmt(diff.value, 4) : s.labels.n + " labeled",
      diff ? `95 % CI at this look only (rules: anytime-valid) [${fmt(diff.ci_low, 4)}, ${fmt(diff.ci_high, 4)}], n=${diff.n}` : `shown from ${s.labels.min_labels}`),
  );
}

// est renders an estimate with its interval (valid at every look), or "threshold only".
function est(e) {
  if (!e) return "–";
  if (e.method === "threshold_only") return fmt(e.value, 4) + " (threshold only)";
  const b = (x, side) => (x === null || x === undefined ? side : fmt(x, 4));
  return `${fmt(e.value, 4)} [${b(e.low, "−∞")}, ${b(e.high, "+∞")}]`;
}

function renderVerdict(stats, shadow) {
  const v = (stats.verdicts || []).find((x) => x.shadow === shadow);
  const el = $("#verdict");
  const tone = { PASS: "good", FAIL: "bad", CONTINUE: "warn", INSTRUMENT_ERROR: "warn" };
  el.className = "verdict " + (v ? tone[v.status] || "" : "");
  el.replaceChildren();
  if (!v) return;
  const rep = (stats.shadows || []).find((x) => x.shadow === shadow);
  const lat = rep ? rep.stats.latency : null;
  el.append(h("div", {}, v.summary));
  const vs = rep ? Object.keys(rep.stats.versions.shadow || {}) : [];
  if (vs.length > 1) {
    el.append(h("div", { className: "note" }, `this range mixes ${vs.length} versions of ${shadow} (${versionList(rep.stats.versions.shadow)}): narrow it to one version to judge it`));
  }
  if (lat) {
    el.append(h("div", { className: "note" }, lat.like_for_like
      ? `latency compared with ${lat.reference.replace("noise_baseline:", "")} (a copy of the champion, timed like this shadow)`
      : "latency compared with the champion at the tap: not like for like (add a noise-baseline copy)"));
  }
  const rows = (v.rules || []).map((r) => h("tr", { className: tone[r.status] || "" },
    h("td", {}, r.rule), h("td", {}, r.status), h("td", {}, est(r.estimate)), h("td", {}, est(r.noise_floor)),
    h("td", {}, r.estimate ? String(r.estimate.samples) : "–"), h("td", {}, r.reason)));
  el.append(h("table", { className: "rules" },
    h("thead", {}, h("tr", {}, ...["rule", "status", "estimate [interval]", "noise floor", "n", "reason"].map((x) => h("th", {}, x)))),
    h("tbody", {}, ...rows)));
}

function makeChart(id, series, data, opts = {}) {
  const el = document.getElementById(id);
  let points = 0;
  data.slice(1).forEach((ys, i) => { if (!series[i].threshold) points += ys.filter((y) => y !== null && y !== undefined && !Number.isNaN(y)).length; });
  el.dataset.points = String(points);
  el.dataset.x = String(data[0].length);
  if (charts[id]) { charts[id].destroy(); delete charts[id]; }
  el.replaceChildren();
  if (data[0].length === 0 || points === 0) {
    el.append(h("div", { className: "empty" }, "no data in this range yet"));
    return;
  }
  if (typeof uPlot === "undefined") {
    el.append(h("div", { className: "empty" }, "charts unavailable: this binary was built without the charting library (build with `make build`)"));
    return;
  }
  const palette = ["#1f6feb", "#d1242f", "#8250df", "#1a7f37", "#bf8700", "#57606a"];
  const width = Math.max(320, el.clientWidth || 560);
  charts[id] = new uPlot({
    width, height: 240,
    scales: { x: { time: opts.time !== false } },
    axes: [{}, { size: 60 }],
    series: [{}].concat(series.map((s, i) => ({
      label: s.label, stroke: s.color || palette[i % palette.length], width: s.threshold ? 1 : 2,
      dash: s.threshold ? [6, 4] : s.dash, spanGaps: true, points: { show: false },
      paths: s.steps ? uPlot.paths.stepped({ align: 1 }) : undefined,
    }))),
  }, data, el);
  // A click on a time chart opens the examples of the window under the pointer.
  if (opts.onPick) {
    const u = charts[id];
    u.over.style.cursor = "pointer";
    u.over.addEventListener("click", (ev) => {
      const i = u.posToIdx(ev.offsetX);
      if (i != null && i >= 0 && i < data[0].length) opts.onPick(data[0][i]);
    });
  }
}

// byStart turns a shadow's series points into a map start → stats.
function byStart(points, shadow) {
  const m = new Map();
  for (const p of points) if (p.shadow === shadow) m.set(Date.parse(p.start) / 1000, p.stats);
  return m;
}

// seconds parses a Go duration such as "1m0s" or "2s".
function seconds(d) {
  let s = 0;
  for (const [, n, u] of String(d).matchAll(/([0-9.]+)(h|m|s)/g)) s += Number(n) * { h: 3600, m: 60, s: 1 }[u];
  return s || 60;
}

function renderSeries(series, candidate, baseline) {
  const pick = { onPick: (x) => showExamples(x, seconds(series.width)) };
  const c = byStart(series.points, candidate), b = baseline ? byStart(series.points, baseline) : new Map();
  const xs = [...new Set([...c.keys(), ...b.keys()])].sort((a, z) => a - z);
  const col = (m, path) => xs.map((x) => { const s = m.get(x); const v = s ? get(s, path) : null; return v === undefined ? null : v; });
  const konst = (v) => xs.map(() => v);
  makeChart("chart-latency", [
    { label: "champion p50" }, { label: "champion p99", dash: [2, 2] },
    { label: candidate + " p50" }, { label: candidate + " p99", dash: [2, 2] },
  ], [xs, col(c, "latency.champion_ms.p50"), col(c, "latency.champion_ms.p99"), col(c, "latency.shadow_ms.p50"), col(c, "latency.shadow_ms.p99")], pick);
  makeChart("chart-drift", [
    { label: candidate + " PSI" }, { label: candidate + " KS" },
    { label: "noise floor PSI (" + (baseline || "none") + ")", color: "#57606a" },
    { label: "PSI warning 0.1", threshold: true, color: "#bf8700" }, { label: "PSI critical 0.2", threshold: true, color: "#d1242f" },
  ], [xs, col(c, "predictions.psi"), col(c, "predictions.ks"), col(b, "predictions.psi"), konst(0.1), konst(0.2)], pick);
  makeChart("chart-errors", [{ label: "champion" }, { label: candidate }],
    [xs, col(c, "champion_errors.rate"), col(c, "shadow_errors.rate")], pick);
  makeChart("chart-agreement", [{ label: candidate }, { label: "noise floor (" + (baseline || "none") + ")", color: "#57606a" }],
    [xs, col(c, "predictions.agreement"), col(b, "predictions.agreement")], pick);
  makeChart("chart-accuracy", [{ label: "champion" }, { label: candidate }],
    [xs, col(c, "labels.champion.accuracy"), col(c, "labels.shadow.accuracy")], pick);
}

function renderDistribution(d, candidate) {
  if (d.kind === "class") {
    const xs = d.classes.map((_, i) => i);
    makeChart("chart-distribution", [{ label: "champion", steps: true }, { label: candidate, steps: true }],
      [xs, d.champion_shares, d.shadow_shares], { time: false });
    return;
  }
  makeChart("chart-distribution", [{ label: "champion", steps: true }, { label: candidate, steps: true }],
    [d.edges || [], d.champion_shares || [], d.shadow_shares || []], { time: false });
}

// withInterval is a transition's value with the rule's interval when the row has one.
function withInterval(t) {
  const iv = t.interval || {};
  if (iv.low == null && iv.high == null) return fmt(t.value, 4);
  return est({ value: t.value, low: iv.low, high: iv.high });
}

function renderAlerts(transitions) {
  const rows = transitions.slice(-50).reverse().map((t) => h("tr", null,
    h("td", null, new Date(t.at).toLocaleString()), h("td", null, t.shadow), h("td", null, t.rule), h("td", null, t.severity),
    h("td", { className: String(t.to), title: t.reason || "" }, `${t.from} → ${t.to}`), h("td", null, withInterval(t)), h("td", null, fmt(t.noise_floor, 4)),
    h("td", null, t.threshold), h("td", null, t.samples)));
  if (rows.length === 0) rows.push(h("tr", null, h("td", { colSpan: 9 }, "no transitions yet")));
  $("#alerts tbody").replaceChildren(...rows);
}

// answer is one model's answer as a line: prediction (status, latency) and its error.
function answer(a) {
  const v = a.prediction === null || a.prediction === undefined ? "–" : JSON.stringify(a.prediction);
  const err = a.error ? ` ${a.error.kind}: ${a.error.message || ""}` : "";
  return `${v} (${a.status}, ${fmt(a.latency_ms, 1)} ms)${err}`;
}

function bodyText(b) {
  const s = b.base64 ? "base64:" + b.base64 : (b.text || "");
  return (s || "(no body kept)") + (b.truncated ? " …(truncated)" : "");
}

// showExamples lists the examples of the windows in [start, start + width) (seconds): one row per
// example, and the request with both answers' bodies side by side when a row is opened.
async function showExamples(start, width) {
  const exp = $("#experiment").value, shadow = $("#shadow").value;
  const from = new Date(start * 1000).toISOString(), to = new Date((start + width) * 1000).toISOString();
  const el = $("#examples");
  el.dataset.count = "";
  $("#examples-title").textContent = `Examples of ${shadow}, ${new Date(start * 1000).toLocaleString()} + ${width} s`;
  try {
    const res = await api(`/api/v1/experiments/${encodeURIComponent(exp)}/examples?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}&shadow=${encodeURIComponent(shadow)}&limit=60`);
    const rows = res.examples.map((x) => h("details", { className: "example" },
      h("summary", {}, h("span", { className: "kind" }, x.kind), ` ${x.request_id} · score ${fmt(x.score, 4)} · champion ${answer(x.champion)} · ${shadow} ${answer(x.shadow_answer)}`),
      h("div", { className: "sides" },
        h("figure", {}, h("figcaption", {}, "request"), h("pre", {}, bodyText(x.request))),
        h("figure", {}, h("figcaption", {}, "champion " + x.champion.model + " " + (x.champion.version || "")), h("pre", {}, bodyText(x.champion.body))),
        h("figure", {}, h("figcaption", {}, shadow + " " + (x.shadow_answer.version || "")), h("pre", {}, bodyText(x.shadow_answer.body))))));
    if (rows.length === 0) rows.push(h("p", { className: "empty" }, "no examples kept for this window"));
    $("#examples-body").replaceChildren(...rows);
    el.dataset.count = String(res.examples.length);
  } catch (err) {
    $("#examples-body").replaceChildren(h("p", { className: "empty" }, "error: " + err.message));
    el.dataset.count = "error";
  }
}

// renderSegments fills the segment ranking of the selected shadow (GET .../segments).
function renderSegments(seg, shadow) {
  const sel = $("#segment-key");
  const keep = sel.value;
  sel.replaceChildren(...(seg.keys || []).map((k) => h("option", { value: k }, k)));
  if ((seg.keys || []).includes(keep)) sel.value = keep; else sel.value = seg.key || "";
  const r = (seg.shadows || []).find((x) => x.shadow === shadow);
  const rows = r ? r.rows.map((x, i) => h("tr", { className: x.differs ? "bad" : "" },
    h("td", {}, String(i + 1)), h("td", {}, x.value), h("td", {}, String(x.requests)), h("td", {}, fmt(100 * x.share, 1) + " %"),
    h("td", {}, est(x.metric)), h("td", {}, est(x.contribution)), h("td", {}, est(x.floor)),
    h("td", {}, x.stats.predictions.agreement === null || x.stats.predictions.agreement === undefined ? "–" : fmt(1 - x.stats.predictions.agreement, 4)))) : [];
  if (rows.length === 0) rows.push(h("tr", {}, h("td", { colSpan: 8, className: "empty" }, seg.keys && seg.keys.length ? "no segment windows for this shadow" : "no segment keys declared (segments.keys in the experiments file)")));
  $("#segment-ranking tbody").replaceChildren(...rows);
  $("#segments").dataset.rows = r ? String(r.rows.length) : "0";
  $("#segments").dataset.first = r && r.rows.length ? r.rows[0].value : "";
}

async function refresh() {
  const exp = $("#experiment").value;
  if (!exp) { setStatus("no experiments yet"); return; }
  const range = $("#range").value;
  const q = "from=" + encodeURIComponent(range);
  const e = encodeURIComponent(exp);
  try {
    const key = $("#segment-key").value;
    const [stats, series, hist, seg] = await Promise.all([
      api(`/api/v1/experiments/${e}/stats?${q}`),
      api(`/api/v1/experiments/${e}/windows?${q}&min_labels=20`),
      api(`/api/v1/alerts/history?experiment=${e}`),
      api(`/api/v1/experiments/${e}/segments?${q}&metric=psi${key ? "&key=" + encodeURIComponent(key) : ""}`),
    ]);
    const candidates = stats.shadows.filter((s) => s.role !== "noise_baseline");
    const sel = $("#shadow");
    const keep = sel.value;
    sel.replaceChildren(...candidates.map((s) => h("option", { value: s.shadow }, s.shadow)));
    if (candidates.some((s) => s.shadow === keep)) sel.value = keep;
    const rep = candidates.find((s) => s.shadow === sel.value);
    if (!rep) { setStatus("no candidate shadow in this range"); return; }
    const dist = await api(`/api/v1/experiments/${e}/distribution?${q}&shadow=${encodeURIComponent(rep.shadow)}`);
    renderVerdict(stats, rep.shadow);
    renderCards(rep);
    renderSeries(series, rep.shadow, rep.noise_baseline);
    renderDistribution(dist, rep.shadow);
    renderAlerts(hist.transitions);
    renderSegments(seg, rep.shadow);
    document.body.dataset.loaded = "true";
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (err) {
    setStatus("error: " + err.message);
  }
}

async function main() {
  try {
    if ((await loadExperiments()) === 0) { setStatus("no experiments yet"); }
  } catch (err) { setStatus("error: " + err.message); return; }
  for (const id of ["#experiment", "#shadow", "#range", "#segment-key"]) $(id).addEventListener("change", refresh);
  await refresh();
  timer = setInterval(async () => { await loadExperiments(); await refresh(); }, 10000);
}

main();
