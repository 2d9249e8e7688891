/**
 * Checkpoint averaging: the weights of several checkpoints of a run (the last N, explicit steps, or the
 * best K by a metric), averaged tensor by tensor into one committed checkpoint that training can resume
 * from. See {@link averageCheckpoints}; the numerics are in `accumulate.ts`, their SIMD form in `simd.ts`,
 * the memory they work in in `workspace.ts`.
 *
 * @module
 */
import { availableParallelism } from 'node:os';
import { CheckpointReader, HEADER_CONCURRENCY, type TensorLocation } from '../checkpoint/load.js';
import { type Location, type ResolvedLocation, childKey, resolveItem, resolveRoot } from '../checkpoint/location.js';
import { type CheckpointInfo, type InvalidEntry, LIST_ATTEMPTS, listRun, vanished } from '../checkpoint/manager.js';
import { type MetricMode, bestCandidates } from '../checkpoint/policies.js';
import { type StreamingTrainState, type TensorSpec, type TensorStream, TEMP_PREFIX, randomId, writeCheckpoint } from '../checkpoint/save.js';
import { checksumAlgorithm, createHasher, type Hasher } from '../checkpoint/checksum.js';
import { CkptError, ioError, isCkptError } from '../errors.js';
import { type ChecksumAlgorithm, type JsonValue, type Manifest, isValidGroupName } from '../format/manifest.js';
import { Problems, isCount, isPositive } from '../problems.js';
import { mapSettled } from '../settle.js';
import type { Backend, ObjectReader } from '../storage/backend.js';
import { openReader } from '../storage/reader.js';
import type { DType } from '../tensor/dtype.js';
import { isAveragedDType } from './accumulate.js';
import { TilePool, JobFailed, MAX_JOB_TENSORS, OUTPUTS, TILE, readFailure, tileCount } from './parallel.js';
import { MAX_THREADS, coreThreads } from '../threads.js';
import { Workspace } from './workspace.js';

/**
 * Which checkpoints of a run to average: exactly one of
 * - `{ last: N }`: the newest N committed checkpoints (all of them when the run has fewer);
 * - `{ steps: [a, b, …] }`: exactly these steps (each must be a committed checkpoint);
 * - `{ best: { k, metric, mode } }`: the K best by a metric recorded in the manifests (`mode` `min`
 *   for a loss, `max` for an accuracy; default `min`); checkpoints without the metric are never chosen.
 */
export type AverageSelection =
  | { readonly last: number }
  | { readonly steps: readonly number[] }
  | { readonly best: { readonly k: number; readonly metric: string; readonly mode?: MetricMode } };

/** How many checkpoints `{ last }` averages by default: OpenNMT-tf's `max_count`. */
export const DEFAULT_AVERAGE_LAST = 8;

/** The directory name of the averaged checkpoint inside the run when no `out` is given. */
export const DEFAULT_AVERAGE_DIR = 'avg';

/** Recorded as `metadata.averaged.method`: weighted mean accumulated in float64, rounded once. */
export const AVERAGE_METHOD = 'mean-float64';

/** Options of {@link averageCheckpoints}. All optional. */
export interface AverageOptions {
  /** Which checkpoints to average. @default { last: 8 } */
  readonly select?: AverageSelection;
  /**
   * A positive finite weight per selected checkpoint: in the order of `select.steps` for explicit
   * steps, oldest first otherwise. Normalised to sum 1. The count must equal the number of checkpoints
   * actually selected (fewer than asked when the run is short).
   * @default equal weights
   */
  readonly weights?: readonly number[];
  /**
   * Tensor groups to average; each must exist in every selected checkpoint with the same tensor names,
   * dtypes and shapes. Every other group of the newest selected checkpoint (optimizer, and `ema` unless
   * listed here) is copied from it unchanged, so that training resumes from the newest state with
   * averaged weights.
   * @default ['model']
   */
  readonly groups?: readonly string[];
  /** Where to write the averaged checkpoint (a checkpoint directory). @default `<run>/avg` */
  readonly out?: Location;
  /**
   * Replace a committed checkpoint already at `out` (with an atomic-rename backend the new one is
   * complete before the old one is moved away). Without it an existing one is an `ALREADY_EXISTS` error.
   * @default false
   */
  readonly overwrite?: boolean;
  /**
   * Check every input file that is read against its manifest checksum. Files are hashed while their
   * tensors stream through, so this costs CPU only (crc32 runs at several GiB/s) unless a file's
   * tensors are read out of order, in which case its unread remainder is read once more at the end.
   * A mismatch fails with `CHECKSUM_MISMATCH` naming the file, before anything is committed.
   * @default true
   */
  readonly verify?: boolean;
  /** fsync the written checkpoint. @default true */
  readonly sync?: boolean;
  /** Checksum algorithm of the written files. @default 'crc32' */
  readonly checksum?: ChecksumAlgorithm;
  /** Shard size of written groups. @default 4 GiB */
  readonly shardBytes?: number;
  /** Time recorded as `createdAt` (ms since epoch). @default Date.now() */
  readonly now?: number;
  /**
   * Worker threads that read, hash and accumulate the inputs (0: all on the calling thread, streaming
   * through the backend). Used for checkpoints on the local file system (the fs backend) whose files
   * are checksummed with crc32 or not verified; elsewhere the calling thread does the work. By default
   * one per core (at most 4) when there is at least 1 GiB to read, else none: starting the threads
   * takes ~70 ms, which smaller averages do not win back (measured on 2 cores: 8 × 16 MiB took 0.18 s
   * on workers against 0.10 s on this thread; 8 × 128 MiB, 0.44 s against 0.47 s).
   * @default automatic
   */
  readonly threads?: number;
}

/** Result of {@link averageCheckpoints}. */
export interface AverageResult {
  /** The manifest of the written checkpoint. */
  readonly manifest: Manifest;
  /** Where it was written (a path for the fs backend). */
  readonly location: string;
  /** Steps averaged, oldest first. The written checkpoint has the step of the last one. */
  readonly steps: readonly number[];
  /** Normalised weight of each step (same order as `steps`; they sum to 1). */
  readonly weights: readonly number[];
  /**
   * How many checkpoints the selection asked for (N, K or the number of steps); more than
   * `steps.length` when the run had fewer.
   */
  readonly requested: number;
  /** Groups averaged. */
  readonly averaged: readonly string[];
  /** Groups copied from the newest selected checkpoint. */
  readonly copied: readonly string[];
  /**
   * Worker threads that read, hashed and accumulated the inputs (0: the calling thread did; see
   * {@link AverageOptions.threads}).
   */
  readonly threads: number;
  /** Directories of the run that look like checkpoints but are invalid; never selected. */
  readonly ignored: readonly { readonly step: number; readonly name: string; readonly code: string }[];
}

/** The resolved form of {@link AverageOptions}: every default filled in. */
export interface ResolvedAverageOptions {
  readonly select: AverageSelection;
  readonly weights: readonly number[] | undefined;
  readonly groups: readonly string[];
  readonly out: Location | undefined;
  readonly overwrite: boolean;
  readonly verify: boolean;
  readonly sync: boolean;
  readonly checksum: ChecksumAlgorithm;
  readonly shardBytes: number | undefined;
  readonly now: number | undefined;
  readonly threads: number | undefined;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates {@link AverageOptions}, reporting every problem in one `INVALID_ARGUMENT` error. */
export function resolveAverageOptions(options: AverageOptions = {}): ResolvedAverageOptions {
  const p = new Problems();
  const select: AverageSelection = options.select ?? { last: DEFAULT_AVERAGE_LAST };
  if (!isRecord(select)) p.add('select must be { last }, { steps } or { best }');
  else {
    const kinds = ['last', 'steps', 'best'].filter((k) => Object.hasOwn(select, k));
    if (kinds.length !== 1) p.add(`select must have exactly one of last, steps, best (got ${kinds.join(', ') || 'none'})`);
    if ('last' in select) p.check(isCount(select.last) && select.last > 0, `select.last must be a positive integer, got ${String(select.last)}`);
    if ('steps' in select) {
      const steps: unknown = select.steps;
      if (!Array.isArray(steps) || steps.length === 0) p.add('select.steps must be a non-empty array of steps');
      else if (p.check(steps.every(isCount), 'select.steps must hold non-negative integers')) {
        p.check(new Set(steps).size === steps.length, 'select.steps must not repeat a step');
      }
    }
    if ('best' in select) {
      const best: unknown = select.best;
      if (!isRecord(best)) p.add('select.best must be { k, metric, mode? }');
      else {
        p.check(isCount(best.k) && best.k > 0, `select.best.k must be a positive integer, got ${String(best.k)}`);
        p.check(typeof best.metric === 'string' && best.metric.length > 0, 'select.best.metric must be a non-empty string');
        p.check(best.mode === undefined || best.mode === 'min' || best.mode === 'max', 'select.best.mode must be "min" or "max"');
      }
    }
  }
  const weights = options.weights;
  if (weights !== undefined) {
    if (p.check(Array.isArray(weights) && weights.length > 0, 'weights must be a non-empty array of numbers')) {
      weights.forEach((w, i) => p.check(isPositive(w), `weights[${i}] must be a positive finite number, got ${String(w)}`));
    }
  }
  const groups = options.groups ?? ['model'];
  if (p.check(Array.isArray(groups) && groups.length > 0, 'groups must be a non-empty array of group names')) {
    for (const g of groups) p.check(typeof g === 'string' && isValidGroupName(g), `group name ${JSON.stringify(g)} is invalid`);
    p.check(new Set(groups).size === groups.length, 'groups must not repeat a group');
  }
  const checksum = options.checksum ?? 'crc32';
  p.check(checksum === 'crc32' || checksum === 'sha256', `checksum must be "crc32" or "sha256", got ${JSON.stringify(checksum)}`);
  if (options.shardBytes !== undefined) {
    p.check(isPositive(options.shardBytes) && Number.isSafeInteger(options.shardBytes), 'shardBytes must be a positive integer');
  }
  p.check(options.now === undefined || Number.isFinite(options.now), 'now must be a finite number of ms');
  p.check(options.threads === undefined || (isCount(options.threads) && options.threads <= MAX_THREADS), `threads must be an integer from 0 to ${MAX_THREADS}, got ${String(options.threads)}`);
  for (const key of ['overwrite', 'verify', 'sync'] as const) {
    p.check(options[key] === undefined || typeof options[key] === 'boolean', `${key} must be a boolean, got ${String(options[key])}`);
  }
  p.throwIfAny('INVALID_ARGUMENT', 'invalid averaging options');
  return {
    select,
    weights,
    groups,
    out: options.out,
    overwrite: options.overwrite ?? false,
    verify: options.verify ?? true,
    sync: options.sync ?? true,
    checksum,
    shardBytes: options.shardBytes,
    now: options.now,
    threads: options.threads,
  };
}

export { MAX_THREADS };
/**
 * Smallest output buffer of a worker-thread job: jobs of several small tensors rather than one each. Each
 * job costs a round trip between the threads, and the workers wait for the next one while this thread
 * takes its turn on a busy core: with one 2.56 MiB tensor per job they waited ~15% of the time (~140 ms
 * of a 0.8 s average of 8 × 256 MiB), with 8 MiB jobs ~3%. In interleaved runs the medians were 13-15%
 * lower (0.67 against 0.77 s over eight runs each) and the best times equal (0.60 s): the gain is in
 * the runs where other work competes for the cores. 16 MiB was no faster. Costs 3 × 8 MiB at most.
 */
const MIN_JOB_BYTES = 8 * 1024 * 1024;
/** Below this many bytes to read, starting worker threads costs more than they save (by default). */
const PARALLEL_MIN_BYTES = 1024 ** 3;

/** What {@link selectCheckpoints} needs to know about a checkpoint. */
export interface SelectionCandidate {
  readonly step: number;
  readonly metrics: Readonly<Record<string, number>>;
}

/** Result of {@link selectCheckpoints}. */
export interface Selection<T extends SelectionCandidate> {
  /** The chosen checkpoints, oldest first. */
  readonly selected: T[];
  /** How many the selection asked for. */
  readonly requested: number;
  /**
   * Where each selected checkpoint's weight sits in `weights` (explicit steps keep the caller's order;
   * otherwise it is `0, 1, …`).
   */
  readonly weightOrder: number[];
}

/**
 * Picks the checkpoints to average among `candidates` (pure). `{ last: N }` and `{ best }` return fewer
 * than asked when fewer exist (see `requested`); `{ steps }` throws `NOT_FOUND` listing every missing
 * step. Throws `NO_VALID_CHECKPOINT` when nothing is selected.
 *
 * @example
 * ```ts
 * selectCheckpoints([{ step: 1, metrics: {} }, { step: 2, metrics: {} }], { last: 8 }).selected; // both
 * ```
 */
export function selectCheckpoints<T extends SelectionCandidate>(candidates: readonly T[], select: AverageSelection): Selection<T> {
  const sorted = [...candidates].sort((a, b) => a.step - b.step);
  let selected: T[];
  let requested: number;
  let weightOrder: number[] | undefined;
  if ('steps' in select) {
    requested = select.steps.length;
    const byStep = new Map(sorted.map((c) => [c.step, c]));
    const missing = select.steps.filter((s) => !byStep.has(s));
    if (missing.length > 0) {
      throw new CkptError('NOT_FOUND', `no committed checkpoint for step${missing.length === 1 ? '' : 's'} ${missing.join(', ')}`, {
        received: missing,
      });
    }
    const order = select.steps.map((s, i) => [s, i] as const).sort((a, b) => a[0] - b[0]);
    selected = order.map(([s]) => byStep.get(s) as T);
    weightOrder = order.map(([, i]) => i);
  } else if ('last' in select) {
    requested = select.last;
    selected = sorted.slice(-select.last);
  } else {
    requested = select.best.k;
    const spec = { metric: select.best.metric, mode: select.best.mode ?? 'min' };
    selected = bestCandidates(sorted.map((c) => ({ ...c, time: 0, source: c })), spec, select.best.k)
      .map((c) => c.source)
      .sort((a, b) => a.step - b.step);
    if (selected.length === 0) {
      throw new CkptError('NO_VALID_CHECKPOINT', `no checkpoint records the metric "${select.best.metric}"`, {});
    }
  }
  if (selected.length === 0) throw new CkptError('NO_VALID_CHECKPOINT', 'there is no committed checkpoint to average', {});
  return { selected, requested, weightOrder: weightOrder ?? selected.map((_, i) => i) };
}

/**
 * The weights of `count` checkpoints, normalised to sum 1 (equal when `weights` is undefined). Throws
 * `INVALID_ARGUMENT` when the count differs or a weight is not a positive finite number.
 *
 * @example
 * ```ts
 * normalizeWeights([1, 1, 2], 3); // [0.25, 0.25, 0.5]
 * ```
 */
export function normalizeWeights(weights: readonly number[] | undefined, count: number): number[] {
  const raw = weights ?? Array.from({ length: count }, () => 1);
  const p = new Problems();
  p.check(raw.length === count, `${raw.length} weight${raw.length === 1 ? '' : 's'} given for ${count} selected checkpoint${count === 1 ? '' : 's'}`);
  raw.forEach((w, i) => p.check(isPositive(w), `weights[${i}] must be a positive finite number, got ${String(w)}`));
  const total = raw.reduce((a, b) => a + b, 0);
  p.check(Number.isFinite(total), 'the weights sum to infinity');
  p.throwIfAny('INVALID_ARGUMENT', 'invalid averaging weights', { expected: count, received: raw.length });
  return raw.map((w) => w / total);
}

/** Dtype and shape of a tensor, as a header declares it. */
export interface TensorShapeInfo {
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/** One checkpoint's tensors of a group, for {@link tensorMismatches}. */
export interface TensorSet {
  /** Shown in messages (`step-00000100`). */
  readonly label: string;
  /** Tensors of the group; undefined when the checkpoint does not have the group. */
  readonly tensors: ReadonlyMap<string, TensorShapeInfo> | undefined;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Every difference between the tensors of `group` in `reference` (the newest checkpoint) and in each of
 * `others`: a missing group, a tensor missing on either side, a different dtype or shape. One line per
 * problem; empty when they agree (pure).
 *
 * @example
 * ```ts
 * tensorMismatches('model', newest, [older]);
 * // ['group "model": tensor "w" has shape [2, 3] in step-00000100 but [3, 2] in step-00000300 (newest)']
 * ```
 */
export function tensorMismatches(group: string, reference: TensorSet, others: readonly TensorSet[]): string[] {
  const out: string[] = [];
  const ref = reference.tensors;
  const refLabel = `${reference.label} (newest)`;
  if (ref === undefined) return [`group "${group}" is missing from ${refLabel}`];
  for (const other of others) {
    const tensors = other.tensors;
    if (tensors === undefined) {
      out.push(`group "${group}" is missing from ${other.label}`);
      continue;
    }
    for (const [name, r] of ref) {
      const t = tensors.get(name);
      if (t === undefined) out.push(`group "${group}": tensor "${name}" is missing from ${other.label}`);
      else {
        if (t.dtype !== r.dtype) out.push(`group "${group}": tensor "${name}" is ${t.dtype} in ${other.label} but ${r.dtype} in ${refLabel}`);
        if (!sameShape(t.shape, r.shape)) {
          out.push(`group "${group}": tensor "${name}" has shape [${t.shape.join(', ')}] in ${other.label} but [${r.shape.join(', ')}] in ${refLabel}`);
        }
      }
    }
    for (const name of tensors.keys()) {
      if (!ref.has(name)) out.push(`group "${group}": tensor "${name}" of ${other.label} is missing from ${refLabel}`);
    }
  }
  return out;
}

/** Messages list at most this many problems (the error's `received` has them all). */
const MAX_LISTED = 20;

function listProblems(problems: readonly string[]): string {
  const shown = problems.slice(0, MAX_LISTED).join('; ');
  return problems.length > MAX_LISTED ? `${shown}; … and ${problems.length - MAX_LISTED} more` : shown;
}

/**
 * Largest read, in bytes. Each read costs this thread ~40 µs (waking for its completion) whatever its
 * size, ~40% of the time to hash and accumulate a MiB here; 4 MiB reads were measurably faster than 1
 * and 2 MiB ones, 8 MiB no faster (BENCHMARKS.md, averaging).
 */
export const AVERAGE_READ_BYTES = 4 * 1024 * 1024;
/** Reads kept in flight while the bytes of the previous one are hashed and accumulated. */
const READ_AHEAD = 2;
/** Read slots of the workspace: the ones in flight and the one in use. */
const SLOTS = READ_AHEAD + 1;

/**
 * One input file, opened once (lazily, with the backend's `openReader`) and read by ranges. With
 * verification, ranges consumed front to back in file order are hashed as they pass; whatever was not
 * hashed that way is read and hashed by `finish`, which then compares the checksum with the manifest.
 */
class SourceFile {
  private readonly hasher: Hasher | undefined;
  private next = 0;
  private readonly key: string;
  private opened: Promise<ObjectReader> | undefined;
  /** The reader, once `opened` resolved. */
  private open: ObjectReader | undefined;
  private closed = false;

  constructor(
    private readonly reader: CheckpointReader,
    private readonly file: string,
    private readonly size: number,
    private readonly checksum: string | undefined,
  ) {
    this.hasher = checksum === undefined ? undefined : createHasher(checksumAlgorithm(checksum));
    this.key = childKey(reader.key, file);
  }

  /** Starts reading `length` bytes at `offset` into `into` (one I/O request); `consume` the result. */
  read(offset: number, length: number, into: Uint8Array): Promise<Uint8Array> {
    if (length === 0) return Promise.resolve(into.subarray(0, 0));
    if (this.closed) return Promise.reject(new CkptError('CLOSED', `read of ${this.describe()} after averaging closed it`, {}));
    const fail = (e: unknown): never => {
      throw ioError(e, 'reading', this.describe(), { step: this.step });
    };
    // Once the file is open the read is issued right here, so that it runs on the thread pool while
    // this thread hashes and accumulates (a `then` would issue it only when this thread next waits).
    if (this.open !== undefined) return this.open.read(offset, length, into).catch(fail);
    return this.opening().then((r) => r.read(offset, length, into)).catch(fail);
  }

  /** The reader, opened by the first call (once). */
  private opening(): Promise<ObjectReader> {
    this.opened ??= openReader(this.reader.backend, this.key).then((r) => {
      if (!this.closed) this.open = r;
      return r;
    });
    return this.opened;
  }

  /** Opens the file now rather than at its first read (see {@link GroupSources.open}). */
  async openNow(): Promise<void> {
    if (this.closed || this.open !== undefined) return;
    try {
      await this.opening();
    } catch (e) {
      throw ioError(e, 'opening', this.describe(), { step: this.step });
    }
  }

  /** The open file's descriptor, when the backend has one (see {@link ObjectReader.fd}). */
  get fd(): number | undefined {
    return this.open?.fd;
  }

  /** Whether another thread can hash this file's pieces: no verification, or a crc32 to combine. */
  get combinable(): boolean {
    return this.hasher === undefined || this.hasher.append !== undefined;
  }

  /** The file as error messages name it. */
  describe(): string {
    return this.reader.describe(this.file);
  }

  /** The step of the checkpoint the file belongs to. */
  get step(): number {
    return this.reader.manifest.step;
  }

  /**
   * Continues the checksum over the `length` bytes at `offset` hashed elsewhere (their crc32 is `crc`),
   * when they continue the part of the file hashed so far.
   */
  consumeCrc(offset: number, length: number, crc: number): void {
    if (this.hasher?.append !== undefined && offset === this.next) {
      this.hasher.append(crc, length);
      this.next += length;
    }
  }

  /** Hashes `bytes`, read at `offset`, when they continue the part of the file hashed so far. */
  consume(offset: number, bytes: Uint8Array): void {
    if (this.hasher !== undefined && offset === this.next) {
      this.hasher.update(bytes);
      this.next += bytes.byteLength;
    }
  }

  /** Hashes the part of the file not hashed yet (reading ahead into the workspace's slots). */
  async finish(workspace: Workspace): Promise<void> {
    if (this.hasher === undefined || this.checksum === undefined) return;
    const ahead = new ReadAhead(workspace, this.rest(this.next, workspace.chunk));
    try {
      while ((await ahead.next()) !== undefined);
    } finally {
      await ahead.settle();
    }
    const digest = this.hasher.digest();
    if (digest !== this.checksum) {
      const where = this.describe();
      throw new CkptError('CHECKSUM_MISMATCH', `${where} is corrupt: checksum ${digest} does not match the manifest's ${this.checksum}`, {
        path: where,
        step: this.step,
        expected: this.checksum,
        received: digest,
      });
    }
  }

  /** The reads of the file from `from` to its end, in pieces of at most `chunk` bytes. */
  private *rest(from: number, chunk: number): Generator<ReadJob> {
    for (const [begin, length] of chunkRanges(this.size - from, chunk)) yield { source: this, offset: from + begin, length };
  }

  /** Closes the file if it was opened. Never throws; idempotent. */
  async close(): Promise<void> {
    const opened = this.opened;
    this.opened = undefined;
    this.open = undefined;
    this.closed = true;
    await opened?.then((r) => r.close()).catch(() => undefined);
  }
}

/** One read of a {@link ReadAhead}: `length` bytes at `offset` of `source`. */
interface ReadJob {
  readonly source: SourceFile;
  readonly offset: number;
  readonly length: number;
}

/**
 * Reads a sequence of ranges in order into the workspace's slots, keeping every other slot busy with a
 * read ahead of the one being used: the I/O runs on the thread pool while this thread hashes and
 * accumulates the previous bytes. The bytes returned by `next` stay valid until the following call.
 */
class ReadAhead {
  private readonly pending: { job: ReadJob; slot: number; bytes: Promise<Uint8Array> }[] = [];
  private readonly free: number[];
  private held: number | undefined;

  private readonly depth: number;

  constructor(
    private readonly workspace: Workspace,
    private readonly jobs: Iterator<ReadJob>,
  ) {
    this.free = Array.from({ length: workspace.slots }, (_, k) => k);
    this.depth = workspace.slots - 1;
  }

  private fill(): void {
    while (this.pending.length < this.depth && this.free.length > 0) {
      const it = this.jobs.next();
      if (it.done === true) return;
      const job = it.value;
      const slot = this.free.pop() as number;
      const bytes = job.source.read(job.offset, job.length, this.workspace.place(slot, job.offset, job.length));
      // Failures surface from `next`; this only keeps one not awaited yet from being reported as unhandled.
      bytes.catch(() => undefined);
      this.pending.push({ job, slot, bytes });
    }
  }

  /** The next range's bytes, hashed by its source (or undefined after the last). */
  async next(): Promise<{ job: ReadJob; bytes: Uint8Array } | undefined> {
    if (this.held !== undefined) this.free.push(this.held);
    this.held = undefined;
    this.fill();
    const head = this.pending.shift();
    if (head === undefined) return undefined;
    this.held = head.slot;
    const bytes = await head.bytes;
    this.fill();
    head.job.source.consume(head.job.offset, bytes);
    return { job: head.job, bytes };
  }

  /** Waits for the reads still in flight (after a failure), ignoring their outcome. */
  async settle(): Promise<void> {
    await Promise.allSettled(this.pending.map((p) => p.bytes));
    this.pending.length = 0;
  }
}

/** The files of one group across the selected checkpoints, opened for streaming. */
class GroupSources {
  /** `files[j]` maps a file name of checkpoint j to its source. */
  private readonly files: Map<string, SourceFile>[];
  private readAhead: ReadAhead | undefined;
  private started: Promise<void> | undefined;
  private attached: Workspace | undefined;

  constructor(
    readonly readers: readonly CheckpointReader[],
    readonly indexes: readonly Map<string, TensorLocation>[],
    group: string,
    readonly verify: boolean,
  ) {
    this.files = readers.map((reader) => {
      const sizes = new Map(reader.manifest.files.map((f) => [f.path, f]));
      return new Map(
        reader.groupFiles(group).map((file) => {
          const entry = sizes.get(file);
          return [file, new SourceFile(reader, file, entry?.bytes ?? 0, verify ? entry?.checksum : undefined)];
        }),
      );
    });
  }

  /** The memory reads go to; {@link attach}ed once the files are open. */
  get workspace(): Workspace {
    if (this.attached === undefined) throw new CkptError('INVALID_ARGUMENT', 'averaging: no workspace attached', {});
    return this.attached;
  }

  attach(workspace: Workspace): void {
    this.attached = workspace;
  }

  /** Every file of the group, once `open`ed, has a descriptor and can be hashed on another thread. */
  get parallelizable(): boolean {
    return this.files.every((files) => [...files.values()].every((f) => f.fd !== undefined && f.combinable));
  }

  /**
   * Hashes each file's header (everything before the first tensor) so that tensors then hash in order,
   * and starts reading `jobs()` ahead; the first call only (every stream starts at its first `read`, or
   * at its `end` when the group has no tensor).
   */
  begin(jobs: () => Iterator<ReadJob>): Promise<void> {
    return (this.started ??= this.start(jobs()));
  }

  /** Ends a group's stream: {@link begin}s if no tensor was read, then {@link finish}es and closes. */
  async end(jobs: () => Iterator<ReadJob>): Promise<void> {
    try {
      await this.begin(jobs);
      await this.finish();
    } finally {
      await this.close();
    }
  }

  private async start(jobs: Iterator<ReadJob>): Promise<void> {
    if (this.verify) {
      for (let j = 0; j < this.readers.length; j++) {
        const seen = new Set<string>();
        for (const loc of (this.indexes[j] as Map<string, TensorLocation>).values()) {
          if (seen.has(loc.file)) continue;
          seen.add(loc.file);
          const dataOffset = loc.offset - loc.info.begin;
          const source = this.source(j, loc.file);
          for (let at = 0; at < dataOffset; ) {
            const length = Math.min(dataOffset - at, this.workspace.chunk);
            source.consume(at, await source.read(at, length, this.workspace.place(0, at, length)));
            at += length;
          }
        }
      }
    }
    this.readAhead = new ReadAhead(this.workspace, jobs);
  }

  /**
   * Opens every file of the group at once. An open file stays readable when a writer's retention deletes
   * its checkpoint (POSIX semantics, and the memory backend's), so once everything is open the averaging
   * no longer races with retention.
   */
  async open(): Promise<void> {
    await Promise.all(this.files.flatMap((files) => [...files.values()].map((f) => f.openNow())));
  }

  source(j: number, file: string): SourceFile {
    return (this.files[j] as Map<string, SourceFile>).get(file) as SourceFile;
  }

  /** The read of `length` bytes at `begin` of tensor `name` of checkpoint `j`. */
  job(j: number, name: string, begin: number, length: number): ReadJob {
    const loc = (this.indexes[j] as Map<string, TensorLocation>).get(name) as TensorLocation;
    return { source: this.source(j, loc.file), offset: loc.offset + begin, length };
  }

  /** The file holding tensor `name` of checkpoint `j`, and the tensor's offset in it. */
  tensorFile(j: number, name: string): { source: SourceFile; offset: number } {
    const loc = (this.indexes[j] as Map<string, TensorLocation>).get(name) as TensorLocation;
    return { source: this.source(j, loc.file), offset: loc.offset };
  }

  /** The next range read ahead, hashed. */
  async next(): Promise<Uint8Array> {
    const got = await (this.readAhead as ReadAhead).next();
    if (got === undefined) throw new CkptError('INVALID_ARGUMENT', 'averaging read past its plan', {});
    return got.bytes;
  }

  /** Hashes what was not hashed in order and checks every file's checksum. */
  async finish(): Promise<void> {
    for (const files of this.files) for (const f of files.values()) await f.finish(this.workspace);
  }

  /** Waits for reads in flight and closes every file. Never throws; idempotent. */
  async close(): Promise<void> {
    await this.readAhead?.settle();
    for (const files of this.files) for (const f of files.values()) await f.close();
  }
}

/** Which checkpoints' bytes a tensor is read from: `indexes[j]` for each `j` listed, in order. */
type ReadPlan = (spec: TensorSpec) => readonly number[];

/** The byte ranges of a tensor of `bytes` bytes split into chunks: [begin, length] pairs. */
function* chunkRanges(bytes: number, chunk: number): Generator<[number, number]> {
  for (let begin = 0; begin < bytes; begin += chunk) yield [begin, Math.min(chunk, bytes - begin)];
}

/** Every read of a group, in the order the stream consumes them: by tensor, chunk, then checkpoint. */
function* groupJobs(sources: GroupSources, specs: readonly TensorSpec[], sizes: readonly number[], plan: ReadPlan): Generator<ReadJob> {
  for (let i = 0; i < specs.length; i++) {
    const spec = specs[i] as TensorSpec;
    const from = plan(spec);
    for (const [begin, length] of chunkRanges(sizes[i] as number, sources.workspace.chunk)) {
      for (const j of from) yield sources.job(j, spec.name, begin, length);
    }
  }
}

function specsOf(index: Map<string, TensorLocation>): TensorSpec[] {
  return [...index].map(([name, loc]) => ({ name, dtype: loc.info.dtype, shape: loc.info.shape }));
}

/** What a group's stream reads: the newest reader's tensors, their sizes, the weights' sum, the reads of each. */
function streamPlan(sources: GroupSources, weights: readonly number[] | undefined) {
  const newest = sources.readers.length - 1;
  const index = sources.indexes[newest] as Map<string, TensorLocation>;
  const specs = specsOf(index);
  const sizes = specs.map((s) => {
    const info = (index.get(s.name) as TensorLocation).info;
    return info.end - info.begin;
  });
  const total = weights?.reduce((a, b) => a + b, 0) ?? 1;
  const all = sources.readers.map((_, j) => j);
  // Integer and boolean tensors (counters, masks) are not averaged: the newest one is kept. With
  // verification the older ones are read too, only so that their files keep hashing front to back.
  const plan: ReadPlan = (spec) => (weights !== undefined && isAveragedDType(spec.dtype)) || sources.verify ? all : [newest];
  return { newest, specs, sizes, total, plan };
}

/**
 * {@link groupStream} computed by the worker threads of `pool`: consecutive tensors that fit in one
 * output buffer form a job, which the workers read (from the descriptors of the open files), hash and
 * accumulate tile by tile; their crc32s are combined into the files' checksums here, in file order. Jobs
 * take the pool's output buffers in turn, and a job starts as soon as the tensors last in its buffer
 * were written: with three buffers, one job ahead of the one being read, so the workers go from one job
 * to the next without waiting for this thread. The numerics are the same kernels in the same order, so
 * the bytes are those of the single-thread stream.
 */
function parallelGroupStream(sources: GroupSources, weights: readonly number[] | undefined, pool: TilePool): TensorStream {
  const { newest, specs, sizes, total, plan } = streamPlan(sources, weights);
  const capacity = (pool.outputs[0] as Uint8Array).byteLength;
  // Jobs: `starts[b]` is the first tensor of job b; tensor i sits at `offsets[i]` of its job's buffer.
  const starts: number[] = [];
  const jobOf: number[] = [];
  const offsets: number[] = [];
  let used = 0;
  let tiles = 0;
  for (let i = 0; i < specs.length; i++) {
    const bytes = sizes[i] as number;
    let offset = Math.ceil(used / 64) * 64;
    if (starts.length === 0 || offset + bytes > capacity || i - (starts[starts.length - 1] as number) >= MAX_JOB_TENSORS || tiles + tileCount(bytes) > pool.maxTiles) {
      starts.push(i);
      offset = 0;
      tiles = 0;
    }
    jobOf.push(starts.length - 1);
    offsets.push(offset);
    used = offset + bytes;
    tiles += tileCount(bytes);
  }
  const jobs: Promise<void>[] = [];

  /** Job b's tensors and the files each is read from. */
  const jobTensors = (b: number) => {
    const end = starts[b + 1] ?? specs.length;
    return specs.slice(starts[b], end).map((spec, t) => {
      const i = (starts[b] as number) + t;
      const from = plan(spec);
      return { i, spec, from, files: from.map((j) => sources.tensorFile(j, spec.name)) };
    });
  };

  const runJob = async (b: number): Promise<void> => {
    const tensors = jobTensors(b);
    let crcs: Uint32Array;
    try {
      crcs = await pool.run({
        output: b % OUTPUTS,
        divisor: total,
        hash: sources.verify,
        tensors: tensors.map(({ i, spec, from, files }) => ({
          dtype: spec.dtype,
          at: offsets[i] as number,
          length: sizes[i] as number,
          reads: files.map((f) => ({ fd: f.source.fd as number, offset: f.offset })),
          weights: weights !== undefined && isAveragedDType(spec.dtype) ? from.map((j) => weights[j] as number) : undefined,
          keep: from.indexOf(newest),
        })),
      });
    } catch (e) {
      if (!(e instanceof JobFailed)) throw e;
      throw jobError(e.failure, tensors[e.failure.tensor]?.files[e.failure.read]?.source);
    }
    if (!sources.verify) return;
    // The crc32 of every tile of every read, combined into each file's checksum in file order.
    let tile = 0;
    for (const { i, files } of tensors) {
      const bytes = sizes[i] as number;
      for (let at = 0; at === 0 || at < bytes; at += TILE, tile++) {
        const length = Math.min(TILE, bytes - at);
        files.forEach((f, k) => f.source.consumeCrc(f.offset + at, length, crcs[tile * pool.reads + k] as number));
      }
    }
  };

  return {
    specs,
    alternating: true,
    async read(i) {
      await sources.begin(NO_READS);
      // Tensors up to i - 2 are written (see TensorStream.alternating): a job may start once the
      // tensors of the job that used its buffer last (OUTPUTS jobs before) are.
      for (let b = jobs.length; b < starts.length; b++) {
        if (b >= OUTPUTS && (starts[b - OUTPUTS + 1] as number) - 1 > i - 2) break;
        const job = runJob(b);
        // Awaited by the read of its first tensor; a failure after the save gave up is not unhandled.
        job.catch(() => undefined);
        jobs.push(job);
      }
      const b = jobOf[i] as number;
      const job = jobs[b];
      if (job === undefined) throw new CkptError('INVALID_ARGUMENT', `averaging: tensor ${i} read before the tensors before it were written`, {});
      await job;
      return (pool.outputs[b % OUTPUTS] as Uint8Array).subarray(offsets[i], (offsets[i] as number) + (sizes[i] as number));
    },
    end: () => sources.end(NO_READS),
  };
}

/** No reads ahead on this thread: the parallel stream's workers read the tensors. */
const NO_READS = (): Iterator<ReadJob> => [][Symbol.iterator]();

/** The error for a failure a worker reported while reading `source` (undefined: not a read). */
function jobError(failure: JobFailed['failure'], source: SourceFile | undefined): CkptError {
  if (source === undefined) return new CkptError('IO_ERROR', `averaging worker thread failed: ${failure.message}`, {});
  return readFailure(failure, source.describe(), source.step, 'averaging read');
}

/**
 * A group streamed tensor by tensor from `sources` (the last reader is the newest): with `weights` (raw,
 * one per reader) float tensors are averaged, and every other tensor is the newest's; without, the
 * group is copied. Each tensor is produced chunk by chunk into one of the two `outputs`, alternately, so
 * that it overlaps the write of the previous tensor, while the reads of the next chunks, and of the next
 * tensor, are already in flight.
 */
function groupStream(sources: GroupSources, weights: readonly number[] | undefined, outputs: readonly Uint8Array[]): TensorStream {
  const { newest, specs, sizes, total, plan } = streamPlan(sources, weights);
  const { workspace } = sources;
  const jobs = (): Iterator<ReadJob> => groupJobs(sources, specs, sizes, plan);
  return {
    specs,
    alternating: true,
    async read(i) {
      await sources.begin(jobs);
      const spec = specs[i] as TensorSpec;
      const from = plan(spec);
      // Tensor i goes to output i mod 2: the previous tensor may still be being written.
      const into = (outputs[i % 2] as Uint8Array).subarray(0, sizes[i]);
      const dtype = spec.dtype;
      for (const [begin, length] of chunkRanges(into.byteLength, workspace.chunk)) {
        if (weights !== undefined && isAveragedDType(dtype)) {
          for (const j of from) workspace.accumulate(await sources.next(), dtype, weights[j] as number, j === from[0]);
          workspace.finish(total, dtype, into.subarray(begin, begin + length));
        } else {
          for (const j of from) {
            const bytes = await sources.next();
            if (j === newest) into.set(bytes, begin);
          }
        }
      }
      return into;
    },
    end: () => sources.end(jobs),
  };
}

async function resolveOut(root: ResolvedLocation, out: Location | undefined): Promise<ResolvedLocation> {
  if (out === undefined) return { backend: root.backend, key: childKey(root.key, DEFAULT_AVERAGE_DIR) };
  return resolveItem(out);
}

function parentAndBase(key: string): { parent: string; base: string } {
  const slash = key.lastIndexOf('/');
  return { parent: slash < 0 ? '' : key.slice(0, slash), base: key.slice(slash + 1) };
}

/**
 * Writes `state` at `key`, replacing a committed checkpoint there. With atomic rename the new checkpoint
 * is committed under a temp name first, then the old one is renamed to `<name>.replaced-<id>` (neither a
 * temp name that a manager would clean up nor a step name it would list, so a crash between the two
 * renames loses nothing, and the next averaging into `key` renames it back: {@link recoverReplaced}),
 * the new one takes its place, and the old one is deleted.
 */
async function replaceCheckpoint(
  backend: Backend,
  key: string,
  state: StreamingTrainState,
  save: Parameters<typeof writeCheckpoint>[3],
): Promise<Manifest> {
  const { parent, base } = parentAndBase(key);
  if (!backend.capabilities.atomicRename || backend.rename === undefined) {
    // No rename: remove the manifest first so that no reader sees a mix of old and new files.
    try {
      await backend.delete(childKey(key, 'manifest.json'));
      await backend.delete(`${key}/`);
    } catch (e) {
      throw ioError(e, 'removing the checkpoint to replace', backend.describe(key));
    }
    return writeCheckpoint(backend, key, state, save);
  }
  const rename = backend.rename.bind(backend);
  const fresh = childKey(parent, `${TEMP_PREFIX}${base}-new-${randomId(4)}`);
  const manifest = await writeCheckpoint(backend, fresh, state, save);
  const old = childKey(parent, `${base}.replaced-${randomId(4)}`);
  try {
    await rename(key, old);
    try {
      await rename(fresh, key);
    } catch (e) {
      await rename(old, key).catch(() => undefined);
      throw e;
    }
    if (save?.sync !== false) await backend.syncDir(parent);
    await backend.delete(`${old}/`);
  } catch (e) {
    await backend.delete(`${fresh}/`).catch(() => undefined);
    throw ioError(e, 'replacing', backend.describe(key));
  }
  return manifest;
}

/**
 * Finishes a replacement of the checkpoint at `key` that a crash interrupted (see
 * {@link replaceCheckpoint}). Between its two renames the last committed output is only at
 * `<name>.replaced-<id>`: it is renamed back to `key`. After the second rename, one left there is the
 * replaced checkpoint that was not deleted yet: it is deleted. Nothing to do without atomic rename.
 * Returns whether `key` then holds a committed checkpoint.
 */
async function recoverReplaced(backend: Backend, key: string, sync: boolean): Promise<boolean> {
  let exists = await backend.exists(childKey(key, 'manifest.json'));
  if (!backend.capabilities.atomicRename || backend.rename === undefined) return exists;
  const { parent, base } = parentAndBase(key);
  const name = `${base}.replaced-`;
  const aside = (await backend.list(parent))
    .filter((n) => n.startsWith(name) && /^[0-9a-f]{8}\/$/.test(n.slice(name.length)))
    .map((n) => childKey(parent, n.slice(0, -1)));
  for (const old of aside) {
    // A renamed checkpoint directory is complete: its manifest is written last.
    if (!exists && (await backend.exists(childKey(old, 'manifest.json')))) {
      await backend.rename(old, key);
      if (sync) await backend.syncDir(parent);
      exists = true;
    } else {
      await backend.delete(`${old}/`);
    }
  }
  return exists;
}

/**
 * Averages the weights of several checkpoints of the run at `run` and writes the result as one committed
 * checkpoint (default `<run>/avg`, which a checkpoint manager never lists or cleans up, since it is not
 * named `step-…`). Returns what was averaged.
 *
 * - Selection: the last N (default 8, OpenNMT-tf's default), explicit steps, or the best K by a metric;
 *   only committed checkpoints with a valid manifest are candidates. When the run has fewer than N (or K)
 *   the ones there are averaged and `requested` says how many were asked for.
 * - Averaged groups (default `model`) must agree across the checkpoints in tensor names, dtypes and
 *   shapes; otherwise `INCOMPATIBLE_TENSORS` lists every mismatch before anything is written. F64, F32,
 *   F16 and BF16 tensors are averaged in float64 and rounded once to their dtype (see `accumulate.ts` for
 *   how this differs from OpenNMT-tf); integer and boolean tensors are copied from the newest; F8 tensors
 *   are refused (`UNSUPPORTED`).
 * - The written checkpoint takes its step, epoch, state.json, hyper-parameters, run id and every other
 *   group (optimizer, …) from the newest selected checkpoint, so training resumes from it with averaged
 *   weights; `parentStep` is that step; metrics are left empty (the averaged weights were never
 *   evaluated); `metadata.averaged` records `{ method, steps, weights, groups, selection }`.
 * - Streaming: every input file is opened at the start (after which a writer deleting its checkpoint
 *   cannot affect it on a POSIX file system) and each output tensor is produced while the previous one
 *   is written (WebAssembly SIMD for F32, F64 and BF16). On worker threads (`threads`; by default one
 *   per core, at most 4, from 1 GiB of local files to read), each worker reads 128 KiB tiles of every
 *   input itself and hashes and accumulates them while they are in its core's cache; this thread
 *   combines the crc32s in file order and writes. On this thread (other backends, sha256 inputs,
 *   `threads: 0`), tensors are read in chunks of up to 4 MiB, two reads ahead of the chunk being hashed
 *   and accumulated. Memory is two (on this thread) or three (with workers) times the largest tensor's
 *   bytes for the output buffers, plus ~32 MiB of read slots and accumulator and a few MiB per worker
 *   thread, whatever the number or size of the checkpoints; the bytes written are the same either way.
 * - It does not take the run's writer lock, so it can run beside training. When retention deletes a
 *   selected checkpoint before its files are open, the averaging starts over with a fresh selection (up
 *   to 25 times); with explicit `steps` it fails (`NOT_FOUND` / `FILE_MISSING` / `MANIFEST_MISSING`). A
 *   failed averaging leaves nothing behind.
 *
 * Errors: `INVALID_ARGUMENT` (options, weights), `NOT_FOUND` (explicit steps), `NO_VALID_CHECKPOINT`,
 * `INCOMPATIBLE_TENSORS`, `UNSUPPORTED`, `CHECKSUM_MISMATCH` (a corrupt input), `ALREADY_EXISTS`
 * (output exists and no `overwrite`), I/O errors.
 *
 * @example
 * ```ts
 * const r = await averageCheckpoints('/runs/exp1', { select: { last: 5 } });
 * const { tensors } = await load(r.location); // averaged model, optimizer of the newest
 * ```
 */
export async function averageCheckpoints(run: Location, options: AverageOptions = {}): Promise<AverageResult> {
  const opts = resolveAverageOptions(options);
  const root = await resolveRoot(run);
  for (let attempt = 1; ; attempt++) {
    const selected: string[] = [];
    try {
      return await averageOnce(root, opts, selected);
    } catch (e) {
      // A writer saving beside the averaging may delete a selected checkpoint (retention) while it is
      // read: it vanished rather than failed, and the run is listed and selected again. Explicit steps
      // are not replaced by others. Nothing was committed: a failed averaging leaves nothing behind.
      if (!isCkptError(e) || 'steps' in opts.select || attempt >= LIST_ATTEMPTS || !(await anyVanished(root, selected))) throw e;
    }
  }
}

/** True when one of the checkpoints `names` of the run at `root` is gone (see `vanished`). */
async function anyVanished(root: ResolvedLocation, names: readonly string[]): Promise<boolean> {
  for (const name of names) if (await vanished(root.backend, root.key, name)) return true;
  return false;
}

/** One attempt of {@link averageCheckpoints}; `selected` receives the names of the checkpoints it chose. */
async function averageOnce(root: ResolvedLocation, opts: ResolvedAverageOptions, selectedNames: string[]): Promise<AverageResult> {
  const { backend } = root;
  const { valid, invalid } = await listRun(backend, root.key);
  if ('steps' in opts.select) {
    const bad = invalid.find((x) => (opts.select as { steps: readonly number[] }).steps.includes(x.step));
    if (bad !== undefined) throw bad.error;
  }
  let selection: Selection<CheckpointInfo>;
  try {
    selection = selectCheckpoints(valid, opts.select);
  } catch (e) {
    if (isCkptError(e)) {
      throw new CkptError(e.code, `${e.message} in ${backend.describe(root.key)}${describeInvalid(invalid)}`, {
        path: backend.describe(root.key),
        ...(e.received === undefined ? {} : { received: e.received }),
        cause: e,
      });
    }
    throw e;
  }
  const { selected, requested, weightOrder } = selection;
  selectedNames.push(...selected.map((c) => c.name));
  const rawWeights = opts.weights === undefined ? selected.map(() => 1) : weightOrder.map((i) => opts.weights?.[i] as number);
  if (opts.weights !== undefined && opts.weights.length !== selected.length) {
    throw new CkptError(
      'INVALID_ARGUMENT',
      `${opts.weights.length} weights given for ${selected.length} selected checkpoint${selected.length === 1 ? '' : 's'} (steps ${selected.map((c) => c.step).join(', ')})`,
      { expected: selected.length, received: opts.weights.length },
    );
  }
  const weights = normalizeWeights(rawWeights, selected.length);
  // Worker threads start loading now, while this thread opens the checkpoints (see `threads`).
  const pool = startPool(threadCount(opts, selected));
  try {
    return await averageSelected(root, opts, { valid, invalid, selected, requested, rawWeights, weights }, pool);
  } finally {
    await pool?.close();
  }
}

/** How many worker threads to start for averaging `selected` (see `AverageOptions.threads`). */
function threadCount(opts: ResolvedAverageOptions, selected: readonly CheckpointInfo[]): number {
  if (opts.threads !== undefined) return opts.threads;
  return defaultThreads(bytesToRead(selected.map((c) => c.manifest), opts.groups), availableParallelism());
}

/**
 * The tensor bytes an averaging of the checkpoints with these manifests (oldest first) reads, from the
 * manifests: the averaged `groups` of every checkpoint, every other group of the newest once.
 */
export function bytesToRead(manifests: readonly Pick<Manifest, 'groups'>[], groups: readonly string[]): number {
  let bytes = 0;
  manifests.forEach((m, j) => {
    for (const [group, g] of Object.entries(m.groups)) if (groups.includes(group) || j === manifests.length - 1) bytes += g.bytes;
  });
  return bytes;
}

/**
 * The worker threads an averaging that reads `bytes` starts by default on a machine of `cores` cores:
 * one per core, at most 4, from 1 GiB to read; none below.
 */
export function defaultThreads(bytes: number, cores: number): number {
  return bytes >= PARALLEL_MIN_BYTES ? coreThreads(cores) : 0;
}

/** The part of {@link averageOnce} after the selection: checks, then streams the average into the output. */
async function averageSelected(
  root: ResolvedLocation,
  opts: ResolvedAverageOptions,
  chosen: {
    valid: readonly CheckpointInfo[];
    invalid: readonly InvalidEntry[];
    selected: readonly CheckpointInfo[];
    requested: number;
    rawWeights: readonly number[];
    weights: number[];
  },
  pool: TilePool | undefined,
): Promise<AverageResult> {
  const { backend } = root;
  const { valid, invalid, selected, requested, rawWeights, weights } = chosen;
  const out = await resolveOut(root, opts.out);
  const outWhere = out.backend.describe(out.key);
  for (const c of [...valid, ...invalid]) {
    const where = backend.describe(childKey(root.key, c.name));
    if (outWhere === where || outWhere.startsWith(`${where}/`)) {
      throw new CkptError('INVALID_ARGUMENT', `the output ${outWhere} would replace or go inside checkpoint ${c.name} of the run`, { path: outWhere });
    }
  }
  let exists: boolean;
  try {
    exists = await recoverReplaced(out.backend, out.key, opts.sync);
  } catch (e) {
    throw ioError(e, 'recovering an interrupted replacement of', outWhere);
  }
  if (exists && !opts.overwrite) {
    throw new CkptError('ALREADY_EXISTS', `a checkpoint already exists at ${outWhere} (pass overwrite: true, or --overwrite, to replace it)`, {
      path: outWhere,
    });
  }

  // The checkpoints' manifests, then the averaged groups' headers, a few requests at a time (see
  // HEADER_CONCURRENCY); a failure is reported for the oldest checkpoint that fails, as one at a time.
  const readers = await mapSettled(selected, HEADER_CONCURRENCY, (c) => CheckpointReader.open(backend, childKey(root.key, c.name)));
  const newest = readers[readers.length - 1] as CheckpointReader;
  const newestInfo = selected[selected.length - 1] as CheckpointInfo;

  // Everything is checked before anything is written.
  const problems: string[] = [];
  const unsupported: string[] = [];
  const indexes = new Map<string, Map<string, TensorLocation>[]>();
  const pairs = opts.groups.flatMap((group) => readers.map((reader) => ({ group, reader })));
  const headers = await mapSettled(pairs, HEADER_CONCURRENCY, async ({ group, reader }) =>
    Object.hasOwn(reader.manifest.groups, group) ? reader.index(group) : undefined,
  );
  for (const [g, group] of opts.groups.entries()) {
    const sets: TensorSet[] = [];
    const found: Map<string, TensorLocation>[] = [];
    for (let j = 0; j < readers.length; j++) {
      const index = headers[g * readers.length + j];
      if (index !== undefined) found.push(index);
      sets.push({ label: (selected[j] as CheckpointInfo).name, tensors: index === undefined ? undefined : infoMap(index) });
    }
    problems.push(...tensorMismatches(group, sets[sets.length - 1] as TensorSet, sets.slice(0, -1)));
    indexes.set(group, found);
    const newestIndex = sets[sets.length - 1]?.tensors;
    for (const [name, t] of newestIndex ?? []) {
      if (t.dtype === 'F8_E4M3' || t.dtype === 'F8_E5M2') unsupported.push(`group "${group}": tensor "${name}" is ${t.dtype}`);
    }
  }
  if (problems.length > 0) {
    throw new CkptError(
      'INCOMPATIBLE_TENSORS',
      `cannot average ${selected.map((c) => c.name).join(', ')} of ${backend.describe(root.key)}: ${problems.length} mismatch${problems.length === 1 ? '' : 'es'}: ${listProblems(problems)}`,
      { path: backend.describe(root.key), received: problems },
    );
  }
  if (unsupported.length > 0) {
    throw new CkptError('UNSUPPORTED', `averaging 8-bit float tensors is not supported: ${listProblems(unsupported)}`, {
      path: newest.describe(),
      received: unsupported,
    });
  }

  const copied = Object.keys(newest.manifest.groups).filter((g) => !opts.groups.includes(g));
  const copiedIndexes = new Map((await mapSettled(copied, HEADER_CONCURRENCY, async (group) => [group, await newest.index(group)] as const)));

  let maxBytes = 0;
  for (const index of [...[...indexes.values()].map((l) => l[l.length - 1] as Map<string, TensorLocation>), ...copiedIndexes.values()]) {
    for (const loc of index.values()) maxBytes = Math.max(maxBytes, loc.info.end - loc.info.begin);
  }

  const groupNames = Object.keys(newest.manifest.groups);
  const sources = groupNames.map((group) =>
    opts.groups.includes(group)
      ? new GroupSources(readers, indexes.get(group) ?? [], group, opts.verify)
      : new GroupSources([newest], [copiedIndexes.get(group) as Map<string, TensorLocation>], group, opts.verify),
  );

  const steps = selected.map((c) => c.step);
  const m = newest.manifest;
  const selectionJson: JsonValue =
    'last' in opts.select
      ? { last: opts.select.last }
      : 'steps' in opts.select
        ? { steps: [...opts.select.steps] }
        : { best: { k: opts.select.best.k, metric: opts.select.best.metric, mode: opts.select.best.mode ?? 'min' } };
  const versions = Object.fromEntries(Object.entries(m.versions).filter(([k]) => k !== 'ckpt' && k !== 'node'));
  const tensors: Record<string, TensorStream> = {};
  const state: StreamingTrainState = {
    step: m.step,
    ...(m.epoch === null ? {} : { epoch: m.epoch }),
    tensors,
    state: await newest.state(opts.verify),
    metrics: {},
    hyperParameters: m.hyperParameters,
    metadata: {
      ...m.metadata,
      averaged: { method: AVERAGE_METHOD, steps, weights, groups: [...opts.groups], selection: selectionJson, runId: m.runId },
    },
    versions,
  };
  const saveOptions = {
    checksum: opts.checksum,
    sync: opts.sync,
    runId: m.runId,
    parentStep: newestInfo.step,
    ...(opts.shardBytes === undefined ? {} : { shardBytes: opts.shardBytes }),
    ...(opts.now === undefined ? {} : { now: opts.now }),
  };
  let manifest: Manifest;
  let threads = 0;
  try {
    for (const s of sources) await s.open();
    // Worker threads only for local files hashed with crc32 (or not verified), once they have loaded.
    if (pool !== undefined && sources.every((s) => s.parallelizable) && (await pool.ready)) {
      pool.configure(Math.max(maxBytes, MIN_JOB_BYTES), readers.length);
      threads = pool.size;
    } else {
      // Idle workers would otherwise live until the single-thread average ends.
      await pool?.close();
      pool = undefined;
    }
    // Allocated once and reused for every tensor and group (fresh memory is slow to touch the first
    // time): the read slots, one chunk's float64 accumulator and, on this thread, two output tensors
    // (one is written while the next is produced). With worker threads this thread only hashes headers
    // (and remainders read out of order) through it.
    const workspace = new Workspace({
      chunk: Math.min(AVERAGE_READ_BYTES, Math.max(8, Math.ceil(maxBytes / 8) * 8)),
      slots: SLOTS,
      ...(pool === undefined ? { outputs: { count: 2, bytes: maxBytes } } : {}),
    });
    groupNames.forEach((group, g) => {
      const s = sources[g] as GroupSources;
      s.attach(workspace);
      const w = opts.groups.includes(group) ? rawWeights : undefined;
      tensors[group] = pool === undefined ? groupStream(s, w, workspace.outputs) : parallelGroupStream(s, w, pool);
    });
    manifest = exists ? await replaceCheckpoint(out.backend, out.key, state, saveOptions) : await writeCheckpoint(out.backend, out.key, state, saveOptions);
  } finally {
    // The workers stop before the files they read are closed. A failed save does not end its streams:
    // close whatever they left open.
    await pool?.close();
    for (const s of sources) await s.close();
  }
  return {
    manifest,
    location: outWhere,
    steps,
    weights,
    requested,
    averaged: [...opts.groups],
    copied,
    threads,
    ignored: invalid.map((x) => ({ step: x.step, name: x.name, code: x.error.code })),
  };
}

/** Worker threads for the averaging, or undefined where they cannot be created (the calling thread then works). */
function startPool(threads: number): TilePool | undefined {
  if (threads === 0) return undefined;
  try {
    return TilePool.start(threads);
  } catch {
    return undefined;
  }
}

function describeInvalid(invalid: readonly InvalidEntry[]): string {
  if (invalid.length === 0) return '';
  return ` (invalid, not considered: ${invalid.map((x) => `${x.name}: ${x.error.code}`).join(', ')})`;
}

function infoMap(index: Map<string, TensorLocation>): Map<string, TensorShapeInfo> {
  return new Map([...index].map(([name, loc]) => [name, { dtype: loc.info.dtype, shape: loc.info.shape }]));
}

