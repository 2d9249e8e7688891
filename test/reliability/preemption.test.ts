/**
 * Preemption under load (extends the basic SIGTERM test of test/crash.test.ts): SIGTERM arrives at a
 * random moment of a training loop that saves a 4 MiB state periodically, in the foreground and in the
 * background, with the handler saving from the signal (`save` mode) or the loop saving between steps
 * (`flag` mode). Every time: the process exits 0 within a bounded time, the final checkpoint is the step
 * at which the signal arrived and verifies, the lock is released and nothing is left behind. In `flag`
 * mode the final checkpoint holds exactly that step's weights.
 *
 * CKPT_PREEMPT_TRIALS (default 8) sets the number of signals.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { verify } from '../../src/checkpoint/api.js';
import { openManager } from '../../src/checkpoint/manager.js';
import { tmpDir } from '../helpers.js';
import { childScript, prng, sleep, startChild, suiteSeed } from './procs.js';

const TRIALS = Number(process.env.CKPT_PREEMPT_TRIALS ?? 8);
const BYTES = 4 * 1024 * 1024;
/** The exit must come within this time of the signal (a 4 MiB save takes well under a second here). */
const BOUND_MS = 10_000;
const child = childScript('preempted-train');

describe('preemption under load', () => {
  const seed = suiteSeed();
  it(`SIGTERM at random moments: a final checkpoint of the signal's step, exit 0 (${TRIALS} signals, seed ${seed})`, { timeout: 300_000 }, async () => {
    const random = prng(seed);
    const stats = { trials: 0, slowestExitMs: 0, tornInSaveMode: 0 };
    for (let t = 0; t < TRIALS; t++) {
      const background = t % 2 === 1;
      const mode = t % 4 < 2 ? 'save' : 'flag';
      const what = `trial ${t} (${mode} mode, ${background ? 'background' : 'foreground'})`;
      const dir = await tmpDir('ckpt-rel-preempt-');
      const c = startChild(child, [dir, String(BYTES), background ? '1' : '0', mode]);
      await c.waitFor(/^ready$/);
      await sleep(random() * 300);
      const sent = performance.now();
      c.process.kill('SIGTERM');
      const { code, signal } = await c.exit;
      const elapsed = performance.now() - sent;
      stats.slowestExitMs = Math.max(stats.slowestExitMs, elapsed);
      assert.equal(code, 0, `${what}: exit code (signal ${signal}); stderr: ${c.stderr().slice(-2000)}`);
      assert.ok(elapsed < BOUND_MS, `${what}: exited ${elapsed.toFixed(0)} ms after the signal`);
      const at = Number(/^signal at step (\d+)$/.exec((await c.waitFor(/^signal at step/)) ?? '')?.[1]);
      const entries = await readdir(dir);
      assert.ok(!entries.includes('ckpt.lock'), `${what}: the lock is released`);
      assert.deepEqual(entries.filter((n) => n.startsWith('.')), [], `${what}: nothing left behind`);

      const reader = await openManager(dir, { readOnly: true });
      const listed = await reader.list();
      const last = listed[listed.length - 1];
      assert.ok(last !== undefined && last.step === at, `${what}: the final checkpoint is step ${at} (have ${listed.map((x) => x.step).join(',')})`);
      assert.equal((await verify(last.location)).valid, true, `${what}: the final checkpoint verifies`);
      const { checkpoint } = await reader.restore();
      assert.equal(checkpoint.state.step, at);
      const w = new Float32Array((checkpoint.tensors.model?.get('w')?.data ?? new Uint8Array()).slice().buffer);
      const consistent = w.length === BYTES / 4 && w.every((x) => x === at);
      if (mode === 'flag') assert.ok(consistent, `${what}: the weights are exactly those of step ${at}`);
      else if (!consistent) stats.tornInSaveMode++;
      await reader.close();
      stats.trials++;
    }
    console.log(`# preemption: ${JSON.stringify({ seed, ...stats, slowestExitMs: Math.round(stats.slowestExitMs) })}`);
  });
});

describe('preemption after a failed background save', () => {
  it('reports the earlier failure and still saves the final state, exit 0', () => {
    const r = spawnSync(process.execPath, [childScript('preempted-after-failure')], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `exit status; stderr: ${r.stderr}`);
    assert.deepEqual(r.stdout.trim().split('\n'), ['reported BACKGROUND_SAVE_FAILED', 'stored step-00000151/']);
  });
});
