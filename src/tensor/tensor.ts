import { CkptError } from '../errors.js';
import { DTYPES, type DType, isDType } from './dtype.js';

/** Largest rank accepted anywhere in ckpt. */
export const MAX_RANK = 64;

/**
 * A tensor: dtype, shape and its raw little-endian bytes (row-major). `data` may be a view into a larger
 * buffer (zero-copy loads); treat it as read-only unless you created it.
 */
export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/** Ordered map of tensor name to tensor. Insertion order is the order tensors are written in. */
export type TensorMap = Map<string, Tensor>;

/** Typed arrays ckpt converts to and from. */
export type NumericArray =
  | Float64Array
  | Float32Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array;

/** " of tensor …" for messages (built only for an error: shapes are checked for every tensor saved). */
function ofTensor(name: string | undefined): string {
  return name === undefined ? '' : ` of tensor "${name}"`;
}

function tensorContext(name: string | undefined): { tensor?: string } {
  return name === undefined ? {} : { tensor: name };
}

/**
 * Number of elements of `shape`, checked: every dimension a non-negative safe integer, rank at most
 * {@link MAX_RANK}, the product a safe integer. Throws `INVALID_SHAPE` or `SIZE_OVERFLOW`.
 */
export function numElements(shape: readonly unknown[], name?: string): number {
  if (shape.length > MAX_RANK) {
    throw new CkptError('INVALID_SHAPE', `rank ${shape.length}${ofTensor(name)} exceeds the limit of ${MAX_RANK}`, {
      ...tensorContext(name),
      expected: MAX_RANK,
      received: shape.length,
    });
  }
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new CkptError('INVALID_SHAPE', `invalid dimension ${JSON.stringify(d)} in shape${ofTensor(name)}`, {
        ...tensorContext(name),
        received: shape,
      });
    }
    n *= d;
    if (!Number.isSafeInteger(n)) {
      throw new CkptError('SIZE_OVERFLOW', `element count of shape [${shape.join(', ')}]${ofTensor(name)} overflows`, {
        ...tensorContext(name),
        received: shape,
      });
    }
  }
  return n;
}

/** Byte length of a tensor of `dtype` and `shape`, overflow-checked. */
export function byteLength(dtype: DType, shape: readonly unknown[], name?: string): number {
  const bytes = numElements(shape, name) * DTYPES[dtype].size;
  if (!Number.isSafeInteger(bytes)) {
    throw new CkptError('SIZE_OVERFLOW', `byte size of shape [${shape.join(', ')}] overflows`, {
      ...tensorContext(name),
    });
  }
  return bytes;
}

function typedArrayDType(data: NumericArray): DType {
  if (data instanceof Float64Array) return 'F64';
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof BigInt64Array) return 'I64';
  if (data instanceof Int32Array) return 'I32';
  if (data instanceof Int16Array) return 'I16';
  if (data instanceof Int8Array) return 'I8';
  if (data instanceof Uint16Array) return 'U16';
  if (data instanceof Uint32Array) return 'U32';
  if (data instanceof BigUint64Array) return 'U64';
  return 'U8';
}

/**
 * Creates a tensor, validating that the data length matches dtype and shape.
 *
 * `data` may be raw bytes (any dtype) or a typed array whose element type matches `dtype` (its bytes are
 * viewed, not copied). When `dtype` is omitted it is inferred from the typed array (Uint8Array -> U8).
 *
 * @example
 * ```ts
 * const w = tensor(new Float32Array([1, 2, 3, 4]), [2, 2]); // F32 [2, 2]
 * ```
 */
export function tensor(data: NumericArray, shape: readonly number[], dtype?: DType): Tensor {
  const dt = dtype ?? typedArrayDType(data);
  if (!isDType(dt)) throw new CkptError('UNKNOWN_DTYPE', `unknown dtype "${String(dt)}"`, { received: dt });
  if (!(data instanceof Uint8Array) && dtype !== undefined && typedArrayDType(data) !== dt) {
    const inferred = typedArrayDType(data);
    // Same-width reinterpretations (e.g. Uint16Array holding F16/BF16 bits) are allowed.
    if (DTYPES[inferred].size !== DTYPES[dt].size) {
      throw new CkptError('INVALID_ARGUMENT', `a ${data.constructor.name} cannot hold ${dt} data`, {
        expected: dt,
        received: inferred,
      });
    }
  }
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const expected = byteLength(dt, shape);
  if (bytes.byteLength !== expected) {
    throw new CkptError(
      'TENSOR_SIZE_MISMATCH',
      `${dt} tensor of shape [${shape.join(', ')}] needs ${expected} bytes, got ${bytes.byteLength}`,
      { expected, received: bytes.byteLength },
    );
  }
  return { dtype: dt, shape: [...shape], data: bytes };
}

/** Builds a {@link TensorMap} from a plain object or entries, validating each tensor. */
export function tensorMap(entries: Record<string, Tensor> | Iterable<readonly [string, Tensor]>): TensorMap {
  const it = Symbol.iterator in entries ? entries : Object.entries(entries);
  const map: TensorMap = new Map();
  for (const [name, t] of it as Iterable<readonly [string, Tensor]>) {
    if (map.has(name)) throw new CkptError('DUPLICATE_KEY', `tensor "${name}" given twice`, { tensor: name });
    validateTensor(t, name);
    map.set(name, t);
  }
  return map;
}

/** Checks dtype, shape and byte length of `t`; throws a typed error naming `name`. */
export function validateTensor(t: Tensor, name: string): void {
  if (!isDType(t.dtype)) {
    throw new CkptError('UNKNOWN_DTYPE', `tensor "${name}" has unknown dtype "${String(t.dtype)}"`, {
      tensor: name,
      received: t.dtype,
    });
  }
  if (!(t.data instanceof Uint8Array)) {
    throw new CkptError('INVALID_ARGUMENT', `tensor "${name}": data must be a Uint8Array of raw bytes`, {
      tensor: name,
    });
  }
  const expected = byteLength(t.dtype, t.shape, name);
  if (t.data.byteLength !== expected) {
    throw new CkptError(
      'TENSOR_SIZE_MISMATCH',
      `tensor "${name}" (${t.dtype} [${t.shape.join(', ')}]) needs ${expected} bytes, got ${t.data.byteLength}`,
      { tensor: name, expected, received: t.data.byteLength },
    );
  }
}

type ViewCtor =
  | Float64ArrayConstructor
  | Float32ArrayConstructor
  | BigInt64ArrayConstructor
  | Int32ArrayConstructor
  | Int16ArrayConstructor
  | Int8ArrayConstructor
  | Uint8ArrayConstructor
  | Uint16ArrayConstructor
  | Uint32ArrayConstructor
  | BigUint64ArrayConstructor;

const VIEW: Record<DType, ViewCtor> = {
  F64: Float64Array,
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I64: BigInt64Array,
  I32: Int32Array,
  I16: Int16Array,
  I8: Int8Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
  U16: Uint16Array,
  U32: Uint32Array,
  U64: BigUint64Array,
  F8_E4M3: Uint8Array,
  F8_E5M2: Uint8Array,
};

/**
 * A typed-array view of a tensor's elements (F16/BF16 as Uint16Array bit patterns, BOOL and F8 as
 * Uint8Array). Zero-copy when the data is aligned for the element size; otherwise an aligned copy.
 * ckpt assumes a little-endian host (every platform Node.js supports).
 */
export function typedView(t: Tensor): NumericArray {
  const Ctor = VIEW[t.dtype];
  const size = DTYPES[t.dtype].size;
  let bytes = t.data;
  if (bytes.byteOffset % size !== 0) bytes = bytes.slice();
  return new Ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / size) as NumericArray;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Converts an IEEE 754 half-precision bit pattern to a number. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Converts a number to the nearest IEEE 754 half-precision bit pattern (round half to even). */
export function f32ToF16(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  e = half; // carry into the exponent is correct (rounds up to the next binade or to infinity)
  return sign | e;
}

/** Converts a bfloat16 bit pattern to a number. */
export function bf16ToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0] as number;
}

/** Converts a number to the nearest bfloat16 bit pattern (round half to even; NaN stays NaN). */
export function f32ToBf16(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/**
 * The elements of a floating-point tensor as a Float64Array (F64, F32, F16, BF16); integers and booleans
 * are converted too (I64/U64 through Number, exact up to 2^53). F8 types throw `UNSUPPORTED`.
 */
export function toFloat64(t: Tensor): Float64Array {
  const v = typedView(t);
  const out = new Float64Array(v.length);
  if (t.dtype === 'F16') for (let i = 0; i < v.length; i++) out[i] = f16ToF32(v[i] as number);
  else if (t.dtype === 'BF16') for (let i = 0; i < v.length; i++) out[i] = bf16ToF32(v[i] as number);
  else if (t.dtype === 'F8_E4M3' || t.dtype === 'F8_E5M2') {
    throw new CkptError('UNSUPPORTED', `conversion of ${t.dtype} to numbers is not supported`, {});
  } else if (v instanceof BigInt64Array || v instanceof BigUint64Array) {
    for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
  } else out.set(v as Exclude<NumericArray, BigInt64Array | BigUint64Array>);
  return out;
}

/**
 * A tensor of `dtype` and `shape` holding `values` (rounded to the dtype: F16/BF16 round half to even,
 * integers truncate toward zero as typed arrays do).
 */
export function fromFloat64(values: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor {
  const n = numElements(shape);
  if (values.length !== n) {
    throw new CkptError('TENSOR_SIZE_MISMATCH', `shape [${shape.join(', ')}] needs ${n} values, got ${values.length}`, {
      expected: n,
      received: values.length,
    });
  }
  const bytes = new Uint8Array(n * DTYPES[dtype].size);
  const t: Tensor = { dtype, shape: [...shape], data: bytes };
  const v = typedView(t);
  if (dtype === 'F16') for (let i = 0; i < n; i++) v[i] = f32ToF16(values[i] as number);
  else if (dtype === 'BF16') for (let i = 0; i < n; i++) v[i] = f32ToBf16(values[i] as number);
  else if (dtype === 'F8_E4M3' || dtype === 'F8_E5M2') {
    throw new CkptError('UNSUPPORTED', `conversion of numbers to ${dtype} is not supported`, {});
  } else if (v instanceof BigInt64Array || v instanceof BigUint64Array) {
    for (let i = 0; i < n; i++) v[i] = BigInt(Math.trunc(values[i] as number));
  } else if (dtype === 'BOOL') for (let i = 0; i < n; i++) v[i] = values[i] ? 1 : 0;
  else for (let i = 0; i < n; i++) v[i] = values[i] as number;
  return t;
}
