// The page: record (MediaRecorder) or upload, POST the raw audio, show the answer; for a
// speaker-normalised model, enrol the visitor's own voice first. Errors are shown as the
// server words them; nothing is ever guessed.
"use strict";

const $ = (id) => document.getElementById(id);
const MIME_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/mp4"];
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = {
  neutral: "#8d99ae", calm: "#4cb5ae", happy: "#f2b134", sad: "#3f6fb5", angry: "#d64545",
  fearful: "#8e5bb5", disgust: "#6b8e23", surprised: "#ef7d32",
};
let recorder = null;
let timerId = null;
let classNames = [];
let playerUrl = null;

function setState(state, message) {
  document.body.dataset.state = state;  // tests and styling read this
  if (message !== undefined) $("status").textContent = message;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function loadModel() {
  try {
    const response = await fetch("/api/model");
    const info = await response.json();
    classNames = info.class_names;
    $("model").textContent = info.description;
    $("record").disabled = false;
    const limit = info.limits.max_seconds;
    const listens = info.window_s === null ? "the whole recording"
      : `${info.window_s} s windows from ${info.offset_s} s in`;
    setState("idle", `Record up to ${limit} s, or upload a file. The model listens to ` +
      `${listens}.`);
    if (info.enrolment.available) await loadEnrolment(info.enrolment);
  } catch (err) {
    setState("error", "");
    showError(`Cannot reach the server: ${err}`);
  }
  if (!window.isSecureContext || !navigator.mediaDevices || !window.MediaRecorder) {
    $("record").disabled = true;
    $("enrol-record").disabled = true;
    $("hint").textContent = "Recording needs https or localhost and a browser with " +
      "MediaRecorder; file upload still works.";
  }
}

// --- enrolment ----------------------------------------------------------------------

let enrolLimits = null;

async function loadEnrolment(limits) {
  enrolLimits = limits;
  $("enrol").hidden = false;
  $("enrol-record").disabled = false;
  const response = await fetch("/api/enrol");  // the session cookie may already hold clips
  showEnrolment(await response.json());
}

function modeText(answer) {
  if (answer.mode === "enrolled") return `enrolled, ${answer.enrolled_clips} clips`;
  if (answer.mode === "training_statistics") return "training statistics";
  return "";
}

function showEnrolment(state) {
  $("enrol").dataset.clips = state.clips;
  $("enrol-mode").textContent = `(${modeText(state)})`;
  $("enrol-clear").disabled = state.clips === 0;
  const more = enrolLimits.min_clips - state.clips;
  $("enrol-status").textContent = state.mode === "enrolled"
    ? `${state.clips} clips enrolled: predictions use your voice's statistics ` +
      `(up to ${enrolLimits.max_clips} clips of at most ${enrolLimits.max_seconds} s).`
    : `${state.clips} clip${state.clips === 1 ? "" : "s"}: ${more} more needed; until then ` +
      "predictions use the training speakers' statistics.";
}

async function enrolClip(blob, name) {
  $("error").hidden = true;
  $("enrol-status").textContent = `Enrolling ${name}…`;
  const response = await fetch("/api/enrol", {
    method: "POST",
    headers: { "Content-Type": blob.type || "application/octet-stream",
               "X-Filename": encodeURIComponent(name) },
    body: blob,
  });
  const answer = await response.json();
  if (!response.ok) {
    showError(`${name} was not enrolled: ${answer.detail || answer.error}`);
    const state = await fetch("/api/enrol");
    showEnrolment(await state.json());
    return;
  }
  showEnrolment(answer);
}

async function enrolFiles(files) {
  for (const file of files) await enrolClip(file, file.name);  // one at a time, in order
}

async function forgetEnrolment() {
  const response = await fetch("/api/enrol", { method: "DELETE" });
  showEnrolment(await response.json());
}

// --- recording ----------------------------------------------------------------------

async function startRecording(button, done) {
  $("error").hidden = true;
  let stream;
  try {
    // raw signal: browser speech processing would change what the model hears
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    showError(`No microphone: ${err.message || err}`);
    return;
  }
  const mimeType = MIME_TYPES.find((t) => MediaRecorder.isTypeSupported(t)) || "";
  const rec = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  const chunks = [];
  rec.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
  rec.onstop = () => {
    stream.getTracks().forEach((track) => track.stop());
    done(new Blob(chunks, { type: rec.mimeType || "audio/webm" }));
  };
  rec.start();
  recorder = { rec, button, label: button.textContent };
  const started = Date.now();
  timerId = setInterval(() => {
    $("timer").textContent = `${((Date.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
  button.textContent = "■ Stop";
  button.classList.add("recording");
  setState("recording", "Recording… press Stop when done.");
}

function stopRecording() {
  clearInterval(timerId);
  const { rec, button, label } = recorder;
  button.textContent = label;
  button.classList.remove("recording");
  button.disabled = true;  // until the answer is back
  recorder = null;
  rec.stop();
}

function toggle(button, done) {
  if (recorder) {
    if (recorder.button === button) stopRecording();
    return;
  }
  startRecording(button, done);
}

// --- prediction ---------------------------------------------------------------------

function analysis() {
  return document.querySelector("input[name=analysis]:checked").value;
}

async function send(blob, name) {
  setState("sending", `Sending ${(blob.size / 1024).toFixed(0)} KiB…`);
  $("error").hidden = true;
  const segments = analysis() === "segments";
  try {
    const response = await fetch(`/api/predict${segments ? "?segments=1" : ""}`, {
      method: "POST",
      headers: {
        "Content-Type": blob.type || "application/octet-stream",
        "X-Filename": encodeURIComponent(name),  // headers are Latin-1 only
      },
      body: blob,
    });
    const answer = await response.json();
    window.lastAnswer = answer;
    if (!response.ok) {
      $("result").hidden = true;
      setState("error", `The server refused the audio (HTTP ${response.status}).`);
      showError(answer.detail || answer.error || `HTTP ${response.status}`);
      return;
    }
    showResult(answer, blob);
    setState("done", `Done in ${answer.elapsed_ms} ms on the server.`);
  } catch (err) {
    setState("error", "");
    showError(`Request failed: ${err}`);
  } finally {
    $("record").disabled = false;
  }
}

function cell(row, text) {
  row.appendChild(Object.assign(document.createElement("td"), { textContent: text }));
}

function showResult(answer, blob) {
  $("top").textContent = answer.top;
  $("confidence").textContent = `${(100 * answer.confidence).toFixed(0)}%`;
  const bars = $("bars");
  bars.replaceChildren();
  for (const [name, p] of Object.entries(answer.probabilities)) {
    const label = Object.assign(document.createElement("span"), { className: "bar-label", textContent: name });
    const track = Object.assign(document.createElement("div"), { className: "bar-track" });
    const fill = Object.assign(document.createElement("div"),
      { className: name === answer.top ? "bar-fill top" : "bar-fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.appendChild(fill);
    track.dataset.emotion = name;
    const value = Object.assign(document.createElement("span"),
      { className: "bar-value", textContent: p.toFixed(3) });
    bars.append(label, track, value);
  }
  $("answered-by").textContent = answer.model;
  const parts = answer.segments
    ? `${answer.segments.length} speech segment${answer.segments.length === 1 ? "" : "s"}`
    : `${answer.windows.length} window${answer.windows.length === 1 ? "" : "s"}`;
  $("audio-info").textContent = `${answer.duration.toFixed(2)} s of ${answer.audio_format}, ${parts}`;
  const mode = modeText(answer);
  $("mode").textContent = mode ? ` · speaker statistics: ${mode}` : "";
  $("mode").dataset.mode = answer.mode;
  const body = $("windows").querySelector("tbody");
  body.replaceChildren();
  for (const w of answer.windows) {
    const row = document.createElement("tr");
    for (const text of [w.start.toFixed(2), w.end.toFixed(2), w.top, w.probabilities[w.top].toFixed(2)]) {
      cell(row, text);
    }
    body.appendChild(row);
  }
  $("windows-box").hidden = answer.windows.length < 2;
  if (playerUrl) URL.revokeObjectURL(playerUrl);
  playerUrl = URL.createObjectURL(blob);
  $("player").src = playerUrl;
  $("player").hidden = false;
  showTimeline(answer);
  $("result").hidden = false;
}

// --- the timeline: one lane per emotion, a bar per speech segment ---------------------

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function tickStep(duration) {
  return [0.5, 1, 2, 5, 10, 20, 30, 60].find((s) => duration / s <= 10) || 120;
}

function showTimeline(answer) {
  const box = $("timeline-box");
  box.hidden = !answer.segments;
  if (!answer.segments) return;
  const skipped = answer.segments.some((s) => s.skipped);
  const lanes = skipped ? [...classNames, "skipped"] : classNames;
  const width = 600, left = 78, right = 8, lane = 18, top = 4;
  const height = top + lanes.length * lane + 22;
  const x = (t) => left + (t / answer.duration) * (width - left - right);
  const chart = $("timeline");
  chart.replaceChildren();
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  lanes.forEach((name, i) => {
    const y = top + i * lane;
    chart.appendChild(svg("rect", { x: left, y, width: width - left - right, height: lane - 2,
                                    class: "lane" }));
    chart.appendChild(svg("text", { x: left - 6, y: y + lane - 6, class: "lane-label" }, name));
  });
  const step = tickStep(answer.duration);
  for (let t = 0; t <= answer.duration + 1e-9; t += step) {
    const y = top + lanes.length * lane;
    chart.appendChild(svg("line", { x1: x(t), x2: x(t), y1: top, y2: y + 3, class: "tick" }));
    chart.appendChild(svg("text", { x: x(t), y: y + 15, class: "tick-label" }, `${t} s`));
  }
  const body = $("segments").querySelector("tbody");
  body.replaceChildren();
  for (const s of answer.segments) {
    const i = lanes.indexOf(s.skipped ? "skipped" : s.top);
    const bar = svg("rect", {
      x: x(s.start), y: top + i * lane, width: Math.max(x(s.end) - x(s.start), 2),
      height: lane - 2, rx: 3, class: s.skipped ? "segment skipped" : "segment",
      fill: s.skipped ? "#c5c9d2" : COLOURS[s.top] || "#3949ab",
      "fill-opacity": s.skipped ? 1 : (0.35 + 0.65 * s.confidence).toFixed(2),
      "data-start": s.start, "data-end": s.end, "data-emotion": s.top || "",
    });
    const what = s.skipped ? `skipped (${s.skipped})` : `${s.top} ${(100 * s.confidence).toFixed(0)}%`;
    bar.appendChild(svg("title", {}, `${s.start.toFixed(2)}–${s.end.toFixed(2)} s: ${what}`));
    bar.addEventListener("click", () => { $("player").currentTime = s.start; $("player").play(); });
    chart.appendChild(bar);
    const row = document.createElement("tr");
    for (const text of [s.start.toFixed(2), s.end.toFixed(2), s.skipped ? `(${s.skipped})` : s.top,
                        s.skipped ? "" : s.confidence.toFixed(2)]) {
      cell(row, text);
    }
    body.appendChild(row);
  }
  const head = svg("line", { x1: left, x2: left, y1: top, y2: top + lanes.length * lane,
                             class: "playhead", id: "playhead" });
  chart.appendChild(head);
  $("player").ontimeupdate = () => {
    const px = x(Math.min($("player").currentTime, answer.duration));
    head.setAttribute("x1", px);
    head.setAttribute("x2", px);
  };
}

// --- wiring -------------------------------------------------------------------------

$("record").addEventListener("click", () => toggle($("record"), (blob) => send(blob, "recording")));
$("enrol-record").addEventListener("click", () => toggle($("enrol-record"), async (blob) => {
  await enrolClip(blob, "recorded clip");
  $("enrol-record").disabled = false;
  setState("idle", "Record or upload what the model should hear.");
}));
$("enrol-file").addEventListener("change", async (event) => {
  const files = [...event.target.files];
  event.target.value = "";
  await enrolFiles(files);
});
$("enrol-clear").addEventListener("click", forgetEnrolment);
$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) send(file, file.name);
  event.target.value = "";  // the same file again triggers another change
});
loadModel();
