/**
 * The memory of one averaging run, allocated once: read slots, a float64 accumulator of one chunk and
 * the kernels that work on them (WebAssembly SIMD where available, the loops of `accumulate.ts`
 * otherwise; both give the same bits).
 *
 * @module
 */
import { PAGE, SKEW, allocReadBuffer } from '../buffers.js';
import { CkptError } from '../errors.js';
import { type AveragedDType, accumulate, finish } from './accumulate.js';
import { type SimdKernels, createSimd } from './simd.js';


/**
 * Where, inside a page-aligned slot, to put bytes read from file offset `fileOffset`: half a page away
 * from the file offset's position in its page, rounded down to 16 bytes. The kernel copies page-cache
 * data ~3x slower when the destination sits 0 to ~40 bytes after the source's position in a page
 * (measured here; `src/buffers.ts` avoids the same zone for reads from offset 0); this keeps every read
 * 2033-2048 bytes away from it and 16-byte aligned for the typed and SIMD views.
 *
 * @example
 * ```ts
 * readPlacement(0); // 2048
 * readPlacement(2056); // 0 (4104 % 4096 = 8, rounded down to 16)
 * ```
 */
export function readPlacement(fileOffset: number): number {
  return (((fileOffset % PAGE) + PAGE / 2) % PAGE) & ~15;
}

/** Sizes of a {@link Workspace}. */
export interface WorkspaceOptions {
  /** Largest read, and largest piece accumulated or finished at once, in bytes (a multiple of 8). */
  readonly chunk: number;
  /** Number of read slots. */
  readonly slots: number;
  /** Use the WebAssembly SIMD kernels where available. @default true */
  readonly simd?: boolean;
  /** Buffers that finished tensors are written into ({@link Workspace.outputs}): how many, of what size. */
  readonly outputs?: { readonly count: number; readonly bytes: number };
}

/**
 * Largest total of output buffers placed inside the kernels' WebAssembly memory (whose size is limited
 * to 4 GiB); larger ones are separate allocations that finished chunks are copied into.
 */
const MAX_SHARED_OUTPUT = 1024 * 1024 * 1024;

const bits = new DataView(new ArrayBuffer(8));

/**
 * True when `d` is a power of two whose reciprocal is a finite non-zero float64: then `x · (1/d)` is
 * exactly `x / d` for every `x` (both are the correctly rounded value of the same real number).
 *
 * @example
 * ```ts
 * exactReciprocal(8); // true
 * exactReciprocal(6); // false
 * ```
 */
export function exactReciprocal(d: number): boolean {
  bits.setFloat64(0, d);
  const exponent = (bits.getUint32(0) >>> 20) & 0x7ff;
  return (bits.getUint32(0) & 0xfffff) === 0 && bits.getUint32(4) === 0 && exponent !== 0 && exponent !== 0x7ff;
}

/** Which kernels a {@link Workspace} runs. */
export type KernelKind = 'wasm-simd' | 'js';

const ELEMENT_BYTES: Readonly<Record<AveragedDType, number>> = { F64: 8, F32: 4, F16: 2, BF16: 2 };

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/**
 * Read slots and one chunk's float64 accumulator, in a single allocation made once (first touch of
 * fresh memory costs about as much as reading the data), plus the arithmetic on them.
 *
 * Call order per output chunk: {@link accumulate} with `first` for the first input, then once per other
 * input, then {@link finish}.
 */
export class Workspace {
  /** The kernels in use. */
  readonly kind: KernelKind;
  /** Largest read in bytes. */
  readonly chunk: number;
  private readonly buffer: ArrayBuffer;
  private readonly slotOffsets: number[];
  private readonly acc: Float64Array;
  private readonly staging: Uint8Array;
  private readonly simd: SimdKernels | undefined;
  /**
   * The output buffers for finished tensors: inside the kernels' memory when they fit there (then
   * `finish` writes into them directly), placed for fast copies either way.
   */
  readonly outputs: readonly Uint8Array[];

  constructor(options: WorkspaceOptions) {
    const { chunk, slots } = options;
    const { count: outputCount, bytes: outputBytes } = options.outputs ?? { count: 0, bytes: 0 };
    const sizes = [chunk, slots, outputCount, outputBytes];
    if (!sizes.every(Number.isSafeInteger) || chunk <= 0 || chunk % 8 !== 0 || slots < 1 || outputCount < 0 || outputBytes < 0) {
      throw new CkptError('INVALID_ARGUMENT', `workspace: chunk must be a positive multiple of 8, slots a positive integer, outputs a count and a size (got ${sizes.join(', ')})`, {});
    }
    this.chunk = chunk;
    const slotBytes = roundUp(chunk + PAGE, PAGE);
    // Accumulator for the elements of one chunk of the narrowest averaged dtype (2 bytes).
    const accBytes = roundUp((chunk / 2) * 8, PAGE);
    const stagingBytes = roundUp(chunk, PAGE);
    const outputStride = roundUp(outputBytes + SKEW, PAGE);
    const inside = outputCount * outputStride <= MAX_SHARED_OUTPUT;
    const outputAt = slots * slotBytes + accBytes + stagingBytes;
    const total = outputAt + (inside ? outputCount * outputStride : 0);
    const wasm = options.simd === false ? undefined : createSimd(total);
    this.kind = wasm === undefined ? 'js' : 'wasm-simd';
    this.simd = wasm?.kernels;
    // A WebAssembly memory starts on a page boundary; an ArrayBuffer's start is not known (Node's large
    // ones start 16 bytes into a page), which read placement tolerates.
    this.buffer = wasm === undefined ? new ArrayBuffer(total) : wasm.memory.buffer;
    this.slotOffsets = Array.from({ length: slots }, (_, k) => k * slotBytes);
    this.acc = new Float64Array(this.buffer, slots * slotBytes, chunk / 2);
    this.staging = new Uint8Array(this.buffer, slots * slotBytes + accBytes, chunk);
    this.outputs = Array.from({ length: outputCount }, (_, k) =>
      inside ? new Uint8Array(this.buffer, outputAt + k * outputStride + SKEW, outputBytes) : allocReadBuffer(outputBytes),
    );
  }

  /** Number of read slots. */
  get slots(): number {
    return this.slotOffsets.length;
  }

  /**
   * A view of slot `k` to read `length` (at most `chunk`) bytes from file offset `fileOffset` into,
   * placed by {@link readPlacement}.
   */
  place(k: number, fileOffset: number, length: number): Uint8Array {
    const base = this.slotOffsets[k];
    if (base === undefined || length > this.chunk || length < 0) {
      throw new CkptError('INVALID_ARGUMENT', `workspace: no room for ${length} bytes in slot ${k}`, { expected: this.chunk, received: length });
    }
    return new Uint8Array(this.buffer, base + readPlacement(fileOffset), length);
  }

  /**
   * Adds `weight × x` to the accumulator for the elements `x` of `bytes` (at most `chunk` bytes of
   * little-endian `dtype`), or stores it with `first`; exactly `accumulate()` of `accumulate.ts`.
   */
  accumulate(bytes: Uint8Array, dtype: AveragedDType, weight: number, first: boolean): void {
    const kernels = this.simd;
    const size = ELEMENT_BYTES[dtype];
    if (kernels !== undefined && bytes.buffer === this.buffer && dtype !== 'F16' && bytes.byteLength % size === 0 && bytes.byteLength <= this.chunk) {
      const kernel =
        dtype === 'F32' ? (first ? kernels.f32Set : kernels.f32Add) : dtype === 'F64' ? (first ? kernels.f64Set : kernels.f64Add) : first ? kernels.bf16Set : kernels.bf16Add;
      kernel(this.acc.byteOffset, bytes.byteOffset, bytes.byteLength / size, weight);
      return;
    }
    accumulate(this.acc, bytes, dtype, weight, first);
  }

  /**
   * Writes the accumulated elements divided by `divisor`, rounded once to `dtype`, into `out` (at most
   * `chunk` bytes; any memory); exactly `finish()` of `accumulate.ts`.
   */
  finish(divisor: number, dtype: AveragedDType, out: Uint8Array): void {
    const kernels = this.simd;
    if (kernels === undefined || (dtype !== 'F32' && dtype !== 'F64') || out.byteLength > this.chunk || out.byteLength % ELEMENT_BYTES[dtype] !== 0) {
      finish(this.acc, divisor, dtype, out);
      return;
    }
    const scale = exactReciprocal(divisor);
    const kernel = dtype === 'F32' ? (scale ? kernels.f32Scale : kernels.f32Finish) : scale ? kernels.f64Scale : kernels.f64Finish;
    const scalar = scale ? 1 / divisor : divisor;
    const n = out.byteLength / ELEMENT_BYTES[dtype];
    if (out.buffer === this.buffer) {
      kernel(out.byteOffset, this.acc.byteOffset, n, scalar);
      return;
    }
    kernel(this.staging.byteOffset, this.acc.byteOffset, n, scalar);
    out.set(this.staging.subarray(0, out.byteLength));
  }
}
