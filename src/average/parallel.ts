/**
 * Averaging spread over worker threads. Streaming on one thread leaves a verified average bound by that
 * thread's CPU (hashing and accumulating every byte) while the thread pool copies the bytes out of the
 * page cache on another core, so every byte crosses between the cores' caches. Here each worker reads
 * pieces of the inputs itself, synchronously, small enough to stay in its core's cache, and hashes and
 * accumulates them there (`worker.ts`); the main thread plans the work, combines the workers' crc32s of
 * each file in file order (`crc32Combine`) and writes the output, which the workers produce into
 * {@link OUTPUTS} shared buffers in turn: one is written while the workers fill the others.
 *
 * The unit of work is a {@link Job}: consecutive tensors that fit in one output buffer, cut into tiles
 * of at most {@link TILE} bytes. Workers take the next tile from a shared counter until none is left, so
 * they finish a job within a tile of each other whatever the tensor sizes.
 *
 * Verified loads into shared memory use the same threads (`src/checkpoint/parallel-read.ts`): a job
 * tensor with a `target` is read straight into it and hashed there, with nothing to compute.
 *
 * @module
 */
import { Worker } from 'node:worker_threads';
import { SKEW } from '../buffers.js';
import { CkptError, ioError } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import { simdModule } from './simd.js';

/** Bytes a worker reads, hashes and accumulates at a time (measured: 64-256 KiB stay in a core's cache). */
export const TILE = 128 * 1024;

/**
 * Output buffers. While one is written, the workers fill the next and may go on to the one after (its
 * tensors were written before): they never wait for the main thread between two jobs.
 */
export const OUTPUTS = 3;

/** Most tensors in one job (bounds the crc32 table). */
export const MAX_JOB_TENSORS = 4096;

/** A worker's first message: it loaded and waits for jobs. */
export const READY = 'ready';

/** A worker's first message after it loaded. */
export interface WorkerSetup {
  readonly setup: true;
  readonly tile: number;
  /** The {@link OUTPUTS} output buffers (views of shared memory). */
  readonly outputs: readonly SharedView[];
  /** One Int32 per output: the next tile of the job filling that output. */
  readonly counters: SharedArrayBuffer;
  /** Per output, `crcStride` Uint32 per tile: the crc32 of each read of the tile. */
  readonly crcs: SharedArrayBuffer;
  /** Uint32s of `crcs` per output. */
  readonly crcStride: number;
  /** Most reads per tile (the number of checkpoints). */
  readonly reads: number;
}

/** A view of shared memory, as it is posted to a worker. */
export interface SharedView {
  readonly buffer: SharedArrayBuffer;
  readonly byteOffset: number;
  readonly byteLength: number;
}

/**
 * One tensor of a job: `length` bytes at `at` of the output, from each of `reads`. With a `target`, the
 * bytes of the (single) read go straight into it, at `at`, instead of into the job's output (a verified
 * load: read and hash, nothing to compute). With `own`, one worker reads the whole of it (one "tile")
 * into memory it allocates itself, `own.skew` bytes into a new ArrayBuffer, and hands that over with its
 * answer (a load into fresh memory: the pages are touched on the worker's core).
 */
export interface JobTensor {
  readonly dtype: DType;
  readonly at: number;
  readonly length: number;
  /** Where the tensor's first byte is in each input file. */
  readonly reads: readonly { readonly fd: number; readonly offset: number }[];
  /** Raw weight of each read: the tensor is averaged (divided by the job's `divisor`). Undefined: copied from `keep`. */
  readonly weights: readonly number[] | undefined;
  /** Without weights, the read whose bytes are the output. */
  readonly keep: number;
  readonly target?: SharedView;
  readonly own?: { readonly skew: number };
}

/** Consecutive tensors computed into one output buffer. */
export interface Job {
  readonly id: number;
  readonly output: number;
  readonly tensors: readonly JobTensor[];
  readonly divisor: number;
  /** Compute each read's crc32 into the crc table. */
  readonly hash: boolean;
}

/** A worker's answer when the job has no tile left for it: or what failed. */
export interface JobDone {
  readonly id: number;
  /** The buffers of the job's `own` tensors this worker read (transferred), by tensor. */
  readonly filled?: readonly { readonly tensor: number; readonly buffer: ArrayBuffer }[];
  readonly failed?: {
    /** The tensor of the job and the read that failed (-1: not a read). */
    readonly tensor: number;
    readonly read: number;
    /** The system error code (`EIO`, …), empty when none. */
    readonly code: string;
    readonly message: string;
    /** A read that found the file shorter than the manifest says. */
    readonly short?: { readonly offset: number; readonly length: number; readonly got: number };
  };
}

/** The number of tiles of a tensor of `bytes` bytes (tiles of `tile` bytes). */
export function tileCount(bytes: number, tile = TILE): number {
  return Math.max(1, Math.ceil(bytes / tile));
}

/** The tiles of a job tensor: one for a tensor read into a worker's own memory, else {@link tileCount}. */
export function jobTiles(t: JobTensor, tile: number): number {
  return t.own === undefined ? tileCount(t.length, tile) : 1;
}

/** What {@link TilePool.run} throws when a worker reports a failure. */
export class JobFailed extends Error {
  constructor(readonly failure: NonNullable<JobDone['failed']>) {
    super(failure.message);
  }
}

/**
 * The typed error of a read a worker reported failed, naming the file `where` of checkpoint `step`:
 * `FILE_LENGTH_MISMATCH` for a file that ended early ("… ended while `doing` bytes …"), else the system
 * error as `ioError` makes it.
 */
export function readFailure(failure: JobFailed['failure'], where: string, step: number, doing: string): CkptError {
  if (failure.short !== undefined) {
    const { offset, length, got } = failure.short;
    return new CkptError('FILE_LENGTH_MISMATCH', `${where} ended while ${doing} bytes ${offset}..${offset + length}: it has ${offset + got} bytes`, {
      path: where,
      step,
      expected: offset + length,
      received: offset + got,
    });
  }
  return ioError(Object.assign(new Error(failure.message), { code: failure.code }), 'reading', where, { step });
}

/** A job some worker has not answered yet. */
interface Running {
  /** Workers still to answer. */
  remaining: number;
  failure: JobDone['failed'] | undefined;
  /** The `own` tensors' buffers, by tensor. */
  readonly filled: Map<number, ArrayBuffer>;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

/** The shared memory of a configured pool. */
interface Configured {
  readonly outputs: readonly Uint8Array[];
  readonly maxTiles: number;
  readonly counters: Int32Array;
  readonly crcs: Uint32Array;
  readonly crcStride: number;
  readonly reads: number;
  readonly tile: number;
}

/**
 * Worker threads working through jobs tile by tile, the output buffers they fill and the tables they
 * report in: those of one averaging, or those kept for verified loads. Started early (a thread takes tens
 * of ms to load), {@link configure}d once the sizes are known; `close` terminates the workers (before the
 * files they read are closed).
 */
export class TilePool {
  /** Resolves true once every worker has loaded, false if one failed to start. */
  readonly ready: Promise<boolean>;
  private shared: Configured | undefined;
  private readonly workers: Worker[];
  private readonly running = new Map<number, Running>();
  private nextId = 0;
  private broken: Error | undefined;
  private stopping: Promise<void> | undefined;

  private constructor(count: number, script: URL) {
    const started: Promise<boolean>[] = [];
    // The kernels compiled once, here, rather than by every worker.
    const module = simdModule();
    this.workers = [];
    for (let i = 0; i < count; i++) {
      let worker: Worker;
      try {
        worker = new Worker(script, {
          // None of the process's Node options: the worker is compiled JavaScript that needs none, and
          // some would stop it from loading (`--input-type`, given with `node -e`). V8's flags
          // (`--jitless`, …) are the process's anyway.
          execArgv: [],
          ...(module === undefined ? {} : { workerData: { simd: module } }),
        });
      } catch (e) {
        // Not one thread more (resource limits): the ones started so far would be left running.
        for (const w of this.workers) void w.terminate();
        throw e;
      }
      started.push(
        new Promise((resolve) => {
          worker.once('message', (m) => resolve(m === READY));
          worker.once('error', () => resolve(false));
          worker.once('exit', () => resolve(false));
        }),
      );
      worker.on('message', (m: JobDone | typeof READY) => {
        if (m !== READY) this.settle(m);
      });
      worker.on('error', (e) => this.fail(e));
      worker.on('exit', (code) => this.fail(new Error(`worker thread exited (code ${code})`)));
      this.workers.push(worker);
    }
    this.ready = Promise.all(started).then((all) => all.every(Boolean));
  }

  /**
   * Starts `count` worker threads running `script` (the compiled `worker.ts` next to this module).
   * Throws what `new Worker` throws (having terminated the threads it started).
   */
  static start(count: number, script = new URL('./worker.js', import.meta.url)): TilePool {
    return new TilePool(count, script);
  }

  /**
   * Allocates the {@link OUTPUTS} output buffers of `outputBytes` each and the crc table for `reads`
   * checkpoints and jobs of up to `jobBytes` (the output size by default) in tiles of `tile` bytes, and
   * shares them with the workers.
   */
  configure(outputBytes: number, reads: number, jobBytes = outputBytes, tile = TILE): void {
    const outputs = Array.from({ length: OUTPUTS }, () => ({ buffer: new SharedArrayBuffer(outputBytes + SKEW), byteOffset: SKEW, byteLength: outputBytes }));
    // At most one tile per TILE bytes of a job, plus one partial tile per tensor.
    const maxTiles = Math.ceil(jobBytes / tile) + MAX_JOB_TENSORS;
    const crcStride = maxTiles * reads;
    const counters = new SharedArrayBuffer(4 * OUTPUTS);
    const crcs = new SharedArrayBuffer(OUTPUTS * crcStride * 4);
    const setup: WorkerSetup = { setup: true, tile, outputs, counters, crcs, crcStride, reads };
    for (const w of this.workers) w.postMessage(setup);
    this.shared = {
      outputs: outputs.map((o) => new Uint8Array(o.buffer, o.byteOffset, o.byteLength)),
      maxTiles,
      counters: new Int32Array(counters),
      crcs: new Uint32Array(crcs),
      crcStride,
      reads,
      tile,
    };
  }

  private get configured(): Configured {
    if (this.shared === undefined) throw new CkptError('INVALID_ARGUMENT', 'worker pool used before configure()', {});
    return this.shared;
  }

  /** The output buffers, placed for fast writes. */
  get outputs(): readonly Uint8Array[] {
    return this.configured.outputs;
  }

  /** Number of worker threads. */
  get size(): number {
    return this.workers.length;
  }

  /** Bytes of a tile. */
  get tile(): number {
    return this.configured.tile;
  }

  /** Most tiles in one job. */
  get maxTiles(): number {
    return this.configured.maxTiles;
  }

  /** Entries per tile in a job's crc table (the most reads a tile has). */
  get reads(): number {
    return this.configured.reads;
  }

  /**
   * Runs `job` on every worker; resolves once no worker is still working on it (the output and the crc
   * table are then complete), or rejects with what failed. Returns the job's crc table: for tile `t`
   * (numbered through the job's tensors in order) and read `k`, the crc32 is at `t · reads + k`.
   */
  async run(job: Omit<Job, 'id'>): Promise<Uint32Array> {
    return (await this.runFilling(job)).crcs;
  }

  /** {@link run}, also returning the buffers the workers read the job's `own` tensors into, by tensor. */
  async runFilling(job: Omit<Job, 'id'>): Promise<{ crcs: Uint32Array; filled: Map<number, ArrayBuffer> }> {
    if (this.broken !== undefined) throw this.broken;
    const { counters, crcs, crcStride } = this.configured;
    const full: Job = { ...job, id: this.nextId++ };
    Atomics.store(counters, job.output, 0);
    const filled = new Map<number, ArrayBuffer>();
    const done = new Promise<void>((resolve, reject) => {
      this.running.set(full.id, { remaining: this.workers.length, failure: undefined, filled, resolve, reject });
    });
    for (const w of this.workers) w.postMessage(full);
    await done;
    return { crcs: crcs.subarray(job.output * crcStride, (job.output + 1) * crcStride), filled };
  }

  private settle(m: JobDone): void {
    const r = this.running.get(m.id);
    if (r === undefined) return;
    for (const f of m.filled ?? []) r.filled.set(f.tensor, f.buffer);
    r.failure ??= m.failed;
    if (--r.remaining > 0) return;
    this.running.delete(m.id);
    if (r.failure === undefined) r.resolve();
    else r.reject(new JobFailed(r.failure));
  }

  /**
   * A worker failed (it died, or could not load): the pool serves no job any more. Every worker is
   * terminated before the jobs in flight are rejected: the others may still be reading for them, and a
   * caller closes its files once its job failed, after which the process may give a descriptor number
   * to another file, whose bytes a thread still reading would then copy into the caller's memory.
   */
  private fail(e: Error): void {
    this.broken ??= e;
    void this.stop().then(() => this.rejectRunning(e));
  }

  /** Terminates every worker, once; resolves when all have stopped. */
  private stop(): Promise<void> {
    this.stopping ??= Promise.all(this.workers.splice(0).map((w) => w.terminate().catch(() => undefined))).then(() => undefined);
    return this.stopping;
  }

  private rejectRunning(e: Error): void {
    for (const r of this.running.values()) r.reject(new CkptError('IO_ERROR', `worker thread failed: ${e.message}`, { cause: e }));
    this.running.clear();
  }

  /** Whether a worker failed (the pool then serves no job any more). */
  get failed(): boolean {
    return this.broken !== undefined;
  }

  /**
   * Lets the process exit while the workers idle (`false`), or keeps it running while they work (`true`):
   * a pool kept between loads is held only while it runs jobs.
   */
  hold(held: boolean): void {
    for (const w of this.workers) {
      if (held) w.ref();
      else w.unref();
    }
  }

  /** Terminates the workers (waiting until they stopped); a job still running fails. Never throws; idempotent. */
  async close(): Promise<void> {
    const closed = (this.broken ??= new Error('the worker threads were closed'));
    await this.stop();
    this.rejectRunning(closed);
  }
}
