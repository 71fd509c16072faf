// The siphook console: a static page that only talks to the admin API that
// served it. Every value shown comes from the network and may be chosen by a
// caller (display names, numbers, Call-IDs), so text is only ever set with
// textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "siphook.token";
const calls = new Map(); // call id -> row data, fed by /v1/calls then the stream
let streamAbort = null;
let poller = null;
// Bumped at every open and logout: a loop of an earlier session stops.
let session = 0;

function $(sel) { return document.querySelector(sel); }

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function say(text) { $("#message").textContent = text; }

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) { logout("The token was refused."); throw new Error("unauthorized"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.detail || ("HTTP " + r.status));
  return body;
}

function setStatus(text, cls) {
  const s = $("#status");
  s.textContent = text;
  s.className = "badge " + (cls || "");
}

// Live calls ---------------------------------------------------------------

function renderCalls() {
  const body = $("#calls tbody");
  body.replaceChildren();
  const rows = [...calls.values()].sort((a, b) => (a.started_at < b.started_at ? 1 : -1));
  for (const c of rows) {
    const tr = el("tr");
    tr.dataset.callId = c.id;
    const caller = (c.from && c.from.display_name) || "";
    tr.append(el("td", c.started_at), el("td", caller, "caller"), el("td", c.ani), el("td", c.dnis));
    const state = el("td");
    state.append(el("span", c.state, "badge " + c.state));
    tr.append(state, el("td", c.id, "id"));
    body.append(tr);
  }
  $("#calls-count").textContent = "(" + rows.length + ")";
}

async function loadCalls() {
  calls.clear();
  let after = null;
  for (let page = 0; page < 10; page++) {
    const q = "/v1/calls?limit=1000" + (after ? "&after=" + encodeURIComponent(after) : "");
    const r = await api(q);
    for (const c of r.items) calls.set(c.id, c);
    if (!r.next) break;
    after = r.next;
  }
  renderCalls();
}

function onEvent(type, event) {
  const c = event.call || {};
  if (type === "call.completed") {
    calls.delete(c.id);
  } else {
    const state = { "call.initiated": "trying", "call.ringing": "ringing" }[type] || "answered";
    const known = calls.get(c.id);
    calls.set(c.id, Object.assign({}, c, { state: known && type === "call.transferred" ? known.state : state }));
  }
  renderCalls();
  scheduleEvents();
}

// The stream is read with fetch, not EventSource, so the token travels in a
// header rather than in the URL.
async function follow(mine) {
  let lastId = null;
  for (let attempt = 0; attempt < 1000 && mine === session; attempt++) {
    if (attempt > 0) {
      // What a gap or a dropped event left out (a completed call still shown)
      // is put right from the tracker's own table.
      await loadCalls().catch((e) => say(e.message));
    }
    streamAbort = new AbortController();
    try {
      const headers = { Authorization: "Bearer " + token() };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const r = await fetch("/v1/events/stream", { headers, signal: streamAbort.signal });
      if (r.status === 401) { logout("The token was refused."); return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      setStatus("live", "ok");
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let id = null, type = null;
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("data: ")) data.push(line.slice(6));
          }
          if (id) lastId = id;
          if (type && data.length) {
            try { onEvent(type, JSON.parse(data.join("\n"))); } catch (e) { /* not an event */ }
          }
        }
      }
    } catch (e) {
      if (streamAbort.signal.aborted || mine !== session) return;
    }
    if (mine !== session) return;
    setStatus("reconnecting", "bad");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// Events and their deliveries ---------------------------------------------

let eventsTimer = null;
function scheduleEvents() {
  if (eventsTimer) return;
  eventsTimer = setTimeout(() => { eventsTimer = null; loadEvents().catch((e) => say(e.message)); }, 300);
}

async function loadEvents() {
  const field = $("#search-field").value;
  const value = $("#search-value").value.trim();
  const q = value ? "&" + field + "=" + encodeURIComponent(value) : "";
  const r = await api("/v1/events?limit=50" + q);
  const body = $("#events tbody");
  body.replaceChildren();
  for (const e of r.items) {
    const tr = el("tr");
    tr.dataset.eventId = e.id;
    tr.append(
      el("td", e.committed_at),
      el("td", e.type),
      el("td", (e.call.ani || "-") + " → " + (e.call.dnis || "-")),
      el("td", e.call.id, "id"));
    const d = el("td");
    for (const x of e.deliveries) {
      const badge = el("span", x.endpoint + ": " + x.state, "badge " + x.state);
      badge.title = x.last_error ? x.last_error + (x.last_status ? " (" + x.last_status + ")" : "") : "";
      d.append(badge, " ");
    }
    tr.append(d);
    body.append(tr);
  }
}

// Endpoints and dead letters ----------------------------------------------

async function loadEndpoints() {
  const r = await api("/v1/endpoints");
  const body = $("#endpoints tbody");
  body.replaceChildren();
  for (const ep of r.items) {
    const tr = el("tr");
    tr.dataset.endpoint = ep.name;
    const state = el("td");
    state.append(el("span", ep.state, "badge " + ep.state));
    const err = ep.last_error ? ep.last_error.error + (ep.last_error.status ? " (" + ep.last_error.status + ")" : "") : "";
    tr.append(el("td", ep.name), state, el("td", ep.pending), el("td", ep.dead_letters), el("td", err));
    const act = el("td");
    if (ep.state === "paused") {
      const b = el("button", "Resume", "resume");
      b.addEventListener("click", () => act_(() => api("/v1/endpoints/" + encodeURIComponent(ep.name) + "/resume", { method: "POST" }), "Resumed " + ep.name));
      act.append(b);
    }
    tr.append(act);
    body.append(tr);
  }
}

async function loadDeadLetters() {
  const r = await api("/v1/deadletters?limit=100");
  const body = $("#deadletters tbody");
  body.replaceChildren();
  for (const d of r.items) {
    const tr = el("tr");
    tr.dataset.id = d.offset;
    const b = el("button", "Replay", "replay");
    b.dataset.id = d.offset;
    b.addEventListener("click", () => act_(() => api("/v1/deadletters/replay", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ids: [d.offset], endpoint: d.endpoint }),
    }), "Replayed dead letter " + d.offset));
    const act = el("td");
    act.append(b);
    tr.append(el("td", d.offset), el("td", d.endpoint), el("td", d.event_type), el("td", d.sip_call_id, "id"),
      el("td", d.state.attempts), el("td", d.state.last_error || ""), act);
    body.append(tr);
  }
}

async function act_(action, done) {
  try {
    await action();
    say(done);
  } catch (e) {
    say(e.message);
  }
  await Promise.all([loadEndpoints(), loadDeadLetters(), loadEvents()]).catch((e) => say(e.message));
}

// Session ------------------------------------------------------------------

function logout(why) {
  session++;
  sessionStorage.removeItem(TOKEN_KEY);
  if (streamAbort) streamAbort.abort();
  if (poller) clearInterval(poller);
  poller = null;
  $("#console").hidden = true;
  $("#logout").hidden = true;
  $("#login-panel").hidden = false;
  setStatus("not connected");
  if (why) $(".hint").textContent = why;
}

async function open_() {
  const mine = ++session;
  $("#login-panel").hidden = true;
  $("#console").hidden = false;
  $("#logout").hidden = false;
  setStatus("connecting");
  try {
    await Promise.all([loadCalls(), loadEndpoints(), loadDeadLetters(), loadEvents()]);
  } catch (e) {
    say(e.message);
    return;
  }
  if (mine !== session) return;
  follow(mine);
  poller = setInterval(() => { Promise.all([loadEndpoints(), loadDeadLetters()]).catch((e) => say(e.message)); }, 5000);
}

document.addEventListener("DOMContentLoaded", () => {
  // A token in the fragment (#token=…, never sent to the server) is taken once
  // and removed from the address bar.
  const m = location.hash.match(/^#token=(.+)$/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  $("#login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    $("#token").value = "";
    open_();
  });
  $("#logout").addEventListener("click", () => logout());
  $("#search").addEventListener("submit", (e) => { e.preventDefault(); loadEvents().catch((x) => say(x.message)); });
  if (token()) open_();
});
