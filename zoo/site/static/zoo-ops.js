// A zoo manifest's pre- and post-processing on plain arrays, written once for every JavaScript
// consumer: zoo site's in-browser demo loads it as a classic script (window.zooOps), the Node
// client (clients/js/segment.mjs) imports it as CommonJS. Both must agree with zoo.preprocess
// and zoo.postprocess (tests compare each with `zoo run --artifact`).
"use strict";
(function (root, factory) {
  const ops = factory();
  if (typeof module === "object" && module.exports) module.exports = ops;
  else root.zooOps = ops;
})(typeof globalThis !== "undefined" ? globalThis : this, function () {
  // The model input size (height, width) for an image, per the manifest
  // (zoo.inference.preprocessing.input_size_for).
  function inputSize(height, width, m) {
    const pre = m.model.preprocessing;
    if (pre.resize === "none") return [height, width];
    if (pre.resize === "exact") {
      const shape = m.export && m.export.input_shape;  // the size the artifact was exported at
      return shape ? [shape[2], shape[3]] : pre.input_size;
    }
    // shorter_side: aspect kept, the longer edge truncated (torchvision's rule)
    const [short, long] = width <= height ? [width, height] : [height, width];
    const newLong = Math.floor(pre.resize_size * long / short);
    return width <= height ? [newLong, pre.resize_size] : [pre.resize_size, newLong];
  }

  // Bilinear resize (align_corners=false, no antialias) of interleaved pixels with `channels`
  // values each (3: RGB, 4: RGBA) to RGB at (h, w).
  function resizeRGB(pixels, h0, w0, channels, h, w) {
    const out = new Uint8Array(h * w * 3);
    if (h === h0 && w === w0) {
      for (let i = 0, j = 0; j < out.length; i += channels, j += 3) {
        out[j] = pixels[i]; out[j + 1] = pixels[i + 1]; out[j + 2] = pixels[i + 2];
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
          const p = (yy, xx) => pixels[(yy * w0 + xx) * channels + c];
          const v = (1 - dy) * ((1 - dx) * p(y0, x0) + dx * p(y0, x1)) +
                    dy * ((1 - dx) * p(y1, x0) + dx * p(y1, x1));
          out[(y * w + x) * 3 + c] = Math.min(255, Math.max(0, Math.round(v)));
        }
      }
    }
    return out;
  }

  // NCHW float32 data exactly as zoo.preprocess computes it (float32 at every step).
  function normalize(rgb, h, w, m) {
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
    return data;
  }

  // The output tensor's name the manifest's contract points at (a dict key, or the only one).
  function outputName(outputNames, m) {
    const out = m.output;
    return out.kind === "dict" && outputNames.includes(out.key) ? out.key : outputNames[0];
  }

  // Labels from NCHW scores: argmax over the channels (the first index wins a tie), then
  // nearest back to (height, width).
  function labelsOf(data, dims, height, width) {
    const [, C, h, w] = dims;
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

  return { inputSize, resizeRGB, normalize, outputName, labelsOf };
});
