import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isCkptError } from './errors.js';
import { mapSettled } from './settle.js';

describe('mapSettled', () => {
  it('returns results in item order, whatever order the calls finish in, never more than `concurrency` at once', async () => {
    let running = 0;
    let most = 0;
    const delays = [30, 5, 20, 1, 12, 0, 8];
    const out = await mapSettled(delays, 3, async (ms, i) => {
      running++;
      most = Math.max(most, running);
      await sleep(ms);
      running--;
      return `${i}:${ms}`;
    });
    assert.deepEqual(out, delays.map((ms, i) => `${i}:${ms}`));
    assert.equal(most, 3);
    assert.deepEqual(await mapSettled([], 4, async () => 1), []);
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      await assert.rejects(mapSettled([1], bad, async (x) => x), (e: unknown) => isCkptError(e, 'INVALID_ARGUMENT'));
    }
  });

  it('rejects with the first failed item in item order, after every started call settled', async () => {
    const settled: number[] = [];
    // Item 4 fails first in time, item 1 later: item 1's error is the one reported.
    const run = mapSettled([40, 25, 10, 30, 0, 5], 6, async (ms, i) => {
      await sleep(ms);
      settled.push(i);
      if (i === 1 || i === 4) throw new Error(`item ${i}`);
      return i;
    });
    await assert.rejects(run, /^Error: item 1$/);
    assert.deepEqual([...settled].sort(), [0, 1, 2, 3, 4, 5]);
    // Nothing starts after a failure: items after it cannot change which error is reported.
    const seen: number[] = [];
    await assert.rejects(
      mapSettled([0, 1, 2], 1, async (i) => {
        seen.push(i);
        if (i === 1) throw new Error('one');
        return i;
      }),
      /one/,
    );
    assert.deepEqual(seen, [0, 1]);
  });
});
