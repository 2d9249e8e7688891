/**
 * Crash consistency under SIGKILL. A child process (test/children/crash-saver.ts) resumes the run and
 * saves checkpoints of several groups (two of them large and sharded) in a loop; it is killed with
 * SIGKILL at a random moment: during start-up, lock takeover, restore, a save, a commit or retention.
 * After every kill:
 * - a reader lists only committed checkpoints: each one verifies (sizes, checksums, headers) and holds
 *   exactly its own step's state; no step directory without a valid manifest exists;
 * - the latest one restores with nothing skipped, its step is at least the last step the child reported
 *   saved (a committed checkpoint is never lost) and never goes back;
 * - retention never left the run without a valid checkpoint;
 * - after a writer opens the run, no debris is left (no `.tmp-*` directory, no partial file).
 *
 * A second test kills a process that averages the run's checkpoints over and over, replacing its output
 * (test/children/crash-averager.ts): the run is never changed, the output is always one whole average
 * (or, killed between the two renames of a replacement, the previous one moved aside, which the next
 * averaging puts back), and the next averaging leaves nothing of the killed ones behind.
 *
 * CKPT_CRASH_KILLS (default 200) sets the number of kills; scripts/long-reliability.mjs runs 2000+.
 * CKPT_CRASH_AVERAGE_KILLS (default 30) those of the averaging process.
 * CKPT_SEED replays a run. One kill in four uses sync: false (fast, and a SIGKILL loses no page cache)
 * and one in four background saves; the rest are the default, fsynced foreground saves.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { averageCheckpoints } from '../../src/average/average.js';
import { verify } from '../../src/checkpoint/api.js';
import { openManager } from '../../src/checkpoint/manager.js';
import { expectStepContent } from '../children/crash-state.js';
import { randomF32, stepFilesFingerprint, tensorDigests, tmpDir } from '../helpers.js';
import { childScript, prng, sleep, startChild, suiteSeed } from './procs.js';

const KILLS = Number(process.env.CKPT_CRASH_KILLS ?? 200);
const LARGE_BYTES = Number(process.env.CKPT_CRASH_BYTES ?? 768 * 1024);
const saver = childScript('crash-saver');
const AVERAGE_KILLS = Number(process.env.CKPT_CRASH_AVERAGE_KILLS ?? 30);
const averager = childScript('crash-averager');

/** Entries a writer must have removed when it opened: temp directories and partial files. */
function debris(entries: readonly string[]): string[] {
  return entries.filter((n) => n.startsWith('.'));
}

describe('crash consistency under SIGKILL', () => {
  const seed = suiteSeed();
  it(`${KILLS} kills at random moments of a save loop (seed ${seed})`, { timeout: Math.max(600_000, KILLS * 2_000) }, async () => {
    const random = prng(seed);
    const dir = await tmpDir('ckpt-rel-crash-');
    let latest = 0;
    let lastReported = 0;
    const stats = { kills: 0, duringStartup: 0, checkpointsVerified: 0, writerOpens: 0, debrisSeen: 0, maxListed: 0 };
    for (let k = 0; k < KILLS; k++) {
      const mode = k % 4;
      const sync = mode !== 1;
      const background = mode === 2;
      const child = startChild(saver, [dir, String(LARGE_BYTES), sync ? '1' : '0', background ? '1' : '0']);
      const early = latest === 0 ? false : random() < 0.2;
      if (early) {
        // Anywhere from start-up to the first saves: opening, lock takeover, debris cleaning, restore.
        await sleep(random() * 400);
        stats.duringStartup++;
      } else {
        await child.waitFor(/^saved \d+$/);
        await sleep(random() * 120);
      }
      child.process.kill('SIGKILL');
      const { signal, code } = await child.exit;
      const bad = child.lines.find((l) => l.startsWith('BAD'));
      assert.equal(bad, undefined, `kill ${k}: the child resumed from a wrong checkpoint: ${bad}`);
      assert.ok(signal === 'SIGKILL', `kill ${k}: the child died by itself (code ${code}): ${child.stderr().slice(-2000)}`);
      stats.kills++;
      for (const line of child.lines) {
        const m = /^saved (\d+)$/.exec(line);
        if (m !== null) lastReported = Math.max(lastReported, Number(m[1]));
      }

      // A reader (no lock, no cleaning) sees only committed, complete checkpoints.
      const reader = await openManager(dir, { readOnly: true });
      const listed = await reader.list();
      const invalid = await reader.listInvalid();
      assert.deepEqual(invalid.map((x) => `${x.name}: ${x.error.code}`), [], `kill ${k}: no uncommitted step directory is visible`);
      if (lastReported > 0) assert.ok(listed.length >= 1, `kill ${k}: retention never leaves the run without a checkpoint`);
      stats.maxListed = Math.max(stats.maxListed, listed.length);
      for (const c of listed) {
        const v = await verify(c.location);
        assert.deepEqual(v.problems.map((p) => p.message), [], `kill ${k}: ${c.name} verifies`);
        stats.checkpointsVerified++;
      }
      if (listed.length > 0) {
        const { checkpoint, skipped } = await reader.restore();
        assert.deepEqual(skipped.map((s) => `${s.name}: ${s.error.message}`), [], `kill ${k}: the latest checkpoint is valid`);
        assert.equal(checkpoint.step, listed[listed.length - 1]?.step);
        assert.equal(expectStepContent(checkpoint, LARGE_BYTES), undefined, `kill ${k}: content belongs to its step`);
        assert.ok(checkpoint.step >= latest, `kill ${k}: the latest step went back from ${latest} to ${checkpoint.step}`);
        assert.ok(checkpoint.step >= lastReported, `kill ${k}: step ${lastReported} was reported saved, the latest is ${checkpoint.step}`);
        latest = checkpoint.step;
      }
      await reader.close();

      // Every few kills a writer opens the run here (otherwise the next child takes the stale lock over).
      if (k % 5 === 4 || k === KILLS - 1) {
        stats.debrisSeen += debris(await readdir(dir)).length;
        const writer = await openManager(dir, { sync: false });
        assert.deepEqual(debris(await readdir(dir)), [], `kill ${k}: a writer's open removes all debris`);
        assert.deepEqual((await writer.list()).map((c) => c.step), listed.map((c) => c.step), `kill ${k}: opening deletes no checkpoint`);
        await writer.close();
        stats.writerOpens++;
      }
    }
    assert.ok(latest > KILLS / 4, `the run made progress: latest step ${latest} after ${KILLS} kills`);
    const entries = await readdir(dir);
    assert.ok(entries.every((n) => /^step-\d{8}$/.test(n)), `only checkpoints remain: ${entries.join(', ')}`);
    console.log(`# crash: ${JSON.stringify({ seed, ...stats, latest, dir: join(dir) })}`);
  });
});

describe('crash consistency of averaging under SIGKILL', () => {
  const seed = suiteSeed();



  it(`${AVERAGE_KILLS} kills at random moments of an averaging loop (seed ${seed})`, { timeout: Math.max(300_000, AVERAGE_KILLS * 5_000) }, async () => {
    const random = prng(seed);
    const run = await tmpDir('ckpt-rel-crash-avg-');
    const m = await openManager(run, { sync: false });
    for (const step of [1, 2, 3]) {
      const big = (seedOf: number): ReturnType<typeof randomF32> => randomF32([LARGE_BYTES / 4], step * 10 + seedOf);
      await m.save({ step, tensors: { model: new Map([['a', big(1)], ['b', big(2)]]), optimizer: new Map([['a/m', big(3)]]) } });
    }
    await m.close();
    const expected = await tensorDigests((await averageCheckpoints(run, { select: { last: 3 }, out: `${run}-expected`, sync: false, groups: ['model', 'optimizer'] })).location);
    const untouched = await stepFilesFingerprint(run);
    const stats = { kills: 0, beforeFirst: 0, whole: 0, movedAside: 0, staleAside: 0, tempDirsSeen: 0 };
    let completed = false;
    for (let k = 0; k < AVERAGE_KILLS; k++) {
      const child = startChild(averager, [run, k % 2 === 0 ? '1' : '0']);
      if (completed || random() < 0.5) await sleep(random() * 400);
      else await child.waitFor(/^averaged \d+$/).then(() => sleep(random() * 150));
      child.process.kill('SIGKILL');
      const { signal, code } = await child.exit;
      assert.ok(signal === 'SIGKILL', `kill ${k}: the child died by itself (code ${code}): ${child.stderr().slice(-2000)}`);
      stats.kills++;
      completed ||= child.lines.some((l) => l.startsWith('averaged'));
      assert.deepEqual(await stepFilesFingerprint(run), untouched, `kill ${k}: the run's checkpoints are untouched`);
      const names = await readdir(run);
      const aside = names.filter((n) => n.startsWith('avg.replaced-'));
      stats.tempDirsSeen += names.filter((n) => n.startsWith('.tmp-')).length;
      assert.ok(aside.length <= 1, `kill ${k}: at most one output moved aside (${names.join(', ')})`);
      if (names.includes('avg')) {
        assert.deepEqual(await tensorDigests(join(run, 'avg')), expected, `kill ${k}: the output is one whole average`);
        stats.whole++;
        // Killed after the replacement, possibly while deleting the replaced output: debris, which the
        // next averaging deletes.
        if (aside.length > 0) stats.staleAside++;
      } else if (aside.length > 0) {
        // Killed between the two renames: the previous output, whole, waits beside its place.
        assert.deepEqual(await tensorDigests(join(run, aside[0] as string)), expected, `kill ${k}: ${aside[0]} is one whole average`);
        stats.movedAside++;
      } else {
        assert.ok(!completed, `kill ${k}: an averaging completed before, its output is lost (${names.join(', ')})`);
        stats.beforeFirst++;
      }
    }
    // The next averaging finishes whatever was interrupted; a writer's open removes the temp directories.
    await averageCheckpoints(run, { select: { last: 3 }, overwrite: true, sync: false, groups: ['model', 'optimizer'] });
    assert.deepEqual(await tensorDigests(join(run, 'avg')), expected);
    const writer = await openManager(run, { sync: false });
    await writer.close();
    assert.deepEqual((await readdir(run)).sort(), ['avg', 'step-00000001', 'step-00000002', 'step-00000003'], 'nothing else is left');
    assert.deepEqual(await stepFilesFingerprint(run), untouched);
    console.log(`# crash averaging: ${JSON.stringify({ seed, ...stats })}`);
  });
});
