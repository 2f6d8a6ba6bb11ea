#!/usr/bin/env node
// A zoo artifact consumer outside Python, the way a Node or web app would write one:
// read the manifest, preprocess a PNG exactly as it says, run the .onnx artifact with
// ONNX Runtime, take the argmax and colour it with the manifest's palette.
//
//   node segment.mjs MODEL.onnx IMAGE.png OUT_DIR
//
// Writes OUT_DIR/<image>.labels.png (one class index per pixel, 8-bit grey; 16-bit for more
// than 256 classes) and OUT_DIR/<image>.color.png, and prints a JSON summary on stdout.
// Nothing is hard-coded: input size, colour order, scale, mean/std, output kind and key,
// labels and palette all come from MODEL.onnx.manifest.json.

import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";
import { PNG } from "pngjs";
import zooOps from "../../zoo/site/static/zoo-ops.js";

const MAX_MANIFEST_BYTES = 16 << 20;
const MAX_PIXELS = 100_000_000;

function fail(message, code = 2) {
  process.stderr.write(`zoo-segment: error: ${message}\n`);
  process.exit(code);
}

export function readManifest(artifact) {
  const sidecar = `${artifact}.manifest.json`;
  let text;
  try {
    const size = fs.statSync(sidecar).size;
    if (size > MAX_MANIFEST_BYTES) fail(`${sidecar}: ${size} bytes is larger than any zoo manifest`);
    text = fs.readFileSync(sidecar, "utf8");
  } catch (err) {
    fail(`${sidecar}: cannot read the manifest beside the artifact (${err.code || err.message}); ` +
         "export with `zoo fetch NAME --format onnx`");
  }
  let m;
  try {
    m = JSON.parse(text);
  } catch (err) {
    fail(`${sidecar}: not JSON (${err.message})`);
  }
  const pre = m?.model?.preprocessing;
  const out = m?.output;
  if (!pre || !out || !Array.isArray(m?.model?.labels) || !Array.isArray(m?.model?.palette)) {
    fail(`${sidecar}: not a zoo manifest (model.preprocessing, output, labels, palette)`);
  }
  if (pre.layout !== "NCHW" || pre.dtype !== "float32") {
    fail(`${sidecar}: this client handles NCHW float32 inputs, not ${pre.layout} ${pre.dtype}`);
  }
  return m;
}

export function decodePng(file) {
  const png = PNG.sync.read(fs.readFileSync(file));
  if (png.width * png.height > MAX_PIXELS) fail(`${file}: ${png.width}x${png.height} is too large`);
  const rgb = new Uint8Array(png.width * png.height * 3);
  for (let i = 0, j = 0; i < png.data.length; i += 4, j += 3) {
    rgb[j] = png.data[i]; rgb[j + 1] = png.data[i + 1]; rgb[j + 2] = png.data[i + 2];
  }
  return { width: png.width, height: png.height, rgb };
}

// The manifest's pre- and post-processing is zoo's one JavaScript copy, shared with zoo site's
// in-browser demo (zoo/site/static/zoo-ops.js).
export const { inputSize } = zooOps;

// NCHW float32 exactly as zoo.preprocess computes it (float32 at every step).
export function preprocess(img, m) {
  const [h, w] = zooOps.inputSize(img.height, img.width, m);
  const rgb = zooOps.resizeRGB(img.rgb, img.height, img.width, 3, h, w);
  return new ort.Tensor("float32", zooOps.normalize(rgb, h, w, m), [1, 3, h, w]);
}

// The prediction, read the way the manifest's output contract says.
export function select(results, session, m) {
  const out = m.output;
  const name = zooOps.outputName(session.outputNames, m);
  const t = results[name];
  if (t.dims.length !== 4 || t.dims[0] !== 1 || t.dims[1] !== out.channels) {
    fail(`the artifact's output ${name} is [${t.dims}], the manifest says [1, ${out.channels}, H, W]`, 1);
  }
  return t;
}

// argmax over the channels (the first index wins a tie), then nearest back to (H, W).
export function labelsOf(t, height, width) {
  return zooOps.labelsOf(t.data, t.dims, height, width);
}

function writePng(file, width, height, pixels, channels) {
  const png = new PNG({ width, height });
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) png.data[i * 4 + c] = pixels[i * channels + (channels === 1 ? 0 : c)];
    png.data[i * 4 + 3] = 255;
  }
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, PNG.sync.write(png, channels === 1 ? { colorType: 0 } : { colorType: 2 }));
  fs.renameSync(tmp, file);  // appears whole or not at all
}

async function main(argv) {
  if (argv.length !== 3 || argv.includes("--help")) {
    process.stdout.write("usage: node segment.mjs MODEL.onnx IMAGE.png OUT_DIR\n");
    process.exit(argv.includes("--help") ? 0 : 2);
  }
  const [artifact, image, outDir] = argv;
  const m = readManifest(artifact);
  const img = decodePng(image);
  const session = await ort.InferenceSession.create(artifact, { executionProviders: ["cpu"] });
  const input = preprocess(img, m);
  const results = await session.run({ [session.inputNames[0]]: input });
  const labels = labelsOf(select(results, session, m), img.height, img.width);
  const classes = m.output.channels;
  if (classes > 256) fail("more than 256 classes: this client writes 8-bit label PNGs", 1);
  const palette = m.model.palette;
  const colours = new Uint8Array(labels.length * 3);
  const counts = new Array(classes).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const rgb = palette[labels[i]];
    colours[i * 3] = rgb[0]; colours[i * 3 + 1] = rgb[1]; colours[i * 3 + 2] = rgb[2];
    counts[labels[i]]++;
  }
  fs.mkdirSync(outDir, { recursive: true });
  const stem = path.basename(image).replace(/\.[^.]+$/, "");
  const labelsPng = path.join(outDir, `${stem}.labels.png`);
  const colorPng = path.join(outDir, `${stem}.color.png`);
  writePng(labelsPng, img.width, img.height, Uint8Array.from(labels), 1);
  writePng(colorPng, img.width, img.height, colours, 3);
  const present = counts.map((n, i) => ({ index: i, name: m.model.labels[i], share: n / labels.length }))
    .filter((c) => c.share > 0);
  process.stdout.write(JSON.stringify({ labels: labelsPng, color: colorPng, classes: present }) + "\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((err) => fail(err.message, 1));
}
