// zoo site: run an ONNX artifact in the browser with ONNX Runtime Web (WebAssembly, one
// thread), from a folder: the runtime, its binary and the model are classic scripts holding
// their bytes (window.ZOO_ORT_MODULE, ZOO_ORT_WASM, ZOO_DEMO), so nothing is fetched.
// Preprocessing, output contract, labels and palette come from the artifact's manifest,
// with the same code as clients/js/segment.mjs (zoo-ops.js, window.zooOps). Card text is only
// ever set as textContent.
"use strict";
(function () {
  const demo = window.ZOO_DEMO;
  const ops = window.zooOps;
  const m = demo.manifest;
  const $ = (id) => document.getElementById(id);
  const status = $("status");
  const MAX_PIXELS = 40_000_000;
  let session = null;
  let ort = null;

  function say(text, bad) {
    status.textContent = text;
    status.className = bad ? "warning" : "";
  }

  function bytesOf(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  async function start() {
    const url = URL.createObjectURL(new Blob([window.ZOO_ORT_MODULE], { type: "text/javascript" }));
    ort = await import(url);
    URL.revokeObjectURL(url);
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmBinary = bytesOf(window.ZOO_ORT_WASM).buffer;
    session = await ort.InferenceSession.create(bytesOf(demo.model), { executionProviders: ["wasm"] });
    say(`Ready: ONNX Runtime Web ${window.ZOO_ORT_VERSION}. Run the golden scene or drop an image.`);
    document.body.dataset.demoState = "ready";
  }

  function show(rgba, labels, width, height) {
    const palette = m.model.palette;
    const input = $("input"), over = $("overlay");
    for (const canvas of [input, over]) { canvas.width = width; canvas.height = height; }
    input.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(rgba), width, height), 0, 0);
    const blend = new Uint8ClampedArray(width * height * 4);
    const counts = new Float64Array(palette.length);
    for (let i = 0; i < width * height; i++) {
      const k = labels[i], rgb = palette[k];
      counts[k]++;
      for (let c = 0; c < 3; c++) blend[i * 4 + c] = Math.round(0.5 * rgba[i * 4 + c] + 0.5 * rgb[c]);
      blend[i * 4 + 3] = 255;
    }
    over.getContext("2d").putImageData(new ImageData(blend, width, height), 0, 0);
    const list = $("classes");
    list.replaceChildren();
    const present = [];
    counts.forEach((n, k) => { if (n > 0) present.push([k, n]); });
    present.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
    for (const [k, n] of present.slice(0, 50)) {
      const li = document.createElement("li");
      const chip = document.createElement("span");
      chip.className = "swatch";
      const [r, g, b] = palette[k];
      chip.style.background = `rgb(${r}, ${g}, ${b})`;
      chip.style.color = demo.text_colours[k];
      chip.textContent = m.model.labels[k];
      li.append(chip, ` ${(100 * n / (width * height)).toFixed(1)} %`);
      list.append(li);
    }
  }

  async function segment(bitmap) {
    if (!session) { say("ONNX Runtime is still loading.", true); return; }
    const width = bitmap.width, height = bitmap.height;
    if (width * height > MAX_PIXELS) { say(`The image is ${width}x${height}: too large.`, true); return; }
    document.body.dataset.demoState = "running";
    say("Running\u2026");
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, width, height).data;
    const [h, w] = ops.inputSize(height, width, m);
    const started = performance.now();
    const input = ops.normalize(ops.resizeRGB(rgba, height, width, 4, h, w), h, w, m);
    const results = await session.run(
      { [session.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, h, w]) });
    const t = results[ops.outputName(session.outputNames, m)];
    if (t.dims.length !== 4 || t.dims[0] !== 1 || t.dims[1] !== m.output.channels) {
      say(`The artifact's output is [${t.dims}], the manifest says [1, ${m.output.channels}, H, W].`, true);
      return;
    }
    const labels = ops.labelsOf(t.data, t.dims, height, width);
    show(rgba, labels, width, height);
    window.zooDemoResult = { width, height, labels };
    say(`Done in ${Math.round(performance.now() - started)} ms at ${h}x${w}.`);
    document.body.dataset.demoState = "done";
  }

  async function fromBlob(blob) {
    try {
      const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
      await segment(bitmap);
    } catch (err) {
      say(`Cannot run on this image: ${err && err.message ? err.message : err}`, true);
    }
  }

  $("run-scene").addEventListener("click", async () => {
    const png = demo.scene.png;
    const bytes = bytesOf(png.slice(png.indexOf(",") + 1));
    await fromBlob(new Blob([bytes], { type: "image/png" }));
  });
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) fromBlob(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) fromBlob(file);
  });
  start().catch((err) => {
    say(`ONNX Runtime could not start: ${err && err.message ? err.message : err}`, true);
    document.body.dataset.demoState = "failed";
  });
})();
