// The dashboard's schedules: each with its next and last slot, and the executions of its latest
// slots on a click. Uses app.js's helpers (h, api, when, every); values go in with textContent.
"use strict";

const scheduleState = { open: null };

function scheduleWhen(s) {
  return s.cron ? `${s.cron} (${s.timezone})` : `every ${s.every}s`;
}

function executionLink(id, text) {
  return id ? h("a", { href: `#/executions/${encodeURIComponent(id)}`, class: "mono" }, text || `…${id.slice(-8)}`) : "–";
}

async function loadSchedules() {
  const schedules = await api("/schedules");
  document.getElementById("schedules-section").hidden = schedules.items.length === 0;
  document.querySelector("#schedules tbody").replaceChildren(...schedules.items.map((s) =>
    h("tr", { "data-schedule": s.name },
      h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); openSchedule(s.name); } }, s.name),
        s.paused ? h("span", { class: "muted" }, " (paused)") : null),
      h("td", { title: scheduleWhen(s) }, s.next_slot ? when(s.next_slot) : "–"),
      h("td", {}, s.last_slot ? executionLink(s.last_execution_id, when(s.last_slot)) : "–"))));
  if (scheduleState.open) await openSchedule(scheduleState.open);
}

async function openSchedule(name) {
  scheduleState.open = name;
  const s = await api(`/schedules/${encodeURIComponent(name)}`);
  document.getElementById("schedule-slots").replaceChildren(
    h("p", {}, h("strong", {}, s.name), ` ${scheduleWhen(s)} · ${s.task_type} · misfire ${s.spec.misfire}`,
      ` · overlap ${s.spec.overlap} · label `, h("code", {}, s.label)),
    h("ul", { class: "slots" }, ...s.slots.map((slot) =>
      h("li", { "data-slot": slot.slot }, when(slot.slot), " ", executionLink(slot.execution_id)))));
}

document.addEventListener("DOMContentLoaded", () => every(5000, loadSchedules));
