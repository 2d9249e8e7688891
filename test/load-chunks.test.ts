/**
 * Loads into fresh memory in chunks of consecutive tensors (CheckpointReader.readChunked: boundaries,
 * shards, backends without descriptors, failing reads, damaged headers) and fit checkpoints captured
 * without a copy out of TF.js (captureState({ copy: false }) in the fit callbacks) with a background
 * manager, the EMA updated in place and early stopping restoring the best.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { createBufferPool } from '../src/buffers.js';
import { load, save } from '../src/checkpoint/api.js';
import { openManager } from '../src/checkpoint/manager.js';
import type { TrainState } from '../src/checkpoint/types.js';
import { isCkptError } from '../src/errors.js';
import { closeLoadThreads } from '../src/index.js';
import { fsBackend } from '../src/storage/fs.js';
import { memoryBackend } from '../src/storage/memory.js';
import type { TensorMap } from '../src/tensor/tensor.js';
import { tensor } from '../src/tensor/tensor.js';
import { fitCallbacks } from '../src/tfjs/callbacks.js';
import { createTfEma } from '../src/tfjs/ema.js';
import { captureState } from '../src/tfjs/state.js';
import { assertSameTensors, tmpDir, wrapReaders } from './helpers.js';
import { BATCH, FEATURES, SAMPLES, dataset, denseModel, useBackend } from './tfjs-fixtures.js';

const MiB = 1024 * 1024;

/** `n` bytes of a pattern that differs per seed and has no long run of one value. */
function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7 + (i >>> 12)) & 255;
  return out;
}

/**
 * 40 MiB of model (read in chunks) laid out on the chunk boundaries: a tensor of 16 MiB - 3 bytes
 * followed by tiny and empty ones (one chunk), one of exactly 16 MiB (a chunk alone), one over 16 MiB,
 * empty tensors first and last.
 */
function boundaryState(step: number): TrainState {
  const specs: [string, number][] = [
    ['e0', 0],
    ['a', 16 * MiB - 3],
    ['e1', 0],
    ['b', 3],
    ['c', 16 * MiB],
    ['d', 5],
    ['f', 8 * MiB + 1],
    ['e2', 0],
  ];
  return {
    step,
    tensors: {
      model: new Map(specs.map(([name, n], i) => [name, tensor(pattern(n, i + step), [n], 'U8')])),
      optimizer: new Map([['m', tensor(pattern(12, 99), [3], 'F32')]]),
    },
  };
}

describe('loads in chunks on the calling thread (review)', () => {
  it('tensors on chunk boundaries, empty ones first, between and last, one over 16 MiB: the bytes, order and page placement of a whole-file read', async () => {
    const path = join(await tmpDir('ckpt-chunks-review-'), 'step-3');
    await save(path, boundaryState(3), { sync: false });
    const whole = (await load(path, { allocate: createBufferPool().allocate, threads: 0 })).tensors;
    for (const options of [{ threads: 0 }, { threads: 0, verify: false }, {}]) {
      const ck = await load(path, options);
      assertSameTensors(ck.tensors, whole, true);
      const model = ck.tensors.model as TensorMap;
      // Chunks: a, e1, b (and the empty e0 before them) in one; c alone; d, f, e2 in one.
      assert.equal(model.get('e0')?.data.buffer, model.get('b')?.data.buffer, JSON.stringify(options));
      assert.notEqual(model.get('b')?.data.buffer, model.get('c')?.data.buffer);
      assert.notEqual(model.get('c')?.data.buffer, model.get('d')?.data.buffer);
      assert.equal(model.get('d')?.data.buffer, model.get('e2')?.data.buffer);
    }
  });

  it('a sharded group (several files read in chunks, merged into one map) and a backend without descriptors (threads asked for)', async () => {
    const state = boundaryState(4);
    const path = join(await tmpDir('ckpt-chunks-review-'), 'step-4');
    await save(path, state, { sync: false, shardBytes: 17 * MiB });
    const ck = await load(path, { threads: 0 });
    assert.ok((ck.manifest.groups.model?.files.length ?? 0) > 1);
    // Against what was saved (each shard has its own header: no page comparison).
    assertSameTensors(ck.tensors, state.tensors, false);
    const backend = memoryBackend();
    await save({ backend, key: 'ck' }, state, { shardBytes: 17 * MiB });
    for (const verify of [true, false]) {
      assertSameTensors((await load({ backend, key: 'ck' }, { threads: 2, verify })).tensors, state.tensors, false);
      // A reader built on readRange (no openReader, no descriptor).
      const { openReader: _, ...ranges } = backend;
      assertSameTensors((await load({ backend: ranges, key: 'ck' }, { threads: 2, verify })).tensors, state.tensors, false);
    }
  });

  it('a read failing part-way is IO_ERROR naming the file and step, and the file is closed only once no read is in flight', async () => {
    const path = join(await tmpDir('ckpt-chunks-review-'), 'step-5');
    await save(path, boundaryState(5), { sync: false });
    const file = join(path, 'model.safetensors');
    const inner = fsBackend(dirname(path));
    // Reads 0 and 1 are the header; 2, 3, 4 the chunks.
    for (const failing of [2, 3, 4]) {
      let calls = 0;
      let inFlight = 0;
      let closedUnder = -1;
      // No descriptor: read here whatever the threads.
      const backend = wrapReaders(inner, file, ({ fd: _fd, ...reader }) => ({
        ...reader,
        read: async (offset, length, into) => {
          const call = calls++;
          inFlight++;
          try {
            await new Promise((r) => setTimeout(r, 20));
            if (call === failing) throw Object.assign(new Error('injected EIO'), { code: 'EIO' });
            return await reader.read(offset, length, into);
          } finally {
            inFlight--;
          }
        },
        close: async () => {
          closedUnder = inFlight;
          await reader.close();
        },
      }));
      for (const verify of [true, false]) {
        calls = 0;
        await assert.rejects(
          load({ backend, key: basename(path) }, { threads: 0, verify }),
          (e) => isCkptError(e) && e.code === 'IO_ERROR' && e.path === file && e.step === 5 && /injected EIO/.test(e.message),
          `read ${failing}, verify ${verify}`,
        );
        assert.equal(closedUnder, 0, `read ${failing}, verify ${verify}: closed with a read in flight`);
      }
    }
  });

  it('a damaged header byte is CHECKSUM_MISMATCH naming the file and step, here and on worker threads', async () => {
    const path = join(await tmpDir('ckpt-chunks-review-'), 'step-6');
    await save(path, boundaryState(6), { sync: false });
    const file = join(path, 'model.safetensors');
    const original = await readFile(file);
    const n = Number(original.readBigUInt64LE(0));
    const header = original.subarray(8, 8 + n).toString('latin1');
    // The length prefix, a quote, a digit of a shape, of an offset, a dtype letter, a name, the padding.
    const at = [0, 1, 8, 8 + header.indexOf('[') + 1, 8 + header.indexOf('data_offsets') + 16, 8 + header.indexOf('U8'), 8 + header.indexOf('"a"') + 1, 8 + n - 1];
    try {
      for (const i of at) {
        for (const flip of [1, 0x10]) {
          const bytes = Buffer.from(original);
          bytes[i] = (bytes[i] as number) ^ flip;
          await writeFile(file, bytes);
          for (const options of [{ threads: 0 }, { threads: 1 }]) {
            await assert.rejects(load(path, options), (e) => isCkptError(e) && e.code === 'CHECKSUM_MISMATCH' && e.path === file && e.step === 6, `byte ${i} ^ ${flip}, ${JSON.stringify(options)}`);
          }
        }
      }
    } finally {
      await writeFile(file, original);
      await closeLoadThreads();
    }
  });
});

describe('fit checkpoints captured without a copy (review)', () => {
  before(() => useBackend('cpu'));

  /** Captures a copy of the whole state at every epoch end (after the checkpoint callbacks). */
  class Snapshots extends tf.Callback {
    readonly states: TrainState[] = [];
    constructor(private readonly ema: ReturnType<typeof createTfEma>) {
      super();
    }
    override async onEpochEnd(): Promise<void> {
      this.states.push(await captureState({ model: this.model, optimizer: this.model.optimizer, ema: this.ema }));
    }
  }

  it('background manager, EMA updated in place, early stopping restoring the best: every checkpoint and the restored state are the state of their step', async () => {
    const { xs: x, ys: y } = dataset();
    const xs = tf.tensor2d(x, [SAMPLES, FEATURES]);
    const ys = tf.tensor2d(y, [SAMPLES, 1]);
    const dir = await tmpDir('ckpt-chunks-review-fit-');
    const model = denseModel(2);
    model.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
    const ema = createTfEma(model, { decay: 0.5 });
    const manager = await openManager(join(dir, 'run'), { background: true, save: { everySteps: 1 }, keep: { last: 10 } });
    const snaps = new Snapshots(ema);
    // The training loss falls every epoch: with mode 'max' the first epoch stays the best.
    const callbacks = [...fitCallbacks(manager, { ema, earlyStopping: { monitor: 'loss', mode: 'max', patience: 2, restoreBest: true } }), snaps];
    await model.fit(xs, ys, { batchSize: BATCH, epochs: 10, shuffle: false, verbose: 0, callbacks });
    await manager.flush();
    assert.equal(snaps.states.length, 3);
    for (const s of snaps.states) {
      const saved = await load(join(dir, 'run', `step-${String(s.step).padStart(8, '0')}`));
      for (const g of ['model', 'optimizer', 'ema']) assertSameTensors({ [g]: saved.tensors[g] as TensorMap }, { [g]: s.tensors[g] as TensorMap }, false);
    }
    // Restored: the state of the first epoch.
    const now = await captureState({ model, optimizer: model.optimizer, ema });
    const best = snaps.states[0] as TrainState;
    assert.equal(now.step, best.step);
    for (const g of ['model', 'optimizer', 'ema']) assertSameTensors({ [g]: now.tensors[g] as TensorMap }, { [g]: best.tensors[g] as TensorMap }, false);
    await manager.close();
    xs.dispose();
    ys.dispose();
  });
});
