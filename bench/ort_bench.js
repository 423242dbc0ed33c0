// ONNX Runtime side of bench/side_by_side.py (npm's onnxruntime-node; its CPU build ships in the
// package). Two modes, one JSON line on stdout:
//   node ort_bench.js run   model.onnx input.bin B threads out.bin       -> writes the logits
//   node ort_bench.js time  model.onnx B threads warmup runs            -> median ms, peak RSS
// input.bin holds float32 [B, 3, H, W] (H = W from the file size); the timed input is read the same way.
// Session: graph optimisation "all", sequential execution, intra-op threads = threads, inter-op 1
// (the set-up in ../shared peers.md).
'use strict';
const ort = require('onnxruntime-node');
const fs = require('fs');

async function session(path, threads) {
  return ort.InferenceSession.create(path, {
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
  });
}

function input(file, batch) {
  const buf = fs.readFileSync(file);
  const all = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const perImage = all.length / Number(process.env.MF_BENCH_IMAGES || 8);
  const side = Math.round(Math.sqrt(perImage / 3));
  return new ort.Tensor('float32', all.slice(0, batch * perImage), [batch, 3, side, side]);
}

// VmHWM, not resourceUsage().maxRSS: Linux carries the latter across exec, so a child of a big
// parent (the Python driver) would report the parent's size.
function peakRssMb() {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}

async function main() {
  const [mode, model, inFile, b, t, ...rest] = process.argv.slice(2);
  const batch = Number(b), threads = Number(t);
  const s = await session(model, threads);
  const x = input(inFile, batch);
  const feeds = { [s.inputNames[0]]: x };
  if (mode === 'run') {
    const y = (await s.run(feeds))[s.outputNames[0]];
    fs.writeFileSync(rest[0], Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
    console.log(JSON.stringify({ shape: y.dims }));
    return;
  }
  const [warmup, runs] = rest.map(Number);
  for (let i = 0; i < warmup; ++i) await s.run(feeds);
  const ms = [];
  for (let i = 0; i < runs; ++i) {
    const t0 = process.hrtime.bigint();
    await s.run(feeds);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ms.sort((a, c) => a - c);
  const n = ms.length;
  const median = n % 2 ? ms[(n - 1) / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  console.log(JSON.stringify({ median_ms: median, min_ms: ms[0], max_ms: ms[n - 1], rss_mb: peakRssMb() }));
}

main().catch((e) => { console.error(`ort_bench: ${e.message || e}`); process.exit(1); });
