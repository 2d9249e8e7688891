/**
 * WebAssembly SIMD versions of the hot loops of `accumulate.ts`, for tensors of F32, F64 and BF16: the
 * same float64 operations in the same order (`acc + w·x`, one `acc / divisor` rounded once, no fused
 * multiply-add), two lanes at a time, so the results are bit for bit those of the plain loops (a test
 * checks it on random bit patterns: infinities, subnormals, -0). The one exception is which NaN comes
 * out when two NaNs are added: x86 keeps the first operand's, and V8 orders the operands of the plain
 * loop as it likes (differently in its interpreter and its optimised code), so that payload was never
 * reproducible. V8 does not vectorise typed-array loops; measured here the float32 accumulation runs
 * ~0.3 ns per element against ~1.5-2 ns for the TypeScript loop.
 *
 * The module is assembled from the opcodes below on first use (no build step, no binary blob) and works
 * on a `WebAssembly.Memory` owned by the caller, so read buffers and accumulators live in that memory and
 * nothing is copied in or out. Nothing runs on import.
 *
 * @module
 */

/** The subset of the `WebAssembly` global used here (the project's `lib` settings do not declare it). */
interface WasmGlobal {
  readonly Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory;
  readonly Module: new (bytes: Uint8Array) => object;
  readonly Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { readonly exports: Record<string, unknown> };
}

/** A `WebAssembly.Memory`: `buffer` is replaced (and the old one detached) only by `grow`, never called here. */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}

/** One kernel: `(dst, src, n, scalar)`, byte offsets into the memory and an element count. */
export type Kernel = (dst: number, src: number, n: number, scalar: number) => void;

/**
 * The exported kernels. `*Set`/`*Add`: `acc[i] = w·x[i]` / `acc[i] = acc[i] + w·x[i]` for float64 `acc`
 * at `dst` and the `n` elements `x` at `src` (F32, F64 or BF16 bits). `*Finish`: element `i` at `dst`
 * becomes `acc[i] / divisor` (float64 `acc` at `src`) rounded once to F32 / stored as F64. No alignment
 * is required; 16-byte aligned offsets are fastest. `*Scale`: as `*Finish`, multiplying by `scalar`:
 * for a power-of-two divisor `d`, `x · (1/d)` is exactly `x / d` (both are the correctly rounded value of
 * the same real number), and a multiplication costs a fraction of a division.
 */
export interface SimdKernels {
  readonly f32Set: Kernel;
  readonly f32Add: Kernel;
  readonly f64Set: Kernel;
  readonly f64Add: Kernel;
  readonly bf16Set: Kernel;
  readonly bf16Add: Kernel;
  readonly f32Finish: Kernel;
  readonly f64Finish: Kernel;
  /** `*Finish` with a multiplication by `scalar` instead of a division. */
  readonly f32Scale: Kernel;
  readonly f64Scale: Kernel;
}

/** Size of a WebAssembly memory page. */
export const WASM_PAGE = 65536;

type Code = number[];

function leb(n: number): Code {
  const out: Code = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): Code {
  const out: Code = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

const I32 = 0x7f;
const F64 = 0x7c;
const V128 = 0x7b;

const get = (i: number): Code => [0x20, ...leb(i)];
const set = (i: number): Code => [0x21, ...leb(i)];
const i32 = (v: number): Code => [0x41, ...sleb(v)];
const simd = (op: number): Code => [0xfd, ...leb(op)];
const I32_ADD = 0x6a;
const I32_AND = 0x71;
const I32_SHL = 0x74;
const I32_GE_U = 0x4f;

// Memory access: opcode, log2 alignment hint, offset.
const load = (offset: number): Code => [...simd(0x00), 4, ...leb(offset)];
const store = (offset: number): Code => [...simd(0x0b), 4, ...leb(offset)];
const F32_LOAD: Code = [0x2a, 2, 0];
const F64_LOAD: Code = [0x2b, 3, 0];
const I32_LOAD16_U: Code = [0x2f, 1, 0];
const F32_STORE: Code = [0x38, 2, 0];
const F64_STORE: Code = [0x39, 3, 0];
const F64_ADD = 0xa0;
const F64_MUL = 0xa2;
const F64_DIV = 0xa3;
const F32_DEMOTE_F64 = 0xb6;
const F64_PROMOTE_F32 = 0xbb;
const F32_REINTERPRET_I32 = 0xbe;

const F64X2_SPLAT = simd(0x14);
const F64X2_ADD = simd(0xf0);
const F64X2_MUL = simd(0xf2);
const F64X2_DIV = simd(0xf3);
const F64X2_PROMOTE_LOW_F32X4 = simd(0x5f);
const F32X4_DEMOTE_F64X2_ZERO = simd(0x5e);
const I32X4_EXTEND_LOW_I16X8_U = simd(0xa9);
const I32X4_EXTEND_HIGH_I16X8_U = simd(0xaa);
const I32X4_SHL = simd(0xab);
const shuffle = (lanes: readonly number[]): Code => [...simd(0x0d), ...lanes];
/** Bytes 8-15 of a vector moved to 0-7: the upper two float32 lanes become the lower two. */
const HIGH_HALF = shuffle([8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]);
/** The low 8 bytes of two vectors side by side. */
const LOW_HALVES = shuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]);

// Parameters and locals of every kernel.
const DST = 0;
const SRC = 1;
const N = 2;
const SCALAR = 3;
const VEC_END = 4;
const END = 5;
const SPLAT = 6;
const T0 = 7;
const T1 = 8;

/**
 * A kernel: a vector loop over `lanes` elements per iteration while `src` is below the last whole group,
 * then a scalar loop over the rest. `vector` / `scalar` are the bodies; each loop then advances `src`
 * and `dst` by the bytes consumed and produced.
 */
function kernel(spec: { srcSize: number; dstSize: number; lanes: number; vector: Code; scalar: Code }): Code {
  const { srcSize, dstSize, lanes, vector, scalar } = spec;
  const shift = Math.log2(srcSize);
  const advance = (src: number, dst: number): Code => [...get(SRC), ...i32(src), I32_ADD, ...set(SRC), ...get(DST), ...i32(dst), I32_ADD, ...set(DST)];
  const loopWhileBelow = (end: number, body: Code): Code => [0x02, 0x40, 0x03, 0x40, ...get(SRC), ...get(end), I32_GE_U, 0x0d, 1, ...body, 0x0c, 0, 0x0b, 0x0b];
  const body: Code = [
    ...get(SRC), ...get(N), ...i32(shift), I32_SHL, I32_ADD, ...set(END),
    ...get(SRC), ...get(N), ...i32(-lanes), I32_AND, ...i32(shift), I32_SHL, I32_ADD, ...set(VEC_END),
    ...get(SCALAR), ...F64X2_SPLAT, ...set(SPLAT),
    ...loopWhileBelow(VEC_END, [...vector, ...advance(lanes * srcSize, lanes * dstSize)]),
    ...loopWhileBelow(END, [...scalar, ...advance(srcSize, dstSize)]),
    0x0b,
  ];
  const locals = [...leb(2), ...leb(2), I32, ...leb(3), V128];
  const fn = [...locals, ...body];
  return [...leb(fn.length), ...fn];
}

/** `acc = w·v` (set) or `acc = acc + w·v` (add) for the float64 pair `v` at `dst + offset`. */
function update(add: boolean, offset: number, pair: Code): Code {
  const product = [...get(SPLAT), ...pair, ...F64X2_MUL];
  return add ? [...get(DST), ...get(DST), ...load(offset), ...product, ...F64X2_ADD, ...store(offset)] : [...get(DST), ...product, ...store(offset)];
}

function updateScalar(add: boolean, value: Code): Code {
  const product = [...get(SCALAR), ...value, F64_MUL];
  return add ? [...get(DST), ...get(DST), ...F64_LOAD, ...product, F64_ADD, ...F64_STORE] : [...get(DST), ...product, ...F64_STORE];
}

function f32Kernel(add: boolean): Code {
  return kernel({
    srcSize: 4,
    dstSize: 8,
    lanes: 4,
    vector: [
      ...get(SRC), ...load(0), ...set(T0),
      ...update(add, 0, [...get(T0), ...F64X2_PROMOTE_LOW_F32X4]),
      ...update(add, 16, [...get(T0), ...get(T0), ...HIGH_HALF, ...F64X2_PROMOTE_LOW_F32X4]),
    ],
    scalar: updateScalar(add, [...get(SRC), ...F32_LOAD, F64_PROMOTE_F32]),
  });
}

function f64Kernel(add: boolean): Code {
  return kernel({
    srcSize: 8,
    dstSize: 8,
    lanes: 4,
    vector: [...update(add, 0, [...get(SRC), ...load(0)]), ...update(add, 16, [...get(SRC), ...load(16)])],
    scalar: updateScalar(add, [...get(SRC), ...F64_LOAD]),
  });
}

function bf16Kernel(add: boolean): Code {
  // A bfloat16 is the upper half of a float32: widen to 32 bits, shift left by 16, promote.
  const widen = (extend: Code): Code => [...get(SRC), ...load(0), ...extend, ...i32(16), ...I32X4_SHL];
  return kernel({
    srcSize: 2,
    dstSize: 8,
    lanes: 8,
    vector: [
      ...widen(I32X4_EXTEND_LOW_I16X8_U), ...set(T0),
      ...widen(I32X4_EXTEND_HIGH_I16X8_U), ...set(T1),
      ...update(add, 0, [...get(T0), ...F64X2_PROMOTE_LOW_F32X4]),
      ...update(add, 16, [...get(T0), ...get(T0), ...HIGH_HALF, ...F64X2_PROMOTE_LOW_F32X4]),
      ...update(add, 32, [...get(T1), ...F64X2_PROMOTE_LOW_F32X4]),
      ...update(add, 48, [...get(T1), ...get(T1), ...HIGH_HALF, ...F64X2_PROMOTE_LOW_F32X4]),
    ],
    scalar: updateScalar(add, [...get(SRC), ...I32_LOAD16_U, ...i32(16), I32_SHL, F32_REINTERPRET_I32, F64_PROMOTE_F32]),
  });
}

/** The float64 operation of a finishing kernel: division by the divisor, or multiplication by its reciprocal. */
type FinishOp = 'div' | 'mul';

function finishOps(op: FinishOp): { vector: Code; scalar: number } {
  return op === 'div' ? { vector: F64X2_DIV, scalar: F64_DIV } : { vector: F64X2_MUL, scalar: F64_MUL };
}

function f32FinishKernel(op: FinishOp): Code {
  const ops = finishOps(op);
  const quotient = (offset: number): Code => [...get(SRC), ...load(offset), ...get(SPLAT), ...ops.vector, ...F32X4_DEMOTE_F64X2_ZERO];
  return kernel({
    srcSize: 8,
    dstSize: 4,
    lanes: 4,
    vector: [...get(DST), ...quotient(0), ...quotient(16), ...LOW_HALVES, ...store(0)],
    scalar: [...get(DST), ...get(SRC), ...F64_LOAD, ...get(SCALAR), ops.scalar, F32_DEMOTE_F64, ...F32_STORE],
  });
}

function f64FinishKernel(op: FinishOp): Code {
  const ops = finishOps(op);
  const quotient = (offset: number): Code => [...get(DST), ...get(SRC), ...load(offset), ...get(SPLAT), ...ops.vector, ...store(offset)];
  return kernel({
    srcSize: 8,
    dstSize: 8,
    lanes: 4,
    vector: [...quotient(0), ...quotient(16)],
    scalar: [...get(DST), ...get(SRC), ...F64_LOAD, ...get(SCALAR), ops.scalar, ...F64_STORE],
  });
}

const NAMES = ['f32Set', 'f32Add', 'f64Set', 'f64Add', 'bf16Set', 'bf16Add', 'f32Finish', 'f64Finish', 'f32Scale', 'f64Scale'] as const;

function section(id: number, items: Code[]): Code {
  const body = [...leb(items.length), ...items.flat()];
  return [id, ...leb(body.length), ...body];
}

function name(s: string): Code {
  return [...leb(s.length), ...Array.from(s, (c) => c.charCodeAt(0))];
}

/** The binary module: one function type, an imported memory `env.memory`, the kernels of {@link NAMES}. */
export function simdModuleBytes(): Uint8Array {
  const bodies = [f32Kernel(false), f32Kernel(true), f64Kernel(false), f64Kernel(true), bf16Kernel(false), bf16Kernel(true), f32FinishKernel('div'), f64FinishKernel('div'), f32FinishKernel('mul'), f64FinishKernel('mul')];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [[0x60, 4, I32, I32, I32, F64, 0]]),
    ...section(2, [[...name('env'), ...name('memory'), 0x02, 0x00, 0x00]]),
    ...section(3, bodies.map(() => [0])),
    ...section(7, NAMES.map((n, i) => [...name(n), 0x00, ...leb(i)])),
    ...section(10, bodies),
  ]);
}

let compiled: object | null | undefined;

function wasmGlobal(): WasmGlobal | undefined {
  return (globalThis as { WebAssembly?: WasmGlobal }).WebAssembly;
}

/**
 * The compiled module (compiled on first use), or undefined where WebAssembly or its SIMD instructions
 * are unavailable. A `WebAssembly.Module` can be sent to a worker thread, which then {@link adoptSimdModule}s
 * it instead of compiling its own.
 */
export function simdModule(): object | undefined {
  const wasm = wasmGlobal();
  if (wasm === undefined) return undefined;
  if (compiled === undefined) {
    try {
      compiled = new wasm.Module(simdModuleBytes());
    } catch {
      compiled = null;
    }
  }
  return compiled ?? undefined;
}

/** Uses `module`, a {@link simdModule} compiled by another thread, unless this one has compiled its own. */
export function adoptSimdModule(module: object): void {
  compiled ??= module;
}

/**
 * A fresh memory of `bytes` (rounded up to whole pages) with the kernels bound to it, or undefined where
 * WebAssembly or its SIMD instructions are unavailable (`--jitless`, old engines): callers then use the
 * TypeScript loops of `accumulate.ts`.
 */
export function createSimd(bytes: number): { memory: WasmMemory; kernels: SimdKernels } | undefined {
  const wasm = wasmGlobal();
  const module = simdModule();
  if (wasm === undefined || module === undefined) return undefined;
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE));
  let memory: WasmMemory;
  let exports: Record<string, unknown>;
  try {
    memory = new wasm.Memory({ initial: pages, maximum: pages });
    exports = new wasm.Instance(module, { env: { memory } }).exports;
  } catch {
    return undefined;
  }
  const kernels = Object.fromEntries(NAMES.map((n) => [n, exports[n] as Kernel])) as unknown as SimdKernels;
  return { memory, kernels };
}
