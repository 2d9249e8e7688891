/**
 * Concurrency between processes on one run directory.
 *
 * - Writers racing (2 to 4 processes started at the same moment by a shared clock): exactly one gets the
 *   lock, every other one gets LOCK_HELD. Rounds alternate between a free run, a run whose lock was left
 *   by a writer killed with SIGKILL (a stale lock that the contenders must take over, again exactly one
 *   of them), and a stale lock whose holder is a dead process on this host.
 * - A reader process restores and lists while a writer process saves (with retention deleting
 *   checkpoints behind it): every restore succeeds with the newest checkpoint at that moment, its content
 *   belongs to its step, and nothing is reported skipped or invalid (checkpoints that retention deletes
 *   while they are listed or read have vanished; they are not corrupt).
 *
 * - Averaging while a writer process saves (retention deleting the checkpoints being averaged): every
 *   averaging either succeeds, with exactly the mean of the steps it reports, or fails with a typed error
 *   saying a checkpoint or file vanished, and never leaves a partial output behind.
 *
 * CKPT_LOCK_ROUNDS (default 24) sets the racing rounds; CKPT_READER_MS (default 6000) how long the
 * reader and the averaging run.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { averageCheckpoints } from '../../src/average/average.js';
import { load } from '../../src/checkpoint/api.js';
import { openManager } from '../../src/checkpoint/manager.js';
import { isCkptError } from '../../src/errors.js';
import { expectStepContent } from '../children/crash-state.js';
import { createBufferPool } from '../../src/buffers.js';
import { tmpDir } from '../helpers.js';
import { type Child, childScript, sleep, startChild } from './procs.js';

const ROUNDS = Number(process.env.CKPT_LOCK_ROUNDS ?? 24);
const READER_MS = Number(process.env.CKPT_READER_MS ?? 6000);
const contender = childScript('lock-contender');
const saver = childScript('crash-saver');

/** The pid of a process that has exited (and been reaped). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

describe('writers racing for one run', () => {
  it(`exactly one of several processes wins, on a free run and on a stale lock (${ROUNDS} rounds)`, { timeout: 600_000 }, async () => {
    const dir = await tmpDir('ckpt-rel-race-');
    const stats = { rounds: 0, contenders: 0, staleKilled: 0, staleDeadPid: 0, simultaneous: 0 };
    let previous: 'free' | 'killed' = 'free';
    for (let round = 0; round < ROUNDS; round++) {
      const n = 2 + (round % 3);
      let situation: string = previous;
      if (previous === 'free' && round % 4 === 3) {
        // A lock left by a dead process of this host.
        await writeFile(join(dir, 'ckpt.lock'), JSON.stringify({ pid: deadPid(), hostname: hostname(), createdAt: new Date().toISOString(), token: `dead-${round}` }));
        situation = 'dead pid';
        stats.staleDeadPid++;
      } else if (previous === 'killed') stats.staleKilled++;
      const startAt = Date.now() + 400 + 150 * n;
      const children: Child[] = Array.from({ length: n }, () => startChild(contender, [dir, String(startAt)]));
      await Promise.all(children.map((c) => c.waitFor(/^ready$/)));
      if (Date.now() < startAt) stats.simultaneous++;
      const results = await Promise.all(children.map((c) => c.waitFor(/^(won|lost|error)/)));
      const what = `round ${round} (${n} contenders, ${situation}): ${results.join(' | ')}`;
      assert.equal(results.filter((r) => r === 'won').length, 1, what);
      assert.equal(results.filter((r) => r === 'lost LOCK_HELD').length, n - 1, what);
      const winner = children[results.indexOf('won')] as Child;
      // Half the winners release the lock; the others are killed and leave it stale for the next round.
      if (round % 2 === 0) {
        winner.process.stdin?.write('release\n');
        previous = 'free';
      } else {
        winner.process.kill('SIGKILL');
        previous = 'killed';
      }
      const exits = await Promise.all(children.map((c) => c.exit));
      if (previous === 'free') assert.deepEqual(exits.map((e) => e.code), children.map(() => 0), what);
      stats.rounds++;
      stats.contenders += n;
    }
    const entries = await readdir(dir);
    assert.ok(!entries.includes('ckpt.lock.takeover'), `no takeover marker is left: ${entries.join(', ')}`);
    assert.ok(stats.simultaneous >= ROUNDS / 4, `enough rounds started together: ${JSON.stringify(stats)}`);
    console.log(`# lock races: ${JSON.stringify(stats)}`);
  });
});

describe('the takeover of a stale lock', () => {
  it('respects a takeover in progress by a live process (its marker is not mistaken for garbage)', async () => {
    const dir = await tmpDir('ckpt-rel-takeover-');
    // A live process of this host, in the middle of taking over the stale lock below.
    const live = startChild(contender, [dir, String(Date.now() + 60_000)]);
    try {
      await live.waitFor(/^ready$/);
      await writeFile(join(dir, 'ckpt.lock'), JSON.stringify({ pid: deadPid(), hostname: hostname(), createdAt: new Date().toISOString(), token: 'dead' }));
      const marker = { pid: live.process.pid, hostname: hostname(), createdAt: new Date().toISOString(), token: 'live' };
      for (const content of [marker, { pid: marker.pid, hostname: marker.hostname, createdAt: marker.createdAt }]) {
        await writeFile(join(dir, 'ckpt.lock.takeover'), JSON.stringify(content));
        await assert.rejects(openManager(dir, {}), (e: unknown) => isCkptError(e, 'LOCK_HELD'), `marker ${JSON.stringify(content)}`);
        assert.ok((await readdir(dir)).includes('ckpt.lock.takeover'), 'the live marker was left alone');
      }
      // A marker left by a dead process is stale: the takeover goes ahead.
      await writeFile(join(dir, 'ckpt.lock.takeover'), JSON.stringify({ ...marker, pid: deadPid() }));
      const m = await openManager(dir, {});
      await m.close();
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('ckpt.lock')), []);
    } finally {
      live.process.kill('SIGKILL');
      await live.exit;
    }
  });
});

describe('a reader while a writer saves', () => {
  /**
   * Restores in a loop for `ms` while a writer saves checkpoints of `largeBytes` (retention deleting
   * behind it); with `threaded`, two restores in three read on worker threads (tensor files of 32 MiB and
   * more: into a shared pool, or into memory the threads allocate), through descriptors of files
   * retention may delete meanwhile.
   */
  const readDuringSaves = async (largeBytes: number, ms: number, threaded: boolean): Promise<void> => {
    const dir = await tmpDir('ckpt-rel-reader-');
    const shared = createBufferPool({ shared: true });
    const writer = startChild(saver, [dir, String(largeBytes), '0', '0']);
    try {
      await writer.waitFor(/^saved 3$/);
      const reader = await openManager(dir, { readOnly: true });
      const stats = { restores: 0, lists: 0, steps: new Set<number>(), lastStep: 0, onWorkers: 0 };
      const until = Date.now() + ms;
      while (Date.now() < until) {
        const listed = (await reader.list()).map((c) => c.step);
        stats.lists++;
        assert.ok(listed.length >= 1, 'a reader always lists a checkpoint');
        // A checkpoint deleted by retention while it is listed is not reported as invalid.
        assert.deepEqual((await reader.listInvalid()).map((x) => `${x.name}: ${x.error.message}`), [], 'nothing invalid is listed');
        // In turn: this thread; worker threads into the shared pool; worker threads into their own memory.
        const mode = threaded ? stats.restores % 3 : 0;
        const onWorkers = mode > 0;
        const options = [{ threads: 0 }, { allocate: shared.allocate, threads: 2 }, { threads: 2 }][mode] as { threads: number };
        const { checkpoint, skipped } = await reader.restore('latest', options);
        assert.deepEqual(skipped.map((s) => `${s.name}: ${s.error.message}`), [], `restore ${stats.restores} skipped nothing`);
        assert.equal(expectStepContent(checkpoint, largeBytes), undefined);
        if (onWorkers) {
          assert.equal(checkpoint.tensors.model?.get('layer0/w')?.data.buffer instanceof SharedArrayBuffer, mode === 1);
          if (mode === 1) shared.release(checkpoint.tensors);
          stats.onWorkers++;
        }
        assert.ok(checkpoint.step >= (listed[listed.length - 1] ?? 0), `restore ${stats.restores} loaded the newest checkpoint or a newer one`);
        assert.ok(checkpoint.step >= stats.lastStep, 'restored steps never go back');
        stats.lastStep = checkpoint.step;
        stats.steps.add(checkpoint.step);
        stats.restores++;
        await sleep(0);
      }
      await reader.close();
      assert.ok(stats.steps.size >= 3, `the writer made progress under the reader: ${[...stats.steps].join(',')}`);
      if (threaded) assert.ok(stats.onWorkers > 0, 'some restores ran on worker threads');
      console.log(`# reader during saves (${largeBytes} bytes a checkpoint): ${JSON.stringify({ restores: stats.restores, onWorkers: stats.onWorkers, lists: stats.lists, distinctSteps: stats.steps.size })}`);
    } finally {
      writer.process.kill('SIGKILL');
      await writer.exit;
    }
  };

  it(`restores the newest checkpoint, consistent, for ${READER_MS} ms of concurrent saves`, { timeout: 120_000 }, () => readDuringSaves(256 * 1024, READER_MS, false));

  it(`restores 36 MiB checkpoints on worker threads two times in three, for ${READER_MS / 2} ms of concurrent saves`, { timeout: 120_000 }, () =>
    readDuringSaves(36 * 1024 * 1024, READER_MS / 2, true),
  );
});

describe('averaging while a writer saves', () => {
  it(`succeeds with the exact mean, or fails cleanly when retention deletes an input, for ${READER_MS} ms`, { timeout: 120_000 }, async () => {
    const dir = await tmpDir('ckpt-rel-average-');
    const outs = `${dir}-averages`;
    await mkdir(outs);
    const largeBytes = 256 * 1024;
    // Retention keeps the last 2 and the best 1: averaging the last 2 races with the deletion of each.
    const writer = startChild(saver, [dir, String(largeBytes), '0', '0']);
    const stats = { averages: 0, succeeded: 0, onWorkers: 0, failures: {} as Record<string, number> };
    try {
      await writer.waitFor(/^saved 3$/);
      const until = Date.now() + READER_MS;
      for (let i = 0; Date.now() < until; i++) {
        const out = join(outs, `avg-${i}`);
        stats.averages++;
        try {
          // On this thread and on worker threads (which read the open files' descriptors) in turn.
          const r = await averageCheckpoints(dir, { select: { last: 2 }, out, sync: false, threads: i % 2 === 0 ? 0 : 2 });
          if (r.threads > 0) stats.onWorkers++;
          const ck = await load(out);
          // Every element of the layers of step s is s, the F64 bias is [s, s + 0.5] (crash-state.ts):
          // the average is the mean of the steps it reports.
          const mean = r.steps.reduce((a, b) => a + b, 0) / r.steps.length;
          const model = ck.tensors.model;
          for (const name of ['layer0/w', 'layer1/w', 'layer2/w']) {
            const v = new Float32Array((model?.get(name)?.data ?? new Uint8Array()).slice().buffer);
            assert.ok(v.length > 0 && v.every((x) => x === Math.fround(mean)), `average ${i} of steps ${r.steps.join(', ')}: model/${name} is the mean`);
          }
          const bias = new Float64Array((model?.get('bias')?.data ?? new Uint8Array()).slice().buffer);
          assert.deepEqual([...bias], [mean, mean + 0.5], `average ${i}: model/bias`);
          assert.equal(ck.step, r.steps[r.steps.length - 1]);
          stats.succeeded++;
        } catch (e) {
          assert.ok(isCkptError(e), `average ${i}: ${String(e)}`);
          assert.ok(['NOT_FOUND', 'FILE_MISSING', 'MANIFEST_MISSING'].includes(e.code), `average ${i}: an input vanished, nothing else: ${e.code} ${e.message}`);
          stats.failures[e.code] = (stats.failures[e.code] ?? 0) + 1;
          const left = await readdir(outs);
          assert.ok(!left.includes(`avg-${i}`) && !left.some((n) => n.startsWith('.')), `average ${i} left nothing behind: ${left.filter((n) => !n.startsWith('avg-')).join(', ')}`);
        }
        await sleep(0);
      }
      assert.ok(stats.succeeded > 0 && stats.onWorkers > 0, 'some averages succeeded, some of them on worker threads');
      console.log(`# averaging during saves: ${JSON.stringify(stats)}`);
    } finally {
      writer.process.kill('SIGKILL');
      await writer.exit;
    }
  });
});
