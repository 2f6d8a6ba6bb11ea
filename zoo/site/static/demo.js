// zoo site: run an ONNX artifact in the browser with ONNX Runtime Web (WebAssembly, one
// thread), from a folder: the runtime, its binary and the model are classic scripts holding
// their bytes (window.ZOO_ORT_MODULE, ZOO_ORT_WASM, ZOO_DEMO), so nothing is fetched.
// Preprocessing, output contract, labels and palette come from the artifact's manifest,
// exactly as clients/js/segment.mjs reads them. Card text is only ever set as textContent.
"use strict";
(function () {
  const demo = window.ZOO_DEMO;
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

  // The model input size (height, width) for an image, per the manifest.
  function inputSize(height, width) {
    const pre = m.model.preprocessing;
    if (pre.resize === "none") return [height, width];
    if (pre.resize === "exact") return [m.export.input_shape[2], m.export.input_shape[3]];
    const [short, long] = width <= height ? [width, height] : [height, width];
    const newLong = Math.floor(pre.resize_size * long / short);
    return width <= height ? [newLong, pre.resize_size] : [pre.resize_size, newLong];
  }

  // Bilinear resize of RGBA pixels to RGB (align_corners=false; no antialias).
  function resizeRGB(rgba, h0, w0, h, w) {
    const out = new Uint8Array(h * w * 3);
    if (h === h0 && w === w0) {
      for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
        out[j] = rgba[i]; out[j + 1] = rgba[i + 1]; out[j + 2] = rgba[i + 2];
      }
      return out;
    }
    const sy = h0 / h, sx = w0 / w;
    for (let y = 0; y < h; y++) {
      const fy = Math.max(0, (y + 0.5) * sy - 0.5);
      const y0 = Math.min(Math.floor(fy), h0 - 1), y1 = Math.min(y0 + 1, h0 - 1), dy = fy - y0;
      for (let x = 0; x < w; x++) {
        const fx = Math.max(0, (x + 0.5) * sx - 0.5);
        const x0 = Math.min(Math.floor(fx), w0 - 1), x1 = Math.min(x0 + 1, w0 - 1), dx = fx - x0;
        for (let c = 0; c < 3; c++) {
          const p = (yy, xx) => rgba[(yy * w0 + xx) * 4 + c];
          const v = (1 - dy) * ((1 - dx) * p(y0, x0) + dx * p(y0, x1)) +
                    dy * ((1 - dx) * p(y1, x0) + dx * p(y1, x1));
          out[(y * w + x) * 3 + c] = Math.min(255, Math.max(0, Math.round(v)));
        }
      }
    }
    return out;
  }

  // NCHW float32 as zoo.preprocess computes it (float32 at every step).
  function preprocess(rgb, h, w) {
    const pre = m.model.preprocessing;
    const order = pre.color_order === "BGR" ? [2, 1, 0] : [0, 1, 2];
    const data = new Float32Array(3 * h * w);
    const f = Math.fround;
    for (let c = 0; c < 3; c++) {
      const mean = f(pre.mean[c]), std = f(pre.std[c]), scale = f(pre.scale_divisor);
      for (let i = 0; i < h * w; i++) {
        const v = f(rgb[i * 3 + order[c]] / scale);
        data[c * h * w + i] = f(f(v - mean) / std);
      }
    }
    return new ort.Tensor("float32", data, [1, 3, h, w]);
  }

  // argmax over the channels (the first index wins a tie), nearest back to (height, width).
  function labelsOf(t, height, width) {
    const [, C, h, w] = t.dims;
    const data = t.data;
    const small = new Uint16Array(h * w);
    for (let i = 0; i < h * w; i++) {
      let best = 0, bestValue = data[i];
      for (let c = 1; c < C; c++) {
        const v = data[c * h * w + i];
        if (v > bestValue) { bestValue = v; best = c; }
      }
      small[i] = best;
    }
    if (h === height && w === width) return small;
    const labels = new Uint16Array(height * width);
    for (let y = 0; y < height; y++) {
      const sy = Math.min(h - 1, Math.floor((y + 0.5) * (h / height)));
      for (let x = 0; x < width; x++) {
        const sx = Math.min(w - 1, Math.floor((x + 0.5) * (w / width)));
        labels[y * width + x] = small[sy * w + sx];
      }
    }
    return labels;
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
    const [h, w] = inputSize(height, width);
    const started = performance.now();
    const results = await session.run({ [session.inputNames[0]]: preprocess(resizeRGB(rgba, height, width, h, w), h, w) });
    const out = m.output;
    const name = out.kind === "dict" && session.outputNames.includes(out.key) ? out.key : session.outputNames[0];
    const t = results[name];
    if (t.dims.length !== 4 || t.dims[1] !== out.channels) {
      say(`The artifact's output is [${t.dims}], the manifest says [1, ${out.channels}, H, W].`, true);
      return;
    }
    const labels = labelsOf(t, height, width);
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
