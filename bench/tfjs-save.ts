/**
 * The bench's TF.js background-save row: how long the checkpoint callback that `model.fit` awaits after
 * a batch blocks training when the manager saves in the background, for a LayersModel trained with
 * Adam and an EMA (weights, two Adam slots and the EMA shadow: four times the weights), on the cpu
 * backend. Against one memcpy of the same state (the least a background save must do), and against the
 * same save with the state first copied out of TF.js (`captureState`'s default, which the callback used
 * before it saved without that copy).
 */
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { openManager } from '../src/checkpoint/manager.js';
import { checkpointCallback, emaCallback } from '../src/tfjs/callbacks.js';
import { createTfEma } from '../src/tfjs/ema.js';
import { captureState } from '../src/tfjs/state.js';
import { median } from './lib.js';

/** Best and median seconds of each variant (interleaved repetitions), and the state's bytes. */
export interface TfSaveTimes {
  readonly bytes: number;
  readonly memcpy: number;
  readonly callback: { readonly best: number; readonly median: number };
  readonly copied: { readonly best: number; readonly median: number };
}

/** Times the variants over a model of `layers` dense layers of `width` × `width` float32 weights. */
export async function timeTfBackgroundSave(dir: string, layers: number, width: number, reps: number): Promise<TfSaveTimes> {
  tf.env().set('PROD', true);
  if (!(await tf.setBackend('cpu'))) throw new Error('TF.js cpu backend did not initialise');
  const model = tf.sequential();
  for (let i = 0; i < layers; i++) model.add(tf.layers.dense({ units: width, useBias: false, ...(i === 0 ? { inputShape: [width] } : {}) }));
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'meanSquaredError' });
  const ema = createTfEma(model, { decay: 0.999 });
  const xs = tf.randomNormal([1, width]);
  const ys = tf.randomNormal([1, width]);
  const manager = await openManager(join(dir, 'tfjs-bg'), { background: true, sync: false, keep: { last: 1 }, save: { everySteps: 1 } });
  const callbacks = [emaCallback(ema), checkpointCallback(manager, { on: 'batch' })];
  for (const c of callbacks) c.setModel(model);
  const target = { model, optimizer: model.optimizer, ema };
  // One real step creates Adam's slots and the EMA's shadow.
  await model.trainOnBatch(xs, ys);
  await (callbacks[0] as tf.Callback).onBatchEnd(0, {});
  /**
   * The next step number, without training (the cpu backend takes seconds per step of such a model):
   * the save policy takes one checkpoint per step, and the saves copy the same bytes either way.
   */
  const step = async (): Promise<void> => {
    await manager.flush();
    (model.optimizer as unknown as { incrementIterations(): void }).incrementIterations();
  };
  const times = { callback: [] as number[], copied: [] as number[] };
  try {
    for (let r = 0; r <= reps; r++) {
      await step();
      let t = process.hrtime.bigint();
      await (callbacks[1] as tf.Callback).onBatchEnd(0, { loss: 1 });
      const callback = Number(process.hrtime.bigint() - t) / 1e9;
      await manager.flush();
      const latest = (await manager.list()).at(-1)?.step;
      if (latest !== model.optimizer.iterations) throw new Error(`the checkpoint callback did not save step ${model.optimizer.iterations} (latest: ${latest})`);
      await step();
      t = process.hrtime.bigint();
      await manager.save(await captureState(target, { metrics: { loss: 1 } }));
      const copied = Number(process.hrtime.bigint() - t) / 1e9;
      // The first round warms up (allocates the manager's snapshot buffers).
      if (r > 0) {
        times.callback.push(callback);
        times.copied.push(copied);
      }
    }
    await manager.flush();
    // One memcpy of the same state into reused memory.
    const state = await captureState(target);
    const sources = Object.values(state.tensors).flatMap((m) => [...m.values()].map((t) => t.data));
    const copies = sources.map((s) => s.slice());
    let memcpy = Infinity;
    for (let r = 0; r < reps; r++) {
      const t = process.hrtime.bigint();
      sources.forEach((s, i) => copies[i]?.set(s));
      memcpy = Math.min(memcpy, Number(process.hrtime.bigint() - t) / 1e9);
    }
    const bytes = sources.reduce((n, s) => n + s.byteLength, 0);
    const summary = (v: number[]) => ({ best: Math.min(...v), median: median(v) });
    return { bytes, memcpy, callback: summary(times.callback), copied: summary(times.copied) };
  } finally {
    await manager.close();
    ema.dispose();
    model.dispose();
    xs.dispose();
    ys.dispose();
  }
}
