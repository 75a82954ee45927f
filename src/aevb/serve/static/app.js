// The aevb explorer page: a pad over the two latent dimensions with the most KL, a slider
// for every dimension, a class picker, the test codes, interpolation and a canvas to draw on.
// Everything it shows comes from the server's /api endpoints; nothing from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, z: [], label: 0, layer: 0, codes: null, pending: false, again: false };
const PAD_RANGE = 3; // the pad spans ±3 prior standard deviations

function fail(message) { $("error").textContent = message; }

async function json(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function query() {
  const info = state.info;
  const parts = [`z=${state.z.map((v) => v.toFixed(4)).join(",")}`];
  if (info.classes) parts.push(`label=${state.label}`);
  if (info.layers.length > 1) parts.push(`layer=${state.layer}`);
  return parts.join("&");
}

// One decode in flight; a newer point waits for it and then goes (latest wins).
function decode() {
  if (state.pending) { state.again = true; return; }
  state.pending = true;
  const image = new Image();
  image.onload = () => {
    $("decoded").src = image.src;
    state.pending = false;
    if (state.again) { state.again = false; decode(); }
  };
  image.onerror = () => { state.pending = false; fail("decode failed"); };
  image.src = `/api/decode?${query()}`;
  refreshManifold();
  drawPad();
  syncSliders();
}

function padDims() {
  const info = state.info;
  const layer = info.layers[state.layer];
  const inLayer = info.order.filter((j) => j >= layer.start && j < layer.start + layer.size);
  return [inLayer[0], inLayer.length > 1 ? inLayer[1] : null];
}

// Under the pad: the decodings over its grid (for a 2-D latent, the whole manifold), fetched
// again when the class, the layer or (for more dimensions) the other values change.
const manifold = { image: null, key: "" };

function manifoldKey() {
  const info = state.info, [a, b] = padDims();
  const others = info.latent_dim > 2 ? state.z.map((v, j) => (j === a || j === b ? 0 : v)) : [];
  return `${state.label}|${state.layer}|${others.map((v) => v.toFixed(2)).join(",")}`;
}

function refreshManifold() {
  const key = manifoldKey();
  if (key === manifold.key) return;
  manifold.key = key;
  const [a, b] = padDims();
  const z = state.z.map((v, j) => (j === a || j === b ? 0 : v)).map((v) => v.toFixed(3)).join(",");
  const parts = [`n=12`, `z=${z}`];
  if (state.info.classes) parts.push(`label=${state.label}`);
  if (state.info.layers.length > 1) parts.push(`layer=${state.layer}`);
  const image = new Image();
  image.onload = () => { if (manifold.key === key) { manifold.image = image; drawPad(); } };
  image.src = `/api/manifold?${parts.join("&")}`;
}

function drawPad() {
  const canvas = $("pad"), ctx = canvas.getContext("2d"), n = canvas.width;
  ctx.clearRect(0, 0, n, n);
  if (manifold.image) {
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = 0.55;
    ctx.drawImage(manifold.image, 0, 0, n, n);
    ctx.globalAlpha = 1;
  }
  ctx.strokeStyle = manifold.image ? "rgba(255, 255, 255, 0.25)" : "#ddd";
  for (let k = -PAD_RANGE; k <= PAD_RANGE; k++) {
    const p = ((k + PAD_RANGE) / (2 * PAD_RANGE)) * n;
    ctx.beginPath(); ctx.moveTo(p, 0); ctx.lineTo(p, n); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, p); ctx.lineTo(n, p); ctx.stroke();
  }
  const [a, b] = padDims();
  const x = ((state.z[a] + PAD_RANGE) / (2 * PAD_RANGE)) * n;
  const y = b === null ? n / 2 : n - ((state.z[b] + PAD_RANGE) / (2 * PAD_RANGE)) * n;
  ctx.fillStyle = "#d33";
  ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fill();
  const info = state.info;
  $("pad-caption").textContent = `z${a + 1} (KL ${info.kl_per_dim[a].toFixed(2)}) across` +
    (b === null ? "" : `, z${b + 1} (KL ${info.kl_per_dim[b].toFixed(2)}) up`) +
    `; the other dimensions from the sliders`;
}

function padMove(event) {
  if (event.buttons === 0 && event.type === "pointermove") return;
  const canvas = $("pad"), rect = canvas.getBoundingClientRect();
  const fx = (event.clientX - rect.left) / rect.width, fy = (event.clientY - rect.top) / rect.height;
  const [a, b] = padDims();
  const clamp = (v) => Math.max(-PAD_RANGE, Math.min(PAD_RANGE, v));
  state.z[a] = clamp((fx * 2 - 1) * PAD_RANGE);
  if (b !== null) state.z[b] = clamp((1 - fy * 2) * PAD_RANGE);
  decode();
}

function buildSliders() {
  const box = $("sliders"), info = state.info;
  box.innerHTML = "";
  for (const j of info.order) {
    const label = document.createElement("label");
    label.innerHTML = `<span>z${j + 1}</span><input type="range" min="-3" max="3" step="0.01"` +
      ` value="0" data-dim="${j}"><span>KL ${info.kl_per_dim[j].toFixed(3)}</span>`;
    label.querySelector("input").addEventListener("input", (event) => {
      state.z[j] = parseFloat(event.target.value);
      decode();
    });
    box.appendChild(label);
  }
}

function syncSliders() {
  for (const input of $("sliders").querySelectorAll("input")) {
    input.value = state.z[parseInt(input.dataset.dim, 10)];
  }
}

function drawScatter(highlight) {
  const canvas = $("scatter"), ctx = canvas.getContext("2d"), n = canvas.width;
  ctx.clearRect(0, 0, n, n);
  const colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const codes = state.codes;
  codes.points.forEach(([u, v], i) => {
    const label = codes.labels ? codes.labels[i] : 0;
    ctx.fillStyle = colours[label % colours.length];
    ctx.fillRect(((u + PAD_RANGE) / (2 * PAD_RANGE)) * n - 1.5,
      n - ((v + PAD_RANGE) / (2 * PAD_RANGE)) * n - 1.5, 3, 3);
  });
  if (highlight) {
    const [u, v] = highlight;
    ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(((u + PAD_RANGE) / (2 * PAD_RANGE)) * n, n - ((v + PAD_RANGE) / (2 * PAD_RANGE)) * n,
      7, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

function scatterClick(event) {
  const canvas = $("scatter"), rect = canvas.getBoundingClientRect(), n = canvas.width;
  const x = ((event.clientX - rect.left) / rect.width) * n;
  const y = ((event.clientY - rect.top) / rect.height) * n;
  let best = 0, distance = Infinity;
  state.codes.points.forEach(([u, v], i) => {
    const d = (((u + PAD_RANGE) / (2 * PAD_RANGE)) * n - x) ** 2 +
      ((n - ((v + PAD_RANGE) / (2 * PAD_RANGE)) * n) - y) ** 2;
    if (d < distance) { distance = d; best = i; }
  });
  state.z = state.codes.codes[best].slice();
  if (state.info.classes && state.codes.labels) {
    state.label = state.codes.labels[best];
    $("label").value = String(state.label);
  }
  $("from").value = String(best);
  drawScatter(state.codes.points[best]);
  decode();
}

function interpolate() {
  const params = new URLSearchParams({ a: $("from").value, b: $("to").value,
    steps: $("steps").value, mode: $("mode").value });
  fetch(`/api/interpolate?${params}`).then(async (response) => {
    if (!response.ok) { fail((await response.json()).error); return; }
    $("strip").src = URL.createObjectURL(await response.blob());
    fail("");
  });
}

function setUpDrawing() {
  const canvas = $("draw"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let last = null;
  canvas.addEventListener("pointerdown", (e) => { last = [e.offsetX, e.offsetY]; });
  canvas.addEventListener("pointerup", () => { last = null; });
  canvas.addEventListener("pointerleave", () => { last = null; });
  canvas.addEventListener("pointermove", (e) => {
    if (!last) return;
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 16; ctx.lineCap = "round";
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(e.offsetX, e.offsetY); ctx.stroke();
    last = [e.offsetX, e.offsetY];
  });
  $("clear").addEventListener("click", clear);
  $("encode").addEventListener("click", () => canvas.toBlob(encode, "image/png"));
  canvas.addEventListener("dragover", (e) => e.preventDefault());
  canvas.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) encode(e.dataTransfer.files[0]);
  });
}

async function encode(blob) {
  try {
    const label = state.info.classes ? `?label=${state.label}` : "";
    const answer = await json(`/api/encode${label}`, { method: "POST", body: blob });
    $("reconstruction").src = answer.reconstruction;
    state.z = answer.code;
    drawScatter(answer.point);
    decode();
    fail("");
  } catch (error) { fail(error.message); }
}

async function start() {
  try {
    const info = state.info = await json("/api/info");
    $("run").textContent = `${info.run} (${info.model}, ${info.latent_dim}-D)`;
    $("description").textContent = info.description;
    state.z = new Array(info.latent_dim).fill(0);
    if (info.classes) {
      $("class-picker").hidden = false;
      for (let k = 0; k < info.classes; k++) $("label").add(new Option(`class ${k}`, String(k)));
      $("label").addEventListener("change", (e) => { state.label = parseInt(e.target.value, 10); decode(); });
    }
    if (info.layers.length > 1) {
      $("layer-picker").hidden = false;
      info.layers.forEach((layer, k) => $("layer").add(new Option(layer.name, String(k))));
      $("layer").addEventListener("change", (e) => { state.layer = parseInt(e.target.value, 10); decode(); });
    }
    buildSliders();
    $("pad").addEventListener("pointerdown", padMove);
    $("pad").addEventListener("pointermove", padMove);
    $("reset").addEventListener("click", () => { state.z.fill(0); decode(); });
    if (info.encoder) {
      $("encoder").hidden = false;
      state.codes = await json("/api/codes");
      $("from").max = $("to").max = String(info.test_points - 1);
      drawScatter(null);
      $("scatter").addEventListener("click", scatterClick);
      $("interpolate").addEventListener("click", interpolate);
      setUpDrawing();
    }
    decode();
  } catch (error) { fail(error.message); }
}

start();
