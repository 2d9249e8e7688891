/**
 * ckpt/tfjs callbacks for model.fit: checkpointing, LR schedule, EMA, early stopping with restore of
 * the best checkpoint, and a bit-identical resumed fit.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { load } from '../src/checkpoint/api.js';
import { openManager } from '../src/checkpoint/manager.js';
import { isCkptError } from '../src/errors.js';
import { piecewiseConstant } from '../src/schedules/index.js';
import type { TensorMap } from '../src/tensor/tensor.js';
import { checkpointCallback, earlyStopping, fitCallbacks, lrScheduleCallback } from '../src/tfjs/callbacks.js';
import { createTfEma } from '../src/tfjs/ema.js';
import { resume } from '../src/tfjs/loop.js';
import { getLearningRate } from '../src/tfjs/optimizers.js';
import { captureWeights } from '../src/tfjs/state.js';
import { tmpDir } from './helpers.js';
import { BATCH, FEATURES, SAMPLES, dataset, denseModel, useBackend } from './tfjs-fixtures.js';

before(() => useBackend('cpu'));

function data(): { xs: tf.Tensor2D; ys: tf.Tensor2D } {
  const { xs, ys } = dataset();
  return { xs: tf.tensor2d(xs, [SAMPLES, FEATURES]), ys: tf.tensor2d(ys, [SAMPLES, 1]) };
}

function compiled(seed: number, optimizer: tf.Optimizer = tf.train.adam(0.01)): tf.Sequential {
  const model = denseModel(seed);
  model.compile({ optimizer, loss: 'meanSquaredError' });
  return model;
}

/** Records every batch loss and, at each epoch end, the weights. */
class Recorder extends tf.Callback {
  readonly losses: number[] = [];
  readonly epochWeights: TensorMap[] = [];
  override async onBatchEnd(_batch: number, logs?: { [key: string]: number | tf.Scalar }): Promise<void> {
    const loss = logs?.loss;
    this.losses.push(typeof loss === 'number' ? loss : ((await (loss as tf.Scalar).data())[0] as number));
  }
  override async onEpochEnd(): Promise<void> {
    this.epochWeights.push(await captureWeights(this.model));
  }
}

function assertSame(a: TensorMap, b: TensorMap): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [name, t] of a) assert.ok(Buffer.from(t.data).equals(Buffer.from(b.get(name)!.data)), `tensor ${name} differs`);
}

describe('fit callbacks', () => {
  it('a fit resumed from an epoch checkpoint (fresh model, optimizer, EMA) matches an uninterrupted fit bit for bit', async () => {
    const { xs, ys } = data();
    const schedule = piecewiseConstant([5, 14], [0.02, 0.01, 0.005]);
    const fitArgs = { batchSize: BATCH, shuffle: false, verbose: 0 } as const;

    const refModel = compiled(1);
    const refEma = createTfEma(refModel, { decay: 0.9 });
    const ref = new Recorder();
    const dir = await tmpDir('ckpt-tfjs-fit-');
    const refManager = await openManager(join(dir, 'ref'));
    await refModel.fit(xs, ys, { ...fitArgs, epochs: 6, callbacks: [...fitCallbacks(refManager, { schedule, ema: refEma }), ref] });
    await refManager.close();
    assert.equal(ref.losses.length, 24);

    const model = compiled(1);
    const ema = createTfEma(model, { decay: 0.9 });
    const manager = await openManager(join(dir, 'run'));
    await model.fit(xs, ys, { ...fitArgs, epochs: 3, callbacks: fitCallbacks(manager, { schedule, ema, state: () => ({ user: { note: 'hi' } }) }) });
    assert.deepEqual((await manager.list()).map((c) => [c.step, c.manifest.epoch]), [
      [4, 1],
      [8, 2],
      [12, 3],
    ]);
    await manager.close();

    const resumedModel = compiled(42);
    const resumedEma = createTfEma(resumedModel, { decay: 0.9 });
    const again = await openManager(join(dir, 'run'));
    const { step, epoch, state } = await resume(again, { model: resumedModel, optimizer: resumedModel.optimizer, ema: resumedEma, schedule });
    assert.deepEqual([step, epoch, state.user], [12, 3, { note: 'hi' }]);
    const rec = new Recorder();
    await resumedModel.fit(xs, ys, {
      ...fitArgs,
      epochs: 6,
      initialEpoch: epoch,
      callbacks: [...fitCallbacks(again, { schedule, ema: resumedEma }), rec],
    });
    await again.close();
    assert.deepEqual(rec.losses, ref.losses.slice(12));
    assertSame(await captureWeights(resumedModel), await captureWeights(refModel));
    assertSame((await resumedEma.stateDict()).tensors, (await refEma.stateDict()).tensors);
    assert.equal(resumedEma.numUpdates, 24);
    assert.equal(getLearningRate(resumedModel.optimizer), schedule(23));
    assertSame((await load(join(dir, 'run', 'step-00000024'))).tensors.model!, (await load(join(dir, 'ref', 'step-00000024'))).tensors.model!);
  });

  it("per-batch checkpoints follow the manager's policy and record completed epochs; the final state is saved at the end", async () => {
    const { xs, ys } = data();
    const dir = await tmpDir('ckpt-tfjs-fit-');
    const manager = await openManager(join(dir, 'run'), { save: { everySteps: 3 } });
    const model = compiled(1);
    await model.fit(xs, ys, { batchSize: BATCH, epochs: 2, shuffle: false, verbose: 0, callbacks: [checkpointCallback(manager, { on: 'batch' })] });
    const list = await manager.list();
    assert.deepEqual(list.map((c) => [c.step, c.manifest.epoch]), [
      [3, 0],
      [6, 1],
      [8, 2],
    ]);
    assert.ok(typeof list[0]!.metrics.loss === 'number');
    await manager.close();
  });

  it('background saves of the state TF.js holds (no copy out of it) write each step as it was, with the EMA updated in place between saves', async () => {
    const { xs, ys } = data();
    const dir = await tmpDir('ckpt-tfjs-fit-');
    const run = async (name: string, background: boolean): Promise<TensorMap[][]> => {
      const model = compiled(3);
      const ema = createTfEma(model, { decay: 0.5 });
      const manager = await openManager(join(dir, name), { background, save: { everySteps: 1 } });
      await model.fit(xs, ys, { batchSize: BATCH, epochs: 2, shuffle: false, verbose: 0, callbacks: fitCallbacks(manager, { ema, on: 'batch' }) });
      await manager.close();
      const reader = await openManager(join(dir, name), { readOnly: true });
      const saved = await Promise.all((await reader.list()).map((c) => load(c.location)));
      await reader.close();
      return saved.map((c) => ['model', 'optimizer', 'ema'].map((g) => c.tensors[g]!));
    };
    const inBackground = await run('background', true);
    const inline = await run('inline', false);
    assert.equal(inBackground.length, 8);
    assert.equal(inline.length, 8);
    inBackground.forEach((groups, k) => groups.forEach((g, j) => assertSame(g, inline[k]![j]!)));
  });

  it('the LR schedule drives SGD (setLearningRate) every batch', async () => {
    const { xs, ys } = data();
    const schedule = piecewiseConstant([1, 5], [0.1, 0.05, 0.01]);
    const model = compiled(1, tf.train.sgd(1));
    const seen: number[] = [];
    const probe = new (class extends tf.Callback {
      override async onBatchEnd(): Promise<void> {
        seen.push(getLearningRate(this.model.optimizer));
      }
    })();
    await model.fit(xs, ys, { batchSize: BATCH, epochs: 2, shuffle: false, verbose: 0, callbacks: [lrScheduleCallback(schedule), probe] });
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7].map((s) => schedule(s)));
  });

  it('early stopping stops after `patience` epochs without improvement and restores the best checkpoint', async () => {
    const { xs, ys } = data();
    const dir = await tmpDir('ckpt-tfjs-fit-');
    // The training loss falls every epoch, so with mode 'max' the first epoch stays the best.
    const manager = await openManager(join(dir, 'run'), { keep: { last: 1, best: { k: 1, metric: 'loss', mode: 'max' } } });
    const model = compiled(1);
    const rec = new Recorder();
    const stop = earlyStopping({ monitor: 'loss', mode: 'max', patience: 2, restoreBest: { manager } });
    await model.fit(xs, ys, { batchSize: BATCH, epochs: 10, shuffle: false, verbose: 0, callbacks: [rec, stop] });
    assert.equal(stop.stoppedEpoch, 2);
    assert.equal(stop.bestStep, 4);
    assert.equal(rec.epochWeights.length, 3);
    assertSame(await captureWeights(model), rec.epochWeights[0]!);
    assert.equal(model.optimizer.iterations, 4);
    await manager.close();
  });

  it('early stopping on a log that fit does not produce is an error naming it', async () => {
    const { xs, ys } = data();
    const model = compiled(1);
    await assert.rejects(
      model.fit(xs, ys, { batchSize: BATCH, epochs: 1, verbose: 0, callbacks: [earlyStopping({ monitor: 'val_loss' })] }),
      (e: unknown) => isCkptError(e, 'INVALID_ARGUMENT') && /val_loss/.test(e.message),
    );
    assert.throws(() => earlyStopping({ patience: -1 }), (e: unknown) => isCkptError(e, 'INVALID_ARGUMENT'));
  });
});
