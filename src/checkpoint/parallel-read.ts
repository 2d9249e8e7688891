/**
 * Verified reads on worker threads (`LoadOptions.threads`). A verified read on one thread is bound by
 * that thread hashing every byte the thread pool copied on another core (each byte crosses between the
 * cores' caches); here each worker reads its share of the file in tiles straight into the destination
 * and hashes each tile while it is in its core's cache, and this thread combines the tiles' crc32s in
 * file order (`crc32Combine`). Workers can only write into shared memory, so this serves destinations
 * that are views of a `SharedArrayBuffer` (`createBufferPool({ shared: true })`) read through a file
 * descriptor (the fs backend).
 *
 * The threads are the averaging's (`../average/parallel.ts`), started on first use and kept for the next
 * load: starting them costs tens of milliseconds, about what they save on a 1 GiB read. Idle, they do
 * not keep the process alive.
 *
 * @module
 */
import { TilePool, JobFailed, type JobTensor, MAX_JOB_TENSORS, type SharedView, readFailure } from '../average/parallel.js';
import { type CkptError, ioError } from '../errors.js';
import type { Hasher } from './checksum.js';

/**
 * Bytes a worker reads and hashes at a time: larger than the averaging's tiles (which must leave room in
 * the cache for accumulation), as each tile costs a system call and a hash call (1 MiB: ~0.9x of a raw
 * read in a prototype here, 256 KiB ~0.85x, 4 MiB ~0.8x).
 */
export const READ_TILE = 1024 * 1024;
/** Bytes of one job (the crc table holds one job's tiles; two jobs are in flight). */
const JOB_BYTES = 64 * 1024 * 1024;
/** Largest piece of one read in a job (a tensor larger than this is cut). */
const PIECE_BYTES = 16 * 1024 * 1024;

/** One contiguous range of a file and where its bytes go (consecutive segments follow each other in the file). */
export interface Segment {
  readonly offset: number;
  readonly target: Uint8Array;
}

/**
 * What a read on the threads failed with, as a typed error naming the file `where` of checkpoint `step`
 * (also when the pool's own error, a worker that died, named none).
 */
export function readError(e: unknown, where: string, step: number): CkptError {
  return e instanceof JobFailed ? readFailure(e.failure, where, step, 'reading') : ioError(e, 'reading', where, { step });
}

/**
 * The kept worker threads: `pool` undefined when they could not start (then not tried again for the same
 * count; a read asking for another count tries once more). `sent`: the shared buffers read into on them;
 * `orphaned`: the bytes of those whose last reference on this thread was collected.
 */
let kept: { readonly threads: number; readonly pool: TilePool | undefined; readonly sent: WeakSet<SharedArrayBuffer>; orphaned: number } | undefined;

/**
 * Shared memory the kept threads may hold after the caller let it go, before they are replaced. Each job
 * message a worker received holds the `SharedArrayBuffer` it names until that worker collects its
 * garbage, which an idle worker seldom does: the memory of every shared buffer read into on the threads
 * would outlive the caller's last reference to it (a load into a fresh shared pool, a failed load, a
 * tensor never released), by up to the whole of it. Terminating the threads frees what they hold.
 */
const ORPHANED_LIMIT = 256 * 1024 * 1024;
const collected = new FinalizationRegistry<{ readonly pool: TilePool; readonly bytes: number }>(({ pool, bytes }) => {
  if (kept?.pool !== pool) return;
  kept.orphaned += bytes;
  if (kept.orphaned > ORPHANED_LIMIT) {
    kept.orphaned = 0;
    // In a read's turn, so that no read loses its threads; the next read starts new ones.
    void retire(pool);
  }
});

/** Terminates `pool` if it is still the kept one. */
function retire(pool: TilePool): Promise<void> {
  return inTurn(async () => {
    if (kept?.pool !== pool) return;
    kept = undefined;
    await pool.close();
  });
}

/** Notes that `buffer` is read into on the kept threads (see {@link ORPHANED_LIMIT}). */
function sending(buffer: SharedArrayBuffer): void {
  if (kept?.pool === undefined || kept.sent.has(buffer)) return;
  kept.sent.add(buffer);
  collected.register(buffer, { pool: kept.pool, bytes: buffer.byteLength });
}
/**
 * Reads take the threads in turn (their counters and crc tables serve one read at a time), and replace
 * them only in their turn, so that no read loses its threads to another.
 */
let turn: Promise<void> = Promise.resolve();

/** Runs `f` in its turn. */
async function inTurn<T>(f: () => Promise<T>): Promise<T> {
  let release!: () => void;
  const previous = turn;
  turn = new Promise((resolve) => (release = resolve));
  await previous;
  try {
    return await f();
  } finally {
    release();
  }
}

/** The kept pool of `threads` workers (started, or replacing another, in a read's turn); undefined when they cannot start. */
async function poolOf(threads: number): Promise<TilePool | undefined> {
  if (kept !== undefined && (kept.threads !== threads || kept.pool?.failed === true)) {
    await kept.pool?.close();
    kept = undefined;
  }
  if (kept === undefined) {
    // Held (keeping the process alive) until they are ready: this read waits for them.
    let p: TilePool | undefined;
    try {
      p = TilePool.start(threads);
    } catch {
      p = undefined;
    }
    if (p !== undefined && (await p.ready)) {
      // No output buffers: a read's bytes go to their targets.
      p.configure(0, 1, JOB_BYTES + READ_TILE, READ_TILE);
      p.hold(false);
      kept = { threads, pool: p, sent: new WeakSet(), orphaned: 0 };
    } else {
      await p?.close();
      kept = { threads, pool: undefined, sent: new WeakSet(), orphaned: 0 };
    }
  }
  return kept.pool;
}

/** Terminates the kept worker threads (tests; a later read starts new ones). */
export function closeReadThreads(): Promise<void> {
  return inTurn(async () => {
    await kept?.pool?.close();
    kept = undefined;
  });
}

/**
 * Runs `f` on the kept pool of `threads` workers, in its turn, holding the process alive meanwhile;
 * undefined, without running it, when the threads cannot start.
 */
function withPool<T>(threads: number, f: (p: TilePool) => Promise<T>): Promise<T | undefined> {
  return inTurn(async () => {
    const p = await poolOf(threads);
    if (p === undefined) return undefined;
    p.hold(true);
    try {
      return await f(p);
    } finally {
      p.hold(false);
    }
  });
}

/**
 * Reads `segments` of the file open as `fd` (consecutive, in file order, every target a view of shared
 * memory) on `threads` worker threads and continues `hasher` (crc32) over their bytes in order. Resolves
 * false, having read nothing, when the threads cannot start: the caller then reads on this thread.
 * Rejects with `JobFailed` for a failed read (the targets then hold partial data; {@link readError}
 * types it), or with the error of a worker that died (the next read starts new ones).
 */
export async function readSegments(threads: number, fd: number, segments: readonly Segment[], hasher: Required<Hasher>): Promise<boolean> {
  const done = await withPool(threads, async (p) => {
    await run(p, fd, segments, hasher);
    return true;
  });
  return done === true;
}

/** A range of a file read into new memory: `skew` bytes into its buffer. */
export interface Chunk {
  readonly offset: number;
  readonly length: number;
  readonly skew: number;
}

/**
 * Reads each chunk of the file open as `fd` into new memory on `threads` worker threads (each chunk by
 * one thread, which allocates its buffer and touches its pages first, so fresh memory's page faults are
 * taken on every core); resolves to the chunks' buffers and, with `hash`, their crc32s, in order; or
 * undefined, having read nothing, when the threads cannot start. Rejects as {@link readSegments} does.
 */
export function readChunks(threads: number, fd: number, chunks: readonly Chunk[], hash: boolean): Promise<{ buffers: ArrayBuffer[]; crcs: number[] } | undefined> {
  return withPool(threads, async (p) => {
    const buffers: ArrayBuffer[] = [];
    const crcs: number[] = [];
    for (let first = 0; first < chunks.length; first += MAX_JOB_TENSORS) {
      const part = chunks.slice(first, first + MAX_JOB_TENSORS);
      const tensors = part.map((c): JobTensor => ({ dtype: 'U8', at: 0, length: c.length, reads: [{ fd, offset: c.offset }], weights: undefined, keep: 0, own: { skew: c.skew } }));
      const done = await p.runFilling({ output: 0, tensors, divisor: 1, hash });
      part.forEach((_, i) => {
        buffers.push(done.filled.get(i) as ArrayBuffer);
        crcs.push(done.crcs[i] as number);
      });
    }
    return { buffers, crcs };
  });
}

/** A job's tensors. */
interface Planned {
  readonly tensors: JobTensor[];
}

/**
 * Cuts the segments into jobs of at most {@link JOB_BYTES} and `maxTensors` pieces, pieces of at most
 * {@link PIECE_BYTES}. Empty segments have nothing to read or hash.
 */
function* plan(fd: number, segments: readonly Segment[], maxTensors: number): Generator<Planned> {
  let job: Planned = { tensors: [] };
  let bytes = 0;
  for (let s = 0; s < segments.length; s++) {
    const { offset, target } = segments[s] as Segment;
    const view: SharedView = { buffer: target.buffer as SharedArrayBuffer, byteOffset: target.byteOffset, byteLength: target.byteLength };
    sending(view.buffer);
    for (let at = 0; at < target.byteLength; ) {
      if (bytes === JOB_BYTES || job.tensors.length === maxTensors) {
        yield job;
        job = { tensors: [] };
        bytes = 0;
      }
      const length = Math.min(PIECE_BYTES, target.byteLength - at, JOB_BYTES - bytes);
      job.tensors.push({ dtype: 'U8', at, length, reads: [{ fd, offset: offset + at }], weights: undefined, keep: 0, target: view });
      bytes += length;
      at += length;
    }
  }
  if (job.tensors.length > 0) yield job;
}

async function run(p: TilePool, fd: number, segments: readonly Segment[], hasher: Required<Hasher>): Promise<void> {
  // Two jobs in flight (their counters and crc tables alternate): a worker done with one goes on to the
  // next at once, while this thread combines the finished job's crcs.
  const running: { job: Planned; done: Promise<Uint32Array> }[] = [];
  let output = 0;
  const jobs = plan(fd, segments, MAX_JOB_TENSORS);
  const fill = (): void => {
    while (running.length < 2) {
      const next = jobs.next();
      if (next.done === true) return;
      running.push({ job: next.value, done: p.run({ output, tensors: next.value.tensors, divisor: 1, hash: true }) });
      output = (output + 1) % 2;
    }
  };
  try {
    fill();
    for (let head = running.shift(); head !== undefined; head = running.shift()) {
      const table = await head.done;
      let tile = 0;
      for (const t of head.job.tensors) {
        for (let at = 0; at < t.length; at += READ_TILE) hasher.append(table[tile++] as number, Math.min(READ_TILE, t.length - at));
      }
      // Its table is read: the slot takes the job after next.
      fill();
    }
  } finally {
    await Promise.allSettled(running.map((r) => r.done));
  }
}
