import { CkptError, ioError, isCkptError } from '../errors.js';
import type { ChecksumAlgorithm, JsonValue, Manifest } from '../format/manifest.js';
import { Problems } from '../problems.js';
import { mapSettled } from '../settle.js';
import type { Backend } from '../storage/backend.js';
import type { TensorMap } from '../tensor/tensor.js';
import { type LockOptions, type WriterLock, acquireLock } from './lock.js';
import { type LoadOptions, loadThreads, readCheckpoint, readManifest } from './load.js';
import { type Location, childKey, resolveRoot } from './location.js';
import {
  type MetricSpec,
  type RetentionPolicy,
  type SavePolicy,
  type SaveReason,
  bestCandidates,
  retainedSteps,
  shouldSave,
  validateRetentionPolicy,
  validateSavePolicy,
} from './policies.js';
import { TEMP_PREFIX, parseStepDirName, randomId, resolveSaveOptions, stepDirName, validateTrainState, writeCheckpoint } from './save.js';
import type { Checkpoint, TrainState } from './types.js';

/** A source of time in ms (injected so policies are testable). */
export interface Clock {
  now(): number;
}

/** Options of {@link openManager}. All optional. */
export interface ManagerOptions {
  /** When to save. @default {} (every `save` call saves) */
  readonly save?: SavePolicy;
  /** What to keep. @default {} (keep everything) */
  readonly keep?: RetentionPolicy;
  /**
   * Write in the background: `save` returns once the state is snapshotted (copied); the write runs while
   * training continues. At most one save is in flight; a further `save` waits for it (backpressure).
   * Errors surface on the next `save`, `flush` or `close`.
   * @default false
   */
  readonly background?: boolean;
  /** Verify checksums when restoring. @default true */
  readonly verify?: boolean;
  /** Checksum algorithm for new checkpoints. @default 'crc32' */
  readonly checksum?: ChecksumAlgorithm;
  /** fsync files and directories. @default true */
  readonly sync?: boolean;
  /** Shard size for tensor groups. @default 4 GiB */
  readonly shardBytes?: number;
  /**
   * Open as a reader: no lock, no cleanup, `save` throws `UNSUPPORTED`. Readers may list and restore while
   * a writer saves.
   * @default false
   */
  readonly readOnly?: boolean;
  /** Writer-lock options. @default {} */
  readonly lock?: LockOptions;
  /** Time source. @default Date.now */
  readonly clock?: Clock;
  /** Run id recorded in manifests. @default the run id of the newest checkpoint, or a new random id */
  readonly runId?: string;
}

/** A committed checkpoint of a run, as listed. */
export interface CheckpointInfo {
  readonly step: number;
  /** Directory name (`step-00001000`). */
  readonly name: string;
  /** Human-readable location. */
  readonly location: string;
  /** Creation time in ms. */
  readonly time: number;
  readonly metrics: Readonly<Record<string, number>>;
  readonly manifest: Manifest;
}

/** A directory of the run that looks like a checkpoint but is not a valid committed one. */
export interface InvalidEntry {
  readonly name: string;
  readonly step: number;
  readonly error: CkptError;
}

/** Result of {@link CheckpointManager.save}. */
export interface SaveResult {
  /** False when no save rule fired or the step was already saved. */
  readonly saved: boolean;
  readonly step: number;
  /** The rule that fired (`forced` for `force: true`). */
  readonly reason?: SaveReason;
  /** Steps deleted by retention after this save (synchronous saves only). */
  readonly deleted: readonly number[];
  /** The committed manifest (synchronous saves only). */
  readonly manifest?: Manifest;
}

/** A checkpoint that was skipped while restoring, and why. */
export interface SkippedCheckpoint {
  readonly step: number;
  readonly name: string;
  readonly error: CkptError;
}

/** Result of a restore: the checkpoint and what was skipped on the way (corrupt or incomplete ones). */
export interface RestoreResult {
  readonly checkpoint: Checkpoint;
  readonly skipped: readonly SkippedCheckpoint[];
}

/** Which checkpoint to restore. */
export type RestoreTarget = 'latest' | 'best' | { readonly step: number } | { readonly best: MetricSpec };

/** The checkpoint manager of one run directory. Call order: open → (save | restore)* → flush? → close. */
export interface CheckpointManager {
  /** The run directory. */
  readonly location: string;
  /** The run id recorded in new manifests. */
  readonly runId: string;
  /** Which save rule would fire for `step` with `metrics` (undefined: none; also when already saved). */
  shouldSave(step: number, metrics?: Readonly<Record<string, number>>): SaveReason | undefined;
  /**
   * Saves `state` if a save rule fires (or `force`), then applies retention. Never saves a step twice.
   * In background mode it resolves once the state is snapshotted; when the previous background save
   * failed, this call rejects with that failure (`BACKGROUND_SAVE_FAILED`, once) without saving `state`.
   */
  save(state: TrainState, options?: { readonly force?: boolean }): Promise<SaveResult>;
  /** Committed checkpoints, oldest first (re-reads storage). */
  list(): Promise<CheckpointInfo[]>;
  /** Directories that look like checkpoints but are not valid committed ones. */
  listInvalid(): Promise<InvalidEntry[]>;
  /**
   * Restores a checkpoint. For 'latest' and best, a checkpoint that fails to load or verify is skipped
   * (and reported) in favour of the next candidate; an explicit step never falls back. Throws
   * `NO_VALID_CHECKPOINT` (or `NOT_FOUND` for a step) when nothing can be restored. `options` are
   * those of `load` (only some groups; memory from a pool, shared for worker threads).
   */
  restore(target?: RestoreTarget, options?: Pick<LoadOptions, 'groups' | 'allocate' | 'threads'>): Promise<RestoreResult>;
  /** Restores the latest valid checkpoint, or returns `init()` when the run has none. */
  restoreOrInitialize(init: () => TrainState | Promise<TrainState>): Promise<{
    readonly state: TrainState;
    readonly restored?: RestoreResult;
  }>;
  /** Waits for a background save in flight; throws its error if it failed. */
  flush(): Promise<void>;
  /** Flushes, releases the lock. Further calls throw `CLOSED`. */
  close(): Promise<void>;
}

interface ResolvedManagerOptions {
  readonly save: SavePolicy;
  readonly keep: RetentionPolicy;
  readonly background: boolean;
  readonly verify: boolean;
  readonly readOnly: boolean;
  readonly lock: LockOptions;
  readonly clock: Clock;
}

/** Validates {@link ManagerOptions}, reporting every problem in one `INVALID_ARGUMENT` error. */
export function resolveManagerOptions(options: ManagerOptions): ResolvedManagerOptions {
  const p = new Problems();
  validateSavePolicy(options.save ?? {}, p);
  validateRetentionPolicy(options.keep ?? {}, p);
  if (options.clock !== undefined) p.check(typeof options.clock.now === 'function', 'clock.now must be a function');
  p.throwIfAny('INVALID_ARGUMENT', 'invalid checkpoint manager options');
  return {
    save: options.save ?? {},
    keep: options.keep ?? {},
    background: options.background ?? false,
    verify: options.verify ?? true,
    readOnly: options.readOnly ?? false,
    lock: options.lock ?? {},
    clock: options.clock ?? { now: () => Date.now() },
  };
}

/** A listing of a run: valid committed checkpoints (oldest first) and invalid step directories. */
export interface RunListing {
  readonly valid: CheckpointInfo[];
  readonly invalid: InvalidEntry[];
}

/** Lists a run: valid committed checkpoints (oldest first) and invalid step directories. */
export async function listRun(backend: Backend, root: string): Promise<RunListing> {
  // A writer in another process may delete checkpoints (retention) while they are being listed. A
  // directory that vanished between the listing and the read of its manifest is not an invalid
  // checkpoint, and the listing is stale: the writer committed newer checkpoints meanwhile, which this
  // listing lacks (with retention keeping only old "best" ones besides, a stale listing could make a
  // restore pick an old checkpoint). So list again, with a short growing pause, until a listing holds
  // still; only a writer that deletes faster than a listing can read, for every one of many attempts,
  // gets the last listing without the vanished entries.
  for (let attempt = 1; ; attempt++) {
    const { valid, invalid } = await listRunOnce(backend, root);
    const missing = invalid.filter((x) => x.error.code === 'MANIFEST_MISSING');
    if (missing.length === 0) return { valid, invalid };
    const now = new Set(await listNames(backend, root));
    const gone = new Set(missing.filter((x) => !now.has(`${x.name}/`)));
    if (gone.size === 0) return { valid, invalid };
    if (attempt >= LIST_ATTEMPTS) return { valid, invalid: invalid.filter((x) => !gone.has(x)) };
    await new Promise((resolve) => setTimeout(resolve, Math.min(attempt, 10)));
  }
}

/**
 * True when the checkpoint `name` of the run at `root` is gone (its manifest no longer exists): deleted
 * by a writer's retention since it was listed, rather than damaged. An error checking counts as present.
 */
export async function vanished(backend: Backend, root: string, name: string): Promise<boolean> {
  return !(await backend.exists(childKey(childKey(root, name), 'manifest.json')).catch(() => true));
}

/**
 * Listings taken before {@link listRun} gives up waiting for a listing that holds still; also how many
 * times a restore (or an averaging) starts over when a checkpoint it chose vanished.
 */
export const LIST_ATTEMPTS = 25;
/** Manifests read at once while listing a run. */
const LIST_CONCURRENCY = 8;

async function listNames(backend: Backend, root: string): Promise<string[]> {
  try {
    return await backend.list(root);
  } catch (e) {
    throw ioError(e, 'listing', backend.describe(root));
  }
}

/** The checkpoint directories (`step-…`) among the entries of a run's listing. */
function stepDirs(entries: readonly string[]): { name: string; step: number }[] {
  const dirs: { name: string; step: number }[] = [];
  for (const entry of entries) {
    if (!entry.endsWith('/')) continue;
    const name = entry.slice(0, -1);
    const step = parseStepDirName(name);
    if (step !== undefined) dirs.push({ name, step });
  }
  return dirs;
}

async function listRunOnce(backend: Backend, root: string): Promise<RunListing> {
  const dirs = stepDirs(await listNames(backend, root));
  const valid: CheckpointInfo[] = [];
  const invalid: InvalidEntry[] = [];
  const readOne = async ({ name, step }: { name: string; step: number }): Promise<void> => {
    const key = childKey(root, name);
    try {
      const manifest = await readManifest(backend, key);
      if (manifest.step !== step) {
        throw new CkptError('MANIFEST_INVALID', `${backend.describe(key)}: manifest says step ${manifest.step}, directory says ${step}`, {
          path: backend.describe(key),
          step,
          expected: step,
          received: manifest.step,
        });
      }
      valid.push({ step, name, location: backend.describe(key), time: Date.parse(manifest.createdAt), metrics: manifest.metrics, manifest });
    } catch (e) {
      if (!isCkptError(e) || e.code === 'IO_ERROR') throw isCkptError(e) ? e : ioError(e, 'reading', backend.describe(key));
      invalid.push({ name, step, error: e });
    }
  };
  // Several manifests at a time: a shorter listing leaves a concurrent writer less time to change it.
  await mapSettled(dirs, LIST_CONCURRENCY, readOne);
  valid.sort((a, b) => a.step - b.step);
  invalid.sort((a, b) => a.step - b.step);
  return { valid, invalid };
}

/**
 * Copies every tensor's bytes so training can go on mutating the originals. Buffers of the previous
 * snapshot (whose write has finished) are reused when sizes match: fresh memory costs a page fault per
 * page on first touch, which would dominate the copy.
 */
function snapshot(state: TrainState, pool: Map<string, Uint8Array>): { state: TrainState; buffers: Map<string, Uint8Array> } {
  const tensors: Record<string, TensorMap> = {};
  const buffers = new Map<string, Uint8Array>();
  for (const [g, map] of Object.entries(state.tensors)) {
    const copy: TensorMap = new Map();
    for (const [name, t] of map) {
      const key = `${g}\u0000${name}`;
      let data = pool.get(key);
      if (data === undefined || data.byteLength !== t.data.byteLength) data = new Uint8Array(t.data.byteLength);
      data.set(t.data);
      buffers.set(key, data);
      copy.set(name, { dtype: t.dtype, shape: [...t.shape], data });
    }
    tensors[g] = copy;
  }
  const clone = <T>(v: T): T => (v === undefined ? v : (structuredClone(v) as T));
  const snap: TrainState = {
    step: state.step,
    ...(state.epoch === undefined ? {} : { epoch: state.epoch }),
    tensors,
    ...(state.state === undefined ? {} : { state: clone(state.state) as Record<string, JsonValue> }),
    ...(state.metrics === undefined ? {} : { metrics: { ...state.metrics } }),
    ...(state.hyperParameters === undefined ? {} : { hyperParameters: clone(state.hyperParameters) }),
    ...(state.metadata === undefined ? {} : { metadata: clone(state.metadata) }),
    ...(state.versions === undefined ? {} : { versions: { ...state.versions } }),
  };
  return { state: snap, buffers };
}

/**
 * Internal: stops a manager from accepting saves other than the one already requested (used by the
 * preemption handler so that the training loop cannot race the final save and close). Not exported
 * from the package.
 */
export const FREEZE: unique symbol = Symbol('ckpt.freeze');

class Manager implements CheckpointManager {
  private closed = false;
  /** close() was called: it waits for `calls`, and refuses new ones. */
  private closing = false;
  /** save() calls not finished yet. */
  private readonly calls = new Set<Promise<SaveResult>>();
  private frozen = false;
  private inflight: Promise<void> | undefined;
  private failure: CkptError | undefined;
  private lastSaveTime: number;
  private parentStep: number | null = null;
  /** The step and metrics of the background save in flight (its metrics count for onImprovement). */
  private pending: { readonly step: number; readonly time: number; readonly metrics: Readonly<Record<string, number>> } | undefined;
  private chain: Promise<void> = Promise.resolve();
  private pool = new Map<string, Uint8Array>();
  runId: string;

  constructor(
    private readonly backend: Backend,
    private readonly root: string,
    private readonly opts: ResolvedManagerOptions,
    private readonly saveOpts: ReturnType<typeof resolveSaveOptions>,
    private readonly lock: WriterLock | undefined,
    private known: CheckpointInfo[],
    runId: string,
    /**
     * The listing a writer took when it opened the run, until a save: its first restore starts from it
     * rather than reading every manifest again, if the run's checkpoints are still those (`takeOpening`).
     */
    private opening: RunListing | undefined,
  ) {
    this.lastSaveTime = opts.clock.now();
    this.runId = runId;
  }

  get location(): string {
    return this.backend.describe(this.root);
  }

  private ensureOpen(): void {
    if (this.closed || this.closing) throw new CkptError('CLOSED', `the checkpoint manager of ${this.location} is closed`, { path: this.location });
  }

  private takeFailure(): void {
    const f = this.failure;
    if (f !== undefined) {
      this.failure = undefined;
      throw f;
    }
  }

  private bestMetric(): number | undefined {
    const spec = this.opts.save.onImprovement;
    if (spec === undefined) return undefined;
    return bestCandidates(this.pending === undefined ? this.known : [...this.known, this.pending], spec, 1)[0]?.metrics[spec.metric];
  }

  /** Runs `fn` after every earlier commit has finished: commits never overlap. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    this.chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private isSaved(step: number): boolean {
    return step === this.pending?.step || this.known.some((c) => c.step === step);
  }

  shouldSave(step: number, metrics: Readonly<Record<string, number>> = {}): SaveReason | undefined {
    if (this.isSaved(step)) return undefined;
    return shouldSave(this.opts.save, {
      step,
      now: this.opts.clock.now(),
      lastSaveTime: this.lastSaveTime,
      metrics,
      bestMetric: this.bestMetric(),
    });
  }

  /** After this, `save` calls park forever (the process is about to exit) unless they carry FREEZE. */
  [FREEZE](): void {
    this.frozen = true;
  }

  async save(state: TrainState, options: { readonly force?: boolean; readonly [FREEZE]?: true } = {}): Promise<SaveResult> {
    if (this.frozen && options[FREEZE] !== true) return new Promise<SaveResult>(() => undefined);
    this.ensureOpen();
    // close() waits for the saves called before it.
    const call = this.saveNow(state, options);
    this.calls.add(call);
    try {
      return await call;
    } finally {
      this.calls.delete(call);
    }
  }

  /**
   * The reason to save `state` now, decided again after waiting for earlier saves (they may have taken
   * the step, or set a better metric), or undefined.
   */
  private reasonNow(state: TrainState, force: boolean): SaveReason | undefined {
    if (this.isSaved(state.step)) return undefined;
    return force ? 'forced' : this.shouldSave(state.step, state.metrics ?? {});
  }

  private async saveNow(state: TrainState, options: { readonly force?: boolean }): Promise<SaveResult> {
    if (this.opts.readOnly) {
      throw new CkptError('UNSUPPORTED', `the manager of ${this.location} was opened read-only`, { path: this.location });
    }
    // An earlier background save that failed is reported here, once: this call throws it and saves
    // nothing (the caller decides whether to go on); the next call saves as usual.
    this.takeFailure();
    if (this.reasonNow(state, options.force === true) === undefined) return { saved: false, step: state.step, deleted: [] };
    validateTrainState(state);

    if (!this.opts.background) {
      return this.exclusive(async () => {
        // Another save (e.g. a preemption handler) may have taken this step, or a better metric, while
        // we waited.
        const now = this.reasonNow(state, options.force === true);
        if (now === undefined) return { saved: false, step: state.step, deleted: [] };
        const { manifest, deleted } = await this.commit(state);
        return { saved: true, step: state.step, reason: now, deleted, manifest };
      });
    }
    // Backpressure: one save in flight; the next waits for it before snapshotting. A failure of the
    // previous save surfaces here, once. Concurrent calls (a preemption handler racing the training
    // loop) wait in turn: another one may have started a save while this one was waiting.
    do await this.flushInternal();
    while (this.inflight !== undefined);
    // The saves before this one have committed: they may have taken this very step, or a better metric.
    const now = this.reasonNow(state, options.force === true);
    if (now === undefined) return { saved: false, step: state.step, deleted: [] };
    // The previous write has finished (flushInternal), so its buffers are free for reuse.
    const { state: snap, buffers } = snapshot(state, this.pool);
    this.pool = new Map();
    this.pending = { step: snap.step, time: this.opts.clock.now(), metrics: snap.metrics ?? {} };
    this.lastSaveTime = this.opts.clock.now();
    const tracked: Promise<void> = this.exclusive(() => this.commit(snap)).then(
      () => {
        this.pool = buffers;
      },
      (e: unknown) => {
        const err = isCkptError(e) ? e : ioError(e, 'background save', this.location);
        this.failure = new CkptError('BACKGROUND_SAVE_FAILED', `background save of step ${snap.step} failed: ${err.message}`, {
          path: this.location,
          step: snap.step,
          cause: err,
        });
      },
    ).finally(() => {
      if (this.inflight === tracked) this.inflight = undefined;
      this.pending = undefined;
    });
    this.inflight = tracked;
    return { saved: true, step: state.step, reason: now, deleted: [] };
  }

  private async commit(state: TrainState): Promise<{ manifest: Manifest; deleted: number[] }> {
    this.opening = undefined;
    const name = stepDirName(state.step);
    let manifest: Manifest;
    try {
      manifest = await writeCheckpoint(this.backend, childKey(this.root, name), state, {
        ...this.saveOpts,
        runId: this.runId,
        parentStep: this.parentStep ?? this.known[this.known.length - 1]?.step ?? null,
        now: this.opts.clock.now(),
      });
    } catch (e) {
      // A failure past the commit point (the fsync of the run directory after the rename) leaves the
      // checkpoint complete and visible: track it, so that retention sees it and retrying the step does
      // not fail with ALREADY_EXISTS.
      const landed = await readManifest(this.backend, childKey(this.root, name)).catch(() => undefined);
      if (landed?.step === state.step && landed.runId === this.runId) this.track(name, landed);
      throw e;
    }
    this.lastSaveTime = this.opts.clock.now();
    this.track(name, manifest);
    this.parentStep = null;
    return { manifest, deleted: await this.applyRetention(state.step) };
  }

  /** Records a committed checkpoint of this run in `known`. */
  private track(name: string, manifest: Manifest): void {
    const info: CheckpointInfo = {
      step: manifest.step,
      name,
      location: this.backend.describe(childKey(this.root, name)),
      time: Date.parse(manifest.createdAt),
      metrics: manifest.metrics,
      manifest,
    };
    this.known = [...this.known.filter((c) => c.step !== manifest.step), info].sort((a, b) => a.step - b.step);
  }

  /** Deletes what the retention policy does not keep; never `saved`, the checkpoint just committed. */
  private async applyRetention(saved: number): Promise<number[]> {
    const keep = retainedSteps(this.known, this.opts.keep);
    // The policy always keeps the highest step; after a restore of an older step, training saves below it.
    keep.add(saved);
    const doomed = this.known.filter((c) => !keep.has(c.step));
    const deleted: number[] = [];
    for (const c of doomed) {
      await deleteCheckpoint(this.backend, this.root, c.name);
      deleted.push(c.step);
      // Forget each one at once: after a failure part-way, `known` still matches storage.
      this.known = this.known.filter((k) => k.step !== c.step);
    }
    return deleted;
  }

  async list(): Promise<CheckpointInfo[]> {
    this.ensureOpen();
    return (await listRun(this.backend, this.root)).valid;
  }

  async listInvalid(): Promise<InvalidEntry[]> {
    this.ensureOpen();
    return (await listRun(this.backend, this.root)).invalid;
  }

  async restore(target: RestoreTarget = 'latest', options: Pick<LoadOptions, 'groups' | 'allocate' | 'threads'> = {}): Promise<RestoreResult> {
    this.ensureOpen();
    return this.restoreListed(target, options, await this.takeOpening());
  }

  /**
   * The listing taken when the run was opened (see `opening`), once, while the run still holds exactly
   * its checkpoints: one request for the directory names instead of a read of every manifest. A
   * checkpoint committed since (without this writer's lock: `save()`, a forced writer) or a directory
   * that was not a valid checkpoint then (one still being committed on a backend without atomic rename)
   * makes the restore list the run again.
   */
  private async takeOpening(): Promise<RunListing | undefined> {
    const listing = this.opening;
    this.opening = undefined;
    if (listing === undefined) return undefined;
    const now = stepDirs(await listNames(this.backend, this.root));
    // Only the valid ones: an invalid directory still there makes the names differ.
    const then = new Set(listing.valid.map((c) => c.name));
    return now.length === then.size && now.every((d) => then.has(d.name)) ? listing : undefined;
  }

  /** {@link restore}, starting from `listing` (a listing of the run just taken) when given. */
  private async restoreListed(
    target: RestoreTarget,
    options: Pick<LoadOptions, 'groups' | 'allocate' | 'threads'>,
    listing: RunListing | undefined,
  ): Promise<RestoreResult> {
    // Checked once here: a bad option is not a checkpoint that fails to load.
    const threads = loadThreads(options);
    const load = (c: { name: string }): Promise<Checkpoint> =>
      readCheckpoint(this.backend, childKey(this.root, c.name), {
        verify: this.opts.verify,
        ...(options.groups === undefined ? {} : { groups: options.groups }),
        ...(options.allocate === undefined ? {} : { allocate: options.allocate }),
        ...(threads === undefined ? {} : { threads }),
      });
    // A writer saving in another process may delete a candidate (retention) while it is read: that one
    // vanished rather than failed, and the run is listed again (as many times as listRun retries: a
    // reader starved of CPU can lose several races in a row against a fast writer).
    for (let attempt = 1; ; attempt++) {
      const { valid, invalid } = (attempt === 1 ? listing : undefined) ?? (await listRun(this.backend, this.root));
      if (typeof target === 'object' && 'step' in target) {
        const c = valid.find((x) => x.step === target.step);
        if (c === undefined) {
          const bad = invalid.find((x) => x.step === target.step);
          if (bad !== undefined) throw bad.error;
          throw new CkptError('NOT_FOUND', `no checkpoint for step ${target.step} in ${this.location}`, { path: this.location, step: target.step });
        }
        const checkpoint = await load(c);
        this.parentStep = checkpoint.step;
        return { checkpoint, skipped: [] };
      }
      let candidates: { step: number; name: string }[];
      const skipped: SkippedCheckpoint[] = [];
      if (target === 'latest') {
        // Invalid directories newer than the newest valid checkpoint are reported as skipped too.
        candidates = [...valid].reverse();
        const newestValid = valid[valid.length - 1]?.step ?? -1;
        for (const bad of invalid.filter((x) => x.step > newestValid).sort((a, b) => b.step - a.step)) skipped.push(bad);
      } else {
        const spec: MetricSpec | undefined = target === 'best' ? (this.opts.keep.best ?? this.opts.save.onImprovement) : target.best;
        if (spec === undefined) {
          throw new CkptError('INVALID_ARGUMENT', 'restore("best") needs a metric: configure keep.best or save.onImprovement, or pass { best: { metric, mode } }');
        }
        candidates = bestCandidates(valid, spec);
      }
      let gone = false;
      for (const c of candidates) {
        try {
          const checkpoint = await load(c);
          this.parentStep = checkpoint.step;
          return { checkpoint, skipped };
        } catch (e) {
          if (!isCkptError(e)) throw e;
          if (attempt < LIST_ATTEMPTS && (await vanished(this.backend, this.root, c.name))) {
            gone = true;
            break;
          }
          skipped.push({ step: c.step, name: c.name, error: e });
        }
      }
      if (gone) continue;
      const why = skipped.map((s) => `${s.name}: ${s.error.code}`).join(', ');
      throw new CkptError('NO_VALID_CHECKPOINT', `no valid checkpoint to restore in ${this.location}${why ? ` (skipped ${why})` : ''}`, {
        path: this.location,
        received: skipped,
      });
    }
  }

  async restoreOrInitialize(init: () => TrainState | Promise<TrainState>): Promise<{ state: TrainState; restored?: RestoreResult }> {
    this.ensureOpen();
    const listing = (await this.takeOpening()) ?? (await listRun(this.backend, this.root));
    if (listing.valid.length === 0 && listing.invalid.length === 0) return { state: await init() };
    // With only corrupt checkpoints this throws NO_VALID_CHECKPOINT: starting over silently would
    // discard the run.
    const restored = await this.restoreListed('latest', {}, listing);
    return { state: restored.checkpoint, restored };
  }

  private async flushInternal(): Promise<void> {
    while (this.inflight !== undefined) await this.inflight;
    await this.chain;
    this.takeFailure();
  }

  async flush(): Promise<void> {
    this.ensureOpen();
    await this.flushInternal();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closing = true;
    try {
      // Saves called before close() land before the lock is released (a background one may still be
      // waiting for the save before it); later calls are refused (ensureOpen).
      while (this.calls.size > 0) await Promise.allSettled([...this.calls]);
      await this.flushInternal();
    } finally {
      this.closed = true;
      await this.lock?.release();
    }
  }
}

/**
 * Removes a committed checkpoint so that no reader can ever see it half-deleted: it is first moved out of
 * the listing (rename to a temp name, or removal of its manifest where rename is missing), then deleted.
 * A checkpoint that is already gone is not an error (a retry after the second phase failed: its
 * `.tmp-delete-…` debris is removed when a writer next opens the run).
 */
export async function deleteCheckpoint(backend: Backend, root: string, name: string): Promise<void> {
  const key = childKey(root, name);
  try {
    if (backend.capabilities.atomicRename && backend.rename !== undefined) {
      const trash = childKey(root, `${TEMP_PREFIX}delete-${name}-${randomId(4)}`);
      try {
        await backend.rename(key, trash);
      } catch (e) {
        if (isCkptError(e, 'NOT_FOUND')) return;
        throw e;
      }
      await backend.delete(`${trash}/`);
    } else {
      await backend.delete(childKey(key, 'manifest.json'));
      await backend.delete(`${key}/`);
    }
  } catch (e) {
    throw ioError(e, 'deleting checkpoint', backend.describe(key));
  }
}

/**
 * Removes temp debris of interrupted saves (and, without atomic rename, uncommitted step directories), and
 * the backend's hidden partial files at the run's root (a process killed while creating the lock).
 */
async function cleanDebris(backend: Backend, root: string): Promise<void> {
  await backend.removePartials?.(root);
  for (const entry of await backend.list(root)) {
    if (!entry.endsWith('/')) continue;
    const name = entry.slice(0, -1);
    if (name.startsWith(TEMP_PREFIX)) await backend.delete(childKey(root, entry));
    else if (!backend.capabilities.atomicRename && parseStepDirName(name) !== undefined) {
      if (!(await backend.exists(childKey(childKey(root, name), 'manifest.json')))) await backend.delete(childKey(root, entry));
    }
  }
}

/**
 * Opens the checkpoint manager of a run directory (created if missing). A writer takes the run's lock
 * (`LOCK_HELD` if another live process has it; a stale lock of a dead process is taken over) and removes
 * debris of interrupted saves.
 *
 * @example
 * ```ts
 * const manager = await openManager('/tmp/run', { save: { everySteps: 100 }, keep: { last: 3 } });
 * const { state } = await manager.restoreOrInitialize(() => ({ step: 0, tensors: { model: init() } }));
 * ```
 */
export async function openManager(location: Location, options: ManagerOptions = {}): Promise<CheckpointManager> {
  const opts = resolveManagerOptions(options);
  const saveOpts = resolveSaveOptions({
    ...(options.checksum === undefined ? {} : { checksum: options.checksum }),
    ...(options.sync === undefined ? {} : { sync: options.sync }),
    ...(options.shardBytes === undefined ? {} : { shardBytes: options.shardBytes }),
  });
  const { backend, key } = await resolveRoot(location);
  let lock: WriterLock | undefined;
  if (!opts.readOnly) {
    lock = await acquireLock(backend, key, opts.lock);
    try {
      await cleanDebris(backend, key);
    } catch (e) {
      await lock.release();
      throw ioError(e, 'cleaning', backend.describe(key));
    }
  }
  let listing: RunListing;
  try {
    listing = await listRun(backend, key);
  } catch (e) {
    await lock?.release();
    throw e;
  }
  const known = listing.valid;
  const runId = options.runId ?? known[known.length - 1]?.manifest.runId ?? randomId();
  // A reader's run may change under it: it lists again when it restores.
  return new Manager(backend, key, opts, saveOpts, lock, [...known], runId, lock === undefined ? undefined : listing);
}
