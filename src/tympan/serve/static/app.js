// tympan web page: drop a file, record from the microphone, or stream it live.
// No build step, no external scripts: plain DOM, fetch, MediaRecorder and Web Audio.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, recorder: null, live: null };
const LIVE_HOP_SECONDS = 1.0;     // how often live mode sends the latest window
const LIVE_HISTORY_SECONDS = 30;  // how much the rolling timeline shows

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function hue(label) {
  let h = 0;
  for (const ch of label) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

async function loadModel() {
  const response = await fetch("/v1/model");
  state.model = await response.json();
  const m = state.model;
  const acc = m.metrics && m.metrics.accuracy_mean != null
    ? ` · CV accuracy ${(100 * m.metrics.accuracy_mean).toFixed(1)} %` : "";
  $("model-info").textContent = `${m.model} · ${m.labels.length} classes · ` +
    `${m.sample_rate / 1000} kHz, ${m.window_seconds.toFixed(2)} s windows${acc}`;
}

async function predict(body, contentType, name) {
  const init = { method: "POST", body };
  if (contentType) init.headers = { "Content-Type": contentType };
  const response = await fetch("/v1/predict?k=5&spectrogram=true", init);
  const data = await response.json();
  if (!response.ok) throw new Error(`${name}: ${data.detail || response.statusText}`);
  return data;
}

async function classifyBlob(blob, name) {
  setStatus(`classifying ${name}…`);
  const form = new FormData();
  form.append("file", blob, name);
  try {
    const data = await predict(form, null, name);
    showResult(data, name);
    setStatus(`${name}: ${data.label} (${data.duration_seconds.toFixed(1)} s of ` +
      `${data.container}, ${data.source_sample_rate} Hz)`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function showResult(data, name) {
  $("result").hidden = false;
  $("top-label").textContent = data.label;
  $("result-meta").textContent = `${name} · ${data.duration_seconds.toFixed(2)} s`;
  drawBars(data.top);
  if (data.spectrogram) drawSpectrogram($("spectrogram"), data.spectrogram);
  if (data.windows) {
    const w = data.windows;
    $("timeline-box").hidden = false;
    $("timeline-title").textContent = `Timeline (${w.window_seconds.toFixed(2)} s windows)`;
    const rows = w.starts_seconds.map((t, i) => ({ t, scores: w.scores[i] }));
    drawTimeline($("timeline"), w.labels, rows, w.window_seconds, 0, data.duration_seconds);
    $("events").replaceChildren(...w.events.map((e) => {
      const li = document.createElement("li");
      li.textContent = `${e.start_seconds.toFixed(2)}–${e.end_seconds.toFixed(2)} s  ` +
        `${e.label}  (${e.score.toFixed(2)})`;
      return li;
    }));
  } else if (!state.live) {
    $("timeline-box").hidden = true;
  }
}

function drawBars(top) {
  $("bars").replaceChildren(...top.map(({ label, probability }) => {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.label = label;
    const pct = (100 * probability).toFixed(1);
    row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span>' +
      '</span><span class="value"></span>';
    row.querySelector(".name").textContent = label;
    row.querySelector(".fill").style.width = `${pct}%`;
    row.querySelector(".fill").style.display = "block";
    row.querySelector(".value").textContent = `${pct} %`;
    return row;
  }));
}

// A compact perceptual colour map (dark blue → purple → orange → yellow).
const STOPS = [[13, 16, 32], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109],
  [252, 253, 191]];
function colour(v) {
  const x = Math.min(0.9999, Math.max(0, v / 255)) * (STOPS.length - 1);
  const i = Math.floor(x), f = x - i, a = STOPS[i], b = STOPS[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + f * (b[k] - a[k])));
}

function drawSpectrogram(canvas, spec) {
  const bytes = Uint8Array.from(atob(spec.uint8_base64), (c) => c.charCodeAt(0));
  const off = document.createElement("canvas");
  off.width = spec.frames;
  off.height = spec.n_mels;
  const ctx = off.getContext("2d");
  const img = ctx.createImageData(spec.frames, spec.n_mels);
  for (let m = 0; m < spec.n_mels; m++) {
    const y = spec.n_mels - 1 - m;  // low frequencies at the bottom
    for (let t = 0; t < spec.frames; t++) {
      const [r, g, b] = colour(bytes[m * spec.frames + t]);
      const o = 4 * (y * spec.frames + t);
      img.data[o] = r; img.data[o + 1] = g; img.data[o + 2] = b; img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  const out = canvas.getContext("2d");
  out.imageSmoothingEnabled = false;
  out.clearRect(0, 0, canvas.width, canvas.height);
  out.drawImage(off, 0, 0, canvas.width, canvas.height);
}

// rows: [{t: start seconds, scores: [n_classes]}]; one lane per label that ever wins a window.
function drawTimeline(canvas, labels, rows, windowSeconds, t0, t1) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, left = 110, axis = 18;
  ctx.clearRect(0, 0, W, H);
  const winners = new Set();
  for (const r of rows) {
    let best = 0;
    r.scores.forEach((s, i) => { if (s > r.scores[best]) best = i; });
    winners.add(best);
  }
  const lanes = [...winners].sort((a, b) => a - b).slice(0, 8);
  const laneH = Math.max(10, Math.min(28, (H - axis) / Math.max(1, lanes.length)));
  const span = Math.max(1e-6, t1 - t0);
  const x = (t) => left + ((t - t0) / span) * (W - left - 6);
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  lanes.forEach((c, lane) => {
    const y = lane * laneH;
    ctx.fillStyle = "#1d2330";
    ctx.fillText(labels[c].slice(0, 16), 4, y + laneH / 2);
    for (const r of rows) {
      const s = r.scores[c];
      ctx.fillStyle = `hsla(${hue(labels[c])}, 70%, 45%, ${s.toFixed(3)})`;
      ctx.fillRect(x(Math.max(t0, r.t)), y + 2, Math.max(2, x(r.t + windowSeconds) - x(r.t)),
        laneH - 4);
    }
  });
  ctx.fillStyle = "#667085";
  ctx.textBaseline = "alphabetic";
  const step = span > 60 ? 10 : span > 12 ? 2 : span > 3 ? 0.5 : 0.25;
  for (let t = Math.ceil(t0 / step) * step; t <= t1 + 1e-9; t += step) {
    ctx.fillRect(x(t), H - axis, 1, 4);
    ctx.fillText(`${+t.toFixed(2)} s`, x(t) + 2, H - 4);
  }
}

// -- file input and drag & drop -----------------------------------------------------------

function setupDrop() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) classifyBlob(file, file.name);
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) classifyBlob(file, file.name);
  });
}

// -- record: MediaRecorder (webm/opus in Chromium, ogg in Firefox, mp4/aac in Safari) --------

function recorderType() {
  const types = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];
  return types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || "";
}

async function toggleRecord() {
  const button = $("record");
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    setStatus(`microphone unavailable: ${err.message}`, true);
    return;
  }
  const type = recorderType();
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  const parts = [];
  recorder.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    button.classList.remove("active");
    button.textContent = "● Record";
    const blob = new Blob(parts, { type: recorder.mimeType || type });
    const ext = blob.type.includes("ogg") ? "ogg" : blob.type.includes("mp4") ? "m4a" : "webm";
    classifyBlob(blob, `recording.${ext}`);
  };
  recorder.start();
  state.recorder = recorder;
  button.classList.add("active");
  button.textContent = "■ Stop";
  setStatus(`recording (${recorder.mimeType || "default format"})… press Stop to classify`);
}

// -- live: Web Audio capture, every LIVE_HOP_SECONDS send the latest window as WAV -----------

function wavBytes(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (o, s) => [...s].forEach((c, i) => view.setUint8(o + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
  view.setUint16(22, 1, true); view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * samples.length, true);
  samples.forEach((s, i) => view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, s)) * 32767, true));
  return view.buffer;
}

async function startLive() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const context = new AudioContext();
  await context.audioWorklet.addModule("/static/capture-worklet.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "capture");
  const windowSeconds = Math.max(1.0, state.model.window_seconds);
  const ring = new Float32Array(Math.round(windowSeconds * context.sampleRate));
  const live = { stream, context, node, ring, filled: 0, rows: [], started: performance.now(),
    busy: false, timer: null };
  node.port.onmessage = (e) => {
    const block = e.data;
    ring.copyWithin(0, block.length);
    ring.set(block, ring.length - block.length);
    live.filled = Math.min(ring.length, live.filled + block.length);
  };
  source.connect(node);
  live.timer = setInterval(() => sendLive(live), LIVE_HOP_SECONDS * 1000);
  state.live = live;
  $("live").classList.add("active");
  $("live").textContent = "■ Stop live";
  setStatus(`live: sending the last ${windowSeconds.toFixed(1)} s every ${LIVE_HOP_SECONDS} s`);
}

async function sendLive(live) {
  if (live.busy || live.filled < live.ring.length / 2) return;
  live.busy = true;
  const now = (performance.now() - live.started) / 1000;
  try {
    const samples = live.ring.slice(live.ring.length - live.filled);
    const data = await predict(wavBytes(samples, live.context.sampleRate), "audio/wav", "live");
    if (state.live !== live) return;
    const scores = state.model.labels.map(
      (l) => (data.top.find((t) => t.label === l) || { probability: 0 }).probability);
    live.rows.push({ t: now - LIVE_HOP_SECONDS, scores });
    live.rows = live.rows.filter((r) => r.t > now - LIVE_HISTORY_SECONDS - 5);
    showResult({ ...data, windows: null }, "live");
    $("timeline-box").hidden = false;
    $("timeline-title").textContent = `Live timeline (last ${LIVE_HISTORY_SECONDS} s)`;
    drawTimeline($("timeline"), state.model.labels, live.rows, LIVE_HOP_SECONDS,
      Math.max(0, now - LIVE_HISTORY_SECONDS), Math.max(now, 1));
    setStatus(`live: ${data.label} (${(100 * data.top[0].probability).toFixed(0)} %)`);
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    live.busy = false;
  }
}

function stopLive() {
  const live = state.live;
  clearInterval(live.timer);
  live.stream.getTracks().forEach((t) => t.stop());
  live.context.close();
  state.live = null;
  $("live").classList.remove("active");
  $("live").textContent = "◉ Live";
  setStatus("live stopped");
}

async function toggleLive() {
  if (state.live) return stopLive();
  try {
    await startLive();
  } catch (err) {
    setStatus(`live mode unavailable: ${err.message}`, true);
  }
}

window.addEventListener("DOMContentLoaded", async () => {
  setupDrop();
  $("record").addEventListener("click", toggleRecord);
  $("live").addEventListener("click", toggleLive);
  try {
    await loadModel();
  } catch (err) {
    setStatus(`cannot reach the server: ${err.message}`, true);
  }
});
