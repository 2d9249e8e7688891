/**
 * Full disk and I/O errors during a save.
 *
 * 1. A fault-injecting wrapper (src/storage/faulty.ts) over the fs backend fails each mutating operation
 *    of a save in turn (writer, write, close, rename, syncDir, delete of retention), with ENOSPC and with
 *    EIO, once or for good (sticky: the disk stays broken until the test "frees" it). For every case:
 *    the save fails with a clear typed error (NO_SPACE or IO_ERROR naming the file or directory), the
 *    previous checkpoints stay intact and verify, no half checkpoint is ever visible, and the very same
 *    manager, once the disk works again, saves (retrying the failed step too) and restores; the next
 *    writer to open the run finds no debris.
 * 2. A real, small file system (a 4 MiB tmpfs mounted for the test; skipped with the reason when the
 *    machine does not allow mounting): a save that does not fit fails with NO_SPACE, leaves nothing
 *    behind and frees its space; after space is freed the same manager saves again; opening a run on a
 *    full disk fails cleanly; a background save on a full disk surfaces its error and later saves work.
 * 3. Checkpoint averaging under the same faults, at every operation including the reads of its inputs:
 *    a typed error, the run untouched, the output either absent or complete (and, when it replaces an
 *    earlier average, the earlier one never lost), and the same average succeeds once the disk works.
 */
import assert from 'node:assert/strict';
import { cp, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { averageCheckpoints } from '../../src/average/average.js';
import { verify } from '../../src/checkpoint/api.js';
import { type CheckpointManager, type ManagerOptions, openManager } from '../../src/checkpoint/manager.js';
import type { TrainState } from '../../src/checkpoint/types.js';
import { isCkptError } from '../../src/errors.js';
import { MUTATING_OPERATIONS, faultyBackend } from '../../src/storage/faulty.js';
import { fsBackend } from '../../src/storage/fs.js';
import { tensor } from '../../src/tensor/tensor.js';
import { randomF32, stepFilesFingerprint, tensorDigests, tmpDir, tmpfsTests } from '../helpers.js';
import { switchable } from './backends.js';

/** A state of several groups, the model split into shards (so a save has many operations). */
function state(step: number, modelFloats = 600): TrainState {
  return {
    step,
    tensors: {
      model: new Map([
        ['a', randomF32([modelFloats], step)],
        ['b', randomF32([modelFloats], step + 1)],
      ]),
      optimizer: new Map([
        ['a/m', randomF32([modelFloats], step + 2)],
        ['iterations', tensor(new BigInt64Array([BigInt(step)]), [])],
      ]),
      ema: new Map([['a', randomF32([modelFloats], step + 3)]]),
    },
    state: { step },
    metrics: { loss: 1 / step },
  };
}

const OPTIONS: ManagerOptions = { keep: { last: 2 }, shardBytes: 3000 };

/** Steps of the committed checkpoints of `dir`, each verified; fails on any invalid step directory. */
async function committed(dir: string, what: string): Promise<number[]> {
  const reader = await openManager(dir, { readOnly: true });
  try {
    const invalid = await reader.listInvalid();
    assert.deepEqual(invalid.map((x) => `${x.name}: ${x.error.message}`), [], `${what}: no half checkpoint is visible`);
    const steps: number[] = [];
    for (const c of await reader.list()) {
      const v = await verify(c.location);
      assert.deepEqual(v.problems.map((p) => p.message), [], `${what}: ${c.name} verifies`);
      steps.push(c.step);
    }
    return steps;
  } finally {
    await reader.close();
  }
}

describe('faults injected at every operation of a save (fs backend)', () => {
  for (const errno of ['ENOSPC', 'EIO'] as const) {
    for (const sticky of [false, true]) {
      it(`${errno}${sticky ? ', sticky' : ''}: clear error, previous checkpoints intact, manager usable`, async () => {
        const template = await tmpDir('ckpt-rel-faults-');
        const m0 = await openManager(template, { ...OPTIONS, sync: false });
        await m0.save(state(1));
        await m0.save(state(2));
        await m0.close();

        // Count the mutating operations of one save (commit and retention).
        const probeDir = `${template}-probe`;
        await cp(template, probeDir, { recursive: true });
        const probeSwitch = switchable(fsBackend(probeDir));
        const pm = await openManager({ backend: probeSwitch }, OPTIONS);
        const probe = faultyBackend(fsBackend(probeDir), {});
        probeSwitch.current = probe;
        await pm.save(state(3));
        probeSwitch.current = fsBackend(probeDir);
        await pm.close();
        await rm(probeDir, { recursive: true });
        const operations = probe.events.map((e) => e.operation);
        for (const op of ['writer', 'write', 'close', 'rename', 'syncDir', 'delete']) assert.ok(operations.includes(op as (typeof operations)[number]), `a save does ${op}`);

        const outcomes = new Map<string, number>();
        for (let k = 0; k < probe.count; k++) {
          const dir = `${template}-${k}`;
          await cp(template, dir, { recursive: true });
          const inner = fsBackend(dir);
          const backend = switchable(inner);
          const m: CheckpointManager = await openManager({ backend }, OPTIONS);
          const faulty = faultyBackend(inner, { failAt: k, errno, sticky });
          backend.current = faulty;
          const at = `${errno} at operation ${k} (${probe.events[k]?.operation} ${probe.events[k]?.key})`;
          let error: unknown;
          try {
            await m.save(state(3));
          } catch (e) {
            error = e;
          }
          backend.current = inner; // the disk works again
          assert.ok(error !== undefined || faulty.failures === 0, `${at}: the fault was reported`);
          if (error !== undefined) {
            assert.ok(isCkptError(error, errno === 'ENOSPC' ? 'NO_SPACE' : 'IO_ERROR'), `${at}: ${String(error)}`);
            assert.ok(error.path !== undefined && error.path.startsWith(dir), `${at}: the error names where: ${error.message}`);
            assert.ok(error.message.includes(errno), `${at}: the message says why: ${error.message}`);
            const key = `${probe.events[k]?.operation}: ${error.code}`;
            outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
          }
          // Nothing half-done is visible; the previous checkpoints are intact.
          let steps = await committed(dir, at);
          assert.ok(steps.includes(2), `${at}: the newest previous checkpoint survives (${steps.join(',')})`);
          assert.ok(steps.includes(1) || steps.includes(3), `${at}: step 1 is deleted only after step 3 committed`);
          // The same manager goes on: the failed step is retried, then a new one.
          const retry = await m.save(state(3));
          assert.ok(retry.saved || steps.includes(3), `${at}: the retried step 3 is saved`);
          await m.save(state(4));
          assert.equal((await m.restore()).checkpoint.step, 4, `${at}: restore after the fault`);
          await m.close();
          steps = await committed(dir, at);
          assert.deepEqual(steps.slice(-2), [3, 4], `${at}: retention kept the last two`);
          // The next writer removes any debris the failed save could not.
          const next = await openManager(dir, { sync: false });
          assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('.')), [], `${at}: no debris after open`);
          await next.close();
          await rm(dir, { recursive: true });
        }
        console.log(`# faults ${errno}${sticky ? ' sticky' : ''}: ${probe.count} operations, outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`);
      });
    }
  }
});

describe('a real full file system (4 MiB tmpfs)', () => {
  const { onTmpfs, mountPoint } = tmpfsTests('4m', 'ckpt-rel-tmpfs-');
  const MiB = 1024 * 1024;

  /** Free bytes of the tmpfs. */
  const free = async (): Promise<number> => {
    const s = await statfs(mountPoint());
    return s.bavail * s.bsize;
  };

  // ~1.2 MiB per checkpoint: two fit with 1 MiB of other data, three do not.
  const big = (step: number): TrainState => state(step, 75_000);

  onTmpfs('a save that does not fit fails with NO_SPACE, leaves nothing, and the manager saves once space is freed', async (root) => {
    const run = join(root, 'run');
    const m = await openManager(run, { keep: { last: 2 } });
    await m.save(big(1));
    await m.save(big(2));
    await writeFile(join(root, 'junk'), new Uint8Array(MiB));
    const before = await free();
    await assert.rejects(m.save(big(3)), (e: unknown) => {
      assert.ok(isCkptError(e, 'NO_SPACE'), String(e));
      assert.ok(e.path?.startsWith(run) && /\.safetensors|state\.json|manifest\.json/.test(e.path), `names the file: ${e.message}`);
      assert.equal((e.cause as { code?: string } | undefined)?.code ?? (e.cause as { cause?: { code?: string } } | undefined)?.cause?.code, 'ENOSPC');
      return true;
    });
    assert.deepEqual(await readdir(run), ['ckpt.lock', 'step-00000001', 'step-00000002'], 'no temp directory left');
    assert.ok((await free()) >= before, 'the partial files were removed');
    assert.deepEqual(await committed(run, 'after NO_SPACE'), [1, 2]);
    await rm(join(root, 'junk'));
    const r = await m.save(big(3));
    assert.deepEqual([r.saved, r.deleted], [true, [1]]);
    assert.equal((await m.restore()).checkpoint.step, 3);
    await m.close();
    assert.deepEqual(await committed(run, 'after freeing space'), [2, 3]);
  });

  onTmpfs('opening a run on a full disk fails with NO_SPACE and leaves no lock; it opens once space is freed', async (root) => {
    const run = join(root, 'run');
    const m = await openManager(run, {});
    await m.save(state(1));
    await m.close();
    // Fill the disk completely.
    const chunk = new Uint8Array(256 * 1024);
    let i = 0;
    for (;;) {
      try {
        await writeFile(join(root, `fill-${i++}`), chunk);
      } catch {
        break;
      }
    }
    for (let size = 64 * 1024; size >= 1; size >>= 1) await writeFile(join(root, `fill-small-${size}`), new Uint8Array(size)).catch(() => undefined);
    await assert.rejects(openManager(run, {}), (e: unknown) => isCkptError(e, 'NO_SPACE') && e.message.includes('ckpt.lock'));
    assert.deepEqual(await readdir(run), ['step-00000001'], 'no lock and no partial file left');
    const reader = await openManager(run, { readOnly: true });
    assert.equal((await reader.restore()).checkpoint.step, 1, 'a reader still restores on a full disk');
    await reader.close();
    for (const f of await readdir(root)) if (f.startsWith('fill-')) await rm(join(root, f));
    const w = await openManager(run, {});
    await w.save(state(2));
    await w.close();
    assert.deepEqual(await committed(run, 'after freeing'), [1, 2]);
  });

  onTmpfs('a background save on a full disk surfaces NO_SPACE once; later saves work', async (root) => {
    const run = join(root, 'run');
    const m = await openManager(run, { background: true, keep: { last: 2 } });
    await m.save(big(1));
    await m.save(big(2));
    await m.flush();
    await writeFile(join(root, 'junk'), new Uint8Array(MiB));
    await m.save(big(3)); // returns once snapshotted; the write fails behind
    await assert.rejects(m.flush(), (e: unknown) => isCkptError(e, 'BACKGROUND_SAVE_FAILED') && isCkptError((e as { cause?: unknown }).cause, 'NO_SPACE'));
    await m.flush(); // reported once
    assert.deepEqual(await committed(run, 'after the failed background save'), [1, 2]);
    await rm(join(root, 'junk'));
    await m.save(big(3));
    await m.save(big(4));
    await m.close();
    assert.deepEqual(await committed(run, 'after freeing'), [3, 4]);
    assert.deepEqual((await readdir(run)).filter((n) => n.startsWith('.')), []);
  });
});

describe('faults injected at every operation of an averaging (fs backend)', () => {
  // Tensors of 320 KB: large enough to be written straight from the averaging's output buffers while
  // the next one is produced (smaller ones are copied into the save's staging buffers).
  const averaged = (step: number): TrainState => {
    const s = state(step, 80_000);
    return { ...s, tensors: { ...s.tensors, model: new Map([...(s.tensors.model ?? []), ['c', randomF32([80_000], step + 4)]]) } };
  };
  const OPS = [...MUTATING_OPERATIONS, 'read', 'readRange', 'size'] as const;



  for (const [errno, overwrite] of [
    ['ENOSPC', false],
    ['EIO', false],
    ['EIO', true],
  ] as const) {
    it(`${errno}${overwrite ? ', replacing an earlier average' : ''}: clear error, run untouched, output whole or absent, then it succeeds`, async () => {
      const run = await tmpDir('ckpt-rel-avg-faults-');
      const m = await openManager(run, { sync: false });
      for (const step of [1, 2, 3]) await m.save(averaged(step));
      await m.close();
      const options = { select: { last: 3 }, sync: false, shardBytes: 700_000, groups: ['model', 'ema'] };
      const out = join(run, 'avg');
      // The expected average, and the earlier one that an overwrite replaces.
      await averageCheckpoints(run, { ...options, out });
      const expected = await tensorDigests(out);
      const earlier = overwrite ? await tensorDigests(out) : [];
      if (overwrite) await averageCheckpoints(run, { ...options, out, select: { last: 2 }, overwrite: true });
      const before = overwrite ? await tensorDigests(out) : [];
      if (!overwrite) await rm(out, { recursive: true });
      assert.ok(!overwrite || before.join() !== earlier.join(), 'the earlier average differs from the new one');

      const probe = faultyBackend(fsBackend(run), { operations: OPS });
      await averageCheckpoints({ backend: probe }, { ...options, overwrite });
      const operations = new Set(probe.events.map((e) => e.operation));
      for (const op of ['readRange', 'writer', 'write', 'close', 'rename']) assert.ok(operations.has(op as (typeof OPS)[number]), `averaging does ${op}`);
      if (overwrite) await averageCheckpoints(run, { ...options, out, select: { last: 2 }, overwrite: true });
      else await rm(out, { recursive: true });

      assert.deepEqual(await committed(run, 'before the faults'), [1, 2, 3]);
      const untouched = await stepFilesFingerprint(run);
      const outcomes = new Map<string, number>();
      for (let k = 0; k < probe.count; k++) {
        const event = probe.events[k];
        if (errno === 'ENOSPC' && !(MUTATING_OPERATIONS as readonly string[]).includes(event?.operation ?? '')) continue;
        // A read that fails once or for good fails the averaging alike; writes are retried by nothing
        // either, but a sticky fault also hits the clean-up, which matters.
        const mutating = (MUTATING_OPERATIONS as readonly string[]).includes(event?.operation ?? '');
        for (const sticky of mutating ? [false, true] : [false]) {
          const at = `${errno}${sticky ? ' (sticky)' : ''} at operation ${k} (${event?.operation} ${event?.key})`;
          const faulty = faultyBackend(fsBackend(run), { operations: OPS, failAt: k, errno, sticky });
          let error: unknown;
          try {
            await averageCheckpoints({ backend: faulty }, { ...options, overwrite });
          } catch (e) {
            error = e;
          }
          assert.ok(error !== undefined || faulty.failures === 0, `${at}: the fault was reported`);
          if (error !== undefined) {
            assert.ok(isCkptError(error, errno === 'ENOSPC' ? 'NO_SPACE' : 'IO_ERROR'), `${at}: ${String(error)}`);
            assert.ok(error.path?.startsWith(run), `${at}: the error names where: ${error.message}`);
            const key = `${event?.operation}: ${error.code}`;
            outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
          }
          // The run's checkpoints are untouched (every file's size and modification time as before).
          assert.deepEqual(await stepFilesFingerprint(run), untouched, `${at}: the run's checkpoints are untouched`);
          // The output: complete (the new or, when replacing, the earlier average) or absent; an earlier
          // average that a failed replacement moved aside is still there, whole.
          const names = await readdir(run);
          const replaced = names.filter((n) => n.startsWith('avg.replaced-'));
          if (names.includes('avg')) {
            const now = await tensorDigests(out);
            assert.ok(now.join() === expected.join() || (overwrite && now.join() === before.join()), `${at}: the output is one whole average`);
          } else {
            assert.ok(!overwrite || replaced.length === 1, `${at}: the earlier average is kept aside (${names.join(', ')})`);
          }
          if (overwrite && !names.includes('avg')) assert.deepEqual(await tensorDigests(join(run, replaced[0] as string)), before, `${at}: the earlier average, whole`);
          // The disk works again: the same average succeeds and gives the expected bytes.
          await averageCheckpoints(run, { ...options, out, overwrite: true });
          assert.deepEqual(await tensorDigests(out), expected, `${at}: the retried average`);
          // Back to the state before the fault for the next case.
          for (const n of await readdir(run)) {
            if (n === 'avg' || n.startsWith('avg.replaced-') || n.startsWith('.')) await rm(join(run, n), { recursive: true });
          }
          if (overwrite) await averageCheckpoints(run, { ...options, out, select: { last: 2 } });
        }
      }
      assert.deepEqual(await committed(run, 'after the faults'), [1, 2, 3]);
      console.log(`# averaging faults ${errno}${overwrite ? ' (overwrite)' : ''}: ${probe.count} operations, outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`);
      await rm(run, { recursive: true });
    });
  }
});
