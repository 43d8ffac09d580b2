// Runs face-api.js's own SSD-MobileNetV1 and TinyFaceDetector (TF.js CPU backend, in Node) on a raw
// RGB frame and writes their raw outputs as JSON, so that tests can hold the PyTorch/ONNX ports to them.
// Usage: node faceapi_reference.mjs CACHE_DIR FRAME.rgb WIDTH HEIGHT OUT.json
import fs from 'fs';

const [cache, framePath, width, height, outPath] = process.argv.slice(2);
// The ESM bundle picks its platform at import time; the browser one runs on Node's globals.
globalThis.window = globalThis;
globalThis.document = { createElement: () => ({}) };
const faceapi = await import(`${cache}/face-api.esm.js`);
const tf = faceapi.tf;
await tf.setBackend('cpu');
await tf.ready();

async function load(net, name) {
  const manifest = JSON.parse(fs.readFileSync(`${cache}/${name}-weights_manifest.json`));
  const buf = fs.readFileSync(`${cache}/${name}.bin`);
  const weights = tf.io.decodeWeights(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength), manifest[0].weights);
  await net.loadFromWeightMap(weights);
  return net;
}

const frame = tf.tensor3d(new Uint8Array(fs.readFileSync(framePath)), [Number(height), Number(width), 3], 'int32');
const ssd = await load(new faceapi.SsdMobilenetv1(), 'ssd_mobilenetv1_model');
const ssdOut = ssd.forwardInput(await faceapi.toNetInput(frame));
const tiny = await load(new faceapi.TinyFaceDetector(), 'tiny_face_detector_model');
const grid = tiny.forwardInput(await faceapi.toNetInput(frame), 416);
fs.writeFileSync(outPath, JSON.stringify({
  ssd_scores: Array.from(await ssdOut.scores[0].data()),
  ssd_boxes: await ssdOut.boxes[0].array(),
  tiny_grid: await grid.array(),
}));
