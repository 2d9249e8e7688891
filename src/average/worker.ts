/**
 * The worker thread of a parallel average (see `parallel.ts`). For each job it takes tiles from the
 * shared counter until none is left; for each tile it reads the bytes of every input synchronously from
 * the descriptors the main thread opened (`readDescriptor` of the fs backend), hashes and accumulates
 * each read right after it (while it is in this core's cache) and writes the finished elements into the
 * shared output buffer. Nothing here decides anything about the checkpoint: the main thread plans the
 * jobs, combines the checksums and writes the output.
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { crc32Implementation } from '../checkpoint/checksum.js';
import { readDescriptor } from '../storage/fs-descriptor.js';
import type { AveragedDType } from './accumulate.js';
import { type Job, type JobDone, type JobTensor, READY, type WorkerSetup, jobTiles } from './parallel.js';
import { adoptSimdModule } from './simd.js';
import { Workspace } from './workspace.js';

const port = parentPort;
if (port === null) throw new Error('ckpt: src/average/worker.js runs only as a worker thread');

/** Set by the pool's setup message, before any job. */
let setup: WorkerSetup;
let workspace: Workspace;
let outputs: Uint8Array[];
let counters: Int32Array;
let crcTable: Uint32Array;

function configure(s: WorkerSetup): void {
  setup = s;
  workspace = new Workspace({ chunk: s.tile, slots: 1 });
  outputs = s.outputs.map((o) => new Uint8Array(o.buffer, o.byteOffset, o.byteLength));
  counters = new Int32Array(s.counters);
  crcTable = new Uint32Array(s.crcs);
}
/** Larger than any tile number: stops the other workers after a failure. */
const STOP = 0x3fffffff;

/** Thrown by {@link runTile}: which read failed and how. */
class ReadFailure {
  constructor(
    readonly read: number,
    readonly error: unknown,
    readonly short?: { offset: number; length: number; got: number },
  ) {}
}

/**
 * Tile `tile` of tensor `t` (bytes `tile · setup.tile`… of it); its crcs go to `crcs` at `crcAt`. Returns
 * the buffer of an `own` tensor (all of it is one tile).
 */
function runTile(job: Job, t: JobTensor, tile: number, crcAt: number): ArrayBuffer | undefined {
  const crc32 = crc32Implementation().fn;
  if (t.own !== undefined) {
    // A load into fresh memory: all of it here, into memory this thread touches first.
    const read = t.reads[0] as JobTensor['reads'][number];
    const buffer = new ArrayBuffer(t.own.skew + t.length);
    let crc = 0;
    for (let at = 0; at < t.length; at += setup.tile) {
      const bytes = new Uint8Array(buffer, t.own.skew + at, Math.min(setup.tile, t.length - at));
      readTile(read.fd, bytes, read.offset + at, 0);
      if (job.hash) crc = crc32(bytes, crc);
    }
    crcTable[crcAt] = crc;
    return buffer;
  }
  const begin = tile * setup.tile;
  const length = Math.min(setup.tile, t.length - begin);
  if (t.target !== undefined) {
    // A verified load: the read goes straight to its place, and is hashed there.
    const read = t.reads[0] as JobTensor['reads'][number];
    const bytes = new Uint8Array(t.target.buffer, t.target.byteOffset + t.at + begin, length);
    readTile(read.fd, bytes, read.offset + begin, 0);
    if (job.hash) crcTable[crcAt] = length === 0 ? 0 : crc32(bytes, 0);
    return undefined;
  }
  const out = outputs[job.output] as Uint8Array;
  for (let k = 0; k < t.reads.length; k++) {
    const read = t.reads[k] as JobTensor['reads'][number];
    const position = read.offset + begin;
    const bytes = workspace.place(0, position, length);
    readTile(read.fd, bytes, position, k);
    if (job.hash) crcTable[crcAt + k] = length === 0 ? 0 : crc32(bytes, 0);
    if (t.weights !== undefined) workspace.accumulate(bytes, t.dtype as AveragedDType, t.weights[k] as number, k === 0);
    else if (k === t.keep) out.set(bytes, t.at + begin);
  }
  if (t.weights !== undefined) workspace.finish(job.divisor, t.dtype as AveragedDType, out.subarray(t.at + begin, t.at + begin + length));
  return undefined;
}

/** Fills `bytes` from `fd` at `position`; a failure names read `k` of the tile. */
function readTile(fd: number, bytes: Uint8Array, position: number, k: number): void {
  let got: number;
  try {
    got = readDescriptor(fd, bytes, position);
  } catch (e) {
    throw new ReadFailure(k, e);
  }
  if (got < bytes.byteLength) throw new ReadFailure(k, undefined, { offset: position, length: bytes.byteLength, got });
}

function run(job: Job): JobDone {
  const base = job.output * setup.crcStride;
  // The buffers of the `own` tensors this thread reads.
  const filled: { tensor: number; buffer: ArrayBuffer }[] = [];
  // Tiles are numbered through the tensors in order; `first` is the number of tensor t's first tile.
  let t = 0;
  let first = 0;
  for (;;) {
    const n = Atomics.add(counters, job.output, 1);
    while (t < job.tensors.length && n >= first + jobTiles(job.tensors[t] as JobTensor, setup.tile)) {
      first += jobTiles(job.tensors[t] as JobTensor, setup.tile);
      t++;
    }
    if (t >= job.tensors.length) return filled.length === 0 ? { id: job.id } : { id: job.id, filled };
    try {
      const buffer = runTile(job, job.tensors[t] as JobTensor, n - first, base + n * setup.reads);
      if (buffer !== undefined) filled.push({ tensor: t, buffer });
    } catch (e) {
      Atomics.store(counters, job.output, STOP);
      const failure = e instanceof ReadFailure ? e : undefined;
      const cause = (failure === undefined ? e : failure.error) as { code?: unknown; message?: unknown } | undefined;
      return {
        id: job.id,
        failed: {
          tensor: t,
          read: failure?.read ?? -1,
          ...(failure?.short === undefined ? {} : { short: failure.short }),
          code: typeof cause?.code === 'string' ? cause.code : '',
          message: cause instanceof Error ? cause.message : String(cause),
        },
      };
    }
  }
}

port.on('message', (m: WorkerSetup | Job) => {
  if ('setup' in m) configure(m);
  else {
    const done = run(m);
    // Buffers read into this thread's own memory move to the main thread (no copy).
    port.postMessage(done, (done.filled ?? []).map((f) => f.buffer));
  }
});
// Load what the jobs use now, while the main thread is still opening the checkpoints.
const shared = (workerData as { simd?: object } | null)?.simd;
if (shared !== undefined) adoptSimdModule(shared);
crc32Implementation();
new Workspace({ chunk: 8, slots: 1 });
port.postMessage(READY);
