// The dashboard's failures: executions that ended PERMANENT_FAILURE or ABORTED, counted per error
// code (GET /failures). A click on a code, or text in "reason contains", filters the list below;
// "Retry" requeues what the filter matches (POST /retries). Uses app.js's helpers (h, api, when,
// every, setStatus, executionLink from schedules.js); values go in with textContent.
"use strict";

const failureState = { code: null, phase: null, reason: "" };

function failureFilter() {
  const filter = {};
  if (failureState.code !== null) filter.error_code = failureState.code;
  if (failureState.phase) filter.phases = [failureState.phase];
  if (failureState.reason) filter.reason = failureState.reason;
  return filter;
}

async function loadFailures() {
  const all = await api("/failures?limit=1");
  document.getElementById("failures-section").hidden = all.counts.length === 0;
  document.querySelector("#failure-counts tbody").replaceChildren(...all.counts.map((c) => {
    const chosen = failureState.code === c.error_code && failureState.phase === c.phase;
    return h("tr", { "data-error-code": c.error_code || "", "data-phase": c.phase, class: chosen ? "chosen" : null },
      h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); chooseFailure(c, chosen); } },
        c.error_code || "(no code)")),
      h("td", {}, badge(c.phase)),
      h("td", {}, c.count));
  }));
  const params = new URLSearchParams({ limit: "20" });
  const filter = failureFilter();
  if (filter.error_code) params.set("error_code", filter.error_code);
  if (filter.phases) params.set("phase", filter.phases[0]);
  if (filter.reason) params.set("reason", filter.reason);
  const found = await api(`/failures?${params}`);
  const total = found.counts.reduce((sum, c) => sum + (failureState.code === null || c.error_code === failureState.code ? c.count : 0), 0);
  document.getElementById("failure-items").replaceChildren(...found.items.map((e) =>
    h("li", { "data-id": e.id }, executionLink(e.id), ` ${e.task_type} · ${when(e.finished_at)} · `, e.reason || "")));
  const button = document.getElementById("retry-failures");
  button.hidden = total === 0 || (failureState.phase === null && !failureState.reason);
  button.textContent = `Retry these ${total}`;
}

function chooseFailure(count, chosen) {
  failureState.code = chosen ? null : count.error_code;
  failureState.phase = chosen ? null : count.phase;
  guarded(loadFailures);
}

async function retryFailures() {
  const body = { ...failureFilter(), by: "the dashboard" };
  if (body.error_code === null) delete body.error_code;
  try {
    const done = await api("/retries", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    setStatus(`requeued ${done.requeued} of ${done.matched}`);
    failureState.code = null; failureState.phase = null;
    await loadFailures();
  } catch (err) {
    setStatus(`retry failed: ${err.message}`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("failure-filter").addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("failure-reason").addEventListener("change", (e) => {
    failureState.reason = e.target.value.trim();
    guarded(loadFailures);
  });
  document.getElementById("retry-failures").addEventListener("click", retryFailures);
  every(5000, loadFailures);
});
