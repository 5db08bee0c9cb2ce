// The dashboard's task types: each with its queue (and whether its executions are pinned to a
// host), paused or not, and a button that pauses or resumes it on every replica
// (POST /task-types/{type}/pause|resume). Uses app.js's helpers (h, api, every, guarded).
"use strict";

async function loadTaskTypes() {
  const plugins = await api("/plugins");
  const paused = new Set(plugins.paused);
  const rows = plugins.items.flatMap((p) =>
    p.task_types.map((type) => ({ type, queue: p.queue + (p.pin_to_host ? " · pinned to host" : "") })));
  // Paused task types that no plugin names (the default plugin's) are shown too, to be resumed.
  for (const type of plugins.paused) if (!rows.some((r) => r.type === type)) rows.push({ type, queue: "–" });
  document.querySelector("#task-types tbody").replaceChildren(...rows.map(({ type, queue }) => {
    const isPaused = paused.has(type);
    return h("tr", { "data-task-type": type, class: isPaused ? "paused" : null },
      h("td", {}, type, isPaused ? h("span", { class: "muted" }, " (paused)") : null),
      h("td", {}, queue),
      h("td", {}, h("button", { type: "button", onclick: () => guarded(() => togglePause(type, isPaused)) },
        isPaused ? "Resume" : "Pause")));
  }));
}

async function togglePause(type, isPaused) {
  await api(`/task-types/${encodeURIComponent(type)}/${isPaused ? "resume" : "pause"}`, { method: "POST" });
  await loadTaskTypes();
}

document.addEventListener("DOMContentLoaded", () => every(5000, loadTaskTypes));
