#!/usr/bin/env node
// A client of the styletransfer.v1 contract in another language: Node.js with
// @grpc/grpc-js, the contract loaded at run time from proto/ (nothing generated).
//
//     npm ci --prefix examples/node
//     node examples/node/client.js 127.0.0.1:50051
//
// Against a running server it checks, in order:
//   1. GetInfo answers (version, model, presets);
//   2. Stylize of a 40x30 raw RGBA buffer (draft preset, tiny size and steps) comes
//      back 40x30x4 with the alpha channel byte for byte the one sent;
//   3. a job cancelled mid-run ends CANCELLED on the client's side, and the server
//      is free afterwards: a following small job succeeds.
// Prints one line per check; exit status 0 when all pass, 1 otherwise.

"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.join(__dirname, "..", "..", "proto");
const CHUNK_BYTES = 1 << 20; // what the server sends and accepts at most (Info.limits.chunk_bytes)

function loadService(address) {
  const definition = protoLoader.loadSync("styletransfer/v1/style_transfer.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto: size_bytes, preview_every, ...
    longs: Number, // uint64 fields (size_bytes, offset) as plain numbers
    enums: String, // "IMAGE_FORMAT_RAW"
    defaults: true,
    oneofs: true, // event.event names the member that is set
  });
  const { StyleTransfer } = grpc.loadPackageDefinition(definition).styletransfer.v1;
  return new StyleTransfer(address, grpc.credentials.createInsecure());
}

// A raw 8-bit image: rows top to bottom, channels interleaved (RGBA here).
function makeImage(width, height, channels, pixel) {
  const data = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) data[(y * width + x) * channels + c] = pixel(x, y, c) & 255;
    }
  }
  return { data, meta: { format: "IMAGE_FORMAT_RAW", width, height, channels, size_bytes: data.length } };
}

function getInfo(client) {
  return new Promise((resolve, reject) =>
    client.GetInfo({}, { deadline: Date.now() + 10000 }, (err, info) => (err ? reject(err) : resolve(info))));
}

// Starts a Stylize call: the header, then every image whole and in order (content,
// then each style) in chunks whose offset is the bytes of that image sent so far,
// then the half-close that ends the upload. `onEvent(event, call)` sees each event.
// Resolves with {meta, data, done} of the result, or rejects with the call's error.
function stylize(client, header, images, onEvent = () => {}) {
  return new Promise((resolve, reject) => {
    const call = client.Stylize();
    const parts = [];
    let meta = null;
    let received = 0;
    let done = null;
    call.on("data", (event) => {
      onEvent(event, call);
      if (event.event === "result") {
        const chunk = event.result;
        if (chunk.offset === 0) meta = chunk.meta;
        if (chunk.offset !== received) reject(new Error(`result chunk at offset ${chunk.offset}, expected ${received}`));
        parts.push(chunk.data);
        received += chunk.data.length;
      } else if (event.event === "done") {
        done = event.done;
      }
    });
    call.on("error", reject);
    call.on("end", () => (done ? resolve({ meta, data: Buffer.concat(parts), done }) : reject(new Error("no Done"))));
    call.write({ header: { ...header, content: images[0].meta, styles: images.slice(1).map((i) => i.meta) } });
    images.forEach((image, index) => {
      for (let offset = 0; offset < image.data.length; offset += CHUNK_BYTES) {
        call.write({ chunk: { image: index, offset, data: image.data.subarray(offset, offset + CHUNK_BYTES) } });
      }
    });
    call.end(); // half-close: the upload is complete; the server starts the job
  });
}

const SMALL = { preset: "draft", params: { size: 40, scales: 1, steps: 2 } };

async function main() {
  const address = process.argv[2] || "127.0.0.1:50051";
  const client = loadService(address);

  // 1. GetInfo
  const info = await getInfo(client);
  const presets = info.presets.map((p) => p.name);
  if (!presets.includes("draft")) throw new Error(`GetInfo: no draft preset in ${presets}`);
  console.log(`ok GetInfo: server ${info.server_version} on ${info.device}, model ${info.model} ` +
              `(verified: ${info.model_verified}), presets ${presets.join(", ")}`);

  // 2. A small RGBA job: the result has the content's size and its alpha, bit for bit.
  const content = makeImage(40, 30, 4, (x, y, c) => (c === 3 ? x * 7 + y * 13 : x * 6 + c * 40 + y * 3));
  const style = makeImage(32, 32, 3, (x, y, c) => ((x >> 3) + (y >> 3)) % 2 ? 230 - c * 60 : 20 + c * 50);
  const kinds = new Set();
  const result = await stylize(client, SMALL, [content, style], (event) => kinds.add(event.event));
  const { width, height, channels, size_bytes } = result.meta;
  if (width !== 40 || height !== 30 || channels !== 4 || size_bytes !== 4800 || result.data.length !== 4800) {
    throw new Error(`stylize: result is ${width}x${height}x${channels} in ${result.data.length} bytes`);
  }
  for (let i = 3; i < 4800; i += 4) {
    if (result.data[i] !== content.data[i]) throw new Error(`stylize: alpha differs at byte ${i}`);
  }
  if (kinds.has("queued")) throw new Error("stylize: Queued sent although the server was idle");
  console.log(`ok Stylize: 40x30 RGBA, alpha identical, events ${[...kinds].join(", ")}, ` +
              `loss ${result.done.losses.total.toPrecision(4)}`);

  // 3. Cancel mid-run: CANCELLED here, and the server takes the next job at once.
  const long = { preset: "draft", params: { size: 40, scales: 1, steps: 100000 } };
  const t0 = Date.now();
  try {
    await stylize(client, long, [content, style], (event, call) => {
      if (event.event === "progress" && event.progress.step === 2) call.cancel();
    });
    throw new Error("cancel: the job finished although it was cancelled");
  } catch (err) {
    if (err.code !== grpc.status.CANCELLED) throw err;
  }
  const next = await stylize(client, SMALL, [content, style]);
  if (next.data.length !== 4800) throw new Error("cancel: the job after the cancelled one failed");
  console.log(`ok Cancel: CANCELLED, and the next job ran (${((Date.now() - t0) / 1000).toFixed(1)} s in all)`);
  client.close();
}

const timer = setTimeout(() => {
  console.error("FAILED: no answer within 60 s");
  process.exit(1);
}, 60000);
main().then(
  () => {
    clearTimeout(timer);
    process.exit(0);
  },
  (err) => {
    console.error(`FAILED: ${err.message || err}`);
    process.exit(1);
  },
);
