/**
 * Child process of the evaluation-loop benchmark: loads the checkpoint DIR 12 times into fresh memory,
 * each load's tensors dropped before the next (`--whole`: one new buffer per file, as loads did before
 * they read in chunks), and reports the median seconds of the last 8 loads. A process of its own: what
 * the allocator recycles depends on what the process did before (an evaluation script starts fresh).
 */
import { allocReadBuffer } from '../src/buffers.js';
import { load } from '../src/checkpoint/api.js';
import { median } from './lib.js';

const [dir, ...flags] = process.argv.slice(2) as [string, ...string[]];
const options = flags.includes('--whole') ? { allocate: allocReadBuffer } : {};
const times: number[] = [];
let held: unknown;
for (let r = 0; r < 12; r++) {
  const t = process.hrtime.bigint();
  held = await load(dir, options);
  times.push(Number(process.hrtime.bigint() - t) / 1e9);
}
process.stdout.write(JSON.stringify({ seconds: median(times.slice(4)), loaded: held !== undefined }));
