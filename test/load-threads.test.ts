/**
 * Verified loads on worker threads (`LoadOptions.threads` with shared memory: src/checkpoint/parallel-read.ts):
 * the same tensors and the same verification as on the calling thread, every failure typed and naming its
 * file, the fallbacks (other backends, sha256, memory that is not shared, small files) silent, and the
 * kept threads never holding the process open.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { open, readFile, truncate, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { createBufferPool } from '../src/buffers.js';
import { load, save, verify } from '../src/checkpoint/api.js';
import { openManager } from '../src/checkpoint/manager.js';
import { closeLoadThreads } from '../src/index.js';
import { createHasher } from '../src/checkpoint/checksum.js';
import { READ_TILE as TILE, closeReadThreads, readSegments } from '../src/checkpoint/parallel-read.js';
import type { TrainState } from '../src/checkpoint/types.js';
import { isCkptError } from '../src/errors.js';
import type { Backend, ObjectReader } from '../src/storage/backend.js';
import { fsBackend } from '../src/storage/fs.js';
import { memoryBackend } from '../src/storage/memory.js';
import type { TensorMap } from '../src/tensor/tensor.js';
import { tensor } from '../src/tensor/tensor.js';
import { assertSameTensors, cli, fuzzRuns, randoms, tmpDir, wrapReaders } from './helpers.js';

const MiB = 1024 * 1024;

/** 40 MiB of model (over the 32 MiB from which threads read), a small optimizer group and state. */
function stateAt(step: number): TrainState {
  return {
    step,
    tensors: {
      model: new Map([
        ['a', tensor(randoms((24 * MiB) / 4 + 3, step), [(24 * MiB) / 4 + 3])],
        ['empty', tensor(new Float32Array(0), [0])],
        ['b', tensor(randoms((16 * MiB) / 4, step + 1), [1024, (16 * MiB) / 4096])],
        ['c', tensor(new Uint8Array([1, 2, 3]), [3])],
      ]),
      optimizer: new Map([['m', tensor(randoms(1000, step + 2), [1000])]]),
    },
    state: { step },
  };
}

async function saved(step = 1, options: { checksum?: 'crc32' | 'sha256' } = {}): Promise<string> {
  const path = join(await tmpDir('ckpt-load-threads-'), `step-${step}`);
  await save(path, stateAt(step), { sync: false, ...options });
  return path;
}

describe('verified loads on worker threads', () => {
  it('read the same tensors as the calling thread, into shared memory, reusing the pool', async () => {
    const path = await saved();
    const plain = await load(path, { threads: 0 });
    const pool = createBufferPool({ shared: true });
    for (const threads of [1, 2, 3]) {
      const ck = await load(path, { allocate: pool.allocate, threads });
      assertSameTensors(ck.tensors, plain.tensors);
      assert.ok(ck.tensors.model?.get('a')?.data.buffer instanceof SharedArrayBuffer);
      assert.deepEqual(ck.state, { step: 1 });
      pool.release(ck.tensors);
      assert.ok(pool.idleBytes > 40 * MiB);
    }
    // Unverified, or on one thread: the same, read here.
    for (const options of [{ verify: false }, { threads: 0 }]) {
      const ck = await load(path, { allocate: pool.allocate, ...options });
      assertSameTensors(ck.tensors, plain.tensors);
      pool.release(ck.tensors);
    }
  });

  it('fall back silently where threads cannot serve: other backends, sha256, memory that is not shared', async () => {
    const path = await saved();
    const expected = (await load(path, { threads: 0 })).tensors;
    const shared = createBufferPool({ shared: true });
    // A memory backend has no descriptors.
    const mem = memoryBackend();
    await save({ backend: mem, key: 'ck' }, stateAt(1), { sync: false });
    assertSameTensors((await load({ backend: mem, key: 'ck' }, { allocate: shared.allocate, threads: 2 })).tensors, expected);
    const sha = await saved(1, { checksum: 'sha256' });
    assertSameTensors((await load(sha, { allocate: shared.allocate, threads: 2 })).tensors, expected);
    // Memory from a pool that is not shared: threads cannot write into it.
    const plainPool = createBufferPool();
    const plain = await load(path, { allocate: plainPool.allocate, threads: 2 });
    assertSameTensors(plain.tensors, expected);
    assert.equal(plain.tensors.model?.get('a')?.data.buffer, plain.tensors.model?.get('b')?.data.buffer, 'one buffer for the file, read here');
  });

  it('without allocate, read into fresh memory in chunks of tensors, on worker threads (which allocate them) or here; file alignment kept', async () => {
    const path = await saved(4);
    // Into memory of a pool: one buffer for the whole file.
    const expected = (await load(path, { allocate: createBufferPool().allocate, threads: 0 })).tensors;
    assert.equal(expected.model?.get('a')?.data.buffer, expected.model?.get('c')?.data.buffer);
    for (const threads of [0, 1, 2]) {
      const ck = await load(path, { threads });
      assertSameTensors(ck.tensors, expected);
      const model = ck.tensors.model as TensorMap;
      const buffer = (name: string): ArrayBufferLike | undefined => model.get(name)?.data.buffer;
      // 'a' (24 MiB) is a chunk of its own, 'empty' and 'b' (16 MiB) fill the next one, 'c' is the last.
      assert.notEqual(buffer('a'), buffer('b'));
      assert.equal(buffer('empty'), buffer('b'));
      assert.notEqual(buffer('b'), buffer('c'));
      assert.ok(!(buffer('a') instanceof SharedArrayBuffer));
      const header = (await readFile(join(path, 'model.safetensors'))).readUInt32LE(0) + 8;
      const offsets = [...(expected.model as TensorMap).values()].map((t) => t.data.byteOffset % 4096);
      assert.deepEqual([...model.values()].map((t) => t.data.byteOffset % 4096), offsets, 'each tensor placed in its page as when the whole file is read here');
      assert.ok(header % 8 === 0 && [...model.values()].every((t) => t.dtype !== 'F32' || t.data.byteOffset % 4 === 0));
    }
    // Below 256 MiB of tensors the default reads here, in the same chunks.
    const byDefault = (await load(path)).tensors.model as TensorMap;
    assert.notEqual(byDefault.get('a')?.data.buffer, byDefault.get('b')?.data.buffer);
    assert.equal(byDefault.get('empty')?.data.buffer, byDefault.get('b')?.data.buffer);
  });

  it('in chunks here: sha256 files and unverified loads too, the same tensors as one buffer for the file', async () => {
    const pool = createBufferPool();
    for (const checksum of ['crc32', 'sha256'] as const) {
      const path = await saved(6, { checksum });
      const whole = (await load(path, { allocate: pool.allocate, threads: 0 })).tensors;
      for (const verify of [true, false]) {
        const ck = await load(path, { threads: 0, verify });
        assertSameTensors(ck.tensors, whole);
        assert.notEqual(ck.tensors.model?.get('a')?.data.buffer, ck.tensors.model?.get('b')?.data.buffer, `${checksum}, verify ${verify}: chunks`);
      }
      const file = join(path, 'model.safetensors');
      const bytes = await readFile(file);
      bytes[20 * MiB] = (bytes[20 * MiB] as number) ^ 1;
      await writeFile(file, bytes);
      await assert.rejects(load(path, { threads: 0 }), (e) => isCkptError(e) && e.code === 'CHECKSUM_MISMATCH' && e.path === file && e.step === 6, checksum);
      // Unverified, the damage goes through (that is what verify: false means).
      assert.equal((await load(path, { threads: 0, verify: false })).step, 6);
    }
  });

  it('a corrupt byte anywhere is CHECKSUM_MISMATCH naming the file and step, into shared or fresh memory', async () => {
    const path = await saved(3);
    const file = join(path, 'model.safetensors');
    const original = await readFile(file);
    const pool = createBufferPool({ shared: true });
    // Shared memory on worker threads; fresh memory on worker threads, and here (chunks hashed in turn).
    for (const options of [{ allocate: pool.allocate, threads: 2 }, { threads: 2 }, { threads: 0 }]) {
      for (const at of [9, TILE - 1, TILE, 17 * MiB, 24 * MiB + 300, original.byteLength - 1]) {
        const bytes = Buffer.from(original);
        bytes[at] = (bytes[at] as number) ^ 0x10;
        await writeFile(file, bytes);
        await assert.rejects(load(path, options), (e) => isCkptError(e) && e.code === 'CHECKSUM_MISMATCH' && e.path === file && e.step === 3, `byte ${at}`);
      }
      await writeFile(file, original);
      assert.equal((await load(path, options)).step, 3);
    }
  });

  it('a file that shrinks, or cannot be read, after it was opened is a typed error naming it', async () => {
    const path = await saved(5);
    const file = join(path, 'model.safetensors');
    const original = await readFile(file);
    const size = original.byteLength;
    const damaged = (damage: (reader: ObjectReader) => Promise<ObjectReader>): { backend: Backend; key: string } => ({
      backend: wrapReaders(fsBackend(dirname(path)), file, damage),
      key: basename(path),
    });
    const pool = createBufferPool({ shared: true });
    for (const options of [{ allocate: pool.allocate, threads: 2 }, { threads: 2 }, { threads: 0 }]) {
      const shrinks = damaged(async (reader) => {
        await truncate(file, size - 100);
        return reader;
      });
      await assert.rejects(load(shrinks, options), (e) => isCkptError(e) && e.code === 'FILE_LENGTH_MISMATCH' && e.path === file && e.step === 5, JSON.stringify(options));
      await writeFile(file, original);
      // Here, reads go through the reader, not its descriptor.
      if (options.threads === 0) continue;
      const dirFd = openSync(path, 'r');
      try {
        const unreadable = damaged(async (reader) => ({ ...reader, fd: dirFd, read: reader.read.bind(reader), close: reader.close.bind(reader) }));
        await assert.rejects(load(unreadable, options), (e) => isCkptError(e) && e.code === 'IO_ERROR' && e.path === file && e.step === 5 && /EISDIR/.test(e.message));
      } finally {
        closeSync(dirFd);
      }
      // The threads serve the next load.
      assert.equal((await load(path, options)).step, 5);
    }
  });

  it('concurrent loads share the kept threads, in turn, whatever thread counts they ask for', async () => {
    const paths = await Promise.all([saved(1), saved(2), saved(3)]);
    const expected = await Promise.all(paths.map(async (p) => (await load(p, { threads: 0 })).tensors));
    const pool = createBufferPool({ shared: true });
    const got = await Promise.all(paths.map((p) => load(p, { allocate: pool.allocate, threads: 2 })));
    got.forEach((ck, i) => assertSameTensors(ck.tensors, expected[i] as Record<string, TensorMap>));
    // Each with another thread count: each replaces the kept threads, in its turn, never under another.
    const mixed = await Promise.all(paths.map((p, i) => load(p, { allocate: pool.allocate, threads: i + 1 })));
    mixed.forEach((ck, i) => assertSameTensors(ck.tensors, expected[i] as Record<string, TensorMap>));
    // Another thread count replaces the kept threads; closing them is idempotent, and the next load starts new ones.
    assertSameTensors((await load(paths[0] as string, { allocate: pool.allocate, threads: 1 })).tensors, expected[0] as Record<string, TensorMap>);
    await closeLoadThreads();
    await closeLoadThreads();
    assertSameTensors((await load(paths[1] as string, { allocate: pool.allocate, threads: 2 })).tensors, expected[1] as Record<string, TensorMap>);
  });

  it('a manager restores into shared memory on worker threads', async () => {
    const dir = await tmpDir('ckpt-load-threads-run-');
    const manager = await openManager(dir, { save: { everySteps: 1 } });
    try {
      await manager.save(stateAt(7));
      const pool = createBufferPool({ shared: true });
      const { checkpoint } = await manager.restore('latest', { allocate: pool.allocate, threads: 2 });
      assert.equal(checkpoint.step, 7);
      assert.ok(checkpoint.tensors.model?.get('b')?.data.buffer instanceof SharedArrayBuffer);
      assertSameTensors(checkpoint.tensors, (await manager.restore('latest', { threads: 0 })).checkpoint.tensors);
      await assert.rejects(manager.restore('latest', { threads: -1 }), (e) => isCkptError(e) && e.code === 'INVALID_ARGUMENT');
    } finally {
      await manager.close();
    }
  });

  it('verify and `ckpt verify` read on worker threads too, finding the same problems', async () => {
    const path = await saved(9);
    for (const threads of [0, 2]) assert.deepEqual(await verify(path, { threads }).then((r) => [r.valid, r.problems.length]), [true, 0]);
    assert.equal((await cli('verify', path, '--threads', '2')).code, 0);
    const file = join(path, 'model.safetensors');
    const bytes = await readFile(file);
    bytes[30 * MiB] = (bytes[30 * MiB] as number) ^ 1;
    await writeFile(file, bytes);
    for (const threads of [0, 2]) {
      const r = await verify(path, { threads });
      assert.equal(r.valid, false);
      assert.deepEqual(r.problems.map((e) => [e.code, e.path, e.step]), [['CHECKSUM_MISMATCH', file, 9]]);
    }
    const bad = await cli('verify', path, '--threads', '2', '--json');
    assert.equal(bad.code, 1);
    assert.match(bad.out, /CHECKSUM_MISMATCH/);
    for (const threads of ['65', '-1', 'x']) assert.equal((await cli('verify', path, '--threads', threads)).code, 2, threads);
    await assert.rejects(verify(path, { threads: 99 }), (e) => isCkptError(e) && e.code === 'INVALID_ARGUMENT');
  });

  it('shared memory read into on the kept threads is freed once the caller lets it go; verify keeps none', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const path = await saved(9);
    const arrayMiB = async (): Promise<number> => {
      // The collection here queues the finalization that tells the threads' pool the memory was let go;
      // the pool then replaces its threads in their turn.
      for (let i = 0; i < 3; i++) {
        gc();
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return process.memoryUsage().arrayBuffers / MiB;
    };
    await closeLoadThreads();
    const before = await arrayMiB();
    // 30 loads of 40 MiB, each into a pool of its own (nothing reused), all dropped: 1.2 GiB read into
    // shared memory. Each job message a worker received holds its buffer until that worker collects
    // garbage, which idle threads hardly do.
    for (let i = 0; i < 30; i++) {
      const ck = await load(path, { allocate: createBufferPool({ shared: true }).allocate, threads: 2 });
      assert.equal(ck.step, 9);
      if (i % 5 === 4) await arrayMiB();
    }
    const held = (await arrayMiB()) - before;
    assert.ok(held < 256 + 3 * 41, `${held.toFixed(0)} MiB of shared memory still held after the loads were dropped`);
    // verify reads into memory of its own, dropped group by group.
    for (let i = 0; i < 10; i++) assert.equal((await verify(path, { threads: 2 })).valid, true);
    assert.ok((await arrayMiB()) - before < 256 + 3 * 41);
    // With the threads gone, at most the last load's memory (its frame here may still hold it).
    await closeLoadThreads();
    assert.ok((await arrayMiB()) - before < 2 * 41);
  });

  it('an allocate that returns too few bytes, or no Uint8Array, is INVALID_ARGUMENT naming the file', async () => {
    const path = await saved(6);
    const file = join(path, 'model.safetensors');
    const bad = [(size: number) => new Uint8Array(size - 1), () => new Float32Array(4) as unknown as Uint8Array];
    for (const allocate of bad) {
      for (const threads of [0, 2]) {
        await assert.rejects(load(path, { allocate, threads }), (e) => isCkptError(e) && e.code === 'INVALID_ARGUMENT' && e.path === file && /allocate\(/.test(e.message));
      }
    }
  });

  it('refuses a threads option that is not an integer from 0 to 64, and a shared option that is not a boolean', async () => {
    const path = await saved();
    for (const threads of [-1, 1.5, 65, Number.NaN, '2']) {
      await assert.rejects(load(path, { threads: threads as number }), (e) => isCkptError(e) && e.code === 'INVALID_ARGUMENT' && /threads/.test(e.message), String(threads));
    }
    assert.throws(() => createBufferPool({ shared: 'yes' as unknown as boolean }), (e) => isCkptError(e) && e.code === 'INVALID_ARGUMENT');
  });

  it('idle kept threads do not keep the process alive', () => {
    const script = `
      const { save, load, createBufferPool } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
      const dir = ${JSON.stringify(join(process.env['TMPDIR'] ?? '/tmp', `ckpt-exit-${process.pid}`))};
      const data = new Uint8Array(33 * 1024 * 1024);
      await save(dir, { step: 1, tensors: { model: new Map([['w', { dtype: 'U8', shape: [data.length], data }]]) } }, { sync: false });
      const ck = await load(dir, { allocate: createBufferPool({ shared: true }).allocate, threads: 2 });
      const { rm } = await import('node:fs/promises');
      await rm(dir, { recursive: true });
      console.log(ck.tensors.model.get('w').data.buffer.constructor.name);
    `;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'SharedArrayBuffer');
  });
});

describe('readSegments', () => {
  it('reads consecutive segments of any sizes into their targets, hashing them in order', async () => {
    const dir = await tmpDir('ckpt-segments-');
    const file = join(dir, 'data.bin');
    const bytes = Buffer.from(randoms((8 * MiB) / 4, 7).buffer);
    await writeFile(file, bytes);
    const handle = await open(file, 'r');
    try {
      const sizes = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 100 }), fc.integer({ min: TILE - 2, max: TILE + 2 }), fc.integer({ min: 1, max: 3 * TILE })), { maxLength: 12 });
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 0, max: 1000 }), sizes, fc.integer({ min: 1, max: 3 }), async (start, lengths, threads) => {
          let offset = start;
          const segments = [];
          for (const length of lengths) {
            if (offset + length > bytes.byteLength) break;
            // Targets at odd places of their shared buffers.
            segments.push({ offset, target: new Uint8Array(new SharedArrayBuffer(length + 7), 7, length) });
            offset += length;
          }
          const h = createHasher('crc32');
          assert.equal(await readSegments(threads, handle.fd, segments, h as Required<typeof h>), true);
          const expected = createHasher('crc32');
          expected.update(bytes.subarray(start, offset));
          assert.equal(h.digest(), expected.digest());
          for (const s of segments) assert.ok(Buffer.from(s.target).equals(bytes.subarray(s.offset, s.offset + s.target.byteLength)));
        }),
        { numRuns: fuzzRuns(25) },
      );
    } finally {
      await closeReadThreads();
      await handle.close();
    }
  });

  it('cuts jobs at 64 MiB and at 4,096 pieces, and reads across both', async () => {
    const dir = await tmpDir('ckpt-segments-');
    const file = join(dir, 'data.bin');
    const bytes = Buffer.alloc(70 * MiB + 5000);
    for (let i = 0; i < bytes.length; i += 4093) bytes[i] = i & 0xff;
    await writeFile(file, bytes);
    const handle = await open(file, 'r');
    try {
      // One 70 MiB segment (pieces of 16 MiB, two jobs), then 5,000 one-byte segments (two jobs by count).
      const segments = [{ offset: 0, target: new Uint8Array(new SharedArrayBuffer(70 * MiB)) }];
      for (let i = 0; i < 5000; i++) segments.push({ offset: 70 * MiB + i, target: new Uint8Array(new SharedArrayBuffer(1)) });
      const h = createHasher('crc32');
      assert.equal(await readSegments(2, handle.fd, segments, h as Required<typeof h>), true);
      const expected = createHasher('crc32');
      expected.update(bytes);
      assert.equal(h.digest(), expected.digest());
      assert.ok(Buffer.from((segments[0] as { target: Uint8Array }).target).equals(bytes.subarray(0, 70 * MiB)));
      assert.ok(segments.slice(1).every((s, i) => s.target[0] === bytes[70 * MiB + i]));
    } finally {
      await closeReadThreads();
      await handle.close();
    }
  });
});
