import { CkptError, ioError, isCkptError } from '../errors.js';
import {
  type ChecksumAlgorithm,
  type JsonValue,
  type Manifest,
  type ManifestFile,
  type ManifestGroup,
  MANIFEST_FORMAT_VERSION,
  isValidGroupName,
} from '../format/manifest.js';
import { encodeSafetensors } from '../format/safetensors.js';
import { Problems, isCount, isPositive } from '../problems.js';
import type { Backend, ObjectWriter } from '../storage/backend.js';
import { type DType, isDType } from '../tensor/dtype.js';
import { type TensorMap, byteLength, validateTensor } from '../tensor/tensor.js';
import { VERSION } from '../version.js';
import { allocReadBuffer } from '../buffers.js';
import { createHasher, sealManifest } from './checksum.js';
import { childKey } from './location.js';
import type { TrainState } from './types.js';

/** Options of a save. All optional. */
export interface SaveOptions {
  /**
   * Checksum written to the manifest for every file, computed while writing. crc32 detects corruption
   * at memory speed; sha256 also resists deliberate tampering but is ~2.5x slower here.
   * @default 'crc32'
   */
  readonly checksum?: ChecksumAlgorithm;
  /**
   * fsync every file, the directory and its parent so the checkpoint survives power loss.
   * @default true
   */
  readonly sync?: boolean;
  /**
   * A tensor group larger than this many bytes is split into shards
   * (`model-00001-of-00003.safetensors` + `model.safetensors.index.json`, the Hugging Face layout).
   * @default 4 GiB
   */
  readonly shardBytes?: number;
  /** Run identifier recorded in the manifest. @default a random id */
  readonly runId?: string;
  /** Step this run was restored from, recorded as lineage. @default null */
  readonly parentStep?: number | null;
  /** Time recorded as `createdAt` (ms since epoch). @default Date.now() */
  readonly now?: number;
}

/** Name, dtype and shape of a tensor whose bytes a {@link TensorStream} produces later. */
export interface TensorSpec {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/**
 * A tensor group produced while it is written, so that a save holds one tensor in memory instead of the
 * whole group (checkpoint averaging streams this way). The safetensors header is computed from `specs`
 * before any data is requested.
 *
 * Call order: `read(0)`, `read(1)`, … exactly once each, in order (a sharded group goes through the
 * shards in order); each call starts only after the bytes returned by the previous one were written, so
 * a source may return the same buffer every time (unless it sets {@link TensorStream.alternating}).
 * Then `end()`, once, after the group's last file is closed and before the checkpoint is committed; a
 * rejection of `read` or `end` aborts the save (and removes its partial files).
 */
export interface TensorStream {
  /** The tensors, in the order they are written. */
  readonly specs: readonly TensorSpec[];
  /**
   * With `true`, the bytes returned by `read(i)` stay unchanged until `read(i + 2)` is called (the source
   * alternates between two buffers, or returns fresh ones), and `read(i + 1)` is called while they are
   * still being written: producing a tensor overlaps writing the previous one. `read(i + 2)` is called
   * only after the bytes of `read(i)` were written. @default false
   */
  readonly alternating?: boolean;
  /** The bytes of `specs[index]`: exactly dtype size × elements long, little-endian. */
  read(index: number): Promise<Uint8Array>;
  /** Called once after the last tensor was written (also for a group without tensors). */
  end?(): Promise<void>;
}

/** A {@link TrainState} whose tensor groups may also be {@link TensorStream}s (see {@link writeCheckpoint}). */
export interface StreamingTrainState extends Omit<TrainState, 'tensors'> {
  readonly tensors: Readonly<Record<string, TensorMap | TensorStream>>;
}

/** The resolved form of {@link SaveOptions}. */
export interface ResolvedSaveOptions {
  readonly checksum: ChecksumAlgorithm;
  readonly sync: boolean;
  readonly shardBytes: number;
  readonly runId: string;
  readonly parentStep: number | null;
  readonly now?: number;
}

/** Default shard size: 4 GiB. */
export const DEFAULT_SHARD_BYTES = 4 * 1024 ** 3;

/** A random identifier (run ids, temp directory suffixes). */
export function randomId(bytes = 8): string {
  const b = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** Validates {@link SaveOptions}, reporting every problem in one `INVALID_ARGUMENT` error. */
export function resolveSaveOptions(options: SaveOptions = {}): ResolvedSaveOptions {
  const p = new Problems();
  const checksum = options.checksum ?? 'crc32';
  p.check(checksum === 'crc32' || checksum === 'sha256', `checksum must be "crc32" or "sha256", got ${JSON.stringify(checksum)}`);
  const shardBytes = options.shardBytes ?? DEFAULT_SHARD_BYTES;
  p.check(isPositive(shardBytes) && Number.isSafeInteger(shardBytes), 'shardBytes must be a positive integer');
  const parentStep = options.parentStep ?? null;
  p.check(parentStep === null || isCount(parentStep), 'parentStep must be null or a non-negative integer');
  const runId = options.runId ?? randomId();
  p.check(typeof runId === 'string' && runId.length > 0, 'runId must be a non-empty string');
  p.check(options.now === undefined || Number.isFinite(options.now), 'now must be a finite number of ms');
  p.throwIfAny('INVALID_ARGUMENT', 'invalid save options');
  return {
    checksum,
    sync: options.sync ?? true,
    shardBytes,
    runId,
    parentStep,
    ...(options.now === undefined ? {} : { now: options.now }),
  };
}

function isJsonRecord(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates a {@link TrainState} before anything is written, reporting every problem at once. */
export function validateTrainState(state: TrainState | StreamingTrainState): void {
  const p = new Problems();
  p.check(isCount(state.step), `step must be a non-negative safe integer, got ${String(state.step)}`);
  p.check(state.epoch === undefined || isCount(state.epoch), 'epoch must be a non-negative integer');
  if (!isJsonRecord(state.tensors)) p.add('tensors must be an object of tensor groups');
  else {
    for (const [group, map] of Object.entries(state.tensors)) {
      if (!p.check(isValidGroupName(group), `group name ${JSON.stringify(group)} is invalid (letters, digits, _ and -)`)) continue;
      if (isTensorStream(map)) {
        validateSpecs(group, map.specs, p);
        continue;
      }
      if (!p.check(map instanceof Map, `group "${group}" must be a Map of tensors`)) continue;
      for (const [name, t] of map) {
        // Messages are built only for a problem: this runs for every tensor saved.
        if (name.length === 0 || name === '__metadata__') {
          p.add(`group "${group}": tensor name ${JSON.stringify(name)} is reserved or empty`);
          continue;
        }
        try {
          validateTensor(t, name);
        } catch (e) {
          p.add(`group "${group}": ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    }
  }
  for (const [k, v] of Object.entries(state.metrics ?? {})) {
    p.check(typeof v === 'number' && Number.isFinite(v), `metric "${k}" must be a finite number, got ${String(v)}`);
  }
  for (const key of ['state', 'hyperParameters', 'metadata', 'versions'] as const) {
    const v = state[key];
    if (v === undefined) continue;
    if (!p.check(isJsonRecord(v), `${key} must be a plain object`)) continue;
    try {
      JSON.stringify(v);
    } catch (e) {
      p.add(`${key} is not JSON-serialisable: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  for (const [k, v] of Object.entries(state.versions ?? {})) p.check(typeof v === 'string', `version "${k}" must be a string`);
  p.throwIfAny('INVALID_ARGUMENT', `invalid training state${isCount(state.step) ? ` for step ${state.step}` : ''}`, {
    ...(isCount(state.step) ? { step: state.step } : {}),
  });
}

function isTensorStream(group: unknown): group is TensorStream {
  return typeof group === 'object' && group !== null && !(group instanceof Map) && 'specs' in group && 'read' in group;
}

function validateSpecs(group: string, specs: unknown, p: Problems): void {
  if (!p.check(Array.isArray(specs), `group "${group}": specs must be an array`)) return;
  const seen = new Set<string>();
  for (const spec of specs as readonly TensorSpec[]) {
    const name = spec.name;
    // Messages are built only for a problem: this runs for every tensor of the stream.
    if (typeof name !== 'string' || name.length === 0 || name === '__metadata__') {
      p.add(`group "${group}": tensor name ${JSON.stringify(name)} is reserved or empty`);
      continue;
    }
    if (seen.has(name)) {
      p.add(`group "${group}": tensor "${name}" given twice`);
      continue;
    }
    seen.add(name);
    if (!isDType(spec.dtype)) {
      p.add(`group "${group}": tensor "${name}" has unknown dtype ${JSON.stringify(spec.dtype)}`);
      continue;
    }
    try {
      byteLength(spec.dtype, spec.shape, name);
    } catch (e) {
      p.add(`group "${group}": ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}

/** Size of a staging buffer; two alternate, so one is written while the other fills. */
const STAGING_BYTES = 1024 * 1024;
/** Chunks below this size are copied into a staging buffer; larger ones are written from their memory. */
const SMALL_CHUNK = 256 * 1024;

/**
 * Staging buffers kept between saves: first touch of fresh memory costs about as much as writing it, so a
 * save of many small tensors would otherwise pay for its staging memory every time. Placed for fast
 * copies by the kernel (see buffers.ts). At most {@link MAX_IDLE_STAGING} are kept.
 */
const idleStaging: Uint8Array[] = [];
const MAX_IDLE_STAGING = 4;

/**
 * Streams chunks to a writer, hashing as it goes. Small chunks are copied into one of two staging
 * buffers: a full buffer is hashed in one call and written while the other fills, so many small tensors
 * cost few system calls and no promise each. Large chunks are written straight from the caller's memory
 * and hashed meanwhile (the write runs on libuv's thread pool). Writes are chained, so they reach the
 * backend one at a time and in file order.
 */
class HashingSink {
  private readonly hasher;
  private readonly staging: Uint8Array[] = [];
  /** The write still in flight from each staging buffer (by index), if any. */
  private readonly inFlight: (Promise<void> | undefined)[] = [undefined, undefined];
  private current = 0;
  private staged = 0;
  /** The last write issued: every write starts after it. */
  private tail: Promise<void> = Promise.resolve();
  /** Writes issued and not settled yet. */
  private writing = 0;
  private failure: { error: unknown } | undefined;
  bytes = 0;

  constructor(
    private readonly writer: ObjectWriter,
    algorithm: ChecksumAlgorithm,
  ) {
    this.hasher = createHasher(algorithm);
  }

  /** Queues `chunk`; a promise only when the caller must wait (before reusing memory or for I/O). */
  write(chunk: Uint8Array): Promise<void> | undefined {
    if (this.failure !== undefined) return Promise.reject(this.failure.error);
    this.bytes += chunk.byteLength;
    if (chunk.byteLength < SMALL_CHUNK) {
      if (this.staged + chunk.byteLength <= STAGING_BYTES) {
        this.stage(chunk);
        return undefined;
      }
      return this.flush().then(() => this.stage(chunk));
    }
    return this.flush().then(async () => {
      const written = this.enqueue(chunk);
      this.hasher.update(chunk);
      await written;
    });
  }

  private stage(chunk: Uint8Array): void {
    this.stagingBuffer().set(chunk, this.staged);
    this.staged += chunk.byteLength;
  }

  private stagingBuffer(): Uint8Array {
    let b = this.staging[this.current];
    if (b === undefined) {
      b = idleStaging.pop() ?? allocReadBuffer(STAGING_BYTES);
      this.staging[this.current] = b;
    }
    return b;
  }

  /** Chains a write of `bytes` after the previous one; its failure fails every later call. */
  private enqueue(bytes: Uint8Array): Promise<void> {
    // With no write in flight the write starts now, on the thread pool, so that the hashing the caller
    // does next overlaps it (a `then` would start it only after the caller's synchronous hashing).
    const w = this.writing === 0 ? this.writer.write(bytes) : this.tail.then(() => this.writer.write(bytes));
    this.writing++;
    const settled = (): void => {
      this.writing--;
    };
    this.tail = w.then(settled, (e: unknown) => {
      settled();
      this.failure ??= { error: e };
    });
    return w;
  }

  /** Hashes and starts writing the staged bytes, then waits until the other staging buffer is free. */
  private async flush(): Promise<void> {
    if (this.staged > 0) {
      const full = this.stagingBuffer().subarray(0, this.staged);
      // Started first, so the write overlaps the hashing (the bytes stay put until it is done).
      this.inFlight[this.current] = this.enqueue(full);
      this.hasher.update(full);
      this.staged = 0;
      this.current ^= 1;
    }
    const pending = this.inFlight[this.current];
    this.inFlight[this.current] = undefined;
    if (pending !== undefined) await pending;
  }

  async close(): Promise<string> {
    await this.flush();
    await this.tail;
    if (this.failure !== undefined) throw this.failure.error;
    await this.writer.close();
    return this.hasher.digest();
  }

  /** Waits for the writes in flight (after a failure) and gives the staging buffers back. Never throws. */
  async release(): Promise<void> {
    await this.tail;
    for (const b of this.staging) if (idleStaging.length < MAX_IDLE_STAGING) idleStaging.push(b);
    this.staging.length = 0;
  }
}

/**
 * Writes `chunks` to a new file at `key`, hashing them. With `overlap` (async chunks only) the next chunk
 * is produced while the previous one is still being written: a chunk's bytes must then stay unchanged
 * until the chunk after the next is requested; each write is issued only after the previous one ended,
 * so writes stay in file order.
 */
async function writeFile(
  backend: Backend,
  key: string,
  chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
  opts: ResolvedSaveOptions,
  overlap = false,
): Promise<ManifestFile> {
  let writer: ObjectWriter | undefined;
  let sink: HashingSink | undefined;
  try {
    writer = await backend.writer(key, { sync: opts.sync });
    sink = new HashingSink(writer, opts.checksum);
    if (Symbol.iterator in chunks) {
      // A plain loop: `for await` would cost a promise per chunk even when nothing waits.
      for (const c of chunks) {
        const wait = sink.write(c);
        if (wait !== undefined) await wait;
      }
    } else if (overlap) {
      let pending: Promise<void> | undefined;
      try {
        for await (const c of chunks) {
          if (pending !== undefined) await pending;
          pending = sink.write(c);
          // Awaited before the next write or below; this only keeps a failure from being reported as
          // unhandled while the next chunk is produced.
          pending?.catch(() => undefined);
        }
      } finally {
        // The last write, or the one in flight when producing a chunk failed.
        await pending?.catch(() => undefined);
      }
      await pending;
    } else {
      for await (const c of chunks) await sink.write(c);
    }
    const checksum = await sink.close();
    writer = undefined;
    await sink.release();
    return { path: key.slice(key.lastIndexOf('/') + 1), bytes: sink.bytes, checksum };
  } catch (e) {
    // Writes still chained must settle before the partial file goes.
    await sink?.release();
    if (writer !== undefined) await writer.abort();
    // A CkptError is thrown as it is: the backend's name their file already, and one from reading the
    // tensors (a stream, an averaging's worker threads) is not about the file being written.
    throw e instanceof CkptError ? e : ioError(e, 'writing', backend.describe(key));
  }
}

function* safetensorsChunks(tensors: TensorMap, metadata: Record<string, string>): Generator<Uint8Array> {
  const enc = encodeSafetensors(tensors, metadata);
  yield enc.header;
  yield* enc.chunks;
}

/**
 * The chunks of one shard of a streamed group: the header (computed by the one safetensors encoder from
 * placeholder views of a single zero buffer the size of the largest tensor, which is never written or
 * touched, so it costs address space rather than memory), then each tensor as the stream produces it.
 */
async function* streamChunks(
  stream: TensorStream,
  first: number,
  count: number,
  metadata: Record<string, string>,
): AsyncGenerator<Uint8Array> {
  const specs = stream.specs.slice(first, first + count);
  const sizes = specs.map((t) => byteLength(t.dtype, t.shape, t.name));
  const zeros = new Uint8Array(sizes.reduce((a, b) => Math.max(a, b), 0));
  const placeholders: TensorMap = new Map(
    specs.map((t, i) => [t.name, { dtype: t.dtype, shape: t.shape, data: zeros.subarray(0, sizes[i]) }]),
  );
  yield encodeSafetensors(placeholders, metadata).header;
  for (let i = 0; i < specs.length; i++) {
    const data = await stream.read(first + i);
    const spec = specs[i] as TensorSpec;
    if (!(data instanceof Uint8Array) || data.byteLength !== sizes[i]) {
      throw new CkptError('TENSOR_SIZE_MISMATCH', `tensor "${spec.name}" (${spec.dtype} [${spec.shape.join(', ')}]) needs ${sizes[i]} bytes, the stream gave ${data instanceof Uint8Array ? data.byteLength : typeof data}`, {
        tensor: spec.name,
        expected: sizes[i],
        received: data instanceof Uint8Array ? data.byteLength : undefined,
      });
    }
    yield data;
  }
}

/** Splits a list of byte sizes into shards of at most `limit` bytes each: [first index, count] pairs. */
function shardSizes(sizes: readonly number[], limit: number): [number, number][] {
  const shards: [number, number][] = [];
  let first = 0;
  let size = 0;
  for (let i = 0; i < sizes.length; i++) {
    const bytes = sizes[i] as number;
    if (i > first && size + bytes > limit) {
      shards.push([first, i - first]);
      first = i;
      size = 0;
    }
    size += bytes;
  }
  shards.push([first, sizes.length - first]);
  return shards;
}

/** Splits a group into shards of at most `limit` bytes each (a larger tensor gets a shard of its own). */
function shardGroup(map: TensorMap, limit: number): TensorMap[] {
  const shards: TensorMap[] = [];
  let current: TensorMap = new Map();
  let size = 0;
  for (const [name, t] of map) {
    if (current.size > 0 && size + t.data.byteLength > limit) {
      shards.push(current);
      current = new Map();
      size = 0;
    }
    current.set(name, t);
    size += t.data.byteLength;
  }
  shards.push(current);
  return shards;
}

const encoder = new TextEncoder();

/** `model.safetensors`, or `model-00001-of-00003.safetensors`, … for a sharded group. */
function shardFileNames(group: string, shards: number): string[] {
  if (shards === 1) return [`${group}.safetensors`];
  return Array.from({ length: shards }, (_, i) => `${group}-${String(i + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`);
}

/** `step-00001000`: the directory name of a checkpoint (at least 8 digits, so names sort by step). */
export function stepDirName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

/** Parses a checkpoint directory name; undefined when `name` is not one. */
export function parseStepDirName(name: string): number | undefined {
  const m = /^step-(\d{8,16})$/.exec(name.replace(/\/$/, ''));
  if (m === null) return undefined;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Prefix of in-progress saves; such directories are never listed and are removed when a manager opens. */
export const TEMP_PREFIX = '.tmp-';

/**
 * Writes `state` as a committed checkpoint at `key` of `backend` and returns its manifest. A group may be
 * a {@link TensorStream} instead of a `TensorMap`: its tensors are then requested one at a time while
 * the file is written (the bytes on storage are the same as for the equivalent map).
 *
 * With an atomic-rename backend everything is written into a temporary sibling directory, each file
 * fsynced, manifest.json last, then the directory is renamed to `key` and the parent fsynced: a crash at
 * any moment leaves either no checkpoint or the complete one. Without rename the files are written in
 * place and the manifest, written last, is the commit marker. Throws `ALREADY_EXISTS` when a committed
 * checkpoint is already at `key`; on any failure the partial files are removed.
 */
export async function writeCheckpoint(
  backend: Backend,
  key: string,
  state: TrainState | StreamingTrainState,
  options: SaveOptions | ResolvedSaveOptions = {},
): Promise<Manifest> {
  const opts = resolveSaveOptions(options);
  validateTrainState(state);
  const slash = key.lastIndexOf('/');
  const parent = slash < 0 ? '' : key.slice(0, slash);
  const base = key.slice(slash + 1);
  const finalManifest = childKey(key, 'manifest.json');
  if (await backend.exists(finalManifest)) {
    throw new CkptError('ALREADY_EXISTS', `a checkpoint already exists at ${backend.describe(key)}`, {
      path: backend.describe(key),
      step: state.step,
    });
  }
  const atomic = backend.capabilities.atomicRename && backend.rename !== undefined;
  const dir = atomic ? childKey(parent, `${TEMP_PREFIX}${base}-${randomId(4)}`) : key;
  const createdAt = new Date(opts.now ?? Date.now()).toISOString();

  try {
    const files: ManifestFile[] = [];
    const groups: Record<string, ManifestGroup> = {};
    for (const [group, source] of Object.entries(state.tensors)) {
      const meta = { 'ckpt.group': group, 'ckpt.step': String(state.step) };
      let total = 0;
      let shardNames: string[][];
      let names: string[];
      if (isTensorStream(source)) {
        const sizes = source.specs.map((t) => byteLength(t.dtype, t.shape, t.name));
        for (const b of sizes) total += b;
        const ranges = total > opts.shardBytes ? shardSizes(sizes, opts.shardBytes) : [[0, sizes.length] as [number, number]];
        names = shardFileNames(group, ranges.length);
        for (let i = 0; i < ranges.length; i++) {
          const [first, count] = ranges[i] as [number, number];
          files.push(await writeFile(backend, childKey(dir, names[i] as string), streamChunks(source, first, count, meta), opts, source.alternating === true));
        }
        shardNames = ranges.map(([first, count]) => source.specs.slice(first, first + count).map((t) => t.name));
        if (source.end !== undefined) await source.end();
      } else {
        for (const t of source.values()) total += t.data.byteLength;
        const shards = total > opts.shardBytes ? shardGroup(source, opts.shardBytes) : [source];
        names = shardFileNames(group, shards.length);
        for (let i = 0; i < shards.length; i++) {
          files.push(await writeFile(backend, childKey(dir, names[i] as string), safetensorsChunks(shards[i] as TensorMap, meta), opts));
        }
        shardNames = shards.map((m) => [...m.keys()]);
      }
      if (names.length > 1) {
        const weightMap: Record<string, string> = {};
        shardNames.forEach((tensorNames, i) => {
          for (const name of tensorNames) weightMap[name] = names[i] as string;
        });
        const index = { metadata: { total_size: total }, weight_map: weightMap };
        files.push(await writeFile(backend, childKey(dir, `${group}.safetensors.index.json`), [encoder.encode(JSON.stringify(index, null, 2))], opts));
      }
      const count = isTensorStream(source) ? source.specs.length : source.size;
      groups[group] = { files: names, tensors: count, bytes: total };
    }
    files.push(await writeFile(backend, childKey(dir, 'state.json'), [encoder.encode(JSON.stringify(state.state ?? {}))], opts));

    const runtime = (globalThis as { process?: { version?: string } }).process?.version;
    const manifest: Manifest = {
      format: 'ckpt',
      formatVersion: MANIFEST_FORMAT_VERSION,
      step: state.step,
      epoch: state.epoch ?? null,
      createdAt,
      runId: opts.runId,
      parentStep: opts.parentStep,
      metrics: { ...(state.metrics ?? {}) },
      hyperParameters: { ...(state.hyperParameters ?? {}) } as Record<string, JsonValue>,
      metadata: { ...(state.metadata ?? {}) } as Record<string, JsonValue>,
      versions: { ckpt: VERSION, ...(runtime === undefined ? {} : { node: runtime }), ...(state.versions ?? {}) },
      groups,
      files,
    };
    // Sealed with its own checksum, so that damage to the manifest itself is detected too.
    await writeFile(backend, childKey(dir, 'manifest.json'), [sealManifest(JSON.stringify(manifest, null, 2), opts.checksum)], opts);
    if (atomic) {
      if (opts.sync) await backend.syncDir(dir);
      await (backend.rename as NonNullable<Backend['rename']>)(dir, key);
    }
    if (opts.sync) await backend.syncDir(parent);
    return manifest;
  } catch (e) {
    // Leave nothing half-written behind; the committed checkpoints were never touched.
    await backend.delete(`${dir}/`).catch(() => undefined);
    if (isCkptError(e)) throw e;
    throw ioError(e, `saving step ${state.step}`, backend.describe(key), { step: state.step });
  }
}
