"use strict";
// Filters (status checkboxes, family, search), expandable host details and sorting. The filter
// state is kept in the URL fragment, e.g. report.html#status=drifted,error&family=debian&q=web
// (open=all or open=HOST opens host details; changed=1: only hosts changed since the previous report).
const table = document.getElementById("hosts");
const body = table.tBodies[0];
const hostRows = () => [...body.querySelectorAll("tr[data-status]")];
const boxes = [...document.querySelectorAll("input[name=status]")];
const family = document.getElementById("family");
const search = document.getElementById("search");
const changed = document.getElementById("changed");  // only when compared with a previous report
document.getElementById("filters").addEventListener("submit", e => e.preventDefault());

function detailsOf(row) { return document.getElementById(row.id.replace(/^h/, "d")); }

function apply() {
  const statuses = new Set(boxes.filter(b => b.checked).map(b => b.value));
  const fam = family.value;
  const words = search.value.toLowerCase().split(/\s+/).filter(w => w);
  let shown = 0;
  for (const row of hostRows()) {
    const visible = statuses.has(row.dataset.status) && (fam === "*" || row.dataset.family === fam) &&
      words.every(w => row.dataset.search.includes(w)) && !(changed && changed.checked && !row.dataset.changed);
    row.hidden = !visible;
    const open = row.querySelector("button.toggle").getAttribute("aria-expanded") === "true";
    detailsOf(row).hidden = !(visible && open);
    if (visible) shown++;
  }
  document.getElementById("shown").textContent = `${shown} of ${hostRows().length} hosts shown`;
  const state = new URLSearchParams();
  if (statuses.size !== boxes.length) state.set("status", [...statuses].join(","));
  if (fam !== "*") state.set("family", fam);
  if (search.value) state.set("q", search.value);
  if (changed && changed.checked) state.set("changed", "1");
  history.replaceState(null, "", state.toString() ? "#" + state.toString() : location.pathname);
}

function toggle(row, open) {
  const button = row.querySelector("button.toggle");
  button.setAttribute("aria-expanded", String(open));
  detailsOf(row).hidden = !(open && !row.hidden);
}

function load() {
  const state = new URLSearchParams(location.hash.slice(1));
  if (state.has("status")) {
    const wanted = new Set(state.get("status").split(","));
    boxes.forEach(b => { b.checked = wanted.has(b.value); });
  }
  if (state.has("family") && [...family.options].some(o => o.value === state.get("family"))) {
    family.value = state.get("family");
  }
  search.value = state.get("q") || "";
  if (changed) changed.checked = state.get("changed") === "1";
  const open = state.get("open");  // "all", or a host name
  hostRows().forEach(r => toggle(r, open === "all" || r.querySelector(".host").textContent === open));
  apply();
}

boxes.forEach(b => b.addEventListener("change", apply));
family.addEventListener("change", apply);
search.addEventListener("input", apply);
if (changed) changed.addEventListener("change", apply);
body.addEventListener("click", e => {
  const row = e.target.closest("tr[data-status]");
  if (row && !e.target.closest("a")) {
    toggle(row, row.querySelector("button.toggle").getAttribute("aria-expanded") !== "true");
  }
});
document.getElementById("expand").addEventListener("click", () => hostRows().forEach(r => toggle(r, true)));
document.getElementById("collapse").addEventListener("click", () => hostRows().forEach(r => toggle(r, false)));
table.tHead.querySelectorAll("th").forEach((th, i) => th.addEventListener("click", () => {
  const asc = th.dataset.asc = th.dataset.asc === "1" ? "0" : "1";
  hostRows().sort((a, b) => a.cells[i].innerText.localeCompare(b.cells[i].innerText, undefined, {numeric: true}) *
    (asc === "1" ? 1 : -1)).forEach(r => body.append(r, detailsOf(r)));
}));
window.addEventListener("hashchange", load);
load();
