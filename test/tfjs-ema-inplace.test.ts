/**
 * The TF.js EMA's in-place update on the cpu backend gives the bits of the op path
 * (`s - (s - w) * a` in float32 kernels) and never changes data another tensor shares.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { createTfEma } from '../src/tfjs/ema.js';
import { randoms, useBackend } from './tfjs-fixtures.js';

before(async () => {
  await useBackend('cpu');
});

/** What the op path computes for one update of `shadow` toward `weight` with decay `d` (float32). */
function opPath(shadow: Float32Array, weight: Float32Array, d: number): Float32Array {
  return tf.tidy(() => {
    const s = tf.tensor1d(shadow);
    const factor = tf.scalar(Math.fround(1 - d), 'float32');
    return tf.sub(s, tf.mul(tf.sub(s, tf.tensor1d(weight)), factor)).dataSync() as Float32Array;
  });
}

function bits(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}

describe('TF.js EMA on the cpu backend', () => {
  it('updates in place with the bits of the op path, over many updates and values (subnormals, -0, large)', () => {
    const n = 4099;
    const special = [0, -0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1e-38, 1];
    const values = (seed: number): Float32Array => {
      const v = randoms(n, seed);
      for (let i = 0; i < v.length; i++) v[i] = (v[i] as number) * 10 ** ((i % 13) - 6);
      special.forEach((x, i) => (v[i * 7] = x));
      return v;
    };
    const w = tf.variable(tf.tensor1d(values(1)), true, 'inplace_w');
    const ema = createTfEma({ w }, { decay: 0.999 });
    ema.update();
    for (let step = 2; step <= 12; step++) {
      w.assign(tf.tensor1d(values(step)));
      const before = ((ema.shadow.get('w') as tf.Variable).dataSync() as Float32Array).slice();
      const expected = opPath(before, w.dataSync() as Float32Array, Math.fround(ema.decayAt(step)));
      ema.update();
      assert.deepEqual(bits((ema.shadow.get('w') as tf.Variable).dataSync() as Float32Array), bits(expected), `update ${step}`);
    }
    ema.dispose();
    w.dispose();
  });

  it('never changes data another tensor shares: the weight after the first update, a clone, averaged weights in use', async () => {
    const w = tf.variable(tf.tensor1d([1, 2, 3, 4]), true, 'inplace_share');
    const ema = createTfEma({ w }, { decay: 0.5, dynamic: false });
    ema.update(); // the shadow shares the weight's data now
    w.assign(tf.tensor1d([3, 4, 5, 6]));
    ema.update();
    assert.deepEqual(Array.from(w.dataSync()), [3, 4, 5, 6]);
    assert.deepEqual(Array.from((ema.shadow.get('w') as tf.Variable).dataSync()), [2, 3, 4, 5]);
    const kept = (ema.shadow.get('w') as tf.Variable).clone();
    ema.update();
    assert.deepEqual(Array.from(kept.dataSync()), [2, 3, 4, 5], 'a clone keeps its values');
    assert.deepEqual(Array.from((ema.shadow.get('w') as tf.Variable).dataSync()), [2.5, 3.5, 4.5, 5.5]);
    kept.dispose();
    await ema.withAveragedWeights(() => {
      assert.deepEqual(Array.from(w.dataSync()), [2.5, 3.5, 4.5, 5.5]);
      ema.update(); // the weight holds the shadow's data: must not be changed in place
      assert.deepEqual(Array.from(w.dataSync()), [2.5, 3.5, 4.5, 5.5]);
    });
    assert.deepEqual(Array.from(w.dataSync()), [3, 4, 5, 6]);
    ema.dispose();
    w.dispose();
  });
});
