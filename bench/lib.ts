/** Shared helpers of the benchmark suite: timing, baselines, report rows. */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { open, rm } from 'node:fs/promises';
import { cpus } from 'node:os';
import { allocReadBuffer } from '../src/buffers.js';
import type { TensorMap } from '../src/tensor/tensor.js';

/** One line of the report: a figure next to the limit it is measured against. */
export interface Row {
  readonly section: string;
  readonly what: string;
  /** Our figure, formatted. */
  readonly ours: string;
  /** The limit in the same run, formatted. */
  readonly limit: string;
  /** ours / limit as a throughput ratio (or a plain value), formatted. */
  readonly ratio: string;
  readonly target: string;
  /** true = met, false = missed, undefined = informational. */
  readonly met?: boolean;
}

/** Seconds taken by `fn`, best (smallest) of `reps` runs after `warmup` unmeasured ones. */
export async function bestTime(fn: () => Promise<unknown> | unknown, reps: number, warmup = 1, between?: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < warmup; i++) {
    await fn();
    if (between) await between();
  }
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t = process.hrtime.bigint();
    await fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e9);
    if (between) await between();
  }
  return best;
}

/** The median of some numbers (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** `1.23 GB/s` for `bytes` moved in `seconds`. */
export function rate(bytes: number, seconds: number): string {
  return `${(bytes / seconds / 1e9).toFixed(2)} GB/s`;
}

/** Milliseconds with 1 decimal. */
export function ms(seconds: number): string {
  return `${(seconds * 1000).toFixed(1)} ms`;
}

/** Total tensor bytes of some groups. */
export function totalBytes(groups: Readonly<Record<string, TensorMap>>): number {
  let n = 0;
  for (const map of Object.values(groups)) for (const t of map.values()) n += t.data.byteLength;
  return n;
}

/** Baseline: write `chunks` sequentially to one new file (optionally fsync), as a raw writer would. */
export async function rawWrite(path: string, chunks: readonly Uint8Array[], sync: boolean): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (const c of chunks) {
      let off = 0;
      while (off < c.byteLength) {
        const { bytesWritten } = await fh.write(c, off, Math.min(c.byteLength - off, 1 << 30));
        off += bytesWritten;
      }
    }
    if (sync) await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Baseline: read a whole file into a reused, well-placed buffer. `during(size)`, when given, runs on this
 * thread right after the first read is issued (which runs on the thread pool meanwhile).
 */
export async function rawRead(path: string, into: Uint8Array, during?: (size: number) => void): Promise<number> {
  const fh = await open(path, 'r');
  try {
    let off = 0;
    const first = fh.read(into, 0, Math.min(into.byteLength, 1 << 30), 0);
    if (during !== undefined) during((await fh.stat()).size);
    for (let next = first; ; next = fh.read(into, off, Math.min(into.byteLength - off, 1 << 30), off)) {
      const { bytesRead } = await next;
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return off;
  } finally {
    await fh.close();
  }
}

/**
 * Limit for a checksummed write: {@link rawWrite} (no fsync) where each chunk's bytes are hashed by this
 * thread while the thread pool writes them, as any writer that checksums must read them once more.
 */
export async function rawWriteWhileHashing(path: string, chunks: readonly Uint8Array[], hash: (b: Uint8Array) => number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    let at = 0;
    for (const c of chunks) {
      const writing = fh.write(c, 0, c.byteLength, at);
      hash(c);
      const { bytesWritten } = await writing;
      if (bytesWritten !== c.byteLength) throw new Error(`short write: ${bytesWritten} of ${c.byteLength}`);
      at += c.byteLength;
    }
  } finally {
    await fh.close();
  }
}

/**
 * Limit for a verified read: reads `path` into `into` (as {@link rawRead}) while this thread runs
 * `hash(other)` over a buffer of the same size, so both stream through memory at once.
 */
export async function rawReadWhileHashing(path: string, into: Uint8Array, other: Uint8Array, hash: (b: Uint8Array) => number): Promise<void> {
  await rawRead(path, into, (size) => hash(other.subarray(0, size)));
}

/** A reusable read buffer of `size` bytes placed where the kernel copies fast. */
export function readBuffer(size: number): Uint8Array {
  return allocReadBuffer(size);
}

/** Removes a path, ignoring absence. */
/**
 * Writes the page cache's dirty data to disk (`sync`) before a measurement: fixtures written just before
 * (GiBs of checkpoints) would otherwise still be flushed while it runs, and the kernel throttles any
 * writer once too much is dirty, so what is timed would be this machine's disk. Nothing where `sync` is
 * missing.
 */
export function flushDirty(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

export function remove(path: string): Promise<void> {
  return rm(path, { recursive: true, force: true });
}

/** Machine description for the report. */
export function machine(): string {
  const c = cpus();
  return `${c.length} × ${c[0]?.model ?? 'unknown CPU'}, Node ${process.version}`;
}

/** Deterministic F32 tensor data (cheap to produce, not all zeros, so nothing is sparse or compressible). */
export function filled(bytes: number, seed: number): Uint8Array {
  const f = new Float32Array(bytes / 4);
  let x = seed;
  for (let i = 0; i < f.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    f[i] = x / 2 ** 32;
  }
  return new Uint8Array(f.buffer);
}

/**
 * Runs the bench script `script` (a compiled file next to this one) with `args` in a process of its own
 * and returns the JSON it prints; throws with its stderr when it fails (`what` names it).
 */
export function runChild<T>(script: string, args: readonly string[], what: string): T {
  const child = spawnSync(process.execPath, [fileURLToPath(new URL(`./${script}`, import.meta.url)), ...args], { encoding: 'utf8' });
  if (child.status !== 0) throw new Error(`${what} child failed: ${child.stderr}`);
  return JSON.parse(child.stdout) as T;
}
