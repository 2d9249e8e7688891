import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type CheckpointManager, type ManagerOptions, openManager } from '../src/checkpoint/manager.js';
import { writeCheckpoint } from '../src/checkpoint/save.js';
import { isCkptError } from '../src/errors.js';
import type { Backend } from '../src/storage/backend.js';
import { faultyBackend } from '../src/storage/faulty.js';
import { fsBackend } from '../src/storage/fs.js';
import { memoryBackend } from '../src/storage/memory.js';
import { sampleState, tmpDir } from './helpers.js';

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isCkptError(e), `expected a CkptError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

function fakeClock(start = Date.UTC(2026, 0, 1)): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

async function steps(m: CheckpointManager): Promise<number[]> {
  return (await m.list()).map((c) => c.step);
}

async function withManager(options: ManagerOptions, fn: (m: CheckpointManager, dir: string) => Promise<void>): Promise<void> {
  const dir = await tmpDir();
  const m = await openManager(dir, { sync: false, ...options });
  try {
    await fn(m, dir);
  } finally {
    await m.close();
  }
}

describe('save triggers', () => {
  it('every N steps, never twice for one step', () =>
    withManager({ save: { everySteps: 10 } }, async (m) => {
      for (let s = 1; s <= 30; s++) await m.save(sampleState(s));
      assert.deepEqual(await steps(m), [10, 20, 30]);
      const again = await m.save(sampleState(30), { force: true });
      assert.equal(again.saved, false);
      assert.deepEqual(await steps(m), [10, 20, 30]);
    }));

  it('every T seconds (injected clock), at explicit steps, and forced', async () => {
    const clock = fakeClock();
    await withManager({ save: { everySeconds: 60, atSteps: [3] }, clock }, async (m) => {
      assert.equal((await m.save(sampleState(1))).saved, false);
      clock.advance(61_000);
      assert.equal((await m.save(sampleState(2))).reason, 'everySeconds');
      assert.equal((await m.save(sampleState(3))).reason, 'atSteps');
      assert.equal((await m.save(sampleState(4))).saved, false);
      assert.equal((await m.save(sampleState(5), { force: true })).reason, 'forced');
      assert.deepEqual(await steps(m), [2, 3, 5]);
    });
  });

  it('when a monitored metric improves (min and max)', async () => {
    await withManager({ save: { onImprovement: { metric: 'loss' } } }, async (m) => {
      const losses = [5, 4, 4.5, 3, 3, 6, 2];
      for (let i = 0; i < losses.length; i++) await m.save(sampleState(i + 1, { loss: losses[i] as number }));
      assert.deepEqual(await steps(m), [1, 2, 4, 7]);
    });
    await withManager({ save: { onImprovement: { metric: 'acc', mode: 'max' } } }, async (m) => {
      for (const [s, acc] of [[1, 0.5], [2, 0.4], [3, 0.6]] as const) await m.save(sampleState(s, { acc }));
      assert.deepEqual(await steps(m), [1, 3]);
    });
  });

  it('remembers the best metric across a reopen', async () => {
    const dir = await tmpDir();
    const opts: ManagerOptions = { sync: false, save: { onImprovement: { metric: 'loss' } } };
    let m = await openManager(dir, opts);
    await m.save(sampleState(1, { loss: 1 }));
    await m.close();
    m = await openManager(dir, opts);
    assert.equal((await m.save(sampleState(2, { loss: 2 }))).saved, false);
    assert.equal((await m.save(sampleState(3, { loss: 0.5 }))).saved, true);
    await m.close();
  });

  it('rejects invalid options, listing every problem', async () => {
    const dir = await tmpDir();
    await assert.rejects(
      openManager(dir, { save: { everySteps: 0, everySeconds: -1 }, keep: { last: 1.5, best: { k: 0, metric: '' } } }),
      (e: unknown) => {
        assert.ok(isCkptError(e, 'INVALID_ARGUMENT'));
        for (const s of ['everySteps', 'everySeconds', 'keep.last', 'keep.best.k', 'keep.best.metric']) assert.ok(e.message.includes(s), s);
        return true;
      },
    );
  });
});

describe('retention', () => {
  it('keep last N deletes older checkpoints and reports them', () =>
    withManager({ keep: { last: 2 } }, async (m, dir) => {
      for (let s = 1; s <= 3; s++) await m.save(sampleState(s));
      const r = await m.save(sampleState(4));
      assert.deepEqual(r.deleted, [2]);
      assert.deepEqual(await steps(m), [3, 4]);
      assert.deepEqual((await readdir(dir)).sort(), ['ckpt.lock', 'step-00000003', 'step-00000004']);
    }));

  it('keep last + best K combine, and the newest survives even when worst', () =>
    withManager({ keep: { last: 1, best: { k: 2, metric: 'loss' } } }, async (m) => {
      const losses = [3, 1, 4, 0.5, 9];
      for (let i = 0; i < losses.length; i++) await m.save(sampleState(i + 1, { loss: losses[i] as number }));
      assert.deepEqual(await steps(m), [2, 4, 5]);
    }));

  it('keep one every N steps and one per N hours', async () => {
    const clock = fakeClock();
    await withManager({ keep: { last: 1, everySteps: 4, everyHours: 2 }, clock }, async (m) => {
      for (let s = 1; s <= 9; s++) {
        await m.save(sampleState(s));
        clock.advance(3600_000);
      }
      // every 4 steps: 4, 8; every 2 hours (saved at 0h..8h): 1, 3, 5, 7, 9; last: 9.
      assert.deepEqual(await steps(m), [1, 3, 4, 5, 7, 8, 9]);
    });
  });
});

describe('restore', () => {
  it('latest, a step, best, and restoreOrInitialize', () =>
    withManager({ keep: { best: { k: 5, metric: 'loss' } } }, async (m) => {
      const init = await m.restoreOrInitialize(() => sampleState(0));
      assert.equal(init.restored, undefined);
      assert.equal(init.state.step, 0);
      for (const [s, loss] of [[10, 3], [20, 1], [30, 2]] as const) await m.save(sampleState(s, { loss }));
      assert.equal((await m.restore()).checkpoint.step, 30);
      assert.equal((await m.restore({ step: 10 })).checkpoint.step, 10);
      assert.equal((await m.restore('best')).checkpoint.step, 20);
      assert.equal((await m.restore({ best: { metric: 'loss', mode: 'max' } })).checkpoint.step, 10);
      await rejectsWith(m.restore({ step: 15 }), 'NOT_FOUND');
      const again = await m.restoreOrInitialize(() => sampleState(0));
      assert.equal(again.state.step, 30);
      assert.deepEqual(again.state.state, sampleState(30).state);
    }));

  it('falls back past a corrupt latest checkpoint and reports what it skipped', () =>
    withManager({}, async (m, dir) => {
      for (const s of [1, 2, 3]) await m.save(sampleState(s));
      const f = join(dir, 'step-00000003', 'model.safetensors');
      const bytes = await readFile(f);
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 1;
      await writeFile(f, bytes);
      await rm(join(dir, 'step-00000002', 'manifest.json'));
      const r = await m.restore();
      assert.equal(r.checkpoint.step, 1);
      assert.deepEqual(
        r.skipped.map((s) => [s.step, s.error.code]),
        [[3, 'CHECKSUM_MISMATCH']],
      );
      const invalid = await m.listInvalid();
      assert.deepEqual(invalid.map((x) => [x.step, x.error.code]), [[2, 'MANIFEST_MISSING']]);
      await rejectsWith(m.restore({ step: 3 }), 'CHECKSUM_MISMATCH');
    }));

  it('reports an incomplete newest directory as skipped and refuses to start over on a run of only corrupt checkpoints', () =>
    withManager({}, async (m, dir) => {
      await m.save(sampleState(1));
      await mkdir(join(dir, 'step-00000002'));
      const r = await m.restore();
      assert.equal(r.checkpoint.step, 1);
      assert.deepEqual(r.skipped.map((s) => [s.step, s.error.code]), [[2, 'MANIFEST_MISSING']]);
      await rm(join(dir, 'step-00000001', 'state.json'));
      await rejectsWith(m.restore(), 'NO_VALID_CHECKPOINT');
      await rejectsWith(m.restoreOrInitialize(() => sampleState(0)), 'NO_VALID_CHECKPOINT');
      await rejectsWith(m.restore({ step: 1 }), 'FILE_MISSING');
    }));

  it('a writer resuming right after it opened the run reads each manifest once; a reader, or a restore after a save, lists again', async () => {
    const dir = await tmpDir();
    const first = await openManager(dir, { sync: false });
    for (const s of [1, 2, 3]) await first.save(sampleState(s));
    await first.close();
    const reads = new Map<string, number>();
    const inner = fsBackend(dir);
    const counting: Backend = {
      ...inner,
      openReader: (key) => {
        if (key.endsWith('manifest.json')) reads.set(key, (reads.get(key) ?? 0) + 1);
        return (inner.openReader as NonNullable<Backend['openReader']>)(key);
      },
    };
    const manifestReads = (): number[] => [1, 2, 3].map((s) => reads.get(`step-0000000${s}/manifest.json`) ?? 0);
    const m = await openManager({ backend: counting, key: '' }, { sync: false });
    try {
      const { restored } = await m.restoreOrInitialize(() => sampleState(0));
      assert.equal(restored?.checkpoint.step, 3);
      // Once by the listing at open (which the restore starts from), once by the load of step 3.
      assert.deepEqual(manifestReads(), [1, 1, 2]);
      // The opening listing serves one restore only.
      reads.clear();
      assert.equal((await m.restore()).checkpoint.step, 3);
      assert.deepEqual(manifestReads(), [1, 1, 2]);
      // After a save the run is listed again: a directory appearing since is seen (and skipped).
      await m.save(sampleState(4));
      await mkdir(join(dir, 'step-00000009'));
      const r = await m.restore();
      assert.deepEqual([r.checkpoint.step, r.skipped.map((x) => x.step)], [4, [9]]);
    } finally {
      await m.close();
    }
    // A checkpoint committed since the writer opened the run (without its lock), or a directory that
    // was not a valid checkpoint when it did, makes the first restore list the run again.
    for (const change of ['commit', 'invalid'] as const) {
      await rm(join(dir, 'step-00000009'), { recursive: true, force: true });
      if (change === 'invalid') await mkdir(join(dir, 'step-00000009'));
      const w = await openManager(dir, { sync: false });
      if (change === 'commit') await writeCheckpoint(fsBackend(dir), 'step-00000009', sampleState(9), { sync: false });
      else {
        // The directory completes (manifest last), as a commit-marker backend's commit would.
        await writeCheckpoint(fsBackend(dir), 'staging', sampleState(9), { sync: false });
        const files = (await readdir(join(dir, 'staging'))).filter((n) => n !== 'manifest.json');
        for (const n of [...files, 'manifest.json']) await rename(join(dir, 'staging', n), join(dir, 'step-00000009', n));
        await rm(join(dir, 'staging'), { recursive: true });
      }
      assert.equal((await w.restore()).checkpoint.step, 9, change);
      await w.close();
    }
    await rm(join(dir, 'step-00000009'), { recursive: true, force: true });
    // A reader does not hold the run still: every restore lists it.
    reads.clear();
    const reader = await openManager({ backend: counting, key: '' }, { readOnly: true });
    await mkdir(join(dir, 'step-00000009'));
    assert.deepEqual((await reader.restore()).skipped.map((x) => x.step), [9]);
    assert.deepEqual(manifestReads(), [2, 2, 2]);
    await reader.close();
  });

  it('records lineage: the step a run resumed from', () =>
    withManager({}, async (m) => {
      await m.save(sampleState(1));
      await m.save(sampleState(2));
      await m.restore({ step: 1 });
      const r = await m.save(sampleState(5));
      assert.equal(r.manifest?.parentStep, 1);
      const r2 = await m.save(sampleState(6));
      assert.equal(r2.manifest?.parentStep, 5);
    }));
});

describe('background saving', () => {
  it('snapshots before returning, so later mutation does not leak into the checkpoint', () =>
    withManager({ background: true }, async (m) => {
      const state = sampleState(1);
      const w = state.tensors.model?.get('encoder/w');
      assert.ok(w);
      const before = Buffer.from(w.data);
      await m.save(state);
      w.data.fill(0);
      await m.flush();
      const back = await m.restore();
      assert.deepEqual(Buffer.from(back.checkpoint.tensors.model?.get('encoder/w')?.data ?? []), before);
    }));

  it('keeps at most one save in flight and never saves a pending step twice', () =>
    withManager({ background: true, keep: { last: 2 } }, async (m) => {
      for (let s = 1; s <= 6; s++) {
        await m.save(sampleState(s));
        assert.equal((await m.save(sampleState(s))).saved, false);
      }
      await m.flush();
      assert.deepEqual(await steps(m), [5, 6]);
      // Snapshot buffers are reused between saves: each checkpoint still holds its own step's data.
      for (const s of [5, 6]) {
        const back = (await m.restore({ step: s })).checkpoint;
        const want = sampleState(s).tensors.model?.get('encoder/w')?.data ?? new Uint8Array();
        assert.deepEqual(Buffer.from(back.tensors.model?.get('encoder/w')?.data ?? []), Buffer.from(want));
      }
    }));

  it('surfaces a background failure on the next call, once, and recovers', async () => {
    // Probe: how many mutating operations opening takes, so the fault hits the first save.
    const probe = faultyBackend(memoryBackend(), {});
    const pm = await openManager({ backend: probe }, {});
    const opened = probe.count;
    await pm.close();
    const inner = memoryBackend();
    const backend = faultyBackend(inner, { failAt: opened });
    const m = await openManager({ backend }, { background: true });
    await m.save(sampleState(1));
    await rejectsWith(m.flush(), 'BACKGROUND_SAVE_FAILED');
    await m.flush(); // reported once
    await m.save(sampleState(2));
    await m.close();
    const r = await openManager({ backend: inner }, { readOnly: true });
    assert.deepEqual(await steps(r), [2]);
    await r.close();
  });
});

describe('storage failures during a save', () => {
  it('a full disk at any operation leaves earlier checkpoints intact and the run usable', async () => {
    const prepared = async (): Promise<ReturnType<typeof memoryBackend>> => {
      const inner = memoryBackend();
      const m = await openManager({ backend: inner }, {});
      await m.save(sampleState(1));
      await m.close();
      return inner;
    };
    const probe = faultyBackend(await prepared(), {});
    const pm = await openManager({ backend: probe }, { keep: { last: 1 } });
    await pm.save(sampleState(2));
    await pm.close();
    assert.ok(probe.count > 10, `a save takes many operations (${probe.count})`);
    for (let k = 0; k < probe.count; k++) {
      const inner = await prepared();
      const backend = faultyBackend(inner, { failAt: k });
      let saved = false;
      try {
        const m = await openManager({ backend }, { keep: { last: 1 } });
        try {
          saved = (await m.save(sampleState(2))).saved;
        } finally {
          await m.close();
        }
      } catch (e) {
        assert.ok(isCkptError(e, 'NO_SPACE'), `operation ${k} (${backend.events[k]?.operation}): ${String(e)}`);
      }
      const m = await openManager({ backend: inner }, { keep: { last: 1 } });
      const listed = await steps(m);
      assert.ok(listed.length >= 1, `operation ${k}: a committed checkpoint survives`);
      if (saved) assert.equal(listed[listed.length - 1], 2);
      const latest = (await m.restore()).checkpoint.step;
      assert.equal(latest, listed[listed.length - 1]);
      assert.deepEqual((await inner.list('')).filter((x) => x.startsWith('.tmp-')), [], `operation ${k}: no debris`);
      await m.save(sampleState(3));
      assert.equal((await m.restore()).checkpoint.step, 3);
      await m.close();
    }
  });
});

describe('ordering, closing and clocks', () => {
  it('onImprovement counts a save still in flight, and a save decides its reason after waiting for earlier ones', async () => {
    for (const background of [true, false]) {
      const dir = await tmpDir();
      const m = await openManager(dir, { sync: false, background, save: { onImprovement: { metric: 'loss' } } });
      const first = m.save(sampleState(1, { loss: 0.5 }));
      if (background) await first;
      // Worse than step 1, which may still be writing (background) or not even started (inline).
      if (background) assert.equal(m.shouldSave(2, { loss: 0.9 }), undefined);
      const second = await m.save(sampleState(2, { loss: 0.9 }));
      assert.equal((await first).saved, true);
      assert.equal(second.saved, false, `background: ${background}`);
      assert.equal((await m.save(sampleState(3, { loss: 0.1 }))).reason, 'onImprovement');
      await m.close();
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('step-')), ['step-00000001', 'step-00000003']);
    }
  });

  it('retention never deletes the checkpoint just saved, also below the newest step after a restore', () =>
    withManager({ keep: { last: 1, everySteps: 100 } }, async (m) => {
      for (const s of [100, 200, 300]) await m.save(sampleState(s));
      await m.restore({ step: 200 });
      const r = await m.save(sampleState(250));
      assert.deepEqual([r.saved, r.deleted], [true, []]);
      assert.deepEqual(await steps(m), [100, 200, 250, 300]);
      // The next save lets it go, as the policy says (300 stays: every 100 steps).
      assert.deepEqual((await m.save(sampleState(301))).deleted, [250]);
    }));

  it('close() waits for a background save called before it; a save after close is CLOSED', async () => {
    const dir = await tmpDir();
    const m = await openManager(dir, { sync: false, background: true });
    await m.save(sampleState(1));
    const second = m.save(sampleState(2)); // waits for step 1's write (one save in flight)
    await m.close();
    // Committed before the lock was released.
    assert.deepEqual((await readdir(dir)).sort(), ['step-00000001', 'step-00000002']);
    assert.equal((await second).saved, true);
    await rejectsWith(m.save(sampleState(3)), 'CLOSED');
    const next = await openManager(dir, { sync: false });
    assert.deepEqual(await steps(next), [1, 2]);
    await next.close();
  });

  it('everySeconds saves when the clock went back, and the interval restarts there', async () => {
    const clock = fakeClock();
    await withManager({ clock, save: { everySeconds: 60 } }, async (m) => {
      clock.advance(61_000);
      assert.equal((await m.save(sampleState(1))).reason, 'everySeconds');
      clock.advance(-3_600_000);
      assert.equal((await m.save(sampleState(2))).reason, 'everySeconds');
      clock.advance(30_000);
      assert.equal((await m.save(sampleState(3))).saved, false);
      clock.advance(31_000);
      assert.equal((await m.save(sampleState(4))).saved, true);
    });
  });
});

describe('writer lock', () => {
  it('a lock that cannot be read is not taken over: the read error is reported', async () => {
    const backend = memoryBackend();
    const first = await openManager({ backend, key: 'run' }, {});
    const unreadable: Backend = {
      ...backend,
      read: async (key, ...rest) => {
        if (key.endsWith('ckpt.lock')) throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
        return backend.read(key, ...rest);
      },
    };
    await rejectsWith(openManager({ backend: unreadable, key: 'run' }, {}), 'IO_ERROR');
    assert.equal(await backend.exists('run/ckpt.lock'), true);
    await first.close();
  });

  it('a second writer gets LOCK_HELD; a reader is fine; close releases', async () => {
    const dir = await tmpDir();
    const a = await openManager(dir, { sync: false });
    await rejectsWith(openManager(dir, { sync: false }), 'LOCK_HELD');
    const reader = await openManager(dir, { readOnly: true });
    await a.save(sampleState(1));
    assert.deepEqual(await steps(reader), [1]);
    await rejectsWith(reader.save(sampleState(2)), 'UNSUPPORTED');
    await a.close();
    await rejectsWith(a.save(sampleState(3)), 'CLOSED');
    const b = await openManager(dir, { sync: false });
    await b.close();
    await reader.close();
  });

  it('a stale lock from a dead process is taken over', async () => {
    const dir = await tmpDir();
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const pid = Number(dead.stdout);
    await writeFile(join(dir, 'ckpt.lock'), JSON.stringify({ pid, hostname: hostname(), createdAt: new Date().toISOString(), token: 'old' }));
    const m = await openManager(dir, { sync: false });
    const lock = JSON.parse(await readFile(join(dir, 'ckpt.lock'), 'utf8')) as { pid: number };
    assert.equal(lock.pid, process.pid);
    await m.close();
  });

  it('a lock held by a live process on another host is not taken without force', async () => {
    const dir = await tmpDir();
    await writeFile(join(dir, 'ckpt.lock'), JSON.stringify({ pid: 1, hostname: 'elsewhere', createdAt: new Date().toISOString(), token: 't' }));
    await rejectsWith(openManager(dir, { sync: false }), 'LOCK_HELD');
    const m = await openManager(dir, { sync: false, lock: { force: true } });
    await m.close();
  });
});

describe('debris', () => {
  it('temp directories of interrupted saves are removed when a writer opens, never listed', async () => {
    const dir = await tmpDir();
    const m = await openManager(dir, { sync: false });
    await m.save(sampleState(1));
    await m.close();
    await mkdir(join(dir, '.tmp-step-00000002-abcd'));
    await writeFile(join(dir, '.tmp-step-00000002-abcd', 'model.safetensors'), 'partial');
    const reader = await openManager(dir, { readOnly: true });
    assert.deepEqual(await steps(reader), [1]);
    await reader.close();
    const w = await openManager(dir, { sync: false });
    assert.deepEqual((await readdir(dir)).sort(), ['ckpt.lock', 'step-00000001']);
    await w.close();
  });
});

/**
 * A run whose writer keeps step 1 as the best and the newest two by retention, and `churn()`, which has
 * the writer commit two newer steps (so retention deletes the two newest there were).
 */
async function churningRun(): Promise<{ inner: ReturnType<typeof memoryBackend>; writer: CheckpointManager; churn: () => Promise<void>; newest: () => number }> {
  const inner = memoryBackend();
  const writer = await openManager({ backend: inner }, { keep: { last: 2, best: { k: 1, metric: 'loss', mode: 'min' } } });
  await writer.save(sampleState(1, { loss: 0 }));
  await writer.save(sampleState(2, { loss: 5 }));
  await writer.save(sampleState(3, { loss: 5 }));
  let newest = 3;
  const churn = async (): Promise<void> => {
    await writer.save(sampleState(newest + 1, { loss: 5 }));
    await writer.save(sampleState(newest + 2, { loss: 5 }));
    newest += 2;
  };
  return { inner, writer, churn, newest: () => newest };
}

describe('listing a run while another process saves and deletes', () => {
  it('a restore never falls back to an old checkpoint because the newest ones were replaced while it listed', async () => {
    const { inner, writer, churn, newest } = await churningRun();
    let churns = 0;
    const backend = Object.create(inner) as typeof inner;
    backend.list = async (prefix: string): Promise<string[]> => {
      const names = await inner.list(prefix);
      if (churns > 0 && prefix === '') {
        // Between this listing and the reads of its manifests, the writer replaces the two newest.
        churns--;
        await churn();
      }
      return names;
    };
    const reader = await openManager({ backend }, { readOnly: true });
    churns = 12; // each listing attempt lists twice: six attempts in a row see the writer move on
    const before = newest();
    const { checkpoint, skipped } = await reader.restore();
    assert.deepEqual(skipped, []);
    assert.ok(checkpoint.step >= before, `restored step ${checkpoint.step}, but step ${before} was committed before the restore began`);
    assert.equal(churns, 0);
    await reader.close();
    await writer.close();
  });

  it('a restore whose newest candidate is deleted while it is read, many times in a row, lists again and restores a newer one', async () => {
    const { inner, writer, churn, newest } = await churningRun();
    let churns = 0;
    const backend = Object.create(inner) as typeof inner;
    backend.openReader = async (key: string) => {
      if (churns > 0 && key.endsWith('/model.safetensors')) {
        // The writer replaces the two newest before this tensor file is opened: retention deletes it.
        churns--;
        await churn();
      }
      return (inner.openReader as NonNullable<typeof inner.openReader>)(key);
    };
    const reader = await openManager({ backend }, { readOnly: true });
    churns = 8;
    const { checkpoint, skipped } = await reader.restore();
    assert.deepEqual(skipped.map((x) => x.name), []);
    assert.equal(checkpoint.step, newest());
    assert.equal(churns, 0);
    await reader.close();
    await writer.close();
  });
});
