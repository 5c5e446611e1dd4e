// pgdurable dashboard: live refresh (a JSON poll every 2 s) and node details on click.
// Everything from the server is written with textContent, never parsed as HTML.
"use strict";

const REFRESH_MS = 2000;

function text(element, value) {
  if (element) element.textContent = value === null || value === undefined ? "" : String(value);
}

async function poll(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    window.location.assign("/signin");
    return null;
  }
  if (!response.ok) throw new Error(response.status);
  return response.json();
}

function markLive(ok) {
  const live = document.getElementById("live");
  if (!live) return;
  live.classList.toggle("stale", !ok);
  live.textContent = ok ? "live · " + new Date().toLocaleTimeString() : "not updating";
}

function cell(row, value, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  text(td, value);
  row.appendChild(td);
  return td;
}

function instanceRow(item) {
  const tr = document.createElement("tr");
  tr.dataset.instance = item.instance_id;
  const link = document.createElement("a");
  link.href = "/instances/" + encodeURIComponent(item.instance_id);
  text(link, item.instance_id);
  cell(tr, "").appendChild(link);
  cell(tr, item.label, "label");
  const badge = document.createElement("span");
  badge.className = "badge status-" + item.status;
  text(badge, item.status);
  cell(tr, "").appendChild(badge);
  cell(tr, item.owner);
  cell(tr, item.created_at);
  cell(tr, item.completed_at);
  cell(tr, item.execution_count);
  return tr;
}

function startInstancesRefresh(tbody) {
  const tick = async () => {
    try {
      const data = await poll(tbody.dataset.refresh);
      if (!data) return;
      const rows = data.rows.map(instanceRow);
      if (rows.length === 0) {
        const tr = document.createElement("tr");
        tr.className = "empty";
        cell(tr, "No instances to show.").colSpan = 7;
        rows.push(tr);
      }
      tbody.replaceChildren(...rows);
      markLive(true);
    } catch (error) {
      markLive(false);
    }
    window.setTimeout(tick, REFRESH_MS);
  };
  window.setTimeout(tick, REFRESH_MS);
}

function showNode(nodeId) {
  for (const detail of document.querySelectorAll(".node-detail")) {
    detail.hidden = detail.dataset.node !== nodeId;
  }
  for (const g of document.querySelectorAll("svg .node")) {
    g.classList.toggle("selected", g.dataset.node === nodeId);
  }
  const hint = document.getElementById("node-hint");
  if (hint) hint.hidden = true;
}

function updateNode(node) {
  const g = document.querySelector('svg .node[data-node="' + CSS.escape(node.node_id) + '"]');
  if (g) {
    for (const c of [...g.classList]) if (c.startsWith("status-")) g.classList.remove(c);
    g.classList.add("status-" + node.status);
    g.dataset.status = node.status;
    const markers = { completed: "✓", failed: "✗", running: "▶", pending: "○", skipped: "⊘" };
    text(g.querySelector(".marker"), markers[node.status] || "");
  }
  const detail = document.querySelector('.node-detail[data-node="' + CSS.escape(node.node_id) + '"]');
  if (!detail) return;
  for (const field of ["status", "stored_status", "updated_at", "result", "status_details"]) {
    text(detail.querySelector('[data-field="' + field + '"]'), node[field]);
  }
  text(detail.querySelector('[data-field="result_heading"]'), node.failed ? "Error" : "Result");
  const result = detail.querySelector('[data-field="result"]');
  if (result) result.classList.toggle("error-text", node.failed);
}

// the node running now: running, and none of its children is
function markActive() {
  const status = {};
  for (const g of document.querySelectorAll("svg .node")) status[g.dataset.node] = g.dataset.status;
  for (const g of document.querySelectorAll("svg .node")) {
    const kids = (g.dataset.children || "").split(" ").filter(Boolean);
    const busy = kids.some((kid) => status[kid] === "running");
    g.classList.toggle("active", g.dataset.status === "running" && !busy);
  }
}

function executionRow(item) {
  const tr = document.createElement("tr");
  cell(tr, item.execution_id);
  cell(tr, item.status);
  cell(tr, item.event_count);
  cell(tr, item.duration_ms);
  const pre = document.createElement("pre");
  text(pre, item.output);
  cell(tr, "").appendChild(pre);
  return tr;
}

function startInstanceRefresh(section) {
  const tick = async () => {
    let done = false;
    try {
      const data = await poll(section.dataset.refresh);
      if (!data) return;
      section.dataset.status = data.status;
      const badge = document.getElementById("instance-status");
      badge.className = "badge status-" + data.status;
      text(badge, data.status);
      text(document.getElementById("instance-completed"), data.completed_at);
      text(document.getElementById("instance-executions"), data.execution_count);
      text(document.getElementById("instance-output"), data.output);
      data.nodes.forEach(updateNode);
      markActive();
      document.getElementById("execution-rows").replaceChildren(...data.executions.map(executionRow));
      text(document.getElementById("explain"), data.explain);
      const actions = document.getElementById("actions");
      if (actions) actions.classList.toggle("done", data.terminal);
      done = data.terminal;
    } catch (error) {
      done = false;
    }
    if (!done) window.setTimeout(tick, REFRESH_MS);
  };
  if (!["completed", "failed", "cancelled"].includes(section.dataset.status)) {
    window.setTimeout(tick, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const rows = document.getElementById("instance-rows");
  if (rows) startInstancesRefresh(rows);
  const section = document.getElementById("instance");
  if (section) startInstanceRefresh(section);
  for (const g of document.querySelectorAll("svg .node")) {
    g.addEventListener("click", () => showNode(g.dataset.node));
    g.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") showNode(g.dataset.node);
    });
  }
});
