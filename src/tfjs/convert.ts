/**
 * Conversion between TF.js tensors and ckpt {@link Tensor}s (float32, int32 and bool; the dtypes TF.js
 * variables hold).
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs';
import { CkptError } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import { type Tensor, type TensorMap, typedView } from '../tensor/tensor.js';

type TfNumericDType = 'float32' | 'int32' | 'bool';

const TO_CKPT: Readonly<Record<string, DType>> = { float32: 'F32', int32: 'I32', bool: 'BOOL' };
const TO_TF: Readonly<Partial<Record<DType, TfNumericDType>>> = { F32: 'float32', I32: 'int32', BOOL: 'bool' };

/** The ckpt dtype of a TF.js dtype; `UNSUPPORTED` for string and complex64. */
export function ckptDType(dtype: tf.DataType, name: string): DType {
  const d = TO_CKPT[dtype];
  if (d === undefined) {
    throw new CkptError('UNSUPPORTED', `tensor "${name}" has TF.js dtype ${dtype}; ckpt stores float32, int32 and bool tensors from TF.js`, {
      tensor: name,
      received: dtype,
    });
  }
  return d;
}

/** The TF.js dtype of a ckpt dtype, or undefined when TF.js has none. */
export function tfDType(dtype: DType): TfNumericDType | undefined {
  return TO_TF[dtype];
}

/**
 * Reads a TF.js tensor into a ckpt {@link Tensor}. With `copy` (the default) the caller owns the memory:
 * the cpu backend's `data()` hands out the tensor's own storage, and a copy keeps callers from writing
 * into the model. Without, `data` is a view of what `data()` returned: the backend's storage on the cpu
 * backend, a copy of its own on the others (wasm, webgl).
 */
export async function readTensor(t: tf.Tensor, name: string, copy = true): Promise<Tensor> {
  const dtype = ckptDType(t.dtype, name);
  const values = await t.data();
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  return { dtype, shape: [...t.shape], data: copy ? bytes.slice() : bytes };
}

/** Reads several TF.js tensors into a {@link TensorMap}, in the given order (`copy`: see {@link readTensor}). */
export async function readTensors(entries: readonly (readonly [string, tf.Tensor])[], copy = true): Promise<TensorMap> {
  const map: TensorMap = new Map();
  for (const [name, t] of entries) map.set(name, await readTensor(t, name, copy));
  return map;
}

/** What is wrong with storing `saved` into a TF.js tensor of `dtype` and `shape`, or undefined when it fits. */
export function mismatch(name: string, saved: Tensor, dtype: tf.DataType, shape: readonly number[]): string | undefined {
  const expected = TO_CKPT[dtype];
  if (expected === undefined) return `tensor "${name}": TF.js dtype ${dtype} cannot be restored`;
  if (saved.dtype !== expected) return `tensor "${name}": the checkpoint has ${saved.dtype}, the model ${expected}`;
  if (saved.shape.length !== shape.length || saved.shape.some((d, i) => d !== shape[i])) {
    return `tensor "${name}": the checkpoint has shape [${saved.shape.join(', ')}], the model [${shape.join(', ')}]`;
  }
  return undefined;
}

/**
 * A new TF.js tensor holding a copy of `t`'s values. (Copied because backends may keep the array they
 * are given (cpu), checkpoint buffers may be reused by the loader, and a loaded tensor is a view into a
 * larger buffer, which TF.js 4.22 does not always expect: `Tensor.bytes()` returns the whole buffer of
 * the array it holds.)
 */
export function toTf(t: Tensor, name: string): tf.Tensor {
  const dtype = tfDType(t.dtype);
  if (dtype === undefined) {
    throw new CkptError('UNSUPPORTED', `tensor "${name}" has dtype ${t.dtype}, which TF.js cannot hold`, { tensor: name, received: t.dtype });
  }
  const view = typedView(t) as Float32Array | Int32Array | Uint8Array;
  return tf.tensor(view.slice(), [...t.shape], dtype);
}
