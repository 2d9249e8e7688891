import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type CkptError, isCkptError } from '../errors.js';
import { type TensorShapeInfo, normalizeWeights, resolveAverageOptions, selectCheckpoints, tensorMismatches } from './average.js';

const runOf = (...entries: [number, Record<string, number>][]): { step: number; metrics: Record<string, number> }[] =>
  entries.map(([step, metrics]) => ({ step, metrics }));

const run = runOf([300, { loss: 0.5 }], [100, { loss: 0.9, acc: 0.1 }], [200, { loss: 0.4, acc: 0.7 }], [400, {}], [500, { loss: 0.4 }]);

const steps = (s: { selected: { step: number }[] }): number[] => s.selected.map((c) => c.step);

describe('selectCheckpoints', () => {
  it('{ last }: the newest N, oldest first; all of them when the run is shorter', () => {
    assert.deepEqual(steps(selectCheckpoints(run, { last: 2 })), [400, 500]);
    const all = selectCheckpoints(run, { last: 8 });
    assert.deepEqual(steps(all), [100, 200, 300, 400, 500]);
    assert.equal(all.requested, 8);
    assert.deepEqual(all.weightOrder, [0, 1, 2, 3, 4]);
  });

  it('{ steps }: exactly those, oldest first, weightOrder mapping back to the given order', () => {
    const s = selectCheckpoints(run, { steps: [300, 100, 500] });
    assert.deepEqual(steps(s), [100, 300, 500]);
    assert.deepEqual(s.weightOrder, [1, 0, 2]);
    assert.equal(s.requested, 3);
  });

  it('{ steps }: every missing step is listed', () => {
    assert.throws(
      () => selectCheckpoints(run, { steps: [100, 150, 250] }),
      (e: CkptError) => isCkptError(e, 'NOT_FOUND') && /steps 150, 250/.test(e.message) && String(e.received) === '150,250',
    );
  });

  it('{ best }: K best by the metric (ties: newer first), returned oldest first; unrecorded metrics never count', () => {
    assert.deepEqual(steps(selectCheckpoints(run, { best: { k: 2, metric: 'loss' } })), [200, 500]);
    assert.deepEqual(steps(selectCheckpoints(run, { best: { k: 3, metric: 'loss', mode: 'min' } })), [200, 300, 500]);
    assert.deepEqual(steps(selectCheckpoints(run, { best: { k: 1, metric: 'acc', mode: 'max' } })), [200]);
    const short = selectCheckpoints(run, { best: { k: 5, metric: 'acc', mode: 'max' } });
    assert.deepEqual(steps(short), [100, 200]);
    assert.equal(short.requested, 5);
    assert.throws(() => selectCheckpoints(run, { best: { k: 1, metric: 'bleu' } }), (e) => isCkptError(e, 'NO_VALID_CHECKPOINT'));
  });

  it('an empty run selects nothing: NO_VALID_CHECKPOINT', () => {
    assert.throws(() => selectCheckpoints([], { last: 8 }), (e) => isCkptError(e, 'NO_VALID_CHECKPOINT'));
  });
});

describe('normalizeWeights', () => {
  it('normalises to sum 1; equal by default', () => {
    assert.deepEqual(normalizeWeights([1, 1, 2], 3), [0.25, 0.25, 0.5]);
    assert.deepEqual(normalizeWeights(undefined, 4), [0.25, 0.25, 0.25, 0.25]);
    assert.deepEqual(normalizeWeights([3], 1), [1]);
  });

  it('reports every problem: count, non-positive, non-finite', () => {
    assert.throws(
      () => normalizeWeights([1, 0, -1, NaN, Infinity], 3),
      (e: CkptError) =>
        isCkptError(e, 'INVALID_ARGUMENT') &&
        /5 weights given for 3 selected checkpoints/.test(e.message) &&
        ['weights\\[1\\]', 'weights\\[2\\]', 'weights\\[3\\]', 'weights\\[4\\]'].every((w) => new RegExp(w).test(e.message)),
    );
    assert.throws(() => normalizeWeights([Number.MAX_VALUE, Number.MAX_VALUE], 2), (e) => isCkptError(e, 'INVALID_ARGUMENT'));
  });
});

describe('tensorMismatches', () => {
  const t = (dtype: TensorShapeInfo['dtype'], ...shape: number[]): TensorShapeInfo => ({ dtype, shape });
  const newest = { label: 'step-00000300', tensors: new Map([['w', t('F32', 2, 3)], ['b', t('F32', 3)], ['n', t('I64')]]) };

  it('agreeing tensors (in any order) give no problem', () => {
    const same = { label: 'step-00000100', tensors: new Map([['n', t('I64')], ['b', t('F32', 3)], ['w', t('F32', 2, 3)]]) };
    assert.deepEqual(tensorMismatches('model', newest, [same, same]), []);
  });

  it('lists each missing tensor, dtype and shape difference, extra tensor and missing group', () => {
    const bad = { label: 'step-00000100', tensors: new Map([['w', t('F16', 3, 2)], ['x', t('F32')]]) };
    const problems = tensorMismatches('model', newest, [bad, { label: 'step-00000200', tensors: undefined }]);
    assert.deepEqual(problems, [
      'group "model": tensor "w" is F16 in step-00000100 but F32 in step-00000300 (newest)',
      'group "model": tensor "w" has shape [3, 2] in step-00000100 but [2, 3] in step-00000300 (newest)',
      'group "model": tensor "b" is missing from step-00000100',
      'group "model": tensor "n" is missing from step-00000100',
      'group "model": tensor "x" of step-00000100 is missing from step-00000300 (newest)',
      'group "model" is missing from step-00000200',
    ]);
    assert.deepEqual(tensorMismatches('ema', { label: 'step-00000300', tensors: undefined }, []), ['group "ema" is missing from step-00000300 (newest)']);
  });
});

describe('resolveAverageOptions', () => {
  it('fills defaults: the last 8, the model group, verify and sync on', () => {
    const o = resolveAverageOptions();
    assert.deepEqual(o.select, { last: 8 });
    assert.deepEqual(o.groups, ['model']);
    assert.equal(o.verify, true);
    assert.equal(o.sync, true);
    assert.equal(o.overwrite, false);
    assert.equal(o.checksum, 'crc32');
  });

  it('reports every problem at once', () => {
    assert.throws(
      () =>
        resolveAverageOptions({
          select: { last: 0 },
          weights: [1, -2],
          groups: ['model', 'bad/name'],
          shardBytes: 0,
        }),
      (e: CkptError) => isCkptError(e, 'INVALID_ARGUMENT') && Array.isArray(e.received) && e.received.length === 4,
    );
    const two = { last: 2, steps: [1] } as unknown as { last: number };
    assert.throws(() => resolveAverageOptions({ select: two }), /exactly one of last, steps, best/);
    assert.throws(() => resolveAverageOptions({ select: { steps: [1, 1] } }), /must not repeat/);
    assert.throws(() => resolveAverageOptions({ select: { steps: [] } }), /non-empty/);
    assert.throws(() => resolveAverageOptions({ select: { best: { k: 2, metric: '' } } }), /metric must be a non-empty string/);
    const mode = { best: { k: 1, metric: 'loss', mode: 'lowest' } } as unknown as { last: number };
    assert.throws(() => resolveAverageOptions({ select: mode }), /mode must be "min" or "max"/);
    const flags = { verify: 'no', sync: 0 } as unknown as { verify: boolean };
    assert.throws(
      () => resolveAverageOptions(flags),
      (e: CkptError) => isCkptError(e, 'INVALID_ARGUMENT') && /verify must be a boolean, got no; sync must be a boolean, got 0/.test(e.message),
    );
  });
});
