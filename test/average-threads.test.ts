/**
 * Averaging on worker threads (src/average/parallel.ts, worker.ts): the same bytes as the calling
 * thread in every case the single-thread stream handles, every failure typed and naming its file, and
 * the fallbacks (other backends, sha256 inputs) taking over silently.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { closeSync, openSync } from 'node:fs';
import { readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { type AverageOptions, averageCheckpoints, bytesToRead, defaultThreads } from '../src/average/average.js';
import { TILE } from '../src/average/parallel.js';
import { load } from '../src/checkpoint/api.js';
import { openManager } from '../src/checkpoint/manager.js';
import type { TrainState } from '../src/checkpoint/types.js';
import { isCkptError } from '../src/errors.js';
import { readHeaderLength } from '../src/format/safetensors.js';
import type { Backend, ObjectReader } from '../src/storage/backend.js';
import { faultyBackend } from '../src/storage/faulty.js';
import { fsBackend } from '../src/storage/fs.js';
import { memoryBackend } from '../src/storage/memory.js';
import { type Tensor, type TensorMap, f32ToBf16, f32ToF16, tensor } from '../src/tensor/tensor.js';
import { cli, crashNextWorker, fuzzRuns, randoms, tmpDir, wrapReaders } from './helpers.js';

/** A model with every averaged dtype, integers, booleans, an empty tensor, and tensors of 0.5 to 3.4 tiles. */
function model(step: number): TensorMap {
  const seed = step * 7919;
  const f32 = (n: number, s: number): Tensor => tensor(randoms(n, seed + s), [n]);
  return new Map<string, Tensor>([
    ['big', f32((3 * TILE + 4 * 1000) / 4, 1)], // 3 tiles and a partial one
    ['f64', tensor(Float64Array.from(randoms(TILE / 8 + 3, seed + 2)), [TILE / 8 + 3])], // just over a tile
    ['tile', f32(TILE / 4, 3)], // exactly one tile
    ['half', f32(TILE / 8, 4)],
    ['h', tensor(Uint16Array.from(randoms(70_001, seed + 5), f32ToF16), [70_001], 'F16')],
    ['bf', tensor(Uint16Array.from(randoms(90_000, seed + 6), f32ToBf16), [300, 300], 'BF16')],
    ['count', tensor(new BigInt64Array([BigInt(step)]), [])],
    ['mask', tensor(new Uint8Array([step % 2, 1, 0]), [3], 'BOOL')],
    ['empty', tensor(new Float32Array(0), [0, 4])],
    ...Array.from({ length: 40 }, (_, i): [string, Tensor] => [`small${i}`, f32(1 + i, 100 + i)]),
  ]);
}

function stateAt(step: number): TrainState {
  return {
    step,
    tensors: {
      model: model(step),
      ema: new Map([['w', tensor(randoms(50_000, step), [50_000])]]),
      optimizer: new Map([
        ['m', tensor(randoms(200_000, step + 1), [200_000])],
        ['iterations', tensor(new BigInt64Array([BigInt(step)]), [])],
      ]),
    },
    state: { step },
    metrics: { loss: 1 / step },
  };
}

async function makeRun(steps: number[], save: { checksum?: 'crc32' | 'sha256'; shardBytes?: number } = {}): Promise<string> {
  const dir = await tmpDir('ckpt-avg-threads-');
  const m = await openManager(dir, { sync: false, ...save });
  for (const s of steps) await m.save(stateAt(s));
  await m.close();
  return dir;
}

/** Every file of a checkpoint directory: name → bytes. */
async function files(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of (await readdir(dir)).sort()) out.set(name, await readFile(join(dir, name)));
  return out;
}

/** Averages with `threads` 0 and 2 into two outputs and asserts identical files; `workers`: threads the second used. */
async function sameAsOneThread(run: string, options: AverageOptions, label: string, workers = 2): Promise<void> {
  const outs = await tmpDir('ckpt-avg-threads-out-');
  const results = [];
  for (const threads of [0, 2]) {
    results.push(await averageCheckpoints(run, { ...options, threads, out: join(outs, `t${threads}`), sync: false, now: 1_700_000_000_000 }));
  }
  const [one, two] = await Promise.all([files(join(outs, 't0')), files(join(outs, 't2'))]);
  assert.deepEqual([...two.keys()], [...one.keys()], `${label}: same files`);
  for (const [name, bytes] of one) assert.ok(bytes.equals(two.get(name) as Buffer), `${label}: ${name} is identical`);
  assert.deepEqual(results[1]?.steps, results[0]?.steps);
  assert.equal(results[0]?.threads, 0);
  assert.equal(results[1]?.threads, workers, `${label}: worker threads used`);
  await load(join(outs, 't2')); // verified
}

describe('averageCheckpoints on worker threads', () => {
  it('writes the same bytes as the calling thread: dtypes, partial tiles, copied groups, weights, groups, verify off, sharded inputs', async () => {
    const run = await makeRun([100, 200, 300, 400, 500]);
    await sameAsOneThread(run, {}, 'default');
    await sameAsOneThread(run, { select: { last: 3 }, weights: [1, 2, 3.5] }, 'weights');
    await sameAsOneThread(run, { select: { steps: [500, 100] }, groups: ['model', 'ema'] }, 'groups');
    await sameAsOneThread(run, { verify: false }, 'unverified');
    await sameAsOneThread(run, { select: { last: 4 } }, 'power-of-two divisor');
    const sharded = await makeRun([100, 200, 300], { shardBytes: 200_000 });
    const shards = (await readdir(join(sharded, 'step-00000300'))).filter((n) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(n));
    assert.ok(shards.length > 1, `the inputs are sharded: ${shards.join(', ')}`);
    await sameAsOneThread(sharded, { shardBytes: 300_000 }, 'sharded');
  });

  it('many small tensors go to the workers in jobs of several tensors', async () => {
    const dir = await tmpDir('ckpt-avg-threads-');
    const m = await openManager(dir, { sync: false });
    for (const step of [1, 2, 3]) {
      const g: TensorMap = new Map();
      for (let i = 0; i < 5000; i++) g.set(`t${i}`, tensor(randoms(3, step * 10_000 + i), [3]));
      g.set('last', tensor(randoms(300, step), [300]));
      await m.save({ step, tensors: { model: g } });
    }
    await m.close();
    await sameAsOneThread(dir, {}, 'small tensors');
  });

  it('more jobs than output buffers: tensors over the 8 MiB minimum each get a job, small ones share', async () => {
    const dir = await tmpDir('ckpt-avg-threads-');
    const m = await openManager(dir, { sync: false });
    const big = (8 * 1024 * 1024) / 4 + 1; // one element over 8 MiB
    for (const step of [1, 2]) {
      const g: TensorMap = new Map();
      for (let i = 0; i < 5; i++) {
        g.set(`big${i}`, tensor(randoms(big - i, step * 100 + i), [big - i]));
        g.set(`small${i}`, tensor(randoms(1000 + i, step * 1000 + i), [1000 + i]));
      }
      await m.save({ step, tensors: { model: g } });
    }
    await m.close();
    await sameAsOneThread(dir, {}, 'big tensors');
  });

  it('inputs with sha256 checksums, and backends without file descriptors, are averaged on the calling thread', async () => {
    const run = await makeRun([1, 2], { checksum: 'sha256' });
    await sameAsOneThread(run, {}, 'sha256', 0);
    // Unverified, nothing needs hashing: the workers serve.
    await sameAsOneThread(run, { verify: false }, 'sha256 unverified');
    const backend = memoryBackend();
    const m = await openManager({ backend, key: 'run' }, { sync: false });
    for (const s of [1, 2, 3]) await m.save(stateAt(s));
    await m.close();
    const r = await averageCheckpoints({ backend, key: 'run' }, { threads: 2 });
    assert.deepEqual(r.steps, [1, 2, 3]);
    assert.equal(r.threads, 0);
  });

  it('a corrupt tensor is CHECKSUM_MISMATCH naming the file, in an averaged or a copied group; nothing is written', async () => {
    // An older checkpoint's averaged group, the newest's copied group (the only one of it read).
    for (const [step, file] of [[2, 'model.safetensors'], [3, 'optimizer.safetensors']] as const) {
      const run = await makeRun([1, 2, 3]);
      const path = join(run, `step-0000000${step}`, file);
      const bytes = await readFile(path);
      const at = 8 + readHeaderLength(bytes, bytes.length, path) + 1000;
      bytes[at] = (bytes[at] as number) ^ 0x10;
      await writeFile(path, bytes);
      await assert.rejects(averageCheckpoints(run, { threads: 2 }), (e) => isCkptError(e) && e.code === 'CHECKSUM_MISMATCH' && e.path === path && e.step === step);
      assert.ok(!(await readdir(run)).includes('avg'), 'no output');
      assert.deepEqual((await readdir(run)).filter((n) => !n.startsWith('step-')), []);
    }
  });

  it('a file that shrinks, or fails to read, after it was opened is a typed error naming it; nothing is written', async () => {
    const run = await makeRun([1, 2]);
    const path = join(run, 'step-00000001', 'model.safetensors');
    const { size } = await stat(path);
    // The fs backend, with one file damaged right after the averaging opened it.
    const damaged = (damage: (reader: ObjectReader) => Promise<ObjectReader>): Backend => wrapReaders(fsBackend(dirname(run)), path, damage);
    const shrinks = damaged(async (reader) => {
      await truncate(path, size - 100);
      return reader;
    });
    const location = (backend: Backend): { backend: Backend; key: string } => ({ backend, key: basename(run) });
    await assert.rejects(averageCheckpoints(location(shrinks), { threads: 2, verify: false }), (e) => isCkptError(e) && e.code === 'FILE_LENGTH_MISMATCH' && e.path === path && e.step === 1 && /ended while averaging/.test(e.message));
    await truncate(path, size);
    // A descriptor that cannot be read (a directory's): the system error, typed, naming the file.
    const dirFd = openSync(run, 'r');
    try {
      const unreadable = damaged(async (reader) => ({ ...reader, fd: dirFd, read: reader.read.bind(reader), close: reader.close.bind(reader) }));
      await assert.rejects(averageCheckpoints(location(unreadable), { threads: 2, verify: false }), (e) => isCkptError(e) && e.code === 'IO_ERROR' && e.path === path && /EISDIR/.test(e.message));
    } finally {
      closeSync(dirFd);
    }
    assert.deepEqual((await readdir(run)).filter((n) => !n.startsWith('step-')), []);
  });

  it('a failure writing the output, at every operation, is typed, leaves nothing, and stops the workers', async () => {
    const run = await makeRun([1, 2, 3]);
    const outRoot = await tmpDir('ckpt-avg-threads-out-');
    const probe = faultyBackend(fsBackend(outRoot), {});
    await averageCheckpoints(run, { threads: 2, out: { backend: probe, key: 'probe' }, sync: true });
    const operations = probe.count;
    assert.ok(operations > 10, `${operations} operations`);
    for (let failAt = 0; failAt < operations; failAt++) {
      const backend = faultyBackend(fsBackend(outRoot), { failAt, errno: failAt % 2 === 0 ? 'ENOSPC' : 'EIO' });
      try {
        await averageCheckpoints(run, { threads: 2, out: { backend, key: `out-${failAt}` }, sync: true });
      } catch (e) {
        assert.ok(isCkptError(e) && (e.code === 'NO_SPACE' || e.code === 'IO_ERROR'), `failAt ${failAt}: ${String(e)}`);
        assert.ok(!(await readdir(outRoot)).includes(`out-${failAt}`) || (await readdir(join(outRoot, `out-${failAt}`))).includes('manifest.json'), 'whole or absent');
      }
    }
  });

  it('a worker thread that dies part-way is IO_ERROR, leaves nothing, and the next averaging runs', async () => {
    const run = await makeRun([1, 2, 3]);
    const outRoot = await tmpDir('ckpt-avg-threads-out-');
    const undo = crashNextWorker();
    try {
      await assert.rejects(averageCheckpoints(run, { threads: 2, out: join(outRoot, 'crashed'), sync: false }), (e) => {
        assert.ok(isCkptError(e, 'IO_ERROR'), String(e));
        assert.match(e.message, /worker thread/);
        // Not about the output: never the temporary file being written.
        assert.ok(!(e.path ?? '').includes('.tmp-'), `names ${e.path}`);
        return true;
      });
    } finally {
      undo();
    }
    assert.deepEqual(await readdir(outRoot), [], 'nothing left behind');
    const again = await averageCheckpoints(run, { threads: 2, out: join(outRoot, 'again'), sync: false });
    assert.equal(again.threads, 2);
    await load(join(outRoot, 'again'));
  });

  it('threads must be an integer from 0 to 64', async () => {
    const run = await makeRun([1]);
    for (const threads of [-1, 1.5, 65, Number.NaN]) {
      await assert.rejects(averageCheckpoints(run, { threads }), (e) => isCkptError(e) && e.code === 'INVALID_ARGUMENT' && /threads/.test(e.message));
    }
    const r = await averageCheckpoints(run, { threads: 64, out: join(run, '..', `${run.split('/').pop()}-avg64`) });
    assert.deepEqual(r.steps, [1]);
  });

  it('ckpt average --threads N (reported by --json); a bad count is a usage error', async () => {
    const run = await makeRun([1, 2]);
    const r = await cli('average', run, '--threads', '2', '--json');
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out) as { threads: number; steps: number[] };
    assert.deepEqual([j.threads, j.steps], [2, [1, 2]]);
    const zero = await cli('average', run, '--threads', '0', '--json', '--overwrite');
    assert.equal((JSON.parse(zero.out) as { threads: number }).threads, 0);
    for (const bad of ['-1', '1.5', 'x', '65']) {
      const u = await cli('average', run, '--threads', bad, '--overwrite');
      assert.equal(u.code, 2, `--threads ${bad}: ${u.err}`);
      assert.match(u.err, /--threads/);
    }
  });

  it('by default, worker threads (one per core, at most 4) from 1 GiB to read, none below', async () => {
    // The rule, at its edges (an end-to-end run past 1 GiB is left to the benchmark, which shows it).
    assert.equal(defaultThreads(1024 ** 3 - 1, 16), 0);
    assert.deepEqual([1, 2, 3, 4, 16].map((cores) => defaultThreads(1024 ** 3, cores)), [1, 2, 3, 4, 4]);
    assert.equal(defaultThreads(0, 2), 0);
    // The bytes counted are those read: averaged groups from every checkpoint, copied ones once.
    const g = (bytes: number) => ({ files: ['x.safetensors'], tensors: 1, bytes });
    const manifests = [1, 2, 3].map((k) => ({ groups: { model: g(100 * k), ema: g(10 * k), optimizer: g(1000 * k) } }));
    assert.equal(bytesToRead(manifests, ['model']), 100 + 200 + 300 + 30 + 3000);
    assert.equal(bytesToRead(manifests, ['model', 'ema']), 600 + 60 + 3000);
    const small = await averageCheckpoints(await makeRun([1, 2, 3]), {});
    assert.equal(small.threads, 0);
    const forced = await averageCheckpoints(await makeRun([1, 2]), { threads: 1 });
    assert.equal(forced.threads, 1);
  });

  it('a group whose tensors are all empty', async () => {
    const dir = await tmpDir('ckpt-avg-threads-');
    const m = await openManager(dir, { sync: false });
    for (const step of [1, 2, 3]) await m.save({ step, tensors: { model: new Map([['e', tensor(new Float32Array(0), [0])], ['f', tensor(new Float64Array(0), [2, 0])]]) } });
    await m.close();
    await sameAsOneThread(dir, {}, 'empty tensors');
  });

  it('checkpoints storing tensors in different orders: the same bytes, and a corrupt reordered file is still found', async () => {
    const dir = await tmpDir('ckpt-avg-threads-');
    const m = await openManager(dir, { sync: false });
    const orders = [['d', 'c', 'b', 'a'], ['a', 'b', 'c', 'd'], ['b', 'a', 'd', 'c']];
    for (const [k, order] of orders.entries()) {
      const step = k + 1;
      const all: Record<string, Tensor> = {
        a: tensor(randoms(100_000, step), [100_000]),
        b: tensor(randoms(3, step + 10), [3]),
        c: tensor(randoms(40_000, step + 20), [200, 200]),
        d: tensor(new BigInt64Array([BigInt(step)]), []),
      };
      await m.save({ step, tensors: { model: new Map(order.map((n) => [n, all[n] as Tensor])) } });
    }
    await m.close();
    await sameAsOneThread(dir, {}, 'reordered');
    const path = join(dir, 'step-00000001', 'model.safetensors');
    const bytes = await readFile(path);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x80;
    await writeFile(path, bytes);
    await assert.rejects(averageCheckpoints(dir, { threads: 2, out: join(dir, '..', `${basename(dir)}-bad`) }), (e) => isCkptError(e) && e.code === 'CHECKSUM_MISMATCH' && e.path === path);
  });

  it('random runs (tensor count, sizes, dtypes, weights, groups, shards): the same bytes on worker threads', async () => {
    const DTYPE_CHOICES = ['F32', 'F64', 'F16', 'BF16', 'I32', 'BOOL', 'U8'] as const;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          checkpoints: fc.integer({ min: 1, max: 4 }),
          tensors: fc.array(
            fc.record({
              dtype: fc.constantFrom(...DTYPE_CHOICES),
              // Empty, a few elements, about a tile, several tiles and a partial one.
              elements: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 50 }), fc.integer({ min: TILE / 8 - 3, max: TILE / 2 + 3 }), fc.integer({ min: TILE / 2, max: 3 * TILE })),
            }),
            { minLength: 1, maxLength: 12 },
          ),
          weighted: fc.boolean(),
          verify: fc.boolean(),
          shardBytes: fc.option(fc.integer({ min: 50_000, max: 2_000_000 }), { nil: undefined }),
          seed: fc.integer({ min: 1, max: 2 ** 30 }),
        }),
        async ({ checkpoints, tensors, weighted, verify, shardBytes, seed }) => {
          const dir = await tmpDir('ckpt-avg-threads-fuzz-');
          const m = await openManager(dir, { sync: false, ...(shardBytes === undefined ? {} : { shardBytes }) });
          for (let step = 1; step <= checkpoints; step++) {
            const model: TensorMap = new Map();
            tensors.forEach(({ dtype, elements }, i) => {
              const r = randoms(elements, seed + step * 1000 + i);
              const data =
                dtype === 'F32' ? r
                : dtype === 'F64' ? Float64Array.from(r, (x) => x * 1e10)
                : dtype === 'F16' ? Uint16Array.from(r, f32ToF16)
                : dtype === 'BF16' ? Uint16Array.from(r, f32ToBf16)
                : dtype === 'I32' ? Int32Array.from(r, (x) => Math.round(x * 1e6))
                : Uint8Array.from(r, (x) => (dtype === 'BOOL' ? Number(x > 0) : Math.floor((x + 1) * 127)));
              model.set(`t${i}`, tensor(data, [elements], dtype));
            });
            await m.save({ step, tensors: { model, ema: new Map([['e', tensor(randoms(seed % 5000, step), [seed % 5000])]]) } });
          }
          await m.close();
          const weights = weighted ? Array.from({ length: checkpoints }, (_, k) => 1 + ((seed >> k) % 7)) : undefined;
          await sameAsOneThread(dir, { select: { last: checkpoints }, verify, ...(weights === undefined ? {} : { weights }) }, `seed ${seed}`);
        },
      ),
      { numRuns: fuzzRuns(8) },
    );
  });
});
