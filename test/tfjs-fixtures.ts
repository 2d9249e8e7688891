/**
 * Shared fixtures of the TF.js tests: a small seeded Dense model, a fixed data set with a seeded batch
 * order, the optimizers ckpt supports, and a deterministic training loop.
 */
import * as tf from '@tensorflow/tfjs';
import { adamw } from '../src/tfjs/optimizers.js';
import { trainStep } from '../src/tfjs/loop.js';
import type { TrainingTarget } from '../src/tfjs/state.js';
import { randoms } from './helpers.js';

/** Selects a backend and silences TF.js' "install tfjs-node" banner. */
export async function useBackend(name: 'cpu' | 'wasm'): Promise<void> {
  tf.env().set('PROD', true);
  if (!(await tf.setBackend(name))) throw new Error(`backend ${name} did not initialise`);
}

export { randoms };

export const SAMPLES = 32;
export const BATCH = 8;
export const FEATURES = 4;

/** The data set: y = sin(sum of x) + noise. */
export function dataset(): { xs: Float32Array; ys: Float32Array } {
  const xs = randoms(SAMPLES * FEATURES, 7);
  const noise = randoms(SAMPLES, 11);
  const ys = new Float32Array(SAMPLES);
  for (let i = 0; i < SAMPLES; i++) {
    let s = 0;
    for (let j = 0; j < FEATURES; j++) s += xs[i * FEATURES + j] as number;
    ys[i] = Math.sin(s) + 0.1 * (noise[i] as number);
  }
  return { xs, ys };
}

/** Sample indices of the batch used at `step` (a seeded shuffle per epoch, so resuming at a step is exact). */
export function batchIndices(step: number): number[] {
  const perEpoch = SAMPLES / BATCH;
  const epoch = Math.floor(step / perEpoch);
  const order = Array.from({ length: SAMPLES }, (_, i) => i);
  const r = randoms(SAMPLES, 1000 + epoch);
  for (let i = SAMPLES - 1; i > 0; i--) {
    const j = Math.floor(((r[i] as number) + 1) / 2 * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  const b = step % perEpoch;
  return order.slice(b * BATCH, (b + 1) * BATCH);
}

/** A batch of the data set as tensors (the caller disposes them). */
export function batch(step: number): { x: tf.Tensor2D; y: tf.Tensor2D } {
  const { xs, ys } = dataset();
  const idx = batchIndices(step);
  const x = new Float32Array(BATCH * FEATURES);
  const y = new Float32Array(BATCH);
  idx.forEach((i, k) => {
    x.set(xs.subarray(i * FEATURES, (i + 1) * FEATURES), k * FEATURES);
    y[k] = ys[i] as number;
  });
  return { x: tf.tensor2d(x, [BATCH, FEATURES]), y: tf.tensor2d(y, [BATCH, 1]) };
}

/** A small 4 → 8 (tanh) → 1 Dense model with seeded initializers and auto-generated layer names. */
export function denseModel(seed: number, names?: readonly [string, string]): tf.Sequential {
  const model = tf.sequential();
  model.add(
    tf.layers.dense({
      units: 8,
      inputShape: [FEATURES],
      activation: 'tanh',
      kernelInitializer: tf.initializers.glorotUniform({ seed }),
      biasInitializer: tf.initializers.randomUniform({ minval: -0.1, maxval: 0.1, seed: seed + 1 }),
      ...(names === undefined ? {} : { name: names[0] }),
    }),
  );
  model.add(
    tf.layers.dense({
      units: 1,
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 2 }),
      ...(names === undefined ? {} : { name: names[1] }),
    }),
  );
  return model;
}

/** Mean squared error of `model` on the batch of `step`. */
export function lossAt(model: tf.LayersModel, step: number): () => tf.Scalar {
  return () =>
    tf.tidy(() => {
      const { x, y } = batch(step);
      return tf.losses.meanSquaredError(y, model.apply(x) as tf.Tensor) as tf.Scalar;
    });
}

/** Every optimizer ckpt supports, by name. */
export const OPTIMIZERS: Readonly<Record<string, () => tf.Optimizer>> = {
  adam: () => tf.train.adam(0.01),
  adamw: () => adamw(0.01, { weightDecay: 0.05 }),
  sgd: () => tf.train.sgd(0.05),
  momentum: () => tf.train.momentum(0.05, 0.9),
  nesterov: () => tf.train.momentum(0.05, 0.9, true),
  rmsprop: () => tf.train.rmsprop(0.01, 0.9, 0.5),
  // TF.js subtracts epsilon inside the square root of centered RMSProp: a large one gives NaN.
  'rmsprop-centered': () => tf.train.rmsprop(0.01, 0.9, 0.1, 1e-20, true),
  adagrad: () => tf.train.adagrad(0.1),
  adadelta: () => tf.train.adadelta(1, 0.95),
};

/** Trains `steps` steps from `target.optimizer.iterations` on, returning the losses. */
export async function train(target: TrainingTarget & { readonly model: tf.LayersModel }, steps: number): Promise<number[]> {
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    const step = target.optimizer?.iterations ?? 0;
    losses.push(await trainStep(target, lossAt(target.model, step)));
  }
  return losses;
}

/** The bits of a float32 value as hex, to compare and print losses exactly. */
export function bits(x: number): string {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0]?.toString(16).padStart(8, '0') ?? '';
}
