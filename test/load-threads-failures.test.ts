/**
 * Verified loads on worker threads (src/checkpoint/parallel-read.ts, src/average/parallel.ts) when a
 * worker thread dies part-way through a load (typed error naming the file; no thread left reading a
 * closed descriptor into the caller's memory), closing the threads under loads, and the edges of the
 * planning (zero-length chunks, the 32 MiB threshold).
 */
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { createBufferPool } from '../src/buffers.js';
import { load, save } from '../src/checkpoint/api.js';
import { closeLoadThreads } from '../src/index.js';
import type { TrainState } from '../src/checkpoint/types.js';
import { isCkptError } from '../src/errors.js';
import { fsBackend } from '../src/storage/fs.js';
import type { TensorMap } from '../src/tensor/tensor.js';
import { tensor } from '../src/tensor/tensor.js';
import { crashNextWorker, randoms, tmpDir, wrapReaders } from './helpers.js';

const MiB = 1024 * 1024;

/** `n` bytes repeating 0, 1, …, 250 (no long run of any one value). */
function pattern(n: number): Buffer {
  return Buffer.alloc(n, Buffer.from(Array.from({ length: 251 }, (_, i) => i)));
}

async function saved(state: TrainState, prefix = 'ckpt-threads-review-'): Promise<string> {
  const path = join(await tmpDir(prefix), `step-${state.step}`);
  await save(path, state, { sync: false });
  return path;
}

/** A checkpoint whose model file is one U8 tensor of `bytes` bytes (three 64 MiB jobs for 160 MiB). */
function bigState(step: number, bytes: number): TrainState {
  return { step, tensors: { model: new Map([['w', tensor(pattern(bytes), [bytes], 'U8')]]) } };
}

/** Counts the jobs sent to worker threads while `f` runs. */
async function jobsDuring<T>(f: () => Promise<T>): Promise<{ value: T; jobs: number }> {
  const post = Worker.prototype.postMessage;
  let jobs = 0;
  Worker.prototype.postMessage = function (this: Worker, value: unknown, transfer?: readonly unknown[]): void {
    if (typeof value === 'object' && value !== null && 'id' in value && 'tensors' in value) jobs++;
    post.call(this, value, transfer as never);
  };
  try {
    return { value: await f(), jobs };
  } finally {
    Worker.prototype.postMessage = post;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('a worker thread that dies during a verified load', () => {
  it('fails the load with a typed error naming the file and step, and the next load starts new threads', async () => {
    const path = await saved(bigState(11, 40 * MiB));
    const file = join(path, 'model.safetensors');
    const pool = createBufferPool({ shared: true });
    for (const options of [{ allocate: pool.allocate, threads: 2 }, { threads: 2 }]) {
      const undo = crashNextWorker();
      try {
        await assert.rejects(load(path, options), (e) => {
          assert.ok(isCkptError(e), String(e));
          assert.equal(e.code, 'IO_ERROR');
          assert.equal(e.path, file, `the error names the file: ${e.message}`);
          assert.equal(e.step, 11);
          return true;
        });
      } finally {
        undo();
      }
      // The broken threads are replaced by the next load.
      const ck = await load(path, options);
      assert.ok(sameBytes(ck.tensors.model?.get('w')?.data as Uint8Array, pattern(40 * MiB)));
    }
    await closeLoadThreads();
  });

  it('leaves no thread reading its file into the caller\'s memory once the load has failed', async () => {
    const bytes = 160 * MiB;
    const path = await saved(bigState(12, bytes));
    const file = join(path, 'model.safetensors');
    // A file of other bytes, opened the moment the load fails: it takes the descriptor number the load
    // just closed, which a thread still reading would now read from.
    const decoy = join(dirname(path), 'decoy.bin');
    await writeFile(decoy, Buffer.alloc(bytes + MiB, 0xee));
    let fd: number | undefined;
    const backend = wrapReaders(fsBackend(dirname(path)), file, (reader) => {
      fd = reader.fd;
      return reader;
    });
    const shared = createBufferPool({ shared: true });
    let target: Uint8Array | undefined;
    const allocate = (size: number): Uint8Array => {
      const b = shared.allocate(size);
      if (size > bytes) target = b;
      return b;
    };
    const undo = crashNextWorker();
    let decoyFd: number | undefined;
    let atFailure: Buffer | undefined;
    try {
      await load({ backend, key: basename(path) }, { allocate, threads: 2 }).then(
        () => assert.fail('the load succeeded'),
        (e: unknown) => {
          decoyFd = openSync(decoy, 'r');
          assert.ok(isCkptError(e), String(e));
          atFailure = Buffer.from(target as Uint8Array);
        },
      );
    } finally {
      undo();
    }
    try {
      assert.ok(target !== undefined && atFailure !== undefined && fd !== undefined);
      // Long enough for a thread still at work to read the rest of its jobs.
      await sleep(1500);
      const now = Buffer.from(target);
      let firstChange = -1;
      for (let at = 0; at < now.length && firstChange < 0; at += 4096) {
        if (!now.subarray(at, at + 4096).equals(atFailure.subarray(at, at + 4096))) firstChange = at;
      }
      const decoyRun = now.indexOf(Buffer.alloc(4096, 0xee));
      assert.equal(
        firstChange,
        -1,
        `a worker thread went on writing into the caller's buffer after the load failed (from byte ${firstChange}; descriptor ${fd} reused by the decoy: ${decoyFd === fd}; decoy bytes at ${decoyRun})`,
      );
      assert.equal(decoyRun, -1, 'bytes of another file were read into the caller\'s buffer');
    } finally {
      if (decoyFd !== undefined) closeSync(decoyFd);
      await closeLoadThreads();
    }
  });
});

describe('kept threads under concurrent use', () => {
  it('closeLoadThreads() racing loads of different thread counts, into shared and fresh memory, waits its turn', async () => {
    const state: TrainState = {
      step: 13,
      tensors: {
        model: new Map([
          ['a', tensor(randoms((20 * MiB) / 4 + 1, 13), [(20 * MiB) / 4 + 1])],
          ['b', tensor(randoms((14 * MiB) / 4, 14), [(14 * MiB) / 4])],
        ]),
      },
    };
    const path = await saved(state);
    const expected = (await load(path, { threads: 0 })).tensors.model as TensorMap;
    const pool = createBufferPool({ shared: true });
    const check = (got: TensorMap): void => {
      for (const [name, t] of expected) assert.ok(sameBytes(got.get(name)?.data as Uint8Array, t.data), name);
    };
    // Closing between, before and after loads that each replace the kept threads: every load reads
    // the right bytes and every close settles (none closes the threads under a load).
    const work: Promise<unknown>[] = [];
    for (const threads of [2, 1, 3, 2]) {
      work.push(load(path, { allocate: pool.allocate, threads }).then((ck) => check(ck.tensors.model as TensorMap)));
      work.push(closeLoadThreads());
      work.push(load(path, { threads }).then((ck) => check(ck.tensors.model as TensorMap)));
    }
    work.push(closeLoadThreads());
    await Promise.all(work);
    // And the threads start again for the next load.
    check((await load(path, { threads: 2 })).tensors.model as TensorMap);
    await closeLoadThreads();
  });
});

describe('planning edges', () => {
  it('empty tensors that make chunks of zero bytes, before, between and after tensors over 16 MiB', async () => {
    const big = (seed: number): ReturnType<typeof tensor> => tensor(randoms((17 * MiB) / 4 + 5, seed), [(17 * MiB) / 4 + 5]);
    const state: TrainState = {
      step: 14,
      tensors: {
        model: new Map([
          ['e0', tensor(new Float32Array(0), [0])],
          ['big1', big(1)],
          ['e1', tensor(new Float32Array(0), [2, 0])],
          ['big2', big(2)],
          ['e2', tensor(new Uint8Array(0), [0])],
        ]),
      },
    };
    const path = await saved(state);
    const expected = (await load(path, { threads: 0 })).tensors.model as TensorMap;
    const pool = createBufferPool({ shared: true });
    for (const options of [{ threads: 2 }, { threads: 1 }, { allocate: pool.allocate, threads: 2 }]) {
      const { value: ck, jobs } = await jobsDuring(() => load(path, options));
      assert.ok(jobs > 0, 'read on worker threads');
      const model = ck.tensors.model as TensorMap;
      assert.deepEqual([...model.keys()], [...expected.keys()]);
      for (const [name, t] of expected) {
        const u = model.get(name);
        assert.deepEqual(u?.shape, t.shape, name);
        assert.ok(sameBytes(u?.data as Uint8Array, t.data), name);
      }
    }
    await closeLoadThreads();
  });

  it('a tensor file of exactly 32 MiB is read on the threads, one of 32 MiB - 8 on the calling thread', async () => {
    // A U8 tensor sized so that the file (8-byte prefix, header, data) is exactly 32 MiB.
    const dir = await tmpDir('ckpt-threads-review-');
    let n = 32 * MiB - 256;
    let path = '';
    for (let attempt = 0; attempt < 3; attempt++) {
      path = join(dir, `n-${n}`);
      await save(path, { step: 15, tensors: { model: new Map([['w', tensor(pattern(n), [n], 'U8')]]) } }, { sync: false });
      const got = (await stat(join(path, 'model.safetensors'))).size;
      if (got === 32 * MiB) break;
      n += 32 * MiB - got;
    }
    const sizeOf = async (p: string): Promise<number> => (await stat(join(p, 'model.safetensors'))).size;
    assert.equal(await sizeOf(path), 32 * MiB);
    const smaller = join(dir, 'smaller');
    await save(smaller, { step: 15, tensors: { model: new Map([['w', tensor(pattern(n - 8), [n - 8], 'U8')]]) } }, { sync: false });
    assert.equal(await sizeOf(smaller), 32 * MiB - 8);
    const pool = createBufferPool({ shared: true });
    for (const options of [{ threads: 2 }, { allocate: pool.allocate, threads: 2 }]) {
      const at = await jobsDuring(() => load(path, options));
      assert.ok(at.jobs > 0, `32 MiB: on the threads (${JSON.stringify(Object.keys(options))})`);
      assert.ok(sameBytes(at.value.tensors.model?.get('w')?.data as Uint8Array, pattern(n)));
      const below = await jobsDuring(() => load(smaller, options));
      assert.equal(below.jobs, 0, '32 MiB - 8: on the calling thread');
      assert.ok(sameBytes(below.value.tensors.model?.get('w')?.data as Uint8Array, pattern(n - 8)));
    }
    await closeLoadThreads();
  });
});
