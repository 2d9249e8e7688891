import { availableParallelism } from 'node:os';
import { MAX_THREADS, coreThreads } from '../threads.js';
import { PAGE, allocReadBuffer, isSharedMemory } from '../buffers.js';
import { CkptError, ioError, isCkptError } from '../errors.js';
import { parseJson } from '../format/json.js';
import { type JsonValue, type Manifest, type ManifestFile, MAX_MANIFEST_BYTES, parseManifest } from '../format/manifest.js';
import { type SafetensorsIndex, type TensorInfo, decodeSafetensors, parseHeader, readHeaderLength } from '../format/safetensors.js';
import type { Backend, ObjectReader } from '../storage/backend.js';
import { openReader } from '../storage/reader.js';
import type { Tensor, TensorMap } from '../tensor/tensor.js';
import { type Hasher, MANIFEST_CHECKSUM_KEY, checkManifestChecksum, checksumAlgorithm, createHasher } from './checksum.js';
import type * as ParallelReadModule from './parallel-read.js';
import type { Segment } from './parallel-read.js';
import { isCount } from '../problems.js';
import { mapSettled } from '../settle.js';
import { childKey } from './location.js';
import type { Checkpoint } from './types.js';

/** Consecutive tensors `first` to `end` - 1 of a file, read into one buffer `skew` bytes in. */
interface PlannedChunk {
  readonly offset: number;
  readonly length: number;
  readonly skew: number;
  readonly first: number;
  readonly end: number;
}

/**
 * Cuts a file's tensors (in file order, data starting at `dataOffset`) into chunks of consecutive
 * tensors of up to {@link OWN_CHUNK_BYTES} (a larger tensor alone). Each is placed half a page from its
 * file offset's position in a page: every tensor sits in its page as when the whole file is read into one
 * buffer, and the kernel's copies land far from the slow zone (see `readPlacement`).
 */
function planChunks(dataOffset: number, infos: readonly TensorInfo[]): PlannedChunk[] {
  const chunks: PlannedChunk[] = [];
  for (let i = 0; i < infos.length; ) {
    const begin = (infos[i] as TensorInfo).begin;
    let end = i + 1;
    while (end < infos.length && (infos[end] as TensorInfo).end - begin <= OWN_CHUNK_BYTES) end++;
    const offset = dataOffset + begin;
    chunks.push({ offset, length: (infos[end - 1] as TensorInfo).end - begin, skew: (offset + PAGE / 2) % PAGE, first: i, end });
    i = end;
  }
  return chunks;
}

/**
 * Calls `read(i)` for i = 0 … count - 1 with up to {@link READ_AHEAD} reads in flight, and `use` on each
 * result in order. On a failure it waits for the reads still in flight before it throws (the caller
 * closes the file next); a read failing while an earlier one is awaited is reported in its turn, never
 * as an unhandled rejection.
 */
async function readInOrder<T>(count: number, read: (i: number) => Promise<T>, use: (value: T, i: number) => void): Promise<void> {
  const queue: Promise<T>[] = [];
  let next = 0;
  const fill = (): void => {
    while (queue.length < READ_AHEAD && next < count) {
      const p = read(next++);
      p.catch(() => undefined);
      queue.push(p);
    }
  };
  try {
    fill();
    for (let i = 0; i < count; i++) {
      const value = await (queue[0] as Promise<T>);
      queue.shift();
      fill();
      use(value, i);
    }
  } finally {
    await Promise.allSettled(queue);
  }
}

/** The module of reads on worker threads (imported when first used). */
type ParallelRead = typeof ParallelReadModule;

/** Options of a load. */
export interface LoadOptions {
  /**
   * Check every file's size and checksum against the manifest before using it.
   * @default true
   */
  readonly verify?: boolean;
  /** Only these tensor groups are read (others are absent from the result). @default all groups */
  readonly groups?: readonly string[];
  /**
   * Where tensor bytes are read into: called once per file (or per tensor of a file over 1 GiB) with a
   * size. Pass a {@link BufferPool}'s `allocate` to reuse memory across loads.
   * @default fresh memory of ckpt's own: one buffer for a file under 32 MiB; for larger files, chunks of
   *   consecutive tensors (up to 16 MiB, or one larger tensor), which the memory allocator recycles in a
   *   loop of loads once the previous tensors are garbage
   */
  readonly allocate?: (size: number) => Uint8Array;
  /**
   * Worker threads that read (and verify) tensor files of at least 32 MiB on the local filesystem in
   * parallel (not with sha256 checksums; 0: this thread reads):
   * - without `allocate`, into fresh memory the threads allocate themselves, so the first touch of new
   *   pages (as costly as the read itself on some machines) is spread over the cores too;
   * - with `allocate` returning views of a `SharedArrayBuffer` (`createBufferPool({ shared: true })`),
   *   straight into those, each thread hashing its pieces while they are in its core's cache (on 2 cores
   *   0.8-0.9x of a raw read's speed, against 0.6-0.75x on one thread);
   * - with other `allocate`d memory, not at all: threads cannot write into it.
   * The threads are kept for the next load (idle, they do not keep the process alive; see
   * {@link closeLoadThreads}).
   * @default one per core (at most 4) when the groups to load hold 256 MiB or more, else 0 (starting the
   *   threads costs ~70 ms, once)
   */
  readonly threads?: number;
}

/** Files up to this size are read into one buffer; larger ones tensor by tensor (no 2-4 GiB buffer limit). */
const WHOLE_FILE_LIMIT = 1024 ** 3;
/** Read granularity of whole files: large enough for full-speed reads, small enough to overlap hashing. */
const READ_PIECE = 8 * 1024 * 1024;
/** Reads kept in flight when a large file is read tensor by tensor. */
const READ_AHEAD = 2;
/**
 * Shard headers of a group read at once, and checkpoints opened at once by an averaging: each is a few
 * small requests, which a remote store answers in one round trip each.
 */
export const HEADER_CONCURRENCY = 8;
/** Smaller files are read on this thread (a job's hand-offs would cost more than the threads save). */
const PARALLEL_MIN_BYTES = 32 * 1024 * 1024;
/**
 * Without a `threads` option, loads of this many bytes or more use worker threads: starting them costs
 * ~70 ms the first time in a process (they are kept afterwards), which a load of 256 MiB into fresh
 * memory about earns back on 2 cores.
 */
const AUTO_THREADS_BYTES = 256 * 1024 * 1024;
/** Largest chunk of consecutive tensors one worker thread reads into new memory (a larger tensor is one chunk). */
const OWN_CHUNK_BYTES = 16 * 1024 * 1024;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Reads and validates `key/manifest.json`, including its self-checksum. Throws `MANIFEST_MISSING` when
 * there is none, `PATH_ESCAPE` when it is a link leading outside `key`, `MANIFEST_INVALID` for one over
 * {@link MAX_MANIFEST_BYTES} (before reading it), `CHECKSUM_MISMATCH` when it was altered.
 */
export async function readManifest(backend: Backend, key: string): Promise<Manifest> {
  const mkey = childKey(key, 'manifest.json');
  const where = backend.describe(mkey);
  let bytes: Uint8Array;
  try {
    await backend.checkContained?.(mkey, key);
    const reader = await openReader(backend, mkey);
    try {
      if (reader.size > MAX_MANIFEST_BYTES) {
        throw new CkptError('MANIFEST_INVALID', `${where}: manifest of ${reader.size} bytes exceeds the ${MAX_MANIFEST_BYTES}-byte limit`, {
          path: where,
          expected: MAX_MANIFEST_BYTES,
          received: reader.size,
        });
      }
      bytes = await reader.read(0, reader.size, new Uint8Array(reader.size));
    } finally {
      await reader.close();
    }
  } catch (e) {
    if (isCkptError(e, 'NOT_FOUND')) {
      throw new CkptError('MANIFEST_MISSING', `no manifest.json in ${backend.describe(key)}: not a committed checkpoint`, {
        path: where,
        cause: e,
      });
    }
    throw ioError(e, 'reading', where);
  }
  const manifest = parseManifest(bytes, where);
  checkManifestChecksum(bytes, (manifest as unknown as Record<string, unknown>)[MANIFEST_CHECKSUM_KEY], where);
  return manifest;
}

/** Location of one tensor inside a checkpoint. */
export interface TensorLocation {
  /** File name inside the checkpoint directory. */
  readonly file: string;
  /** Absolute byte offset of the tensor's data in the file. */
  readonly offset: number;
  readonly info: TensorInfo;
}

/**
 * Random access to one committed checkpoint: its manifest, per-group tensor indexes (headers only) and
 * single tensors, or whole verified groups. Used by `load`, `verify`, averaging and the CLI.
 */
export class CheckpointReader {
  private readonly indexes = new Map<string, Promise<Map<string, TensorLocation>>>();
  private readonly fileEntries: Map<string, ManifestFile>;

  private constructor(
    readonly backend: Backend,
    readonly key: string,
    readonly manifest: Manifest,
  ) {
    this.fileEntries = new Map(manifest.files.map((f) => [f.path, f]));
  }

  /** Opens the checkpoint at `key` (reads and validates its manifest). */
  static async open(backend: Backend, key: string): Promise<CheckpointReader> {
    return new CheckpointReader(backend, key, await readManifest(backend, key));
  }

  /** Human-readable location of a file of this checkpoint. */
  describe(file?: string): string {
    return this.backend.describe(file === undefined ? this.key : childKey(this.key, file));
  }

  private entry(file: string): ManifestFile {
    const entry = this.fileEntries.get(file);
    if (entry === undefined) {
      throw new CkptError('MANIFEST_INVALID', `${this.describe('manifest.json')} does not list ${file}`, { path: this.describe(file) });
    }
    return entry;
  }

  private missing(file: string, e: unknown): CkptError {
    const where = this.describe(file);
    if (isCkptError(e, 'NOT_FOUND')) {
      return new CkptError('FILE_MISSING', `${where} is listed in the manifest but missing`, { path: where, step: this.manifest.step, cause: e });
    }
    return ioError(e, 'reading', where, { step: this.manifest.step });
  }

  private checkBytes(file: string, size: number): void {
    const entry = this.entry(file);
    if (size !== entry.bytes) {
      const where = this.describe(file);
      throw new CkptError('SIZE_MISMATCH', `${where} is ${size} bytes, the manifest says ${entry.bytes}`, {
        path: where,
        step: this.manifest.step,
        expected: entry.bytes,
        received: size,
      });
    }
  }

  /** Throws `PATH_ESCAPE` when a listed file is a link leading outside the checkpoint (backends with links). */
  private async contained(file: string): Promise<void> {
    await this.backend.checkContained?.(childKey(this.key, file), this.key);
  }

  /** Size of a listed file on storage, checked against the manifest (`FILE_MISSING`, `SIZE_MISMATCH`). */
  async checkSize(file: string): Promise<number> {
    this.entry(file);
    let size: number;
    try {
      await this.contained(file);
      size = await this.backend.size(childKey(this.key, file));
    } catch (e) {
      throw this.missing(file, e);
    }
    this.checkBytes(file, size);
    return size;
  }

  /** Opens a listed file for reading, its size checked against the manifest. The caller closes it. */
  private async open(file: string): Promise<ObjectReader> {
    this.entry(file);
    let reader: ObjectReader;
    try {
      await this.contained(file);
      reader = await openReader(this.backend, childKey(this.key, file));
    } catch (e) {
      throw this.missing(file, e);
    }
    try {
      this.checkBytes(file, reader.size);
    } catch (e) {
      await reader.close();
      throw e;
    }
    return reader;
  }

  private read(file: string, reader: ObjectReader, offset: number, length: number, into: Uint8Array): Promise<Uint8Array> {
    return reader.read(offset, length, into).catch((e: unknown) => {
      throw ioError(e, 'reading', this.describe(file), { step: this.manifest.step });
    });
  }

  private checkDigest(file: string, digest: string): void {
    const entry = this.entry(file);
    if (digest !== entry.checksum) {
      const where = this.describe(file);
      throw new CkptError('CHECKSUM_MISMATCH', `${where} is corrupt: checksum ${digest} does not match the manifest's ${entry.checksum}`, {
        path: where,
        step: this.manifest.step,
        expected: entry.checksum,
        received: digest,
      });
    }
  }

  private async range(file: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const where = this.describe(file);
    try {
      return await this.backend.readRange(childKey(this.key, file), offset, length, into);
    } catch (e) {
      throw ioError(e, 'reading', where, { step: this.manifest.step });
    }
  }

  /**
   * Reads a whole listed file, checking size and (when `verify`) checksum. Verified files are read in
   * pieces and each piece is hashed while the next one is being read, so verification overlaps the I/O;
   * or on `threads` worker threads (see {@link LoadOptions.threads}).
   */
  async readFile(file: string, verify = true, allocate: (size: number) => Uint8Array = allocReadBuffer, threads = 0): Promise<Uint8Array> {
    const reader = await this.open(file);
    let pending: Promise<Uint8Array> | undefined;
    try {
      const size = reader.size;
      const bytes = this.allocated(file, allocate, size);
      if (!verify) return await this.read(file, reader, 0, size, bytes);
      const hasher = createHasher(checksumAlgorithm(this.entry(file).checksum));
      if (await this.readParallel(file, reader, [{ offset: 0, target: bytes }], hasher, threads)) {
        this.checkDigest(file, hasher.digest());
        return bytes;
      }
      const piece = (i: number): Promise<Uint8Array> => {
        const start = i * READ_PIECE;
        const end = Math.min(start + READ_PIECE, size);
        return this.read(file, reader, start, end - start, bytes.subarray(start, end));
      };
      const pieces = Math.max(1, Math.ceil(size / READ_PIECE));
      let next: Promise<Uint8Array> = piece(0);
      for (let i = 0; i < pieces; i++) {
        pending = next;
        const got = await next;
        pending = undefined;
        if (i + 1 < pieces) pending = next = piece(i + 1);
        hasher.update(got);
      }
      this.checkDigest(file, hasher.digest());
      return bytes;
    } finally {
      await pending?.catch(() => undefined);
      await reader.close();
    }
  }

  /** `allocate(size)`, checked, as a view of exactly `size` bytes. */
  private allocated(file: string, allocate: (size: number) => Uint8Array, size: number): Uint8Array {
    const into = allocate(size);
    if (!(into instanceof Uint8Array) || into.byteLength < size) {
      const got = into instanceof Uint8Array ? `a buffer of ${into.byteLength} bytes` : 'no Uint8Array';
      throw new CkptError('INVALID_ARGUMENT', `allocate(${size}) returned ${got}`, { path: this.describe(file) });
    }
    return into.byteLength === size ? into : into.subarray(0, size);
  }

  /**
   * A tensor file of at least {@link PARALLEL_MIN_BYTES} read into new memory in chunks of consecutive
   * tensors (up to {@link OWN_CHUNK_BYTES}, a larger tensor alone), with the tensors as views of their
   * chunks; undefined, having read nothing, for a smaller file or a damaged header, which the other
   * paths report: as a checksum mismatch for a file of up to 1 GiB (read whole and hashed before it is
   * parsed), as the header's own error (`HEADER_*`, naming the file) for a larger one (read tensor by
   * tensor after its header).
   *
   * On `threads` worker threads where they can serve (see {@link readParallel}), each chunk by one
   * thread, which allocates it: the first touch of fresh memory, as costly here as the read, is spread
   * over the cores. Else here, each chunk hashed while the next is read: memory of that size is what the
   * allocator recycles once the previous load's tensors are collected (one buffer of the whole file is a
   * new mapping every time, every page of it faulted in again).
   */
  private async readChunked(file: string, verify: boolean, threads: number): Promise<TensorMap | undefined> {
    if (this.entry(file).bytes < PARALLEL_MIN_BYTES) return undefined;
    const reader = await this.open(file);
    try {
      let header: { index: SafetensorsIndex; head: Uint8Array[] };
      try {
        header = await this.readHeader(file, reader);
      } catch (e) {
        if (verify && isCkptError(e)) return undefined;
        throw e;
      }
      const { index, head } = header;
      const h = createHasher(checksumAlgorithm(this.entry(file).checksum));
      for (const part of head) h.update(part);
      const entries = [...index.tensors];
      const chunks = planChunks(index.dataOffset, entries.map(([, info]) => info));
      const onThreads = threads > 0 && reader.fd !== undefined && (!verify || h.append !== undefined);
      const buffers = (onThreads ? await this.chunksOnThreads(file, reader.fd as number, chunks, verify, threads, h) : undefined) ?? (await this.chunksHere(file, reader, chunks, verify, h));
      if (verify) this.checkDigest(file, h.digest());
      const out: TensorMap = new Map();
      chunks.forEach((c, k) => {
        const buffer = buffers[k] as ArrayBuffer;
        const chunkBegin = c.offset - index.dataOffset;
        for (let i = c.first; i < c.end; i++) {
          const [name, info] = entries[i] as [string, TensorInfo];
          out.set(name, { dtype: info.dtype, shape: info.shape, data: new Uint8Array(buffer, c.skew + info.begin - chunkBegin, info.end - info.begin) });
        }
      });
      return out;
    } finally {
      await reader.close();
    }
  }

  /**
   * `chunks` read here into new memory, {@link READ_AHEAD} reads in flight (the thread pool's threads
   * then take the first touch of the new pages between them), each hashed into `h` (with `verify`) in
   * file order as it arrives.
   */
  private async chunksHere(file: string, reader: ObjectReader, chunks: readonly PlannedChunk[], verify: boolean, h: Hasher): Promise<ArrayBuffer[]> {
    const read = (k: number): Promise<ArrayBuffer> => {
      const c = chunks[k] as PlannedChunk;
      const buffer = new ArrayBuffer(c.skew + c.length);
      return this.read(file, reader, c.offset, c.length, new Uint8Array(buffer, c.skew, c.length)).then(() => buffer);
    };
    const buffers: ArrayBuffer[] = [];
    await readInOrder(
      chunks.length,
      read,
      (buffer, k) => {
        const c = chunks[k] as PlannedChunk;
        if (verify) h.update(new Uint8Array(buffer, c.skew, c.length));
        buffers.push(buffer);
      },
    );
    return buffers;
  }

  /**
   * `chunks` read into new memory on `threads` worker threads, their crc32s appended to `h` (with
   * `verify`); undefined, having read nothing, where the threads cannot serve.
   */
  private async chunksOnThreads(file: string, fd: number, chunks: readonly PlannedChunk[], verify: boolean, threads: number, h: Hasher): Promise<ArrayBuffer[] | undefined> {
    const { readChunks, readError } = await parallelRead();
    let read: Awaited<ReturnType<typeof readChunks>>;
    try {
      read = await readChunks(threads, fd, chunks, verify);
    } catch (e) {
      throw readError(e, this.describe(file), this.manifest.step);
    }
    if (read === undefined) return undefined;
    if (verify) chunks.forEach((c, k) => (h as Required<Hasher>).append(read.crcs[k] as number, c.length));
    return read.buffers;
  }

  /**
   * Reads `segments` of the file (consecutive, from wherever `hasher` stopped) on `threads` worker
   * threads, continuing `hasher`; false (nothing read) where they cannot: no threads asked for, a file
   * below {@link PARALLEL_MIN_BYTES}, no descriptor (backends other than fs), sha256, a target that is not
   * shared memory, or threads that cannot start.
   */
  private async readParallel(file: string, reader: ObjectReader, segments: readonly Segment[], hasher: Hasher, threads: number): Promise<boolean> {
    const fd = reader.fd;
    if (threads === 0 || fd === undefined || hasher.append === undefined || reader.size < PARALLEL_MIN_BYTES) return false;
    if (!segments.every((s) => isSharedMemory(s.target))) return false;
    // Loaded here: loads that never use worker threads never load them.
    const { readError, readSegments } = await parallelRead();
    try {
      return await readSegments(threads, fd, segments, hasher as Required<Hasher>);
    } catch (e) {
      throw readError(e, this.describe(file), this.manifest.step);
    }
  }

  private async readHeader(file: string, reader: ObjectReader): Promise<{ index: SafetensorsIndex; head: Uint8Array[] }> {
    const where = this.describe(file);
    const size = reader.size;
    const prefix = await this.read(file, reader, 0, Math.min(8, size), new Uint8Array(Math.min(8, size)));
    const n = readHeaderLength(prefix, size, where);
    const header = await this.read(file, reader, 8, n, new Uint8Array(n));
    return { index: parseHeader(header, size, where), head: [prefix, header] };
  }

  /** The tensors of a group, name -> location (reads headers only). */
  index(group: string): Promise<Map<string, TensorLocation>> {
    let p = this.indexes.get(group);
    if (p === undefined) {
      p = (async () => {
        const out = new Map<string, TensorLocation>();
        const files = this.groupFiles(group);
        // The shards' headers a few at a time, combined in shard order: a shard's failure, or a name it
        // repeats, is reported as reading them one by one would (the first in shard order).
        const headers = await mapSettled(files, HEADER_CONCURRENCY, async (file) => {
          try {
            const reader = await this.open(file);
            return { index: (await this.readHeader(file, reader).finally(() => reader.close())).index };
          } catch (error) {
            return { error };
          }
        });
        for (const [k, file] of files.entries()) {
          const header = headers[k] as { index: SafetensorsIndex } | { error: unknown };
          if ('error' in header) throw header.error;
          const { index } = header;
          for (const [name, info] of index.tensors) {
            if (out.has(name)) {
              throw new CkptError('DUPLICATE_KEY', `tensor "${name}" of group "${group}" appears in two shards (${out.get(name)?.file}, ${file})`, {
                path: this.describe(file),
                tensor: name,
              });
            }
            out.set(name, { file, offset: index.dataOffset + info.begin, info });
          }
        }
        return out;
      })();
      this.indexes.set(group, p);
    }
    return p;
  }

  /** File names of a group; throws `NOT_FOUND` for a group the checkpoint does not have. */
  groupFiles(group: string): readonly string[] {
    const g = Object.prototype.hasOwnProperty.call(this.manifest.groups, group) ? this.manifest.groups[group] : undefined;
    if (g === undefined) {
      throw new CkptError('NOT_FOUND', `${this.describe()} has no tensor group "${group}" (it has: ${Object.keys(this.manifest.groups).join(', ') || 'none'})`, {
        path: this.describe(),
        step: this.manifest.step,
      });
    }
    return g.files;
  }

  /** Reads one tensor (no checksum: checksums cover whole files; use `group` or `verify` for that). */
  async tensor(group: string, name: string): Promise<Tensor> {
    const loc = (await this.index(group)).get(name);
    if (loc === undefined) {
      throw new CkptError('TENSOR_NOT_FOUND', `tensor "${name}" not found in group "${group}" of ${this.describe()}`, {
        path: this.describe(),
        tensor: name,
        step: this.manifest.step,
      });
    }
    const data = await this.range(loc.file, loc.offset, loc.info.end - loc.info.begin);
    return { dtype: loc.info.dtype, shape: loc.info.shape, data };
  }

  /**
   * Reads a whole group; with `verify`, every file's size and checksum are checked first (on `threads`
   * worker threads where they can serve: {@link LoadOptions.threads}).
   */
  async group(group: string, verify = true, allocate?: (size: number) => Uint8Array, threads = 0): Promise<TensorMap> {
    let out: TensorMap = new Map();
    for (const file of this.groupFiles(group)) {
      const where = this.describe(file);
      // Into fresh memory of ckpt's own, in chunks (on worker threads where they serve).
      const own = allocate === undefined ? await this.readChunked(file, verify, threads) : undefined;
      if (own !== undefined) {
        if (out.size === 0) out = own;
        else for (const [name, t] of own) this.put(out, name, t, group, file);
        continue;
      }
      if (this.entry(file).bytes <= WHOLE_FILE_LIMIT) {
        const bytes = await this.readFile(file, verify, allocate ?? allocReadBuffer, threads);
        const { tensors } = decodeSafetensors(bytes, where);
        // The first file's map is the group's (no second map of every name).
        if (out.size === 0) out = tensors;
        else for (const [name, t] of tensors) this.put(out, name, t, group, file);
        continue;
      }
      // Large file: header first, then one read per tensor in file order; each tensor is hashed while
      // the next one is read.
      const reader = await this.open(file);
      try {
        const { index, head } = await this.readHeader(file, reader);
        const h = createHasher(checksumAlgorithm(this.entry(file).checksum));
        for (const part of head) h.update(part);
        const entries = [...index.tensors];
        const targets: Uint8Array[] = [];
        const target = (i: number): Uint8Array => {
          const info = (entries[i] as [string, TensorInfo])[1];
          return (targets[i] ??= this.allocated(file, allocate ?? allocReadBuffer, info.end - info.begin));
        };
        // Worker threads read every tensor (or none) when the memory is shared.
        if (verify && threads > 0 && entries.length > 0 && isSharedMemory(target(0))) {
          const segments = entries.map(([, info], i) => ({ offset: index.dataOffset + info.begin, target: target(i) }));
          if (await this.readParallel(file, reader, segments, h, threads)) {
            this.checkDigest(file, h.digest());
            entries.forEach(([name, info], i) => this.put(out, name, { dtype: info.dtype, shape: info.shape, data: target(i) }, group, file));
            continue;
          }
        }
        const read = (i: number): Promise<Uint8Array> => {
          const info = (entries[i] as [string, TensorInfo])[1];
          return this.read(file, reader, index.dataOffset + info.begin, info.end - info.begin, target(i));
        };
        // Two reads in flight keep the I/O threads busy while this thread hashes and indexes.
        await readInOrder(entries.length, read, (data, i) => {
          if (verify) h.update(data);
          const [name, info] = entries[i] as [string, TensorInfo];
          this.put(out, name, { dtype: info.dtype, shape: info.shape, data }, group, file);
        });
        if (verify) this.checkDigest(file, h.digest());
      } finally {
        await reader.close();
      }
    }
    const expected = this.manifest.groups[group]?.tensors;
    if (expected !== undefined && expected !== out.size) {
      throw new CkptError('MANIFEST_INVALID', `group "${group}" of ${this.describe()} has ${out.size} tensors, the manifest says ${expected}`, {
        path: this.describe(),
        expected,
        received: out.size,
      });
    }
    return out;
  }

  private put(out: TensorMap, name: string, t: Tensor, group: string, file: string): void {
    if (out.has(name)) {
      throw new CkptError('DUPLICATE_KEY', `tensor "${name}" of group "${group}" appears twice (again in ${file})`, {
        path: this.describe(file),
        tensor: name,
      });
    }
    out.set(name, t);
  }

  /** Reads state.json (verified) as an object. */
  async state(verify = true): Promise<Record<string, JsonValue>> {
    if (!this.fileEntries.has('state.json')) return {};
    const where = this.describe('state.json');
    const bytes = await this.readFile('state.json', verify);
    let value: unknown;
    try {
      value = parseJson(utf8.decode(bytes), where);
    } catch (e) {
      throw new CkptError('STATE_INVALID', `${where} is not valid JSON: ${e instanceof Error ? e.message : String(e)}`, { path: where, cause: e });
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new CkptError('STATE_INVALID', `${where} must hold a JSON object`, { path: where });
    }
    return value as Record<string, JsonValue>;
  }

  /**
   * Checks everything: every listed file present with the right size and checksum, every safetensors
   * file well-formed, state.json valid. Returns every problem found (empty when valid); never throws for
   * content problems. Tensor files are read on `threads` worker threads (automatic when undefined, as for
   * a load) into shared memory of its own, reused from group to group.
   */
  async verify(threads?: number): Promise<CkptError[]> {
    const problems: CkptError[] = [];
    const capture = async (f: () => Promise<unknown>): Promise<void> => {
      try {
        await f();
      } catch (e) {
        problems.push(isCkptError(e) ? e : ioError(e, 'verifying', this.describe()));
      }
    };
    const groupFiles = new Set(Object.values(this.manifest.groups).flatMap((g) => g.files));
    for (const f of this.manifest.files) {
      if (groupFiles.has(f.path)) continue;
      await capture(() => (f.path === 'state.json' ? this.state(true) : this.readFile(f.path, true)));
    }
    const groups = Object.keys(this.manifest.groups);
    const workers = resolveThreads(threads, this.manifest, groups);
    // Into memory of ckpt's own (in chunks, on the workers for files of 32 MiB or more), dropped group by
    // group: shared memory read into on the kept threads would be held by them (see parallel-read.ts).
    for (const group of groups) await capture(() => this.group(group, true, undefined, workers));
    return problems;
  }
}

let parallelReadModule: Promise<ParallelRead> | undefined;

/** The module of reads on worker threads, loaded on first use. */
function parallelRead(): Promise<ParallelRead> {
  return (parallelReadModule ??= import('./parallel-read.js'));
}

/**
 * Terminates the worker threads that loads with `threads` keep for the next load (idle, they hold a few
 * MiB each and do not keep the process alive); a later such load starts new ones.
 */
export async function closeLoadThreads(): Promise<void> {
  if (parallelReadModule !== undefined) await (await parallelReadModule).closeReadThreads();
}

/**
 * The worker threads `options` ask for (undefined: automatic); throws `INVALID_ARGUMENT` for a value that
 * is not an integer from 0 to 64.
 */
export function loadThreads(options: Pick<LoadOptions, 'threads'>): number | undefined {
  const { threads } = options;
  if (threads !== undefined && (!isCount(threads) || threads > MAX_THREADS)) {
    throw new CkptError('INVALID_ARGUMENT', `invalid load options: threads must be an integer from 0 to ${MAX_THREADS}, got ${String(threads)}`, { received: threads });
  }
  return threads;
}

/**
 * `threads`, or automatically: one per core (at most 4) when the `groups` of `manifest` to read hold
 * {@link AUTO_THREADS_BYTES} or more, none below.
 */
function resolveThreads(threads: number | undefined, manifest: Manifest, groups: readonly string[]): number {
  if (threads !== undefined) return threads;
  const bytes = groups.reduce((sum, g) => sum + (manifest.groups[g]?.bytes ?? 0), 0);
  return bytes >= AUTO_THREADS_BYTES ? coreThreads(availableParallelism()) : 0;
}

/** Loads the checkpoint at `key` of `backend`. See {@link LoadOptions}. */
export async function readCheckpoint(backend: Backend, key: string, options: LoadOptions = {}): Promise<Checkpoint> {
  const verify = options.verify ?? true;
  const given = loadThreads(options);
  const reader = await CheckpointReader.open(backend, key);
  const m = reader.manifest;
  const names = options.groups ?? Object.keys(m.groups);
  const threads = resolveThreads(given, m, names);
  const tensors: Record<string, TensorMap> = {};
  for (const g of names) tensors[g] = await reader.group(g, verify, options.allocate, threads);
  if (verify) {
    // Every other listed file is checked too (shard indexes, files of later format revisions), except
    // the tensor files of groups not asked for: a damaged checkpoint never loads as if it were sound.
    const skipped = Object.keys(m.groups).filter((g) => !names.includes(g));
    const covered = new Set([
      ...Object.values(m.groups).flatMap((g) => g.files),
      ...skipped.map((g) => `${g}.safetensors.index.json`),
      'state.json',
    ]);
    for (const f of m.files) if (!covered.has(f.path)) await reader.readFile(f.path, true);
  }
  return {
    step: m.step,
    ...(m.epoch === null ? {} : { epoch: m.epoch }),
    tensors,
    state: await reader.state(verify),
    metrics: m.metrics,
    hyperParameters: m.hyperParameters,
    metadata: m.metadata,
    versions: m.versions,
    manifest: m,
    location: reader.describe(),
  };
}
