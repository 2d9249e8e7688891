import assert from 'node:assert/strict';
import { cp, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { type AverageOptions, type AverageResult, averageCheckpoints } from '../src/average/average.js';
import { load, verify } from '../src/checkpoint/api.js';
import { openManager } from '../src/checkpoint/manager.js';
import { type TensorStream, writeCheckpoint } from '../src/checkpoint/save.js';
import type { TrainState } from '../src/checkpoint/types.js';
import { CkptError, isCkptError } from '../src/errors.js';
import { readHeaderLength } from '../src/format/safetensors.js';
import type { Backend } from '../src/storage/backend.js';
import { faultyBackend } from '../src/storage/faulty.js';
import { fsBackend } from '../src/storage/fs.js';
import { openReader } from '../src/storage/reader.js';
import { memoryBackend } from '../src/storage/memory.js';
import { type Tensor, type TensorMap, f32ToBf16, f32ToF16, fromFloat64, tensor, toFloat64 } from '../src/tensor/tensor.js';
import { cli, randomF32, tmpDir, wrapReaders } from './helpers.js';

/** Per-checkpoint values of the model's float tensors. */
interface Values {
  readonly w: readonly number[];
  readonly b: readonly number[];
  readonly h: readonly number[];
  readonly bf: readonly number[];
}

const VALUES: Record<number, Values> = {
  100: { w: [1, 2, 3], b: [0.5, -1], h: [1, 2], bf: [1, 2] },
  200: { w: [4, 5, 6], b: [1.5, -3], h: [2, 4], bf: [2, 4] },
  300: { w: [7, 8, 9], b: [2.5, -5], h: [3, 6], bf: [3, 9] },
};

function model(step: number, v: Values): TensorMap {
  return new Map<string, Tensor>([
    ['w', tensor(new Float32Array(v.w), [v.w.length])],
    ['b', tensor(new Float64Array(v.b), [v.b.length])],
    ['h', tensor(new Uint16Array(v.h.map(f32ToF16)), [v.h.length], 'F16')],
    ['bf', tensor(new Uint16Array(v.bf.map(f32ToBf16)), [v.bf.length], 'BF16')],
    ['count', tensor(new BigInt64Array([BigInt(step)]), [])],
    ['mask', tensor(new Uint8Array([step % 2, 1]), [2], 'BOOL')],
    ['empty', tensor(new Float32Array(0), [0, 4])],
  ]);
}

function stateAt(step: number, metrics: Record<string, number> = {}, v: Values = VALUES[step] as Values): TrainState {
  return {
    step,
    epoch: step / 100,
    tensors: {
      model: model(step, v),
      optimizer: new Map([
        ['w/m', randomF32([3], step)],
        ['iterations', tensor(new BigInt64Array([BigInt(step)]), [])],
      ]),
      ema: new Map([['w', tensor(new Float32Array(v.w.map((x) => x + 0.5)), [v.w.length])]]),
    },
    state: { rng: { counter: step }, data: { position: step * 8 } },
    metrics,
    hyperParameters: { lr: 0.001 },
    metadata: { purpose: 'test' },
  };
}

const METRICS: Record<number, Record<string, number>> = { 100: { loss: 0.9, acc: 0.2 }, 200: { loss: 0.3, acc: 0.8 }, 300: { loss: 0.5, acc: 0.6 } };

async function makeRun(states: TrainState[] = [100, 200, 300].map((s) => stateAt(s, METRICS[s]))): Promise<string> {
  const dir = await tmpDir('ckpt-avg-');
  const m = await openManager(dir, { sync: false });
  for (const s of states) await m.save(s);
  await m.close();
  return dir;
}

const values = (t: Tensor | undefined): number[] => {
  assert.ok(t !== undefined, 'tensor exists');
  return [...toFloat64(t)];
};

const average = (dir: string, options: AverageOptions = {}): Promise<AverageResult> => averageCheckpoints(dir, { sync: false, ...options });

async function rejectsWith(p: Promise<unknown>, code: string, ...mentions: string[]): Promise<unknown> {
  let error: unknown;
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isCkptError(e), `expected a CkptError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const m of mentions) assert.ok(e.message.includes(m), `"${e.message}" should mention ${m}`);
    error = e;
    return true;
  });
  return error;
}

/** Flips one byte of a file's tensor data (after the header, so only the checksum can notice). */
async function corruptData(file: string): Promise<void> {
  const b = await readFile(file);
  const n = readHeaderLength(b.subarray(0, 8), b.length, file);
  const i = 8 + n + 1;
  b[i] = (b[i] as number) ^ 0x01;
  await writeFile(file, b);
}

describe('averageCheckpoints on the filesystem', () => {
  it('averages exact values; integers, step, optimizer, EMA and state come from the newest', async () => {
    const dir = await makeRun();
    const r = await average(dir, { now: Date.UTC(2024, 0, 1) });
    assert.deepEqual(r.steps, [100, 200, 300]);
    assert.deepEqual(r.weights, [1 / 3, 1 / 3, 1 / 3]);
    assert.equal(r.requested, 8, 'the default is the last 8; the run has 3');
    assert.equal(r.location, join(dir, 'avg'));
    assert.deepEqual(r.averaged, ['model']);
    assert.deepEqual(r.copied, ['optimizer', 'ema']);

    const avg = await load(join(dir, 'avg'));
    assert.equal(avg.step, 300);
    assert.equal(avg.epoch, 3);
    const m = avg.tensors.model;
    assert.deepEqual(values(m?.get('w')), [4, 5, 6]);
    assert.deepEqual(values(m?.get('b')), [1.5, -3]);
    assert.deepEqual(values(m?.get('h')), [2, 4]);
    assert.deepEqual(values(m?.get('bf')), [2, 5]);
    assert.equal(m?.get('h')?.dtype, 'F16');
    assert.equal(m?.get('bf')?.dtype, 'BF16');
    assert.deepEqual(values(m?.get('count')), [300]);
    assert.deepEqual(values(m?.get('mask')), [0, 1]);
    assert.deepEqual(m?.get('empty')?.shape, [0, 4]);
    assert.deepEqual([...(m?.keys() ?? [])], ['w', 'b', 'h', 'bf', 'count', 'mask', 'empty']);

    const newest = await load(join(dir, 'step-00000300'));
    for (const g of ['optimizer', 'ema']) {
      for (const [name, t] of newest.tensors[g] ?? new Map<string, Tensor>()) {
        assert.deepEqual(Buffer.from(avg.tensors[g]?.get(name)?.data ?? []), Buffer.from(t.data), `${g}/${name}`);
      }
    }
    assert.deepEqual(avg.state, newest.state);
    assert.deepEqual(avg.hyperParameters, newest.hyperParameters);
    assert.deepEqual(avg.metrics, {}, 'the averaged weights were never evaluated');
    assert.equal(avg.manifest.parentStep, 300);
    assert.equal(avg.manifest.runId, newest.manifest.runId);
    assert.equal(avg.manifest.createdAt, '2024-01-01T00:00:00.000Z');
    assert.equal(avg.metadata.purpose, 'test');
    assert.deepEqual(avg.metadata.averaged, {
      method: 'mean-float64',
      steps: [100, 200, 300],
      weights: [1 / 3, 1 / 3, 1 / 3],
      groups: ['model'],
      selection: { last: 8 },
      runId: newest.manifest.runId,
    });
    assert.equal((await verify(join(dir, 'avg'))).valid, true);
    assert.deepEqual((await readdir(dir)).sort(), ['avg', 'step-00000100', 'step-00000200', 'step-00000300']);
  });

  it('weighted average, normalised', async () => {
    const dir = await makeRun();
    const r = await average(dir, { weights: [1, 1, 2] });
    assert.deepEqual(r.weights, [0.25, 0.25, 0.5]);
    const m = (await load(r.location)).tensors.model;
    assert.deepEqual(values(m?.get('w')), [4.75, 5.75, 6.75]);
    assert.deepEqual(values(m?.get('b')), [1.75, -3.5]);
    assert.deepEqual(values(m?.get('h')), [2.25, 4.5]);
    assert.deepEqual(values(m?.get('bf')), [2.25, 6]);
  });

  it('explicit steps, with weights in the order the steps are given', async () => {
    const dir = await makeRun();
    const r = await average(dir, { select: { steps: [300, 100] }, weights: [3, 1] });
    assert.deepEqual(r.steps, [100, 300]);
    assert.deepEqual(r.weights, [0.25, 0.75]);
    const avg = await load(r.location);
    assert.deepEqual(values(avg.tensors.model?.get('w')), [5.5, 6.5, 7.5]);
    assert.equal(avg.step, 300);
  });

  it('the last N, and the best K by a metric (min and max)', async () => {
    const dir = await makeRun();
    const last = await average(dir, { select: { last: 2 }, out: join(dir, 'last2') });
    assert.deepEqual(last.steps, [200, 300]);
    assert.deepEqual(values((await load(last.location)).tensors.model?.get('w')), [5.5, 6.5, 7.5]);

    const best = await average(dir, { select: { best: { k: 2, metric: 'loss' } }, out: join(dir, 'best-loss') });
    assert.deepEqual(best.steps, [200, 300]);
    const acc = await average(dir, { select: { best: { k: 2, metric: 'acc', mode: 'max' } }, out: join(dir, 'best-acc') });
    assert.deepEqual(acc.steps, [200, 300]);
    const one = await average(dir, { select: { best: { k: 1, metric: 'loss', mode: 'max' } }, out: join(dir, 'worst') });
    assert.deepEqual(one.steps, [100]);
    const worst = await load(one.location);
    assert.equal(worst.step, 100, 'a single checkpoint: its own step and weights');
    assert.deepEqual(values(worst.tensors.model?.get('w')), [1, 2, 3]);
    assert.deepEqual(worst.manifest.metadata.averaged, {
      method: 'mean-float64',
      steps: [100],
      weights: [1],
      groups: ['model'],
      selection: { best: { k: 1, metric: 'loss', mode: 'max' } },
      runId: worst.manifest.runId,
    });
  });

  it('float64 accumulation gives the correctly rounded mean where OpenNMT-tf float32 differs in the last bit', async () => {
    const inputs = [0.1, 0.2, 0.3].map(Math.fround);
    const states = inputs.map((x, i) => stateAt((i + 1) * 100, {}, { w: [x, Math.fround(0.1)], b: [0], h: [0], bf: [0] }));
    const dir = await makeRun(states);
    const w = values((await load((await average(dir)).location)).tensors.model?.get('w'));
    // Computed independently: one float64 sum and division, one rounding to float32 ...
    const [a, b, c] = inputs as [number, number, number];
    assert.deepEqual(w, [Math.fround((a + b + c) / 3), Math.fround(0.1)]);
    // ... whereas OpenNMT-tf's avg += x / 3 in float32 lands one unit away in both elements.
    const openNmt = (xs: number[]): number => xs.reduce((acc, x) => Math.fround(acc + Math.fround(x / 3)), 0);
    assert.equal(openNmt(inputs), 0.20000001788139343);
    assert.equal(w[0], 0.20000000298023224);
    assert.equal(openNmt(inputs.map(() => Math.fround(0.1))), 0.10000000894069672);
    assert.equal(w[1], Math.fround(0.1));
  });

  it('averages EMA too when asked', async () => {
    const dir = await makeRun();
    const r = await average(dir, { groups: ['model', 'ema'] });
    assert.deepEqual(r.copied, ['optimizer']);
    const avg = await load(r.location);
    assert.deepEqual(values(avg.tensors.ema?.get('w')), [4.5, 5.5, 6.5]);
    assert.deepEqual((avg.metadata.averaged as { groups: string[] }).groups, ['model', 'ema']);
  });

  it('fewer checkpoints than asked: averages those there and says so', async () => {
    const dir = await makeRun();
    const r = await average(dir, { select: { last: 5 } });
    assert.deepEqual(r.steps, [100, 200, 300]);
    assert.equal(r.requested, 5);
    const best = await average(dir, { select: { best: { k: 4, metric: 'loss' } }, out: join(dir, 'b') });
    assert.equal(best.steps.length, 3);
    assert.equal(best.requested, 4);
  });

  it('lists every mismatched name, shape and dtype (INCOMPATIBLE_TENSORS) and writes nothing', async () => {
    const s100 = stateAt(100);
    s100.tensors.model?.delete('b');
    const s200 = stateAt(200);
    s200.tensors.model?.set('w', tensor(new Float32Array([4, 5, 6]), [3, 1]));
    s200.tensors.model?.set('h', fromFloat64([2, 4], [2], 'F32'));
    const dir = await makeRun([s100, s200, stateAt(300)]);
    const e = (await rejectsWith(
      average(dir),
      'INCOMPATIBLE_TENSORS',
      '3 mismatches',
      'tensor "b" is missing from step-00000100',
      'tensor "w" has shape [3, 1] in step-00000200 but [3] in step-00000300 (newest)',
      'tensor "h" is F32 in step-00000200 but F16 in step-00000300 (newest)',
    )) as { received: unknown };
    assert.equal((e.received as string[]).length, 3);
    assert.deepEqual((await readdir(dir)).sort(), ['step-00000100', 'step-00000200', 'step-00000300']);
  });

  it('a group to average missing from a checkpoint is a mismatch too', async () => {
    const s100 = stateAt(100);
    const dir = await makeRun([{ ...s100, tensors: { model: s100.tensors.model as TensorMap } }, stateAt(200)]);
    await rejectsWith(average(dir, { groups: ['model', 'ema'] }), 'INCOMPATIBLE_TENSORS', 'group "ema" is missing from step-00000100');
  });

  it('a corrupt input fails with CHECKSUM_MISMATCH naming the file, and leaves nothing behind', async () => {
    const dir = await makeRun();
    await corruptData(join(dir, 'step-00000200', 'model.safetensors'));
    const e = (await rejectsWith(average(dir), 'CHECKSUM_MISMATCH', join(dir, 'step-00000200', 'model.safetensors'))) as { path: string };
    assert.equal(e.path, join(dir, 'step-00000200', 'model.safetensors'));
    assert.deepEqual((await readdir(dir)).sort(), ['step-00000100', 'step-00000200', 'step-00000300']);
    // Without verification the (corrupt) bytes are averaged: the check is what caught it.
    const r = await average(dir, { verify: false });
    assert.deepEqual(r.steps, [100, 200, 300]);
  });

  it('headers damaged in two inputs: the error names the older one, even when the newer one fails first', async () => {
    const dir = await makeRun();
    const older = join(dir, 'step-00000100', 'model.safetensors');
    for (const file of [older, join(dir, 'step-00000300', 'model.safetensors')]) {
      const b = await readFile(file);
      b.writeBigUInt64LE(BigInt(b.length), 0); // a header longer than the file
      await writeFile(file, b);
    }
    // The older checkpoint's header arrives late: the checkpoints are opened at once, and its failure
    // comes after the newer one's.
    const slow = wrapReaders(fsBackend(dirname(dir)), older, (reader) => ({
      ...reader,
      read: async (offset, length, into) => {
        await new Promise((resolve) => setTimeout(resolve, 30));
        return reader.read(offset, length, into);
      },
    }));
    for (const backend of [fsBackend(dirname(dir)), slow]) {
      const e = (await rejectsWith(averageCheckpoints({ backend, key: basename(dir) }, { sync: false }), 'HEADER_TOO_LARGE')) as { path: string };
      assert.equal(e.path, older);
    }
    assert.deepEqual((await readdir(dir)).sort(), ['step-00000100', 'step-00000200', 'step-00000300']);
  });

  it('a corrupt file of a group copied from the newest is caught too', async () => {
    const dir = await makeRun();
    await corruptData(join(dir, 'step-00000300', 'optimizer.safetensors'));
    await rejectsWith(average(dir), 'CHECKSUM_MISMATCH', join(dir, 'step-00000300', 'optimizer.safetensors'));
    assert.deepEqual((await readdir(dir)).sort(), ['step-00000100', 'step-00000200', 'step-00000300']);
  });

  it('resume: a manager ignores avg, and training continues from the averaged checkpoint', async () => {
    const dir = await makeRun();
    await average(dir);
    const m = await openManager(dir, { sync: false });
    assert.deepEqual((await m.list()).map((c) => c.step), [100, 200, 300]);
    assert.deepEqual((await m.listInvalid()).map((c) => c.name), []);
    assert.equal((await m.restore()).checkpoint.step, 300);
    // Opening a writer cleans debris; the averaged checkpoint is not debris.
    assert.ok((await readdir(dir)).includes('avg'));

    const avg = await load(join(dir, 'avg'));
    const next: TrainState = { ...avg, step: 301, metrics: { loss: 0.2 } };
    const saved = await m.save(next);
    assert.equal(saved.saved, true);
    await m.close();
    const resumed = await load(join(dir, 'step-00000301'));
    assert.deepEqual(values(resumed.tensors.model?.get('w')), [4, 5, 6]);
    assert.deepEqual(resumed.state, avg.state);
    assert.deepEqual(Buffer.from(resumed.tensors.optimizer?.get('w/m')?.data ?? []), Buffer.from(randomF32([3], 300).data));
  });

  it('refuses to overwrite an existing output unless asked, then replaces it atomically', async () => {
    const dir = await makeRun();
    await average(dir);
    await rejectsWith(average(dir, { select: { last: 1 } }), 'ALREADY_EXISTS', join(dir, 'avg'));
    const r = await average(dir, { select: { last: 1 }, overwrite: true });
    assert.deepEqual(r.steps, [300]);
    assert.deepEqual(values((await load(join(dir, 'avg'))).tensors.model?.get('w')), [7, 8, 9]);
    assert.deepEqual((await readdir(dir)).sort(), ['avg', 'step-00000100', 'step-00000200', 'step-00000300']);
  });

  it('finishes a replacement a crash interrupted: the output moved aside comes back, a stale one goes', async () => {
    const dir = await makeRun();
    await average(dir);
    const w = async (): Promise<number[]> => values((await load(join(dir, 'avg'))).tensors.model?.get('w'));
    // Killed between the two renames of a replacement: the last output is only beside its place.
    await rename(join(dir, 'avg'), join(dir, 'avg.replaced-0123abcd'));
    await rejectsWith(average(dir, { select: { last: 1 } }), 'ALREADY_EXISTS', join(dir, 'avg'));
    assert.deepEqual(await w(), [4, 5, 6], 'the moved-aside output is back');
    assert.ok(!(await readdir(dir)).some((n) => n.includes('.replaced-')));
    // Killed after the second rename: the replaced output is left beside the new one.
    await cp(join(dir, 'avg'), join(dir, 'avg.replaced-89abcdef'), { recursive: true });
    // Not ours to touch: other names, and files.
    await mkdir(join(dir, 'avg.replaced-mine'));
    await writeFile(join(dir, 'avg.replaced-0000aaaa'), 'a file');
    await average(dir, { select: { last: 1 }, overwrite: true });
    assert.deepEqual(await w(), [7, 8, 9]);
    assert.deepEqual((await readdir(dir)).filter((n) => n.includes('.replaced-')).sort(), ['avg.replaced-0000aaaa', 'avg.replaced-mine']);
  });

  it('a failure while putting a moved-aside output back is a typed error naming the output, and keeps it aside', async () => {
    const dir = await makeRun();
    await average(dir);
    await rename(join(dir, 'avg'), join(dir, 'avg.replaced-0123abcd'));
    for (const errno of ['EIO', 'ENOSPC']) {
      const backend = faultyBackend(fsBackend(dir), { operations: ['rename'], failAt: 0, errno });
      await rejectsWith(averageCheckpoints({ backend }, { sync: false }), errno === 'EIO' ? 'IO_ERROR' : 'NO_SPACE', join(dir, 'avg'));
      assert.deepEqual(backend.events.map((e) => e.operation), ['rename'], 'it failed at the renaming back, before anything was written');
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('avg')), ['avg.replaced-0123abcd']);
    }
    // Once the disk works the output is put back, and so exists: no overwrite without asking.
    await rejectsWith(average(dir, { select: { last: 1 } }), 'ALREADY_EXISTS', join(dir, 'avg'));
    assert.deepEqual(values((await load(join(dir, 'avg'))).tensors.model?.get('w')), [4, 5, 6], 'the earlier output, put back');
  });

  it('is not disturbed by a writer deleting an input checkpoint once its files are open', async () => {
    const dir = await makeRun();
    const inner = fsBackend(dir);
    let deleted = false;
    // Retention of a writer in another process deletes step 200 at the first read of tensor data from
    // one of its files (offset past the 8-byte prefix and the header, which indexing read before), after
    // the averaging opened every input file.
    const backend: Backend = {
      ...inner,
      openReader: async (key) => {
        const r = await (inner.openReader as NonNullable<Backend['openReader']>)(key);
        return {
          ...r,
          read: async (offset, length, into) => {
            if (!deleted && key.startsWith('step-00000200/') && offset > 8) {
              deleted = true;
              await rm(join(dir, 'step-00000200'), { recursive: true });
            }
            return r.read(offset, length, into);
          },
        };
      },
    };
    // Two averaged groups: the files of the second one are read only after the first one was written.
    const r = await averageCheckpoints({ backend }, { select: { last: 3 }, groups: ['model', 'ema'], sync: false, out: { backend: inner, key: 'avg' } });
    assert.ok(deleted);
    assert.deepEqual(r.steps, [100, 200, 300], 'the selection stands: its files were open');
    const avg = await load(join(dir, 'avg'));
    assert.deepEqual(values(avg.tensors.model?.get('w')), [4, 5, 6]);
    assert.deepEqual(values(avg.tensors.ema?.get('w')), [4.5, 5.5, 6.5]);
  });

  it('ignores invalid checkpoints (and reports them); an explicit invalid step is its error', async () => {
    const dir = await makeRun([100, 200, 300, 400].map((s) => stateAt(s, {}, VALUES[s] ?? (VALUES[300] as Values))));
    await writeFile(join(dir, 'step-00000400', 'manifest.json'), '{');
    const r = await average(dir);
    assert.deepEqual(r.steps, [100, 200, 300]);
    assert.deepEqual(r.ignored, [{ step: 400, name: 'step-00000400', code: 'MANIFEST_INVALID' }]);
    await rejectsWith(average(dir, { select: { steps: [300, 400] }, out: join(dir, 'x') }), 'MANIFEST_INVALID');
  });

  it('bad input: weights, steps, empty run, output inside a checkpoint', async () => {
    const dir = await makeRun();
    await rejectsWith(average(dir, { weights: [1, 2] }), 'INVALID_ARGUMENT', '2 weights given for 3 selected checkpoints');
    await rejectsWith(average(dir, { weights: [1, 0, 1] }), 'INVALID_ARGUMENT', 'weights[1]');
    await rejectsWith(average(dir, { select: { steps: [100, 150, 250] } }), 'NOT_FOUND', 'steps 150, 250', dir);
    await rejectsWith(average(dir, { out: join(dir, 'step-00000300') }), 'INVALID_ARGUMENT', 'step-00000300');
    await rejectsWith(average(dir, { out: join(dir, 'step-00000300', 'avg') }), 'INVALID_ARGUMENT');
    await rejectsWith(average(dir, { select: { last: 0 } }), 'INVALID_ARGUMENT', 'select.last');
    const empty = await tmpDir('ckpt-avg-empty-');
    await rejectsWith(average(empty), 'NO_VALID_CHECKPOINT', empty);
    await rejectsWith(average(join(empty, 'missing')), 'NO_VALID_CHECKPOINT');
  });
});

/** A backend that records the reads it serves. */
function recording(inner: Backend): { backend: Backend; ranges: { key: string; length: number }[]; whole: string[] } {
  const ranges: { key: string; length: number }[] = [];
  const whole: string[] = [];
  const backend: Backend = {
    ...inner,
    read: (key) => {
      whole.push(key);
      return inner.read(key);
    },
    readRange: (key, offset, length, into) => {
      ranges.push({ key, length });
      return inner.readRange(key, offset, length, into);
    },
    openReader: async (key) => {
      const r = await openReader(inner, key);
      return {
        size: r.size,
        read: (offset, length, into) => {
          ranges.push({ key, length });
          return r.read(offset, length, into);
        },
        close: () => r.close(),
      };
    },
  };
  return { backend, ranges, whole };
}

describe('averageCheckpoints without WebAssembly (node --jitless)', () => {
  it('gives the same bytes with the TypeScript loops as with the SIMD kernels (division and power-of-two divisors)', async () => {
    // F32 and F64 (tensors longer than the vector loops' step), F16, BF16, copied integers; 3 and 4
    // checkpoints (a division, and a multiplication by the exact reciprocal).
    const withBig = (st: TrainState): TrainState => {
      const f = new Float32Array(70_001).map((_, i) => Math.tan(i * st.step) * 1e-3);
      const d = new Float64Array(10_001).map((_, i) => Math.tan(i * st.step + 0.5));
      const big: [string, Tensor][] = [['big', tensor(f, [f.length])], ['big64', tensor(d, [d.length])]];
      return { ...st, tensors: { ...st.tensors, model: new Map([...(st.tensors.model ?? []), ...big]) } };
    };
    const fourth: Values = { w: [0.1, -2, 7], b: [1e-40, 3], h: [65504, -1], bf: [1, 3e38] };
    const dir = await makeRun([100, 200, 300, 400].map((step) => withBig(stateAt(step, {}, VALUES[step] ?? fourth))));
    const averageModule = fileURLToPath(new URL('../src/average/average.js', import.meta.url));
    // On this thread and on worker threads (which then run the TypeScript loops too).
    for (const [last, threads] of [[3, 0], [4, 0], [3, 2]] as const) {
      const simdOut = join(dir, `simd-${last}-${threads}`);
      const jsOut = join(dir, `js-${last}-${threads}`);
      await average(dir, { select: { last }, out: simdOut });
      const code = `const { averageCheckpoints } = await import(${JSON.stringify(pathToFileURL(averageModule).href)}); const r = await averageCheckpoints(${JSON.stringify(dir)}, { select: { last: ${last} }, out: ${JSON.stringify(jsOut)}, sync: false, threads: ${threads} }); process.stdout.write(String(r.threads));`;
      const child = spawnSync(process.execPath, ['--jitless', '--input-type=module', '-e', code], { encoding: 'utf8' });
      assert.equal(child.status, 0, child.stderr);
      assert.equal(child.stdout, String(threads));
      const [a, b] = [await load(simdOut), await load(jsOut)];
      for (const [name, t] of a.tensors.model ?? new Map<string, Tensor>()) {
        assert.deepEqual(Buffer.from(b.tensors.model?.get(name)?.data ?? []), Buffer.from(t.data), `${name} of the last ${last}`);
      }
    }
  });
});

describe('averageCheckpoints on a memory backend', () => {
  const big = (step: number, order: readonly string[] = ['a', 'b', 'c', 'd']): TrainState => {
    const all: Record<string, Tensor> = {
      a: fromFloat64(Array.from({ length: 1000 }, (_, i) => i * step), [10, 100], 'F32'),
      b: fromFloat64(Array.from({ length: 500 }, (_, i) => -i - step), [500], 'F64'),
      c: fromFloat64(Array.from({ length: 300 }, () => step), [300], 'BF16'),
      d: fromFloat64([step], [], 'I32'),
    };
    return {
      step,
      tensors: { model: new Map(order.map((n) => [n, all[n] as Tensor])), optimizer: new Map([['m', fromFloat64([step, 1], [2], 'F32')]]) },
    };
  };

  async function memoryRun(states: TrainState[], shardBytes?: number): Promise<{ backend: Backend; store: Map<string, Uint8Array> }> {
    const store = new Map<string, Uint8Array>();
    const backend = memoryBackend({ store });
    const m = await openManager({ backend, key: 'run' }, { sync: false, ...(shardBytes === undefined ? {} : { shardBytes }) });
    for (const s of states) await m.save(s);
    await m.close();
    return { backend, store };
  }

  it('streams tensor by tensor across sharded inputs into a sharded output', async () => {
    const { backend } = await memoryRun([1, 2, 3, 4].map((s) => big(s)), 3000);
    const rec = recording(backend);
    const r = await averageCheckpoints({ backend: rec.backend, key: 'run' }, { select: { last: 3 }, out: { backend, key: 'out/avg' }, shardBytes: 3000 });
    assert.deepEqual(r.steps, [2, 3, 4]);
    assert.equal(r.location, 'memory://out/avg');
    assert.deepEqual(r.manifest.groups.model?.files, ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']);
    const avg = await load({ backend, key: 'out/avg' });
    assert.deepEqual(values(avg.tensors.model?.get('a')), Array.from({ length: 1000 }, (_, i) => i * 3));
    assert.deepEqual(values(avg.tensors.model?.get('b')), Array.from({ length: 500 }, (_, i) => -i - 3));
    assert.deepEqual(values(avg.tensors.model?.get('c')), Array.from({ length: 300 }, () => 3));
    assert.deepEqual(values(avg.tensors.model?.get('d')), [4]);
    // No tensor file was read whole, and no read was larger than the largest tensor (4000 bytes).
    assert.deepEqual(rec.whole.filter((k) => k.endsWith('.safetensors')), []);
    assert.ok(Math.max(...rec.ranges.map((x) => x.length)) <= 4000);
    // Each input tensor file was read once, front to back (and hashed on the way), plus its header once
    // more when it was indexed; step 1 was not selected and not read.
    const bytesRead = new Map<string, number>();
    for (const x of rec.ranges) if (x.key.endsWith('.safetensors')) bytesRead.set(x.key, (bytesRead.get(x.key) ?? 0) + x.length);
    assert.equal([...bytesRead.keys()].filter((k) => k.includes('step-00000001')).length, 0);
    assert.equal(bytesRead.size, 3 * 3 + 1, 'three model shards of three checkpoints, the newest optimizer');
    for (const [key, n] of bytesRead) {
      const bytes = await backend.read(key);
      const header = 8 + readHeaderLength(bytes.subarray(0, 8), bytes.length, key);
      assert.equal(n, bytes.length + header, key);
    }
  });

  it('starts over with a fresh selection when retention deletes a selected checkpoint while it is read', async () => {
    const { backend } = await memoryRun([1, 2, 3].map((s) => big(s)));
    // A writer's retention deleting step 2 (renamed out of the listing, then removed, as the manager
    // does) at the first read of its tensor file.
    const racing = (deleteStep: string): { backend: Backend; deletions: () => number } => {
      let deletions = 0;
      // Without openReader, every read of the averaging goes through readRange.
      const { openReader: _reads, ...rest } = backend;
      const wrapped: Backend = {
        ...rest,
        readRange: async (key, offset, length, into) => {
          if (deletions === 0 && key === `run/${deleteStep}/model.safetensors`) {
            deletions++;
            await backend.rename?.(`run/${deleteStep}`, `run/.deleting-${deleteStep}`);
            await backend.delete(`run/.deleting-${deleteStep}/`);
          }
          return backend.readRange(key, offset, length, into);
        },
      };
      return { backend: wrapped, deletions: () => deletions };
    };
    const first = racing('step-00000002');
    const r = await averageCheckpoints({ backend: first.backend, key: 'run' }, { select: { last: 2 } });
    assert.equal(first.deletions(), 1);
    assert.deepEqual(r.steps, [1, 3], 'step 2 vanished: the last two are now 1 and 3');
    assert.deepEqual(values((await load({ backend, key: 'run/avg' })).tensors.model?.get('a')), Array.from({ length: 1000 }, (_, i) => i * 2));
    // Explicit steps are not replaced: the vanished one is the error, and nothing is written.
    const explicit = racing('step-00000003');
    await assert.rejects(averageCheckpoints({ backend: explicit.backend, key: 'run' }, { select: { steps: [1, 3] }, out: { backend, key: 'explicit' } }), (e: unknown) =>
      isCkptError(e) && ['NOT_FOUND', 'FILE_MISSING'].includes(e.code),
    );
    assert.equal(explicit.deletions(), 1);
    assert.deepEqual(await backend.list('explicit'), []);
  });

  it('checkpoints storing tensors in different orders average and verify correctly', async () => {
    const { backend, store } = await memoryRun([big(1, ['d', 'c', 'b', 'a']), big(2), big(3, ['b', 'a', 'd', 'c'])]);
    await averageCheckpoints({ backend, key: 'run' });
    const avg = await load({ backend, key: 'run/avg' });
    assert.deepEqual([...(avg.tensors.model?.keys() ?? [])], ['b', 'a', 'd', 'c'], 'the newest checkpoint gives the order');
    assert.deepEqual(values(avg.tensors.model?.get('a')), Array.from({ length: 1000 }, (_, i) => i * 2));
    assert.deepEqual(values(avg.tensors.model?.get('d')), [3]);
    // A corrupt byte in the reordered file is still found (it is hashed in a second pass).
    const key = 'run/step-00000001/model.safetensors';
    const bytes = (store.get(key) as Uint8Array).slice();
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x80;
    store.set(key, bytes);
    await rejectsWith(averageCheckpoints({ backend, key: 'run' }, { out: { backend, key: 'run/avg2' } }), 'CHECKSUM_MISMATCH', 'memory://run/step-00000001/model.safetensors');
    assert.equal(await backend.exists('run/avg2/manifest.json'), false);
    assert.deepEqual((await backend.list('run')).filter((n) => n.startsWith('.')), []);
  });

  it('8-bit float tensors are refused (UNSUPPORTED) rather than copied or mangled', async () => {
    const f8 = (step: number): TrainState => ({ step, tensors: { model: new Map([['q', tensor(new Uint8Array([step]), [1], 'F8_E4M3')]]) } });
    const { backend } = await memoryRun([f8(1), f8(2)]);
    await rejectsWith(averageCheckpoints({ backend, key: 'run' }), 'UNSUPPORTED', 'tensor "q" is F8_E4M3');
  });

  it('overwrite replaces the output on a rename-capable backend without leftovers', async () => {
    const { backend } = await memoryRun([1, 2, 3].map((s) => big(s)));
    await averageCheckpoints({ backend, key: 'run' });
    const r = await averageCheckpoints({ backend, key: 'run' }, { select: { steps: [1] }, overwrite: true });
    assert.equal(r.manifest.step, 1);
    assert.equal((await load({ backend, key: 'run/avg' })).step, 1);
    assert.deepEqual(await backend.list('run'), ['avg/', 'step-00000001/', 'step-00000002/', 'step-00000003/']);
  });
});

describe('streaming writes (TensorStream groups in writeCheckpoint)', () => {
  const tensors = (): TensorMap =>
    new Map([
      ['x', fromFloat64([1, 2, 3, 4], [2, 2], 'F32')],
      ['y', fromFloat64([5], [], 'F64')],
      ['z', fromFloat64([], [0], 'F16')],
      ['n', fromFloat64([7, 8], [2], 'I64')],
    ]);

  function streamOf(map: TensorMap, calls: string[]): TensorStream {
    const list = [...map];
    return {
      specs: list.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })),
      read: async (i) => {
        calls.push(`read ${i}`);
        return (list[i] as [string, Tensor])[1].data;
      },
      end: async () => void calls.push('end'),
    };
  }

  it('writes the same bytes as a TensorMap group, calling read in order then end once', async () => {
    for (const shardBytes of [undefined, 8]) {
      const backend = memoryBackend();
      const options = { sync: false, runId: 'r', now: 0, ...(shardBytes === undefined ? {} : { shardBytes }) };
      await writeCheckpoint(backend, 'a', { step: 1, tensors: { model: tensors() } }, options);
      const calls: string[] = [];
      await writeCheckpoint(backend, 'b', { step: 1, tensors: { model: streamOf(tensors(), calls) } }, options);
      assert.deepEqual(calls, ['read 0', 'read 1', 'read 2', 'read 3', 'end']);
      const names = await backend.list('a');
      assert.deepEqual(await backend.list('b'), names);
      for (const n of names) assert.deepEqual(await backend.read(`b/${n}`), await backend.read(`a/${n}`), n);
    }
  });

  it('a stream giving the wrong number of bytes, or failing, aborts the save and leaves nothing', async () => {
    const backend = memoryBackend();
    const wrong: TensorStream = { specs: [{ name: 'x', dtype: 'F32', shape: [2] }], read: async () => new Uint8Array(4) };
    await rejectsWith(writeCheckpoint(backend, 'c', { step: 1, tensors: { model: wrong } }, { sync: false }), 'TENSOR_SIZE_MISMATCH', '"x"');
    const failing: TensorStream = { ...wrong, read: async () => new Uint8Array(8), end: async () => Promise.reject(new Error('late failure')) };
    await assert.rejects(writeCheckpoint(backend, 'c', { step: 1, tensors: { model: failing } }, { sync: false }), /late failure/);
    assert.deepEqual(await backend.list(''), []);
  });

  /**
   * A memory backend whose writes take a few milliseconds and copy the bytes only at the end (as a
   * thread-pool write reads the caller's memory while it runs), logging when each starts and ends; the
   * `failAt`-th write (counting from 1) fails with NO_SPACE.
   */
  function slowBackend(log: string[], failAt = Infinity): Backend {
    const inner = memoryBackend();
    let writes = 0;
    return {
      ...inner,
      writer: async (key, options) => {
        const w = await inner.writer(key, options);
        return {
          ...w,
          write: async (chunk) => {
            const n = ++writes;
            log.push(`write ${chunk[0] ?? '-'}`);
            await new Promise((r) => setTimeout(r, 3));
            if (n === failAt) throw new CkptError('NO_SPACE', 'disk full (test)', {});
            const copy = chunk.slice();
            log.push(`written ${chunk[0] ?? '-'}`);
            await w.write(copy);
          },
        };
      },
    };
  }

  /** Six 300 KiB tensors (written straight from the stream's memory), tensor i filled with i + 1. */
  const BIG = 300 * 1024;
  function alternatingStream(log: string[]): TensorStream {
    const buffers = [new Uint8Array(BIG), new Uint8Array(BIG)];
    return {
      specs: Array.from({ length: 6 }, (_, i) => ({ name: `t${i}`, dtype: 'U8' as const, shape: [BIG] })),
      alternating: true,
      read: async (i) => {
        log.push(`read ${i + 1}`);
        return (buffers[i % 2] as Uint8Array).fill(i + 1);
      },
    };
  }

  it('an alternating stream produces the next tensor while the previous one is written, never overwriting bytes in flight', async () => {
    const log: string[] = [];
    const backend = slowBackend(log);
    await writeCheckpoint(backend, 'alt', { step: 1, tensors: { model: alternatingStream(log) } }, { sync: false });
    const ck = await load({ backend, key: 'alt' });
    for (let i = 0; i < 6; i++) assert.ok((ck.tensors.model?.get(`t${i}`)?.data as Uint8Array).every((b) => b === i + 1), `t${i}`);
    const at = (e: string): number => log.indexOf(e);
    for (let t = 1; t <= 5; t++) {
      // Overlap: tensor t + 1 is produced before tensor t's write ends …
      assert.ok(at(`read ${t + 1}`) < at(`written ${t}`), log.join(', '));
      // … but tensor t's buffer is refilled (by tensor t + 2) only after its write ended.
      if (t + 2 <= 6) assert.ok(at(`written ${t}`) < at(`read ${t + 2}`), log.join(', '));
    }
  });

  it('a write failing under an alternating stream fails the save with its error and leaves nothing', async () => {
    for (const failAt of [2, 4, 7]) {
      const backend = slowBackend([], failAt);
      await rejectsWith(writeCheckpoint(backend, 'alt', { step: 1, tensors: { model: alternatingStream([]) } }, { sync: false }), 'NO_SPACE');
      assert.deepEqual(await backend.list(''), [], `failing write ${failAt}`);
    }
    const failing: TensorStream = { ...alternatingStream([]), read: async (i) => (i === 3 ? Promise.reject(new Error('producer failed')) : new Uint8Array(BIG)) };
    const backend = slowBackend([]);
    await assert.rejects(writeCheckpoint(backend, 'alt', { step: 1, tensors: { model: failing } }, { sync: false }), /producer failed/);
    assert.deepEqual(await backend.list(''), []);
  });

  it('stream specs are validated up front, every problem listed', async () => {
    const bad = {
      specs: [
        { name: '', dtype: 'F32', shape: [1] },
        { name: 'a', dtype: 'F33', shape: [1] },
        { name: 'b', dtype: 'F32', shape: [-1] },
      ],
      read: async () => new Uint8Array(),
    } as unknown as TensorStream;
    const e = (await rejectsWith(writeCheckpoint(memoryBackend(), 'k', { step: 1, tensors: { model: bad } }), 'INVALID_ARGUMENT')) as {
      received: string[];
    };
    assert.equal(e.received.length, 3);
  });
});



describe('ckpt average', () => {
  it('default: the last 8 (all 3 here, with a note) into RUN_DIR/avg', async () => {
    const dir = await makeRun();
    const r = await cli('average', dir);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.split('\n')[0], `averaged 3 checkpoints (steps 100, 200, 300; equal weights) into ${join(dir, 'avg')}`);
    assert.match(r.out, /averaged: model; from step 300: optimizer, ema, state\.json/);
    assert.match(r.err, /note: asked for the last 8, the run has only 3/);
    assert.deepEqual(values((await load(join(dir, 'avg'))).tensors.model?.get('w')), [4, 5, 6]);
  });

  it('--last, --steps with --weights, --best with --metric/--mode, --out, --json', async () => {
    const dir = await makeRun();
    const json = async (...args: string[]): Promise<Record<string, unknown>> => {
      const r = await cli('average', dir, '--json', ...args);
      assert.equal(r.code, 0, r.err);
      return JSON.parse(r.out) as Record<string, unknown>;
    };
    const last = await json('--last', '2', '--out', join(dir, 'l2'));
    assert.deepEqual(last.steps, [200, 300]);
    assert.equal(last.out, join(dir, 'l2'));
    assert.equal(last.step, 300);
    assert.equal(last.requested, 2);
    assert.equal(last.method, 'mean-float64');
    assert.deepEqual(last.copied, ['optimizer', 'ema']);

    const steps = await json('--steps', '300,100', '--weights', '3,1', '--out', join(dir, 's'));
    assert.deepEqual(steps.steps, [100, 300]);
    assert.deepEqual(steps.weights, [0.25, 0.75]);
    assert.deepEqual(values((await load(join(dir, 's'))).tensors.model?.get('w')), [5.5, 6.5, 7.5]);

    const best = await json('--best', '1', '--metric', 'acc', '--mode', 'max', '--out', join(dir, 'b'));
    assert.deepEqual(best.steps, [200]);
    const ema = await json('--groups', 'model,ema', '--out', join(dir, 'e'));
    assert.deepEqual(ema.averaged, ['model', 'ema']);

    const text = await cli('average', dir, '--last', '2', '--weights', '1,3', '--out', join(dir, 'w'));
    assert.match(text.out, /steps 200, 300; weights 0\.25, 0\.75/);
    assert.equal(text.err, '');
  });

  it('an existing output is an error (exit 1) unless --overwrite', async () => {
    const dir = await makeRun();
    assert.equal((await cli('average', dir)).code, 0);
    const again = await cli('average', dir, '--last', '1');
    assert.equal(again.code, 1);
    assert.match(again.err, /^ckpt average: a checkpoint already exists at .*avg/);
    assert.equal((await cli('average', dir, '--last', '1', '--overwrite')).code, 0);
    assert.deepEqual(values((await load(join(dir, 'avg'))).tensors.model?.get('w')), [7, 8, 9]);
  });

  it('failures exit 1 with the error: corrupt input, mismatch, missing step', async () => {
    const dir = await makeRun();
    await corruptData(join(dir, 'step-00000100', 'model.safetensors'));
    const corrupt = await cli('average', dir);
    assert.equal(corrupt.code, 1);
    assert.ok(corrupt.err.includes(`${join(dir, 'step-00000100', 'model.safetensors')} is corrupt`), corrupt.err);
    assert.equal((await cli('average', dir, '--no-verify')).code, 0);
    const missing = await cli('average', dir, '--steps', '100,150', '--out', join(dir, 'x'));
    assert.equal(missing.code, 1);
    assert.match(missing.err, /no committed checkpoint for step 150/);
    const notRun = await cli('average', join(dir, 'step-00000100'));
    assert.equal(notRun.code, 1);
    assert.match(notRun.err, /not a run directory/);
  });

  it('--help, and usage errors exit 2', async () => {
    const help = await cli('average', '--help');
    assert.equal(help.code, 0);
    assert.match(help.out, /^Usage: ckpt average RUN_DIR/);
    assert.match(help.out, /--best K/);
    const dir = await makeRun();
    const usages: [string[], RegExp][] = [
      [[], /expected 1 argument/],
      [[dir, '--last', '0'], /--last must be an integer >= 1/],
      [[dir, '--last', '2', '--steps', '1,2'], /--last, --steps: choose one/],
      [[dir, '--best', '2'], /--best K needs --metric NAME/],
      [[dir, '--metric', 'loss'], /--metric and --mode go with --best K/],
      [[dir, '--best', '2', '--metric', 'loss', '--mode', 'lowest'], /--mode must be "min" or "max"/],
      [[dir, '--steps', '1,x'], /--steps must be a comma-separated list/],
      [[dir, '--weights', '1,-1'], /--weights must be a comma-separated list of positive numbers/],
      [[dir, '--frobnicate'], /Unknown option/],
    ];
    for (const [args, message] of usages) {
      const r = await cli('average', ...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, message);
    }
    assert.deepEqual((await readdir(dir)).sort(), ['step-00000100', 'step-00000200', 'step-00000300']);
  });
});
