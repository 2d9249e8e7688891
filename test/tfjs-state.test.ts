/**
 * ckpt/tfjs: capture and restore of weights and optimizer state, and bit-identical resume on the cpu
 * backend for every supported optimizer.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { load, save } from '../src/checkpoint/api.js';
import { openManager } from '../src/checkpoint/manager.js';
import { isCkptError } from '../src/errors.js';
import type { TensorMap } from '../src/tensor/tensor.js';
import { typedView } from '../src/tensor/tensor.js';
import { canonicalWeightNames, resolveModel, weightNames } from '../src/tfjs/names.js';
import { captureOptimizer, getLearningRate, restoreOptimizer, setLearningRate } from '../src/tfjs/optimizers.js';
import { createTfEma } from '../src/tfjs/ema.js';
import { captureState, captureWeights, restoreState, restoreWeights } from '../src/tfjs/state.js';
import { trainStep } from '../src/tfjs/loop.js';
import { tmpDir } from './helpers.js';
import { OPTIMIZERS, denseModel, lossAt, train, useBackend } from './tfjs-fixtures.js';

function assertSameTensors(a: TensorMap, b: TensorMap): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [name, t] of a) {
    const u = b.get(name);
    assert.ok(u !== undefined, name);
    assert.equal(u.dtype, t.dtype, name);
    assert.deepEqual(u.shape, t.shape, name);
    assert.ok(Buffer.from(t.data).equals(Buffer.from(u.data)), `tensor ${name} differs`);
  }
}

function rejectsWith(code: string, tensor?: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(isCkptError(e), `expected a CkptError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (tensor !== undefined) assert.equal(e.tensor, tensor, e.message);
    return true;
  };
}

before(() => useBackend('cpu'));

describe('stable weight names', () => {
  it('renumbers auto-generated layer names within the model and keeps explicit ones', () => {
    assert.deepEqual(
      canonicalWeightNames([
        'dense_Dense3/kernel',
        'dense_Dense3/bias',
        'hidden/kernel',
        'dense_Dense7/kernel',
        'conv1d_Conv1D12/kernel',
        'batch_normalization_BatchNormalization4/moving_mean',
      ]),
      [
        'dense_Dense1/kernel',
        'dense_Dense1/bias',
        'hidden/kernel',
        'dense_Dense2/kernel',
        'conv1d_Conv1D1/kernel',
        'batch_normalization_BatchNormalization1/moving_mean',
      ],
    );
  });

  it('a model built later in the process has the same names', () => {
    const a = denseModel(1);
    const b = denseModel(1);
    assert.notDeepEqual(a.weights.map((w) => w.originalName), b.weights.map((w) => w.originalName));
    assert.deepEqual(weightNames(a), weightNames(b));
    assert.deepEqual(weightNames(a), ['dense_Dense1/kernel', 'dense_Dense1/bias', 'dense_Dense2/kernel', 'dense_Dense2/bias']);
    assert.deepEqual(weightNames(denseModel(1, ['in', 'out'])), ['in/kernel', 'in/bias', 'out/kernel', 'out/bias']);
  });

  it('refuses auto-named variables of a custom model and accepts a record', () => {
    const v = tf.variable(tf.zeros([2]));
    assert.throws(() => weightNames([v]), rejectsWith('INVALID_ARGUMENT'));
    assert.deepEqual(weightNames({ 'layer/w': v }), ['layer/w']);
    v.dispose();
  });
});

describe('bit-identical resume on cpu', () => {
  const TOTAL = 12;
  const K = 5;
  for (const [name, make] of Object.entries(OPTIMIZERS)) {
    it(`${name}: ${K} steps, save, fresh model and optimizer, restore, ${TOTAL - K} steps = ${TOTAL} steps in one go`, async () => {
      const refModel = denseModel(1);
      const ref = { model: refModel, optimizer: make() };
      const reference = await train(ref, TOTAL);

      const first = { model: denseModel(1), optimizer: make() };
      const before = await train(first, K);
      assert.deepEqual(before, reference.slice(0, K));
      const dir = await tmpDir('ckpt-tfjs-');
      const manager = await openManager(join(dir, 'run'));
      await manager.save(await captureState(first, { state: { data: { position: K } }, metrics: { loss: before.at(-1) as number } }));
      await manager.close();

      // Another initialisation and other auto-generated layer names: everything must come from the checkpoint.
      const resumed = { model: denseModel(42), optimizer: make() };
      const reader = await openManager(join(dir, 'run'), { readOnly: true });
      const { checkpoint } = await reader.restore();
      await reader.close();
      assert.equal(checkpoint.step, K);
      assert.equal(checkpoint.versions.tfjs, tf.version.tfjs);
      await restoreState(resumed, checkpoint);
      assert.equal(resumed.optimizer.iterations, K);
      const after = await train(resumed, TOTAL - K);
      for (let i = 0; i < after.length; i++) assert.equal(after[i], reference[K + i], `loss at step ${K + i}`);
      assertSameTensors(await captureWeights(resumed.model), await captureWeights(refModel));
      assertSameTensors((await captureOptimizer(resumed.optimizer, resumed.model)).tensors, (await captureOptimizer(ref.optimizer, refModel)).tensors);
      for (const t of [ref, first, resumed]) {
        t.optimizer.dispose();
        t.model.dispose();
      }
    });
  }

  it('a custom model (record of variables) resumes bit-identically too', async () => {
    let id = 0;
    const makeVars = (seed: number): Record<string, tf.Variable> => {
      id++;
      return {
        w: tf.variable(tf.randomNormal([4, 1], 0, 1, 'float32', seed), true, `custom${id}/w`),
        b: tf.variable(tf.zeros([1]), true, `custom${id}/b`),
      };
    };
    const lossOf = (vars: Record<string, tf.Variable>, step: number) => () =>
      tf.tidy(() => {
        const x = tf.tensor2d([[1, 2, 3, 4], [step % 3, 1, 0, -1]]);
        const y = tf.tensor2d([[1], [-1]]);
        return tf.losses.meanSquaredError(y, tf.add(tf.matMul(x, vars.w as tf.Variable), vars.b as tf.Variable)) as tf.Scalar;
      });
    const run = async (target: { model: Record<string, tf.Variable>; optimizer: tf.Optimizer }, n: number): Promise<number[]> => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push(await trainStep(target, lossOf(target.model, target.optimizer.iterations)));
      return out;
    };
    const ref = { model: makeVars(1), optimizer: tf.train.adam(0.05) };
    const reference = await run(ref, 10);
    const first = { model: makeVars(1), optimizer: tf.train.adam(0.05) };
    await run(first, 4);
    const state = await captureState(first);
    const resumed = { model: makeVars(6), optimizer: tf.train.adam(0.05) };
    await restoreState(resumed, state);
    assert.deepEqual(await run(resumed, 6), reference.slice(4));
    assertSameTensors(await captureWeights(resumed.model), await captureWeights(ref.model));
  });
});

describe('traps', () => {
  it("TF.js' setWeights recomputes Adam's beta products, which then differ in the last bit; ckpt restores them exactly", async () => {
    const model = denseModel(1);
    const optimizer = tf.train.adam(0.01);
    const acc = (o: tf.Optimizer, k: string): number => ((o as unknown as Record<string, tf.Variable>)[k] as tf.Variable).dataSync()[0] as number;
    const differing: number[] = [];
    for (let step = 1; step <= 10; step++) {
      await train({ model, optimizer }, 1);
      const viaTfjs = tf.train.adam(0.01);
      await viaTfjs.setWeights(await optimizer.getWeights());
      if (acc(viaTfjs, 'accBeta1') !== acc(optimizer, 'accBeta1') || acc(viaTfjs, 'accBeta2') !== acc(optimizer, 'accBeta2')) differing.push(step);
      const viaCkpt = tf.train.adam(0.01);
      restoreOptimizer(viaCkpt, model, await captureOptimizer(optimizer, model));
      assert.equal(acc(viaCkpt, 'accBeta1'), acc(optimizer, 'accBeta1'));
      assert.equal(acc(viaCkpt, 'accBeta2'), acc(optimizer, 'accBeta2'));
    }
    assert.ok(differing.length > 0, 'TF.js setWeights no longer loses the beta products');
  });

  it('a slot that belongs to another variable (optimizer driven in another order) is refused, naming the tensor', async () => {
    const model = denseModel(1, ['p', 'q']);
    const optimizer = tf.train.adam(0.01);
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable).reverse();
    optimizer.minimize(lossAt(model, 0), false, vars);
    await assert.rejects(captureOptimizer(optimizer, model), rejectsWith('INCOMPATIBLE_TENSORS', 'p/kernel/m'));
  });

  it('Adamax is refused with UNSUPPORTED', async () => {
    const model = denseModel(1);
    await assert.rejects(captureOptimizer(tf.train.adamax(0.01), model), (e: unknown) => {
      assert.ok(isCkptError(e, 'UNSUPPORTED'));
      assert.match(e.message, /Adamax/);
      return true;
    });
  });

  it('SGD and Momentum take the learning rate through setLearningRate, the others through their field', async () => {
    for (const [name, make] of Object.entries(OPTIMIZERS)) {
      const a = { model: denseModel(1), optimizer: make() };
      const b = { model: denseModel(1), optimizer: make() };
      setLearningRate(a.optimizer, 0);
      assert.equal(getLearningRate(a.optimizer), 0);
      const before = await captureWeights(a.model);
      await train(a, 1);
      await train(b, 1);
      const w = typedView((await captureWeights(a.model)).get('dense_Dense1/kernel')!) as Float32Array;
      const w0 = typedView(before.get('dense_Dense1/kernel')!) as Float32Array;
      // Decoupled weight decay and Adadelta's lr-scaled step vanish with lr 0 too.
      assert.deepEqual(w, w0, `${name}: weights moved with learning rate 0`);
      assert.notDeepEqual(typedView((await captureWeights(b.model)).get('dense_Dense1/kernel')!), w0, name);
    }
  });
});

describe('restore checks', () => {
  it('refuses mismatched weights naming the tensor and changes nothing', async () => {
    const model = denseModel(1);
    const state = await captureState({ model });
    const other = tf.sequential({
      layers: [tf.layers.dense({ units: 3, inputShape: [4] }), tf.layers.dense({ units: 1 })],
    });
    const before = await captureWeights(other);
    await assert.rejects(restoreState({ model: other }, state), rejectsWith('INCOMPATIBLE_TENSORS', 'dense_Dense1/kernel'));
    assertSameTensors(await captureWeights(other), before);
  });

  it('refuses extra tensors unless strict is false, and a missing weight always', async () => {
    const model = denseModel(1);
    const weights = await captureWeights(model);
    const extra = new Map(weights);
    extra.set('stray', weights.get('dense_Dense1/bias')!);
    assert.throws(() => restoreWeights(model, extra), rejectsWith('INCOMPATIBLE_TENSORS', 'stray'));
    restoreWeights(model, extra, { strict: false });
    const missing = new Map(weights);
    missing.delete('dense_Dense2/bias');
    assert.throws(() => restoreWeights(model, missing, { strict: false }), rejectsWith('INCOMPATIBLE_TENSORS', 'dense_Dense2/bias'));
  });

  it('refuses another optimizer class, another configuration (unless strict is false), a missing optimizer state', async () => {
    const model = denseModel(1);
    const optimizer = tf.train.adam(0.01);
    await train({ model, optimizer }, 2);
    const state = await captureState({ model, optimizer });
    await assert.rejects(restoreState({ model, optimizer: tf.train.sgd(0.1) }, state), rejectsWith('INCOMPATIBLE_TENSORS'));
    await assert.rejects(restoreState({ model, optimizer: tf.train.adam(0.01, 0.8) }, state), rejectsWith('INVALID_ARGUMENT'));
    const lenient = tf.train.adam(0.01, 0.8);
    await restoreState({ model, optimizer: lenient }, state, { strict: false });
    assert.equal(lenient.iterations, 2);
    await assert.rejects(restoreState({ model, optimizer: tf.train.adam(0.01) }, await captureState({ model })), rejectsWith('INCOMPATIBLE_TENSORS'));
  });

  it('restores the learning rate and the state of a fresh optimizer (no slots yet)', async () => {
    const model = denseModel(1);
    const optimizer = tf.train.momentum(0.05, 0.9);
    setLearningRate(optimizer, 0.125);
    const state = await captureState({ model, optimizer });
    assert.equal(state.tensors.optimizer, undefined);
    const used = tf.train.momentum(0.05, 0.9);
    await train({ model: denseModel(1), optimizer: used }, 0);
    const m2 = denseModel(2);
    await train({ model: m2, optimizer: used }, 2);
    await restoreState({ model: m2, optimizer: used }, state);
    assert.equal(used.iterations, 0);
    assert.equal(getLearningRate(used), 0.125);
    assert.equal((await captureOptimizer(used, m2)).tensors.size, 0);
  });

  it('user state keys that ckpt fills are refused', async () => {
    await assert.rejects(captureState({ model: denseModel(1) }, { state: { optimizer: 1 } }), rejectsWith('INVALID_ARGUMENT'));
  });

  it('save + load through the checkpoint layer keeps bool and int32 weights', async () => {
    const vars = {
      mask: tf.variable(tf.tensor1d([1, 0, 1], 'bool'), false, 'mask'),
      count: tf.variable(tf.tensor1d([7, -3], 'int32'), false, 'count'),
      w: tf.variable(tf.tensor1d([0.5, 0.25]), true, 'wf'),
    };
    const dir = await tmpDir('ckpt-tfjs-');
    await save(join(dir, 'c'), await captureState({ model: vars }));
    vars.mask.assign(tf.tensor1d([0, 0, 0], 'bool'));
    vars.count.assign(tf.tensor1d([0, 0], 'int32'));
    await restoreState({ model: vars }, await load(join(dir, 'c')));
    assert.deepEqual([...vars.mask.dataSync()], [1, 0, 1]);
    assert.deepEqual([...vars.count.dataSync()], [7, -3]);
    assert.equal((await load(join(dir, 'c'))).tensors.model!.get('mask')!.dtype, 'BOOL');
  });
});

describe('capture without a copy (copy: false)', () => {
  /** A trained model with Adam and an EMA (updated in place on the cpu backend after its first update). */
  async function trained() {
    const model = denseModel(5);
    const target = { model, optimizer: tf.train.adam(0.01), ema: createTfEma(model, { decay: 0.9 }) };
    await train(target, 3);
    return target;
  }

  function bytesOf(m: TensorMap): Map<string, Buffer> {
    return new Map([...m].map(([k, t]) => [k, Buffer.from(t.data)]));
  }

  it('gives the same tensors as a copy, as views of the memory TF.js holds on the cpu backend; a copy owns its memory', async () => {
    const target = await trained();
    const copied = await captureState(target);
    const viewed = await captureState(target, { copy: false });
    assert.deepEqual(Object.keys(viewed.tensors), ['model', 'optimizer', 'ema']);
    for (const group of ['model', 'optimizer', 'ema']) assertSameTensors(viewed.tensors[group]!, copied.tensors[group]!);
    assert.deepEqual({ ...viewed, tensors: undefined }, { ...copied, tensors: undefined });
    const [first] = resolveModel(target.model).weights;
    const memory = (await first!.variable.data()).buffer;
    assert.equal(viewed.tensors.model!.get(first!.name)!.data.buffer, memory);
    const own = copied.tensors.model!.get(first!.name)!.data;
    assert.notEqual(own.buffer, memory);
    const before = Buffer.from(first!.variable.dataSync().slice().buffer);
    own.fill(0);
    assert.ok(Buffer.from(first!.variable.dataSync().slice().buffer).equals(before), 'writing into a copy changed the model');
  });

  it('the views of weights and slots keep their values through a training step (assign replaces memory); the EMA shadow is updated in place', async () => {
    const target = await trained();
    const viewed = await captureState(target, { copy: false });
    const saved = Object.fromEntries(Object.entries(viewed.tensors).map(([g, m]) => [g, bytesOf(m)]));
    await train(target, 1);
    for (const group of ['model', 'optimizer']) {
      for (const [name, t] of viewed.tensors[group]!) {
        if (name === 'iterations') continue;
        assert.ok(Buffer.from(t.data).equals(saved[group]!.get(name)!), `${group}/${name} changed under the view`);
      }
    }
    const changed = [...viewed.tensors.ema!].filter(([name, t]) => !Buffer.from(t.data).equals(saved.ema!.get(name)!));
    assert.ok(changed.length > 0, 'the EMA shadow was expected to change in place (the reason views are valid only until the next step)');
    const after = await captureState(target);
    assertSameTensors(viewed.tensors.ema!, after.tensors.ema!);
  });
});
