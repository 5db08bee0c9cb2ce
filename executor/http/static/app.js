// The executor dashboard: a static page over /api/v1. No framework, no build step, no network
// but this server. Every value from the API is put in the page with textContent, never as HTML.
"use strict";

const API = "/api/v1";
const FINAL = new Set(["SUCCESS", "PERMANENT_FAILURE", "ABORTED"]);
const OUTCOME_COLOURS = { SUCCESS: "var(--success)", PERMANENT_FAILURE: "var(--failure)", ABORTED: "var(--aborted)" };
const PAGE = 50;

const state = { phase: "", taskType: "", items: [], cursor: null, view: "list", detailId: null, phases: [] };

// -- helpers ----------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function badge(phase) {
  return h("span", { class: `phase-badge phase-${phase}` }, phase);
}

function when(iso) {
  // Today's times as HH:MM:SS, older ones with their date; the full timestamp is the tooltip.
  if (!iso) return "–";
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

function clock(iso) {
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function lasted(fromIso, toIso) {
  const seconds = (new Date(toIso) - new Date(fromIso)) / 1000;
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function setStatus(text, isError) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("error-box", Boolean(isError));
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = localStorage.getItem("executor.token");
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(API + path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new ApiError(401, body);
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// -- the executions table ---------------------------------------------------------------------

function listQuery(cursor, limit) {
  const params = new URLSearchParams();
  if (state.phase) params.set("phase", state.phase);
  if (state.taskType) params.set("task_type", state.taskType);
  params.set("limit", String(limit));
  if (cursor) params.set("cursor", cursor);
  return `/executions?${params}`;
}

async function loadExecutions({ append = false } = {}) {
  // A refresh reloads as many rows as are shown, so new rows appear and phases move in place.
  const limit = append ? PAGE : Math.max(PAGE, Math.min(state.items.length, 500));
  const page = await api(listQuery(append ? state.cursor : null, limit));
  state.items = append ? state.items.concat(page.items) : page.items;
  state.cursor = page.next_cursor;
  renderExecutions();
}

function renderExecutions() {
  const body = document.querySelector("#executions tbody");
  body.replaceChildren(...state.items.map((e) =>
    h("tr", { "data-id": e.id, "data-phase": e.phase, onclick: () => { location.hash = `#/executions/${e.id}`; } },
      h("td", { class: "id" }, h("a", { href: `#/executions/${e.id}` }, e.id)),
      h("td", { class: "task-type" }, e.task_type),
      h("td", { class: "phase" }, badge(e.phase), e.phase_version ? h("span", { class: "muted" }, ` v${e.phase_version}`) : null),
      h("td", {}, `${e.attempt}/${e.max_attempts}`),
      h("td", { title: e.created_at }, when(e.created_at)),
      h("td", { title: e.updated_at }, when(e.updated_at)),
      h("td", { class: "reason", title: e.reason || "" }, e.reason || ""),
    )));
  document.getElementById("empty").hidden = state.items.length > 0;
  document.getElementById("more").hidden = !state.cursor;
}

// -- one execution and its timeline -----------------------------------------------------------

function field(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}

function json(value) {
  return h("pre", { class: "mono" }, JSON.stringify(value, null, 2));
}

async function loadExecution(id) {
  let execution, events;
  try {
    [execution, events] = await Promise.all([api(`/executions/${encodeURIComponent(id)}`),
      api(`/executions/${encodeURIComponent(id)}/events`)]);
  } catch (err) {
    if (err.status === 404) {
      document.getElementById("execution").replaceChildren(
        h("p", { class: "error-box", id: "not-found" }, `No execution with id ${id}.`));
      document.getElementById("timeline").replaceChildren();
      return;
    }
    throw err;
  }
  if (state.detailId !== id) return; // navigated away meanwhile
  const container = document.getElementById("execution");
  container.setAttribute("data-id", execution.id);
  container.setAttribute("data-phase", execution.phase);
  const error = execution.error ? `${execution.error.code} (${execution.error.kind}): ${execution.error.message}` : null;
  const abortable = !FINAL.has(execution.phase) && !execution.abort_requested;
  const retryable = (execution.phase === "PERMANENT_FAILURE" || execution.phase === "ABORTED") && execution.finalized;
  container.replaceChildren(...[
    h("h2", { class: "mono" }, execution.id),
    abortable ? h("div", { class: "actions" },
      h("button", { type: "button", id: "abort", onclick: () => abort(execution.id) }, "Abort")) : null,
    retryable ? h("div", { class: "actions" },
      h("button", { type: "button", id: "retry", onclick: () => retry(execution.id) }, "Retry")) : null,
    h("dl", {},
      field("task type", execution.task_type),
      field("phase", [badge(execution.phase), ` v${execution.phase_version}`]),
      field("reason", execution.reason || "–"),
      error ? field("error", h("span", { class: "error-box" }, error)) : null,
      field("attempt", `${execution.attempt} of ${execution.max_attempts}`),
      field("system failures", execution.system_failures),
      field("rounds", execution.rounds),
      field("created", when(execution.created_at)),
      field("finished", when(execution.finished_at)),
      field("finalized", execution.finalized ? "yes" : "no"),
      field("labels", json(execution.labels)),
      field("inputs", json(execution.inputs)),
      field("outputs", execution.outputs === null ? "–" : json(execution.outputs)),
      logLinks(events.items),
    ),
    h("pre", { class: "mono log", id: "log", hidden: true }),
  ].filter(Boolean));
  renderTimeline(events.items);
}

// The TaskLogs the plugin reported (the latest of each name). One of this API (a shell command's
// output) is fetched with the token and shown in place; another (a Ray dashboard) opens as a link.
// Only http(s) and this server's paths are linked: a plugin's URI is never run as script.
function logLinks(events) {
  const byName = new Map();
  for (const event of events) {
    for (const log of (event.info && event.info.logs) || []) byName.set(log.name, log.uri);
  }
  const links = [...byName.entries()].filter(([, uri]) => /^(https?:\/\/|\/)/.test(uri)).map(([name, uri]) =>
    uri.startsWith(API + "/")
      ? h("a", { href: uri, class: "log-link", "data-uri": uri, onclick: (e) => { e.preventDefault(); showLog(uri); } }, name)
      : h("a", { href: uri, class: "log-link", target: "_blank", rel: "noopener noreferrer" }, name));
  return links.length ? field("logs", links.flatMap((link, i) => (i ? [" · ", link] : [link]))) : null;
}

async function showLog(uri) {
  const pre = document.getElementById("log");
  const headers = {};
  const token = localStorage.getItem("executor.token");
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${uri}?offset=-65536`, { headers });
  pre.textContent = response.ok ? await response.text() : `log unavailable: HTTP ${response.status}`;
  pre.hidden = false;
}

function renderTimeline(events) {
  const byAttempt = new Map();
  events.forEach((event, index) => {
    if (!byAttempt.has(event.attempt)) byAttempt.set(event.attempt, []);
    byAttempt.get(event.attempt).push({ event, next: events[index + 1] });
  });
  const sections = [...byAttempt.entries()].map(([attempt, entries]) =>
    h("section", { class: "attempt", "data-attempt": attempt },
      h("h3", {}, `Attempt ${attempt}`),
      h("ol", { class: "timeline" }, entries.map(({ event, next }) =>
        h("li", { "data-phase": event.phase, class: FINAL.has(event.phase) ? "final" : null },
          badge(event.phase), ` v${event.phase_version}`,
          h("span", { class: "when" }, clock(event.occurred_at)),
          next ? h("span", { class: "when" }, `· ${lasted(event.occurred_at, next.occurred_at)}`) : null,
          event.reason ? h("div", { class: "detail" }, event.reason) : null,
          event.error ? h("div", { class: "error" }, `${event.error.code}: ${event.error.message}`) : null,
        )))));
  document.getElementById("timeline").replaceChildren(...sections);
}

async function abort(id) {
  try {
    await api(`/executions/${encodeURIComponent(id)}/abort`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason: "Aborted from the dashboard" }),
    });
    await loadExecution(id);
  } catch (err) {
    setStatus(`abort failed: ${err.message}`, true);
  }
}

async function retry(id) {
  // A new attempt of the same execution (POST /executions/{id}/retry); the event says who asked.
  try {
    await api(`/executions/${encodeURIComponent(id)}/retry`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ by: "the dashboard" }),
    });
    await loadExecution(id);
  } catch (err) {
    setStatus(`retry failed: ${err.message}`, true);
  }
}

// -- the side panels --------------------------------------------------------------------------

async function loadCounts() {
  const stats = await api("/stats/phases");
  const list = document.getElementById("phase-counts");
  list.replaceChildren(...Object.entries(stats.counts).filter(([, n]) => n > 0)
    .map(([phase, n]) => h("li", { "data-phase": phase }, `${phase} `, h("b", {}, n))));
  if (!state.phases.length) {
    state.phases = Object.keys(stats.counts);
    const select = document.getElementById("filter-phase");
    select.append(...state.phases.map((p) => h("option", { value: p }, p)));
  }
}

async function loadPlugins() {
  const plugins = await api("/plugins");
  document.querySelector("#plugins tbody").replaceChildren(...plugins.items.map((p) =>
    h("tr", { "data-plugin": p.id }, h("td", {}, p.id, p.is_default ? h("span", { class: "muted" }, " (default)") : null),
      h("td", {}, p.task_types.join(", ") || "–"))));
  const select = document.getElementById("filter-task-type");
  const current = select.value;
  select.replaceChildren(h("option", { value: "" }, "all"), ...plugins.task_types.map((t) => h("option", { value: t }, t)));
  select.value = current;
}

async function loadReplicas() {
  const replicas = await api("/replicas");
  document.querySelector("#replicas tbody").replaceChildren(...replicas.items.map((r) =>
    h("tr", { "data-replica": r.id },
      h("td", { class: "mono" }, r.id, r.this ? h("span", { class: "muted" }, " (this one)") : null),
      h("td", {}, r.executions_leased),
      h("td", {}, r.live === null ? h("span", { class: "muted" }, "no heartbeat; holds leases")
        : when(r.last_round_at)))));
}

async function loadChart() {
  const stats = await api("/stats/finished?minutes=30");
  const width = 300, height = 120, gap = 1;
  const bar = width / stats.minutes.length;
  const top = Math.max(1, ...stats.minutes.map((m) => stats.outcomes.reduce((sum, o) => sum + m[o], 0)));
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 14}`);
  svg.setAttribute("preserveAspectRatio", "none");
  stats.minutes.forEach((minute, index) => {
    let y = height;
    for (const outcome of stats.outcomes) {
      const count = minute[outcome];
      if (!count) continue;
      const barHeight = (count / top) * height;
      y -= barHeight;
      const rect = document.createElementNS(svgNS, "rect");
      rect.setAttribute("x", String(index * bar + gap / 2));
      rect.setAttribute("y", String(y));
      rect.setAttribute("width", String(Math.max(bar - gap, 1)));
      rect.setAttribute("height", String(barHeight));
      rect.setAttribute("fill", OUTCOME_COLOURS[outcome]);
      rect.setAttribute("data-outcome", outcome);
      const title = document.createElementNS(svgNS, "title");
      title.textContent = `${clock(minute.minute).slice(0, 5)}: ${count} ${outcome}`;
      rect.append(title);
      svg.append(rect);
    }
  });
  const baseline = document.createElementNS(svgNS, "line");
  for (const [key, value] of [["x1", 0], ["x2", width], ["y1", height + 0.5], ["y2", height + 0.5]]) {
    baseline.setAttribute(key, String(value));
  }
  baseline.setAttribute("stroke", "#c9ccd1");
  svg.append(baseline);
  const axis = document.createElementNS(svgNS, "text");
  axis.setAttribute("x", "0");
  axis.setAttribute("y", String(height + 12));
  axis.setAttribute("font-size", "9");
  axis.setAttribute("fill", "#6b7078");
  axis.textContent = `last ${stats.minutes.length} min · peak ${top}/min`;
  svg.append(axis);
  document.getElementById("chart").replaceChildren(svg);
  document.getElementById("chart-legend").replaceChildren(...stats.outcomes.map((o) =>
    h("li", {}, h("i", { style: `background:${OUTCOME_COLOURS[o]}` }), o)));
}

// -- routing and refresh ----------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/executions\/(.+)$/);
  state.view = match ? "execution" : "list";
  state.detailId = match ? decodeURIComponent(match[1]) : null;
  document.getElementById("list-view").hidden = state.view !== "list";
  document.getElementById("execution-view").hidden = state.view !== "execution";
  if (state.view === "execution") {
    document.getElementById("execution").replaceChildren(h("p", { class: "muted" }, "Loading…"));
    document.getElementById("timeline").replaceChildren();
  }
  refreshMain();
}

async function guarded(task) {
  try {
    await task();
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    setStatus(err.status === 401 ? "token needed" : `error: ${err.message}`, true);
  }
}

function refreshMain() {
  return guarded(() => (state.view === "list" ? loadExecutions() : loadExecution(state.detailId)));
}

function every(ms, task) {
  guarded(task);
  setInterval(() => { if (!document.hidden) guarded(task); }, ms);
}

function start() {
  document.getElementById("filter-phase").addEventListener("change", (e) => {
    state.phase = e.target.value; state.items = []; refreshMain();
  });
  document.getElementById("filter-task-type").addEventListener("change", (e) => {
    state.taskType = e.target.value; state.items = []; refreshMain();
  });
  document.getElementById("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = document.getElementById("search").value.trim();
    if (id) location.hash = `#/executions/${encodeURIComponent(id)}`;
  });
  document.getElementById("search").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); document.getElementById("filters").requestSubmit(); }
  });
  document.getElementById("more").addEventListener("click", () => guarded(() => loadExecutions({ append: true })));
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem("executor.token", document.getElementById("token").value);
    document.getElementById("token-form").hidden = true;
    location.reload();
  });
  window.addEventListener("hashchange", route);
  route();
  setInterval(() => { if (!document.hidden) refreshMain(); }, 1000);
  every(2000, loadCounts);
  every(5000, loadReplicas);
  every(10000, loadChart);
  every(30000, loadPlugins);
}

document.addEventListener("DOMContentLoaded", start);
