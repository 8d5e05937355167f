// The page: record (MediaRecorder) or upload, POST the raw audio, show the answer.
// Errors are shown as the server words them; nothing is ever guessed.
"use strict";

const $ = (id) => document.getElementById(id);
const MIME_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/mp4"];
let recorder = null;
let timerId = null;

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
    $("model").textContent = info.description;
    $("record").disabled = false;
    const limit = info.limits.max_seconds;
    const listens = info.window_s === null ? "the whole recording"
      : `${info.window_s} s windows from ${info.offset_s} s in`;
    setState("idle", `Record up to ${limit} s, or upload a file. The model listens to ` +
      `${listens}.`);
  } catch (err) {
    setState("error", "");
    showError(`Cannot reach the server: ${err}`);
  }
  if (!window.isSecureContext || !navigator.mediaDevices || !window.MediaRecorder) {
    $("record").disabled = true;
    $("hint").textContent = "Recording needs https or localhost and a browser with " +
      "MediaRecorder; file upload still works.";
  }
}

async function startRecording() {
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
    const blob = new Blob(chunks, { type: rec.mimeType || "audio/webm" });
    send(blob, "recording");
  };
  rec.start();
  recorder = rec;
  const started = Date.now();
  timerId = setInterval(() => {
    $("timer").textContent = `${((Date.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
  $("record").textContent = "■ Stop";
  $("record").classList.add("recording");
  setState("recording", "Recording… press Stop when done.");
}

function stopRecording() {
  clearInterval(timerId);
  $("record").textContent = "● Record";
  $("record").classList.remove("recording");
  $("record").disabled = true;  // until the answer is back
  recorder.stop();
  recorder = null;
}

async function send(blob, name) {
  setState("sending", `Sending ${(blob.size / 1024).toFixed(0)} KiB…`);
  $("error").hidden = true;
  try {
    const response = await fetch("/api/predict", {
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
    showResult(answer);
    setState("done", `Done in ${answer.elapsed_ms} ms on the server.`);
  } catch (err) {
    setState("error", "");
    showError(`Request failed: ${err}`);
  } finally {
    $("record").disabled = false;
  }
}

function showResult(answer) {
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
  $("audio-info").textContent = `${answer.duration.toFixed(2)} s of ${answer.audio_format}, ` +
    `${answer.windows.length} window${answer.windows.length === 1 ? "" : "s"}`;
  const body = $("windows").querySelector("tbody");
  body.replaceChildren();
  for (const w of answer.windows) {
    const row = document.createElement("tr");
    for (const text of [w.start.toFixed(2), w.end.toFixed(2), w.top, w.probabilities[w.top].toFixed(2)]) {
      row.appendChild(Object.assign(document.createElement("td"), { textContent: text }));
    }
    body.appendChild(row);
  }
  $("windows-box").hidden = answer.windows.length < 2;
  $("result").hidden = false;
}

$("record").addEventListener("click", () => (recorder ? stopRecording() : startRecording()));
$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) send(file, file.name);
  event.target.value = "";  // the same file again triggers another change
});
loadModel();
