import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { type Tensor, type TensorMap, tensor } from '../src/tensor/tensor.js';
import type { TrainState } from '../src/checkpoint/types.js';
import { load } from '../src/checkpoint/api.js';
import assert from 'node:assert/strict';
import type { Backend, ObjectReader } from '../src/storage/backend.js';
import { Worker } from 'node:worker_threads';

/** A fresh temporary directory, removed after the test file. */
export async function tmpDir(prefix = 'ckpt-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs of each fast-check property: CKPT_FUZZ_RUNS when set (long runs), else the CI-sized `ciDefault`. */
export function fuzzRuns(ciDefault: number): number {
  const env = process.env['CKPT_FUZZ_RUNS'];
  return env === undefined ? ciDefault : Number(env);
}

/** xorshift32 values in [-1, 1). */
export function randoms(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return out;
}

/** A deterministic pseudo-random F32 tensor. */
export function randomF32(shape: number[], seed: number): Tensor {
  return tensor(randoms(shape.reduce((a, b) => a * b, 1), seed), shape);
}

/** A small but complete training state (model, optimizer, ema groups; JSON state; metrics). */
export function sampleState(step: number, metrics: Record<string, number> = {}): TrainState {
  const model: TensorMap = new Map([
    ['encoder/w', randomF32([4, 3], step + 1)],
    ['encoder/b', randomF32([3], step + 2)],
    ['scale', tensor(new Float64Array([step / 10]), [])],
  ]);
  const optimizer: TensorMap = new Map([
    ['encoder/w/m', randomF32([4, 3], step + 3)],
    ['iterations', tensor(new BigInt64Array([BigInt(step)]), [])],
  ]);
  const ema: TensorMap = new Map([['encoder/w', randomF32([4, 3], step + 4)]]);
  return {
    step,
    epoch: Math.floor(step / 10),
    tensors: { model, optimizer, ema },
    state: { rng: { seed: 42, counter: step }, data: { epoch: 0, position: step * 8 }, user: { note: 'hello' } },
    metrics,
    hyperParameters: { lr: 0.001, layers: 2 },
    metadata: { purpose: 'test' },
    versions: { framework: 'none' },
  };
}

/** What a CLI run printed and returned. */
export interface CliResult {
  code: number;
  out: string;
  err: string;
}

/** Runs the `ckpt` CLI in-process with captured output. */
export async function cli(...argv: string[]): Promise<CliResult> {
  const { run } = await import('../src/cli/index.js');
  let out = '';
  let err = '';
  const code = await run(argv, { stdout: (t) => void (out += t), stderr: (t) => void (err += t) });
  return { code, out, err };
}

/**
 * Mounts a tmpfs of `size` (e.g. '4m') for the enclosing describe block (root only; tests skip with the
 * reason otherwise) and returns a registrar of tests that each get a fresh directory on it.
 */
export function tmpfsTests(size: string, prefix: string): {
  onTmpfs: (title: string, body: (root: string) => Promise<void>) => void;
  mountPoint: () => string;
} {
  let mountPoint = '';
  let skipReason: string | undefined;
  before(async () => {
    mountPoint = await mkdtemp(join(tmpdir(), prefix));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mountPoint], { stdio: 'pipe' });
    } catch (e) {
      skipReason = `cannot mount a tmpfs (needs root and CAP_SYS_ADMIN): ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`;
    }
  });
  after(async () => {
    if (skipReason === undefined) execFileSync('umount', [mountPoint], { stdio: 'pipe' });
    await rm(mountPoint, { recursive: true, force: true });
  });
  const onTmpfs = (title: string, body: (root: string) => Promise<void>): void => {
    it(title, async (t) => {
      if (skipReason !== undefined) {
        t.skip(skipReason);
        return;
      }
      const root = join(mountPoint, title.replace(/\W+/g, '-').slice(0, 40));
      try {
        await body(root);
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    });
  };
  return { onTmpfs, mountPoint: () => mountPoint };
}

/**
 * Size and modification time of every file of the step directories of the run at `run`: equal before
 * and after an operation that only reads the run (averaging) when it changed nothing there.
 */
export async function stepFilesFingerprint(run: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of (await readdir(run)).filter((n) => n.startsWith('step-')).sort()) {
    for (const f of (await readdir(join(run, d))).sort()) {
      const st = await stat(join(run, d, f));
      out.push(`${d}/${f} ${st.size} ${st.mtimeMs}`);
    }
  }
  return out;
}

/** `group/name:sha256` of every tensor of the checkpoint at `dir`, loaded (and so verified). */
export async function tensorDigests(dir: string): Promise<string[]> {
  const ck = await load(dir);
  return Object.entries(ck.tensors).flatMap(([g, m]) => [...m].map(([n, t]) => `${g}/${n}:${createHash('sha256').update(t.data).digest('hex')}`));
}

/**
 * Makes the next worker thread that is sent a job die on it (an uncaught exception in the worker, as
 * a crash or an out-of-memory would end it); returns the undo. Only that worker's copy of the job is
 * spoiled: the other workers get the job as sent.
 */
export function crashNextWorker(): () => void {
  const post = Worker.prototype.postMessage;
  let armed = true;
  Worker.prototype.postMessage = function (this: Worker, value: unknown, transfer?: readonly unknown[]): void {
    if (armed && typeof value === 'object' && value !== null && 'id' in value && 'tensors' in value) {
      armed = false;
      post.call(this, { ...value, tensors: null }, transfer as never);
      return;
    }
    post.call(this, value, transfer as never);
  };
  return () => {
    Worker.prototype.postMessage = post;
  };
}

/**
 * Asserts that two loads hold the same groups and tensors (names in file order, dtypes, shapes, bytes);
 * with `pages`, each tensor also at the same position in its memory page.
 */
export function assertSameTensors(a: Record<string, TensorMap>, b: Record<string, TensorMap>, pages = false): void {
  assert.deepEqual(Object.keys(a), Object.keys(b));
  for (const [group, map] of Object.entries(a)) {
    const other = b[group] as TensorMap;
    assert.deepEqual([...map.keys()], [...other.keys()], `${group}: names in file order`);
    for (const [name, t] of map) {
      const u = other.get(name);
      assert.ok(u !== undefined, name);
      assert.equal(t.dtype, u.dtype);
      assert.deepEqual(t.shape, u.shape);
      assert.ok(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength)), `${group}/${name}`);
      if (pages) assert.equal(t.data.byteOffset % 4096, u.data.byteOffset % 4096, `${group}/${name}: placed in its page as in a whole-file read`);
    }
  }
}

/** A backend over `inner` whose readers of the file `path` (as `inner.describe` names it) go through `wrap`. */
export function wrapReaders(inner: Backend, path: string, wrap: (reader: ObjectReader) => ObjectReader | Promise<ObjectReader>): Backend {
  return {
    ...inner,
    openReader: async (key) => {
      const reader = await (inner.openReader as NonNullable<Backend['openReader']>)(key);
      return inner.describe(key) === path ? wrap(reader) : reader;
    },
  };
}
