/** `npm run bench -- --quick` as a smoke test: every benchmark runs and reports; no timing is asserted. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const bench = fileURLToPath(new URL('../bench/run.js', import.meta.url));

describe('benchmarks (--quick smoke test)', () => {
  it('runs every benchmark and reports each figure against its limit', () => {
    const out = execFileSync(process.execPath, [bench, '--quick', '--no-write'], { encoding: 'utf8' });
    for (const area of ['save', 'load', 'background', 'average', 'ema', 'checksum', 'parse', 'small', 'resume']) {
      assert.match(out, new RegExp(`^${area}\\s`, 'm'), `a ${area} row`);
    }
    assert.doesNotMatch(out, /NaN|Infinity/);
  });
});
