/**
 * Allocation of buffers that the kernel fills fast.
 *
 * Measured here (see BENCHMARKS.md): reading a file into a destination that starts 8 to 40 bytes past a
 * memory-page boundary runs at ~2.4 GB/s, anywhere else at ~7-8 GB/s; and Node's large ArrayBuffers
 * start 16 bytes into a page (the allocator's header). Starting the data 2 KiB into a slightly larger
 * allocation lands far from that zone whatever the header size (0 or 16 bytes) and keeps 16-byte
 * alignment for typed views.
 *
 * @module
 */
import { CkptError } from './errors.js';

/** Memory page size that read placement works with. */
export const PAGE = 4096;
/** Offset of the data inside the allocation (also where the averaging workspace places its outputs in a page). */
export const SKEW = 2048;
/** Below this size the skew is not worth its bytes (small reads are dominated by the system call). */
const MIN_SKEWED = 64 * 1024;

/**
 * A zero-filled `Uint8Array` of `size` bytes placed for fast reads into it; with `shared`, a view of a
 * `SharedArrayBuffer` (worker threads can fill it).
 */
export function allocReadBuffer(size: number, shared = false): Uint8Array {
  const Memory = shared ? SharedArrayBuffer : ArrayBuffer;
  if (size < MIN_SKEWED) return new Uint8Array(new Memory(size));
  return new Uint8Array(new Memory(size + SKEW), SKEW, size);
}

/** Whether `bytes` is a view of shared memory (worker threads can fill it). */
export function isSharedMemory(bytes: Uint8Array): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && bytes.buffer instanceof SharedArrayBuffer;
}

/** Options of {@link createBufferPool}. */
export interface BufferPoolOptions {
  /**
   * Allocate views of `SharedArrayBuffer`s: verified loads of large files are then read by worker
   * threads (`LoadOptions.threads`), at 0.8-0.9x of a raw read's speed instead of 0.6-0.75x (2 cores). Tensors
   * loaded into shared memory behave like others, except where shared memory differs: `postMessage`
   * shares them instead of copying, they cannot be transferred, and some APIs refuse shared views (e.g.
   * `TextDecoder.decode` in browsers).
   * @default false
   */
  readonly shared?: boolean;
}

/**
 * Reuses read buffers across loads, so repeated restores (evaluation of many checkpoints, averaging, a
 * resume loop) do not pay for fresh memory each time: first touch of new memory costs about as much as
 * reading the data. Pass `pool.allocate` as `LoadOptions.allocate`, and `release` a checkpoint once
 * nothing uses its tensors any more: its buffers then serve the next load of the same sizes.
 *
 * @example
 * ```ts
 * const pool = createBufferPool();
 * for (const dir of dirs) {
 *   const ck = await load(dir, { allocate: pool.allocate });
 *   evaluate(ck);
 *   pool.release(ck.tensors);
 * }
 * ```
 */
export interface BufferPool {
  /** A buffer of `size` bytes: a released one of that size, or a new one. Its content is unspecified. */
  readonly allocate: (size: number) => Uint8Array;
  /**
   * Returns buffers to the pool: raw buffers, tensors, or groups of tensors (`checkpoint.tensors`). Only
   * buffers this pool allocated are taken back; the caller must not use them afterwards. The tensors a
   * load read from one file are views of one buffer: releasing any of them returns that buffer, and with
   * it every tensor of the file, so release whole checkpoints (or all of a file's tensors together).
   * Releasing the same array or tensor again is ignored, also once its buffer serves another load; but
   * an array of an earlier load released for the first time after its buffer went to another load gives
   * that load's buffer back: release each checkpoint once, whole, when done with it. (Detaching released
   * memory would catch every use after release, but each reused buffer would then count as new memory
   * for the garbage collector: measured, a full collection per load, 30% slower loads of 64 MiB.)
   */
  release(items: Uint8Array | { readonly data: Uint8Array } | Readonly<Record<string, ReadonlyMap<string, { readonly data: Uint8Array }>>>): void;
  /** Bytes held for reuse. */
  readonly idleBytes: number;
}

/** Creates a {@link BufferPool}. */
export function createBufferPool(options: BufferPoolOptions = {}): BufferPool {
  const shared = options.shared ?? false;
  if (typeof shared !== 'boolean') {
    throw new CkptError('INVALID_ARGUMENT', `createBufferPool: shared must be a boolean, got ${String(shared)}`, { received: shared });
  }
  const free = new Map<number, Uint8Array[]>();
  const owned = new WeakMap<ArrayBufferLike, Uint8Array>();
  // Every array released (a view of a pooled buffer, or what `allocate` returned): a second release of
  // one, after its buffer went to another load, would hand that load's memory out a second time.
  const released = new WeakSet<Uint8Array>();
  let idle = 0;
  const put = (data: Uint8Array): void => {
    if (released.has(data)) return;
    released.add(data);
    const buf = owned.get(data.buffer);
    if (buf === undefined) return;
    owned.delete(data.buffer);
    const list = free.get(buf.byteLength) ?? [];
    list.push(buf);
    free.set(buf.byteLength, list);
    idle += buf.byteLength;
  };
  return {
    allocate(size: number): Uint8Array {
      const list = free.get(size);
      let buf = list?.pop();
      if (buf === undefined) buf = allocReadBuffer(size, shared);
      else idle -= size;
      if (list?.length === 0) free.delete(size);
      owned.set(buf.buffer, buf);
      // A new array each time: releasing the one an earlier allocation returned cannot free this one.
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    },
    release(items) {
      if (items instanceof Uint8Array) put(items);
      else if ('data' in items && items.data instanceof Uint8Array) put(items.data);
      else {
        for (const group of Object.values(items as Record<string, ReadonlyMap<string, { data: Uint8Array }>>)) {
          for (const t of group.values()) put(t.data);
        }
      }
    },
    get idleBytes() {
      return idle;
    },
  };
}
