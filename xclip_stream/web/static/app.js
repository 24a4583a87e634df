// The live page: draws the pipeline's state from /api/stream (server-sent events) and signs label
// changes with WebCrypto. No framework and nothing fetched from elsewhere. Text from the pipeline is
// only ever set as textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};
const tiles = new Map(); // camera id -> its tile's parts

function hue(label) { // a stable colour per label
  let h = 0;
  for (const ch of label) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function clock(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "?"; }

function tile(camera) {
  let parts = tiles.get(camera.id);
  if (parts) return parts;
  const root = el("article", "tile");
  root.dataset.camera = camera.id;
  const frame = el("div", "frame");
  const img = el("img");
  img.alt = `latest sampled frame of ${camera.id}`;
  const state = el("span", "badge state", "");
  frame.append(img, state);
  const now = el("p", "now");
  const label = el("span", "label", "waiting for the first window");
  const score = el("span", "score", "");
  now.append(label, " ", score);
  parts = { root, img, state, label, score, title: el("h3", null, camera.id), top: el("ol", "top"),
            timeline: el("div", "timeline"), incidents: el("div", "incidents"), shown: null };
  parts.timeline.title = "top label of each of the last windows, oldest first";
  root.append(frame, parts.title, now, parts.top, parts.timeline, parts.incidents);
  $("cameras").append(root);
  tiles.set(camera.id, parts);
  return parts;
}

function drawCamera(camera) {
  const t = tile(camera);
  t.state.textContent = camera.state;
  t.state.className = "badge state " + ({ connected: "ok", ended: "", stopped: "" }[camera.state] ??
                                         (camera.state === "failed" || camera.state === "disconnected" ? "bad" : "warn"));
  t.state.title = camera.reason || "";
  if (camera.thumbnail !== null && camera.thumbnail !== t.shown) {
    t.shown = camera.thumbnail;
    t.img.src = `/api/cameras/${encodeURIComponent(camera.id)}/frame.jpg?v=${camera.thumbnail}`;
  }
  const last = camera.windows[camera.windows.length - 1];
  if (last) {
    t.label.textContent = last.label;
    t.score.textContent = `p=${last.score.toFixed(2)} · window ${last.index} · ${clock(last.end)}`;
    t.root.dataset.label = last.label;
    t.root.dataset.window = String(last.index);
    t.top.replaceChildren(...camera.top.map(([name, p]) => {
      const li = el("li");
      const bar = el("span", "bar");
      const fill = el("i");
      fill.style.width = `${Math.round(p * 100)}%`;
      bar.append(fill);
      li.append(el("span", null, name), bar, el("span", null, p.toFixed(2)));
      return li;
    }));
  }
  t.timeline.replaceChildren(...camera.windows.map((w) => {
    const block = el("span");
    block.style.background = `hsl(${hue(w.label)} 60% ${25 + 35 * w.score}%)`;
    block.title = `window ${w.index} (${clock(w.end)}): ${w.label} p=${w.score.toFixed(2)}`;
    return block;
  }));
  const items = [
    ...camera.open.map((i) => el("li", "open", `open since ${clock(i.start)}: ${i.label} (peak ${Number(i.peak).toFixed(2)})`)),
    ...camera.ended.slice(-4).reverse().map((i) => el("li", "ended", `${clock(i.start)}-${clock(i.end)}: ${i.label}`)),
  ];
  const list = el("ul");
  list.replaceChildren(...items);
  t.incidents.replaceChildren(el("span", null, `incidents: ${camera.open.length} open, labels: ${camera.labels}` +
                                                (camera.failed ? `, ${camera.failed} windows failed` : "")), list);
}

function drawStatus(status) {
  const badge = $("ready");
  badge.textContent = status.ready ? "ready" : status.phase === "running" ? "not ready" : status.phase;
  badge.className = "badge " + (status.ready ? (status.degraded.length ? "warn" : "ok") : "bad");
  $("problems").textContent = [...status.problems, ...status.degraded].join(" · ");
}

let drawnSets = "";

function drawLabelSets(sets) { // redrawn only when changed, so an opened list stays open
  const key = JSON.stringify(sets);
  if (key === drawnSets) return;
  drawnSets = key;
  $("label-sets").replaceChildren(...Object.entries(sets).map(([name, labels]) => {
    const details = el("details");
    details.append(el("summary", null, `${name} (${labels.length} labels)`), el("p", "hint", labels.join(", ")));
    return details;
  }));
  $("form-set").replaceChildren(el("option", null, ""), ...Object.keys(sets).map((name) => el("option", null, name)));
}

function drawForm(state) {
  $("labels-form").hidden = !state.control;
  $("form-off").hidden = state.control;
  const select = $("form-camera");
  const ids = state.cameras.map((c) => c.id);
  if (JSON.stringify(ids) !== JSON.stringify(Array.from(select.options, (o) => o.value))) {
    const chosen = select.value;
    select.replaceChildren(...ids.map((id) => el("option", null, id)));
    if (chosen) select.value = chosen;
  }
  $("control").replaceChildren(...state.control_outcomes.slice().reverse().map((o) =>
    el("li", o.outcome, `${clock(o.time)} ${o.outcome} ${o.op} ${o.camera}${o.reason && o.outcome === "refused" ? ": " + o.reason : ""}`)));
}

function draw(state) {
  drawStatus(state.status);
  for (const camera of state.cameras) drawCamera(camera);
  drawLabelSets(state.label_sets);
  drawForm(state);
  $("updated").textContent = `updated ${clock(state.time)}`;
  document.body.dataset.version = String(state.version);
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

async function signed(secret, payload) { // the control topic's envelope (pipeline/control_auth.py)
  const enc = new TextEncoder();
  const ts = Date.now();
  const nonce = hex(crypto.getRandomValues(new Uint8Array(16)));
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, enc.encode(`xclip-control-v1\n${ts}\n${nonce}\n${payload}`));
  return JSON.stringify({ v: 1, ts_ms: ts, nonce, payload, sig: hex(new Uint8Array(mac)) });
}

$("labels-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("form-result");
  if (!window.crypto?.subtle) {
    result.textContent = "Signing needs a secure context: open the page over https or on localhost.";
    return;
  }
  const own = $("form-labels").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const labels = own.length ? own : $("form-set").value;
  if (!labels) { result.textContent = "Choose a label set or type labels."; return; }
  const payload = JSON.stringify({ op: "set_labels", id: $("form-camera").value, labels });
  const body = await signed($("form-secret").value.trim(), payload);
  const answer = await fetch("/api/control", { method: "POST", headers: { "Content-Type": "application/json" }, body });
  const text = await answer.json().catch(() => ({}));
  result.className = answer.ok ? "applied" : "refused";
  result.textContent = answer.ok ? `Sent: labels of ${text.camera} change once the pipeline applies it (see outcomes).`
                                 : `Refused: ${text.error || answer.status}`;
});

function connect() {
  const stream = new EventSource("/api/stream");
  stream.onmessage = (message) => draw(JSON.parse(message.data));
  stream.onerror = () => { $("ready").textContent = "reconnecting"; $("ready").className = "badge bad"; };
}
connect();
