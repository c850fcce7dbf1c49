// The feed page: follows one session of the websocket feed (protocol 1, docs/feed.md) and shows
// its captions as they settle, its speakers and their lanes, its figures, and the connection.
// Plain JavaScript, no build step and nothing from elsewhere, so it works offline.
//
// Sequence numbers make reconnection exact: the page remembers the session and the last `seq`
// it applied, reconnects with ?session=ID&last_seq=N (the server replays what was missed), and
// ignores any event it has already applied. A `dropped` notice (its queue on the server
// overflowed) triggers the same resume, so dropped events are fetched again from the log.
// The token, when the server has one, is asked for in a form, kept in memory only and sent as
// the websocket subprotocol `bearer.<base64url>` and as an Authorization header on HTTP
// requests, never in a URL.
"use strict";

const SUBPROTOCOL = "unispeech-live";
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const NO_SPEAKER = "#9e9e9e";
const RETRY_MIN_MS = 250, RETRY_MAX_MS = 5000;
const SESSIONS_EVERY_MS = 3000;
const RECOVER_EVERY_MS = 2000;  // at most one resume per 2 s after `dropped` notices

const state = {
  token: null,          // in memory only
  session: null,        // the session followed (null: the app's input, whatever its id)
  lastSeq: 0,           // the newest seq applied
  applied: 0,           // events applied
  duplicates: 0,        // events received again (ignored)
  gaps: 0,              // seq numbers never received (dropped or lost on replay)
  ended: false,
  connection: "idle",
  reconnects: 0,
  replays: [],          // {after_seq, count, lost} per resume
  recoveries: 0,        // resumes after a `dropped` notice
  lastRecovery: 0,
  captions: new Map(),  // caption_id -> {el, start_s, speaker, text}
  speakers: new Map(),  // label -> {color, verified}
  matches: new Map(),   // track -> accepted speaker_match
  turns: [],
  maxEnd: 0,
  mic: null,            // {ws, ctx, stream, node} while the microphone is on
  waitingForStart: false,
};
window.feedState = state;  // for tests and the curious

const $ = (id) => document.getElementById(id);
let ws = null, retryMs = RETRY_MIN_MS, retryTimer = null;

// --- small helpers -------------------------------------------------------------------------

function b64url(text) {
  let bin = "";
  for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function protocols() {
  return state.token ? [SUBPROTOCOL, "bearer." + b64url(state.token)] : [SUBPROTOCOL];
}

function authHeaders() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

function wsUrl(params) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams(params).toString();
  return `${scheme}//${location.host}/${query ? "?" + query : ""}`;
}

function fmtTime(s) {
  const m = Math.floor(s / 60), r = s - 60 * m;
  return `${m}:${r.toFixed(1).padStart(4, "0")}`;
}

function notice(text, kind = "warn") {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $("notices").prepend(li);
  while ($("notices").children.length > 50) $("notices").lastChild.remove();
}

function setConnection(name, text) {
  state.connection = name;
  const badge = $("conn-state");
  badge.dataset.state = name;
  badge.textContent = text || name;
}

function speaker(label) {
  const key = label || "";
  if (!state.speakers.has(key)) {
    const color = label ? PALETTE[[...state.speakers.keys()].filter(Boolean).length % PALETTE.length] : NO_SPEAKER;
    state.speakers.set(key, { color, verified: null });
    renderSpeakers();
  }
  return state.speakers.get(key);
}

// --- rendering -----------------------------------------------------------------------------

function scrollToEnd() {
  if ($("autoscroll").checked) $("transcript").scrollTop = $("transcript").scrollHeight;
}

function paintCaption(cap) {
  const who = cap.el.querySelector(".who");
  who.textContent = cap.speaker || "…";
  who.style.color = speaker(cap.speaker).color;
  cap.el.dataset.speaker = cap.speaker || "";
  cap.el.querySelector(".text").textContent = cap.text;
}

function onFinal(msg) {
  let cap = state.captions.get(msg.caption_id);
  if (!cap) {
    const el = document.createElement("div");
    el.className = "caption";
    el.dataset.captionId = msg.caption_id;
    el.innerHTML = '<span class="time"></span><span class="who"></span><span class="text"></span>';
    cap = { el, start_s: msg.start_s };
    state.captions.set(msg.caption_id, cap);
    // keep time order: finals of overlapping speakers can arrive out of order
    const later = [...$("captions").children].find((c) => state.captions.get(+c.dataset.captionId).start_s > msg.start_s);
    $("captions").insertBefore(el, later || null);
  }
  cap.start_s = msg.start_s;
  cap.speaker = msg.speaker;
  cap.text = msg.text;
  cap.el.querySelector(".time").textContent = fmtTime(msg.start_s);
  paintCaption(cap);
  $("partial").textContent = "";
  scrollToEnd();
}

function onRevision(msg) {
  const cap = state.captions.get(msg.caption_id);
  if (!cap) return;  // its final was lost before we joined
  if (msg.changed.includes("text") && msg.text !== null) cap.text = msg.text;
  if (msg.changed.includes("speaker")) cap.speaker = msg.speaker;
  cap.el.dataset.revisions = (+(cap.el.dataset.revisions || 0) + 1).toString();
  cap.el.classList.remove("revised");
  void cap.el.offsetWidth;  // restart the highlight
  cap.el.classList.add("revised");
  paintCaption(cap);
}

function onPartial(msg) {
  const p = $("partial");
  p.textContent = msg.text ? `${msg.speaker ? msg.speaker + ": " : ""}${msg.text}` : "";
  p.style.color = msg.speaker ? speaker(msg.speaker).color : "";
  scrollToEnd();
}

function renderSpeakers() {
  const ul = $("speakers");
  ul.textContent = "";
  for (const [label, info] of state.speakers) {
    if (!label) continue;
    const li = document.createElement("li");
    li.dataset.speaker = label;
    li.innerHTML = '<span class="swatch"></span><span class="label"></span>';
    li.querySelector(".swatch").style.background = info.color;
    li.querySelector(".label").textContent = label;
    if (info.verified) {
      const v = document.createElement("span");
      v.className = "verified";
      v.textContent = `✓ ${info.verified.name} ${info.verified.score.toFixed(2)}`;
      v.title = `verified against the enrolled voiceprint (threshold ${info.verified.threshold.toFixed(2)})`;
      li.append(v);
    }
    ul.append(li);
  }
}

function onMatch(msg) {
  if (!msg.accepted || !msg.name) return;
  state.matches.set(msg.track, msg);
  for (const label of [msg.track, msg.name]) speaker(label).verified = msg;
  renderSpeakers();
}

function renderLanes() {
  const lanes = $("lanes");
  lanes.textContent = "";
  const span = Math.max(state.maxEnd, 1);
  const labels = [...new Set(state.turns.map((t) => t.speaker))];
  for (const label of labels) {
    const lane = document.createElement("div");
    lane.className = "lane";
    lane.dataset.speaker = label;
    lane.innerHTML = '<span class="name"></span><div class="track"></div>';
    lane.querySelector(".name").textContent = label;
    const track = lane.querySelector(".track");
    for (const t of state.turns.filter((t) => t.speaker === label)) {
      const bar = document.createElement("div");
      bar.className = "turn" + (t.overlap ? " overlap" : "");
      bar.dataset.start = t.start_s;
      bar.dataset.end = t.end_s;
      bar.style.left = `${(100 * t.start_s) / span}%`;
      bar.style.width = `${Math.max(0.3, (100 * (t.end_s - t.start_s)) / span)}%`;
      bar.style.background = speaker(label).color;
      bar.title = `${label} ${fmtTime(t.start_s)}–${fmtTime(t.end_s)}${t.overlap ? " (overlap)" : ""}`;
      track.append(bar);
    }
    lanes.append(lane);
  }
  $("axis").innerHTML = "<span>0:00.0</span><span></span>";
  $("axis").lastChild.textContent = fmtTime(span);
}

function onTurn(msg) {
  state.turns.push(msg);
  state.maxEnd = Math.max(state.maxEnd, msg.end_s);
  renderLanes();
}

function onStats(msg) {
  const rows = [["real-time factor", msg.rtf == null ? "–" : msg.rtf.toFixed(2)],
                ["audio", fmtTime(msg.audio_frames * 0.02)]];
  for (const [k, v] of Object.entries(msg.latency_ms || {})) rows.push([`${k.replace(/_/g, " ")} ms`, v.toFixed(0)]);
  rows.push(["dropped audio", `${(msg.dropped_samples / 16000).toFixed(1)} s`]);
  if (msg.degraded && msg.degraded.length) rows.push(["switched off", msg.degraded.join(", ")]);
  const dl = $("stats");
  dl.textContent = "";
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

function resetView() {
  state.lastSeq = 0; state.applied = 0; state.duplicates = 0; state.gaps = 0; state.ended = false;
  state.captions.clear(); state.speakers.clear(); state.matches.clear(); state.turns = []; state.maxEnd = 0;
  $("captions").textContent = ""; $("partial").textContent = ""; $("lanes").textContent = "";
  $("stats").textContent = ""; $("axis").textContent = "";
  renderSpeakers();
}

// --- the feed ------------------------------------------------------------------------------

function applyEvent(msg) {
  if (msg.seq <= state.lastSeq) { state.duplicates += 1; return; }
  if (msg.seq !== state.lastSeq + 1) state.gaps += msg.seq - state.lastSeq - 1;
  state.lastSeq = msg.seq;
  state.applied += 1;
  switch (msg.type) {
    case "caption_partial": onPartial(msg); break;
    case "caption_final": onFinal(msg); break;
    case "caption_revision": onRevision(msg); break;
    case "speaker_turn": onTurn(msg); break;
    case "speaker_match": onMatch(msg); break;
    case "stats": onStats(msg); break;
    case "end":
      state.ended = true;
      setConnection("ended", "ended");
      stopMic(false);
      break;
    default: break;  // speaker_activity and anything newer: not shown
  }
}

function onMessage(msg, socket) {
  if (msg.seq !== undefined) {
    if (!state.waitingForStart) applyEvent(msg);
    return;
  }
  switch (msg.type) {
    case "hello":
      retryMs = RETRY_MIN_MS;
      if (msg.resumed) state.session = msg.session;
      setConnection(msg.ended ? "ended" : "live", msg.ended ? "ended" : `live · ${msg.session_kind}`);
      $("mic").disabled = !msg.accepts_audio;
      if (socket.micStart) { state.waitingForStart = true; socket.send(JSON.stringify(socket.micStart)); }
      break;
    case "started":
      resetView();
      state.waitingForStart = false;
      state.session = msg.session;
      setConnection("live", "live · microphone");
      refreshSessions();
      break;
    case "replay":
      state.replays.push({ after_seq: msg.after_seq, count: msg.count, lost: msg.lost });
      if (msg.lost > 0) notice(`${msg.lost} events were no longer in the server's log`);
      break;
    case "dropped":
      if (state.session && !state.mic && Date.now() - state.lastRecovery > RECOVER_EVERY_MS) {
        // the server's log still has them: resume from the last applied seq instead of skipping
        state.lastRecovery = Date.now();
        state.recoveries += 1;
        notice(`this page fell behind by ${msg.count} events; fetching them again`);
        connect();
      } else {
        notice(`${msg.count} events dropped: this page fell behind (${msg.total} so far)`);
      }
      break;
    case "dropped_audio":
      notice(`the server dropped ${msg.seconds.toFixed(1)} s of microphone audio (backlog over ${msg.max_backlog_s} s)`);
      break;
    case "error":
      notice(`server: ${msg.reason}`, "error");
      break;
    default: break;
  }
}

function closeSocket() {
  if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
  if (ws) { const old = ws; ws = null; old.close(1000, "page switched"); }
}

function connect(micStart = null) {
  closeSocket();
  const params = state.session ? { session: state.session, last_seq: state.lastSeq } : { last_seq: 0 };
  setConnection(state.reconnects ? "reconnecting" : "connecting");
  const socket = new WebSocket(wsUrl(micStart ? {} : params), protocols());
  socket.binaryType = "arraybuffer";
  socket.micStart = micStart;
  let greeted = false;
  socket.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === "hello") greeted = true;
    if (socket === ws) onMessage(msg, socket);
  };
  socket.onclose = (e) => {
    if (socket !== ws) return;  // replaced on purpose
    ws = null;
    onClosed(e, greeted);
  };
  ws = socket;
  return socket;
}

async function onClosed(e, greeted) {
  stopMic(false);
  if (state.ended) { setConnection("ended", "ended"); return; }
  if (e.code === 1008) {  // unknown session, bad last_seq: the server restarted or forgot it
    notice(`server closed the connection: ${e.reason || "policy"}; starting over`);
    state.session = null;
    resetView();
  } else if (e.code === 1013) {
    notice(`server busy: ${e.reason || "too many clients"}`, "error");
  } else if (!greeted && !(await checkAccess())) {
    return;  // the token form is showing
  } else {
    notice(`connection lost (${e.code}); reconnecting from seq ${state.lastSeq}`);
  }
  state.reconnects += 1;
  setConnection("reconnecting", `reconnecting in ${(retryMs / 1000).toFixed(1)} s`);
  retryTimer = setTimeout(() => { retryTimer = null; connect(); }, retryMs);
  retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
}

// --- access, sessions, exports -------------------------------------------------------------

async function checkAccess() {
  let r;
  try {
    r = await fetch("/api/sessions", { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    return true;  // the server is away: the websocket retry reports it
  }
  if (r.status === 401) {
    setConnection("refused", state.token ? "token refused" : "token needed");
    $("token-label").textContent = state.token ? "That token was refused; try again." : "This feed needs its access token.";
    $("token-form").hidden = false;
    $("token").focus();
    return false;
  }
  $("token-form").hidden = true;
  if (r.ok) fillSessions((await r.json()).sessions);
  return true;
}

function fillSessions(sessions) {
  const select = $("stream");
  const keep = state.session || "";
  select.textContent = "";
  const auto = new Option("the app's input", "");
  select.append(auto);
  for (const s of sessions) {
    const label = `${s.kind === "input" ? "input" : "client"} ${s.session}${s.ended ? " (ended)" : ""}`;
    select.append(new Option(label, s.session));
  }
  select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
}

async function refreshSessions() {
  try {
    const r = await fetch("/api/sessions", { headers: authHeaders(), cache: "no-store" });
    if (r.ok) fillSessions((await r.json()).sessions);
  } catch (err) { /* offline: the connection badge says so */ }
}

async function exportAs(kind) {
  if (!state.session) { notice("nothing to export yet"); return; }
  const r = await fetch(`/api/sessions/${encodeURIComponent(state.session)}/export.${kind}`, { headers: authHeaders() });
  if (!r.ok) { notice(`export failed: ${r.status} ${await r.text()}`, "error"); return; }
  const name = (/filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "") || [])[1] || `${state.session}.${kind}`;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await r.blob());
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function follow(sessionId) {
  stopMic(true);
  resetView();
  state.session = sessionId || null;
  state.reconnects = 0;
  connect();
}

// --- the microphone ------------------------------------------------------------------------

async function startMic() {
  if (!window.isSecureContext || !navigator.mediaDevices) {
    notice("the microphone needs a secure page: open it as http://localhost or over HTTPS", "error");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    notice(`microphone: ${err.message || err.name}`, "error");
    return;
  }
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule("/mic-worklet.js");
  const node = new AudioWorkletNode(ctx, "pcm16-resampler", { processorOptions: { targetRate: 16000, chunkSamples: 1600 } });
  ctx.createMediaStreamSource(stream).connect(node);
  node.connect(ctx.destination);  // the node writes silence; connected so the graph pulls it
  resetView();
  state.session = null;
  const socket = connect({ type: "start", sample_rate: 16000, format: "pcm16", channels: 1 });
  node.port.onmessage = (e) => {
    if (socket.readyState === WebSocket.OPEN && !state.waitingForStart && state.mic) socket.send(e.data);
  };
  state.mic = { socket, ctx, stream, node };
  $("mic").dataset.on = "true";
  $("mic").textContent = "stop microphone";
}

function stopMic(sendStop) {
  const mic = state.mic;
  if (!mic) return;
  state.mic = null;
  if (sendStop && mic.socket.readyState === WebSocket.OPEN) mic.socket.send(JSON.stringify({ type: "stop" }));
  mic.node.port.onmessage = null;
  for (const track of mic.stream.getTracks()) track.stop();
  mic.ctx.close();
  $("mic").dataset.on = "false";
  $("mic").textContent = "microphone";
}

// --- start ---------------------------------------------------------------------------------

$("mic").addEventListener("click", () => (state.mic ? stopMic(true) : startMic()));
$("stream").addEventListener("change", (e) => follow(e.target.value));
$("autoscroll").addEventListener("change", scrollToEnd);
$("transcript").addEventListener("wheel", (e) => {  // scrolling up pauses auto-scroll
  if (e.deltaY < 0 && $("autoscroll").checked) $("autoscroll").checked = false;
});
for (const b of document.querySelectorAll("[data-export]")) b.addEventListener("click", () => exportAs(b.dataset.export));
$("token-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  state.token = $("token").value;
  $("token").value = "";
  if (await checkAccess()) { state.reconnects = 0; connect(); }
});
setInterval(() => { if (ws && !document.hidden) refreshSessions(); }, SESSIONS_EVERY_MS);
checkAccess().then((ok) => { if (ok) connect(); });
