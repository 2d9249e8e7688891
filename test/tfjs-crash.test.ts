/**
 * ckpt/tfjs crash and resume: a training process killed with SIGKILL and started again continues from
 * its latest checkpoint and produces exactly the losses and final state of an uninterrupted run.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tmpDir } from './helpers.js';
import { childScript, startChild } from './reliability/procs.js';

const trainer = childScript('tfjs-trainer');

interface Run {
  readonly lines: string[];
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Runs the trainer; with `killAfterStep`, SIGKILLs it once it has printed that step. */
async function runTrainer(args: readonly string[], killAfterStep?: number): Promise<Run> {
  const child = startChild(trainer, args);
  if (killAfterStep !== undefined) {
    // Steps are printed in order from 1; a trainer that exits first is reported below.
    child.waitFor(new RegExp(`^step ${killAfterStep} `)).then(
      () => child.process.kill('SIGKILL'),
      () => undefined,
    );
  }
  const { code, signal } = await child.exit;
  if (code !== 0 && signal === null) throw new Error(`trainer exited with ${code}: ${child.stderr()}`);
  return { lines: child.lines, code, signal };
}

function steps(lines: readonly string[]): Map<number, string> {
  const out = new Map<number, string>();
  for (const line of lines) {
    const m = /^step (\d+) ([0-9a-f]{8})$/.exec(line);
    if (m !== null) out.set(Number(m[1]), m[2] as string);
  }
  return out;
}

describe('tfjs crash and resume', () => {
  for (const optimizer of ['adam', 'rmsprop']) {
    it(`${optimizer}: SIGKILL mid-training, restart, same losses and final state as an uninterrupted run`, async () => {
      const dir = await tmpDir('ckpt-tfjs-crash-');
      const TOTAL = '20';
      const reference = await runTrainer([join(dir, 'ref'), TOTAL, optimizer]);
      assert.equal(reference.lines[0], 'fresh');
      const refSteps = steps(reference.lines);
      assert.equal(refSteps.size, 20);

      const killed = await runTrainer([join(dir, 'run'), TOTAL, optimizer, '5'], 10);
      assert.equal(killed.signal, 'SIGKILL');
      const resumed = await runTrainer([join(dir, 'run'), TOTAL, optimizer]);
      const from = /^resumed (\d+)$/.exec(resumed.lines[0] ?? '');
      assert.ok(from !== null, `expected a resume, got ${resumed.lines[0]}`);
      assert.ok(Number(from[1]) >= 9 && Number(from[1]) <= 20, `resumed from ${from[1]}`);
      for (const run of [killed, resumed]) {
        for (const [step, lossBits] of steps(run.lines)) assert.equal(lossBits, refSteps.get(step), `loss at step ${step}`);
      }
      assert.equal(steps(resumed.lines).get(19), refSteps.get(19));
      assert.equal(resumed.lines.at(-1), reference.lines.at(-1));
      assert.match(resumed.lines.at(-1) ?? '', /^done [0-9a-f]{64}$/);
    });
  }
});
