/**
 * The bench's TF.js EMA rows: `createTfEma(...).update()` over named float32 variables on the cpu and
 * wasm backends, against a plain multiply-add loop over typed arrays of the same size (the same limit
 * as the typed-array EMA row).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { createTfEma } from '../src/tfjs/ema.js';
import { bestTime } from './lib.js';

/** Seconds of one EMA update of `tensors` float32 variables of `elements` each, best of `reps`. */
export async function timeTfEma(backend: 'cpu' | 'wasm', tensors: number, elements: number, reps: number): Promise<number> {
  if (backend === 'wasm') {
    const pkg = createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json');
    setWasmPaths(join(dirname(pkg), 'dist') + '/');
  }
  tf.env().set('PROD', true);
  if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend ${backend} did not initialise`);
  const vars: Record<string, tf.Variable> = {};
  for (let i = 0; i < tensors; i++) {
    const values = new Float32Array(elements);
    for (let k = 0; k < elements; k++) values[k] = ((k * 2654435761 + i) % 1000) / 1000;
    vars[`w${i}`] = tf.variable(tf.tensor1d(values), true, `bench_ema_${backend}_${i}`);
  }
  const ema = createTfEma(vars, { decay: 0.999 });
  ema.update();
  try {
    return await bestTime(() => ema.update(), reps);
  } finally {
    ema.dispose();
    for (const v of Object.values(vars)) v.dispose();
  }
}
