// The broker's web console (served at /console). No dependencies, no external assets.
// The API token lives in this tab's sessionStorage and goes only into Authorization headers.
"use strict";

const TOKEN_KEY = "plugcloud.console.token";
const HISTORY = 600; // stats points kept: 5 minutes at one point per 500 ms
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
const online = new Map(); // key -> session
const stats = [];
let streamAbort = null;
let nodesTimer = null;
const NODES_EVERY_MS = 5000;

function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init).then(async (r) => {
    let data = null;
    const text = await r.text();
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (r.status === 401) { logout("The token was refused."); }
    return { status: r.status, data };
  });
}

function show(loggedIn) {
  $("login").classList.toggle("hidden", loggedIn);
  $("app").classList.toggle("hidden", !loggedIn);
  $("logout").classList.toggle("hidden", !loggedIn);
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  if (streamAbort) { streamAbort.abort(); streamAbort = null; }
  online.clear();
  if (nodesTimer) { clearInterval(nodesTimer); nodesTimer = null; }
  show(false);
  $("login-error").textContent = message || "";
}

async function login(candidate) {
  token = candidate;
  const r = await fetch("/v1/online", { headers: { Authorization: "Bearer " + candidate } });
  if (r.status !== 200) {
    logout(r.status === 401 ? "Wrong token." : "The broker answered " + r.status + ".");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $("login-error").textContent = "";
  show(true);
  stream();
  refreshNodes();
  if (nodesTimer) clearInterval(nodesTimer);
  nodesTimer = setInterval(refreshNodes, NODES_EVERY_MS);
}

// --- nodes: standalone is one node; a cluster node lists every node in its discovery view ---

async function refreshNodes() {
  const r = await api("GET", "/v1/console/nodes");
  if (r.status !== 200 || !r.data) return;
  $("nodes-stale").textContent = r.data.healthy ? "" : "(discovery unreachable: last known view)";
  const body = $("nodes");
  body.replaceChildren();
  for (const n of r.data.nodes) {
    const tr = document.createElement("tr");
    tr.className = "node";
    tr.dataset.node = n.id;
    const name = n.this_node ? n.id + " (this node)" : n.id;
    for (const v of [name, n.role, String(n.load), n.endpoints.join(" ")]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

// --- live events: server-sent events read through fetch (so the token stays in a header) ---

async function stream() {
  if (streamAbort) streamAbort.abort();
  const abort = new AbortController();
  streamAbort = abort;
  online.clear();
  try {
    const r = await fetch("/v1/console/events", {
      headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" },
      signal: abort.signal,
    });
    if (r.status === 401) { logout("The token was refused."); return; }
    $("status").textContent = "live";
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  } catch (e) {
    if (abort.signal.aborted) return;
  }
  if (streamAbort === abort && token) {
    $("status").textContent = "reconnecting";
    setTimeout(() => { if (streamAbort === abort && token) stream(); }, 1000);
  }
}

function logEvent(cls, text) {
  const line = document.createElement("div");
  line.className = cls;
  line.textContent = new Date().toLocaleTimeString() + "  " + text;
  const box = $("events");
  box.prepend(line);
  while (box.childNodes.length > 300) box.removeChild(box.lastChild);
}

function onEvent(name, d) {
  const key = (s) => s.terminal + "|" + s.transport + "|" + s.peer;
  if (name === "hello") {
    $("node").textContent = "node: " + d.node + ", version " + d.version;
  } else if (name === "online") {
    online.set(key(d), d);
    logEvent("online", d.terminal + " online over " + d.transport + " from " + d.peer);
    renderTerminals();
  } else if (name === "offline") {
    online.delete(key(d));
    logEvent("offline", d.terminal + " offline (" + d.transport + ")");
    renderTerminals();
  } else if (name === "refused") {
    logEvent("refused", "login " + (d.terminal ? "as " + d.terminal + " " : "") + "refused over " +
      d.transport + " from " + d.peer + ": " + d.reason);
  } else if (name === "delivered") {
    logEvent("delivered", "message #" + d.msg_id + " from " + (d.from || "backend") + " queued to " +
      d.terminal + " (" + d.transport + ")");
  } else if (name === "lagged") {
    logEvent("refused", d.count + " event(s) missed: the stream fell behind");
  } else if (name === "stats") {
    stats.push(d);
    if (stats.length > HISTORY) stats.shift();
    drawCharts();
  }
}

// --- online terminals ---

function renderTerminals() {
  const q = $("search").value.trim().toLowerCase();
  const body = $("terminals");
  body.replaceChildren();
  const rows = [...online.values()].sort((a, b) => a.terminal.localeCompare(b.terminal));
  let shown = 0;
  for (const s of rows) {
    const hay = [s.terminal, s.id, s.transport, s.peer].join(" ").toLowerCase();
    if (q && !hay.includes(q)) continue;
    shown++;
    const tr = document.createElement("tr");
    tr.className = "terminal";
    tr.dataset.terminal = s.terminal;
    for (const v of [s.terminal, s.transport, s.peer, new Date(s.since_ms).toLocaleTimeString()]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => openTerminal(s.kind, s.id));
    body.appendChild(tr);
  }
  $("count").textContent = String(shown);
}

async function openTerminal(kind, id) {
  $("t-name").textContent = kind + ":" + id;
  if (kind === "device") $("cmd-device").value = id;
  $("push-kind").value = kind;
  $("push-id").value = id;
  const [status, messages, bindings] = await Promise.all([
    api("GET", "/v1/terminals/" + kind + "/" + id),
    api("GET", "/v1/terminals/" + kind + "/" + id + "/messages"),
    api("GET", kind === "device" ? "/v1/devices/" + id + "/phones" : "/v1/phones/" + id + "/devices"),
  ]);
  const box = $("t-details");
  box.replaceChildren();
  const add = (label, value) => {
    const p = document.createElement("div");
    p.textContent = label + ": " + JSON.stringify(value);
    box.appendChild(p);
  };
  add("sessions", status.data && status.data.sessions);
  add("pending offline messages", messages.data && messages.data.messages ? messages.data.messages.length : messages.data);
  add("bindings", bindings.data);
}

// --- forms ---

function decodePayload(b64) {
  try { return new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))); }
  catch (_) { return b64; }
}

async function sendCommand(ev) {
  ev.preventDefault();
  const id = $("cmd-device").value.trim();
  $("cmd-result").textContent = "waiting for device " + id + " ...";
  const r = await api("POST", "/v1/devices/" + encodeURIComponent(id) + "/commands", {
    name: $("cmd-name").value, text: $("cmd-text").value, timeout_ms: 5000,
  });
  $("cmd-result").textContent = r.status === 200
    ? "result: status " + r.data.status + ", payload \"" + decodePayload(r.data.payload) + "\""
    : "error " + r.status + ": " + JSON.stringify(r.data);
}

async function push(ev) {
  ev.preventDefault();
  const r = await api("POST", "/v1/push", {
    target: { terminal: { kind: $("push-kind").value, id: Number($("push-id").value) } },
    text: $("push-text").value,
  });
  $("form-result").textContent = "push: " + r.status + " " + JSON.stringify(r.data);
}

async function bind(ev) {
  ev.preventDefault();
  const method = ev.submitter ? ev.submitter.dataset.method : "PUT";
  const path = "/v1/bindings/" + encodeURIComponent($("bind-phone").value.trim()) + "/" +
    encodeURIComponent($("bind-device").value.trim());
  const r = await api(method, path);
  $("form-result").textContent = (method === "PUT" ? "bind" : "unbind") + ": " + r.status + " " + JSON.stringify(r.data);
}

// --- charts, drawn from the stats events ---

function rates(field) {
  const out = [];
  for (let i = 1; i < stats.length; i++) {
    const dt = (stats[i].t_ms - stats[i - 1].t_ms) / 1000;
    out.push(dt > 0 ? Math.max(0, stats[i][field] - stats[i - 1][field]) / dt : 0);
  }
  return out;
}

function plot(canvas, series) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  ctx.fillStyle = "#667";
  ctx.font = "10px sans-serif";
  ctx.fillText(max.toFixed(max < 10 ? 1 : 0), 2, 10);
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.beginPath();
    s.values.forEach((v, i) => {
      const x = (i / Math.max(1, HISTORY - 1)) * w;
      const y = h - (v / max) * (h - 12);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function drawCharts() {
  plot($("chart-sessions"), [{ color: "#2458c6", values: stats.map((s) => s.sessions) }]);
  plot($("chart-logins"), [
    { color: "#262", values: rates("logins_total") },
    { color: "#a33", values: rates("refused_total") },
  ]);
  plot($("chart-deliveries"), [{ color: "#2458c6", values: rates("deliveries_total") }]);
}

// --- wiring ---

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token").value;
  $("token").value = "";
  login(value);
});
$("logout").addEventListener("click", () => logout(""));
$("search").addEventListener("input", renderTerminals);
$("command-form").addEventListener("submit", sendCommand);
$("push-form").addEventListener("submit", push);
$("bind-form").addEventListener("submit", bind);
$("open-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  openTerminal($("open-kind").value, $("open-id").value.trim());
});

if (token) login(token); else show(false);
