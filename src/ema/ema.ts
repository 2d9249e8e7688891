/**
 * Exponential moving average (EMA) of weights, with TensorFlow's `tf.train.ExponentialMovingAverage`
 * semantics as OpenNMT-tf uses them:
 *
 *     d = dynamic ? min(decay, (1 + n) / (10 + n)) : decay
 *     shadow ← shadow − (1 − d) · (shadow − w)
 *
 * **n counts the updates, this one included**: the k-th update uses n = k. That is OpenNMT-tf's
 * `num_updates=optimizer.iterations` read after the optimizer step, so a loop that calls `update` once
 * after every optimizer step gets OpenNMT-tf's decays (or pass the step explicitly). The first update
 * only copies the weights into the shadow (TensorFlow initialises the shadow with the weights, so its
 * first update changes nothing); with dynamic decay the second uses d = min(decay, 3/12 = 0.25).
 *
 * **Arithmetic.** F32 tensors: float32, operation by operation as TensorFlow does it (the decay
 * computed in float32 from float32(n), then `shadow − float32(float32(shadow − w) · float32(1 − d))`),
 * so the shadow is bit-identical to TensorFlow's. F64: float64 throughout (TensorFlow would round 1 − d
 * to float32 first). F16 and BF16: the same float32 arithmetic, rounded once to the tensor's dtype
 * (TensorFlow rounds every intermediate to 16 bits, so the last bit can differ; with decays near 1, a
 * 16-bit shadow stops moving once (1 − d)·|shadow − w| is below half a unit in its last place, so
 * average F32 weights where that matters). Other dtypes (integers, BOOL, F8) are copied. Non-finite weights
 * propagate into the shadow, as in TensorFlow.
 *
 * **Cost.** One fused loop per tensor: read the weight and the shadow, write the shadow, nothing
 * allocated (a weight whose bytes are not aligned for its dtype is first copied to an aligned buffer).
 * The F32 update runs about as fast as a plain multiply-add loop over the same memory.
 *
 * **State.** The shadow (the checkpoint's `ema` group) and `{numUpdates, decay, dynamic}` (state.json)
 * are a complete state: `loadStateDict(stateDict())` in a new process continues the same average bit for
 * bit. Unlike OpenNMT-tf, whose checkpoints store the averaged values in place of the weights (a resumed
 * run then trains on from the average), training here keeps the raw weights and a checkpoint holds both;
 * {@link ExponentialMovingAverage.withAveragedWeights} swaps the average in for an evaluation or an
 * export.
 *
 * @module
 */
import { CkptError } from '../errors.js';
import { Problems } from '../problems.js';
import { type Tensor, type TensorMap, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, typedView, validateTensor } from '../tensor/tensor.js';

/** Options of {@link createEma}. */
export interface EmaOptions {
  /** The decay, or with `dynamic` its maximum; in (0, 1). @default 0.9999 (OpenNMT-tf's usual value) */
  readonly decay?: number;
  /** Use min(decay, (1 + n) / (10 + n)), so early averages are not dominated by the first weights. @default true */
  readonly dynamic?: boolean;
}

/** The JSON part of an EMA's state (state.json). A type alias, so it is assignable to JSON values. */
export type EmaState = {
  /** Updates made so far (0 before the first). */
  readonly numUpdates: number;
  readonly decay: number;
  readonly dynamic: boolean;
};

/** The checkpointable state of an EMA: the shadow tensors (the `ema` group) and its counters (JSON). */
export interface EmaStateDict {
  readonly tensors: TensorMap;
  readonly state: EmaState;
}

/** Options of {@link ExponentialMovingAverage.update}. */
export interface EmaUpdateOptions {
  /**
   * n for this update, counting it (OpenNMT-tf passes the optimizer's step after the update). The counter
   * continues from it. An integer ≥ 1. @default numUpdates + 1
   */
  readonly numUpdates?: number;
}

/**
 * An exponential moving average of a set of named weights.
 *
 * Call order: `update(weights)` after each optimizer step (the first one initialises the shadow); at any
 * point between updates, `stateDict()` to checkpoint and `withAveragedWeights(weights, fn)` to evaluate or
 * export; `loadStateDict(saved)` on a new or running EMA to resume. While `withAveragedWeights` runs,
 * the EMA is locked: every other method (and `shadow`) throws `INVALID_ARGUMENT`.
 */
export interface ExponentialMovingAverage {
  /** The configured decay (the maximum, when dynamic). */
  readonly decay: number;
  /** Whether the decay is min(decay, (1 + n) / (10 + n)). */
  readonly dynamic: boolean;
  /** Updates made so far; the next update uses n = numUpdates + 1 unless told otherwise. */
  readonly numUpdates: number;
  /** The averaged weights (empty before the first update). Live tensors: do not modify them. */
  readonly shadow: TensorMap;
  /** The decay of an update with counter n, in float64 (F32, F16 and BF16 use TensorFlow's float32 computation of it). */
  decayAt(n: number): number;
  /**
   * Moves the shadow toward `weights`, in place, or copies them into the shadow on the first update.
   * `weights` must have the shadow's names, dtypes and shapes (`INCOMPATIBLE_TENSORS` otherwise, with
   * nothing changed).
   */
  update(weights: TensorMap, options?: EmaUpdateOptions): void;
  /**
   * The shadow and counters, for a checkpoint (group `ema` + state.json). The tensors are the live
   * shadow, not copies (no model-sized allocation): write them before the next `update`, or copy them.
   */
  stateDict(): EmaStateDict;
  /**
   * Restores a {@link stateDict}: a resumed run continues the same average. The tensors are copied (into
   * the current shadow's buffers when there is one). `decay` and `dynamic` must equal this EMA's; on an
   * EMA that already has a shadow, names, dtypes and shapes must match it (a state with numUpdates 0 and
   * no tensors resets the EMA). Every problem is reported in one `STATE_INVALID` error that names the
   * tensors; on error nothing changes.
   */
  loadStateDict(dict: { readonly tensors: TensorMap | undefined; readonly state: unknown }): void;
  /**
   * Swaps the averaged weights into `weights` (in place, byte for byte, so views the model holds see
   * them), runs `fn`, and swaps the raw weights back, also when `fn` throws or rejects. Nothing
   * model-sized is allocated: the two sets of bytes are exchanged. `weights` must match the shadow.
   */
  withAveragedWeights<T>(weights: TensorMap, fn: () => T | Promise<T>): Promise<T>;
}

/** Up to this many bytes are exchanged at a time by withAveragedWeights. */
const SWAP_CHUNK = 1 << 20;

function describeMismatches(shadow: TensorMap, weights: TensorMap, ours: string, theirs: string): string[] {
  const out: string[] = [];
  for (const name of shadow.keys()) if (!weights.has(name)) out.push(`tensor "${name}" is missing from ${theirs}`);
  for (const [name, w] of weights) {
    const s = shadow.get(name);
    if (s === undefined) out.push(`tensor "${name}" is not in ${ours}`);
    else if (s.dtype !== w.dtype) out.push(`tensor "${name}": dtype ${w.dtype} in ${theirs}, ${s.dtype} in ${ours}`);
    else if (s.shape.length !== w.shape.length || s.shape.some((d, i) => d !== w.shape[i])) {
      out.push(`tensor "${name}": shape [${w.shape.join(', ')}] in ${theirs}, [${s.shape.join(', ')}] in ${ours}`);
    } else if (!(w.data instanceof Uint8Array) || s.data.byteLength !== w.data.byteLength) {
      out.push(`tensor "${name}": ${w.data instanceof Uint8Array ? w.data.byteLength : 'no'} bytes in ${theirs}, ${s.data.byteLength} in ${ours}`);
    }
  }
  return out;
}

function firstTensor(problems: readonly string[]): string | undefined {
  for (const p of problems) {
    const m = /tensor "([^"]*)"/.exec(p);
    if (m !== null) return m[1];
  }
  return undefined;
}

function copyTensor(t: Tensor): Tensor {
  return { dtype: t.dtype, shape: [...t.shape], data: t.data.slice() };
}

/** A Float32Array / Float64Array / Uint16Array over the tensor's own bytes (the shadow is always aligned). */
function ownView<T extends Float64Array | Float32Array | Uint16Array>(t: Tensor, Ctor: { new (b: ArrayBuffer, o: number, n: number): T; BYTES_PER_ELEMENT: number }): T {
  return new Ctor(t.data.buffer as ArrayBuffer, t.data.byteOffset, t.data.byteLength / Ctor.BYTES_PER_ELEMENT);
}

const fr = Math.fround;

/**
 * s ← s − float32(float32(s − x) · a), element by element: each `fr` is one float32 operation of
 * TensorFlow's kernel and the store rounds the last one. (In float64 the difference of two float32
 * values rounded to float32, and their exact product rounded to float32, are the float32 results.)
 * Unrolled by four: about 20% faster in V8 than the plain loop. Also the TF.js cpu backend's in-place
 * update (src/tfjs/ema.ts). @internal
 */
export function updateF32(s: Float32Array, x: Float32Array, a: number): void {
  const n = s.length;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const s0 = s[i] as number;
    const s1 = s[i + 1] as number;
    const s2 = s[i + 2] as number;
    const s3 = s[i + 3] as number;
    s[i] = s0 - fr(fr(s0 - (x[i] as number)) * a);
    s[i + 1] = s1 - fr(fr(s1 - (x[i + 1] as number)) * a);
    s[i + 2] = s2 - fr(fr(s2 - (x[i + 2] as number)) * a);
    s[i + 3] = s3 - fr(fr(s3 - (x[i + 3] as number)) * a);
  }
  for (; i < n; i++) {
    const si = s[i] as number;
    s[i] = si - fr(fr(si - (x[i] as number)) * a);
  }
}

function updateF64(s: Float64Array, x: Float64Array, a: number): void {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const si = s[i] as number;
    s[i] = si - (si - (x[i] as number)) * a;
  }
}

/** F16 / BF16 bit patterns: float32 arithmetic as in updateF32, then one rounding to 16 bits. */
function updateHalf(s: Uint16Array, x: Uint16Array, a: number, decode: (h: number) => number, encode: (v: number) => number): void {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const si = decode(s[i] as number);
    s[i] = encode(si - fr(fr(si - decode(x[i] as number)) * a));
  }
}

/**
 * shadow ← shadow − (1 − d)(shadow − w) for one tensor. `a32` is float32(1 − float32(d)) as TensorFlow
 * computes it, `a64` is 1 − d in float64. One small function per dtype keeps each loop monomorphic.
 */
function updateTensor(shadow: Tensor, w: Tensor, a32: number, a64: number): void {
  switch (w.dtype) {
    case 'F32':
      return updateF32(ownView(shadow, Float32Array), typedView(w) as Float32Array, a32);
    case 'F64':
      return updateF64(ownView(shadow, Float64Array), typedView(w) as Float64Array, a64);
    case 'F16':
      return updateHalf(ownView(shadow, Uint16Array), typedView(w) as Uint16Array, a32, f16ToF32, f32ToF16);
    case 'BF16':
      return updateHalf(ownView(shadow, Uint16Array), typedView(w) as Uint16Array, a32, bf16ToF32, f32ToBf16);
    default:
      shadow.data.set(w.data);
  }
}

function swapBytes(a: Uint8Array, b: Uint8Array, tmp: Uint8Array): void {
  if (a.buffer === b.buffer && a.byteOffset === b.byteOffset) return;
  for (let off = 0; off < a.byteLength; off += tmp.byteLength) {
    const end = Math.min(off + tmp.byteLength, a.byteLength);
    tmp.set(a.subarray(off, end));
    a.set(b.subarray(off, end), off);
    b.set(tmp.subarray(0, end - off), off);
  }
}

/**
 * Creates an exponential moving average of weights. The shadow is created by the first `update` (a copy
 * of the weights then), so the EMA can be created before the model is built. Invalid options are one
 * `INVALID_ARGUMENT` error listing every problem.
 *
 * @example
 * ```ts
 * const ema = createEma({ decay: 0.999 });
 * // after every optimizer step:
 * ema.update(weights);
 * // evaluate or export with the average; the raw weights are back afterwards:
 * const bleu = await ema.withAveragedWeights(weights, () => evaluate());
 * // checkpoint: manager.save({ step, tensors: { model: weights, ema: ema.stateDict().tensors },
 * //                                 state: { ema: ema.stateDict().state } });
 * // resume, with the restored checkpoint ck:
 * ema.loadStateDict({ tensors: ck.tensors.ema, state: ck.state.ema });
 * ```
 */
export function createEma(options: EmaOptions = {}): ExponentialMovingAverage {
  const decay = options.decay ?? 0.9999;
  const dynamic = options.dynamic ?? true;
  const p = new Problems();
  for (const key of Object.keys(options)) p.check(key === 'decay' || key === 'dynamic', `unknown option ${key} (expected decay, dynamic)`);
  p.check(typeof decay === 'number' && decay > 0 && decay < 1, `decay must be a number in (0, 1), got ${String(decay)}`);
  p.check(typeof dynamic === 'boolean', `dynamic must be a boolean, got ${String(dynamic)}`);
  p.throwIfAny('INVALID_ARGUMENT', 'invalid EMA options');

  const decay32 = Math.fround(decay);
  let shadow: TensorMap = new Map();
  let initialized = false;
  let numUpdates = 0;
  let locked = false;

  const decayAt = (n: number): number => (dynamic ? Math.min(decay, (1 + n) / (10 + n)) : decay);
  /** TensorFlow: min(float32(decay), float32(1 + float32(n)) / float32(10 + float32(n))), all float32. */
  const decayAt32 = (n: number): number => {
    if (!dynamic) return decay32;
    const nf = Math.fround(n);
    return Math.min(decay32, Math.fround(Math.fround(1 + nf) / Math.fround(10 + nf)));
  };
  const unlocked = (what: string): void => {
    if (locked) throw new CkptError('INVALID_ARGUMENT', `EMA ${what}: not allowed while withAveragedWeights is running (the average is swapped into the weights)`);
  };
  const compatible = (weights: unknown, what: string): void => {
    if (!(weights instanceof Map)) throw new CkptError('INVALID_ARGUMENT', `EMA ${what}: weights must be a TensorMap (Map of name -> Tensor)`);
    const problems = describeMismatches(shadow, weights as TensorMap, 'the average', 'the weights');
    if (problems.length > 0) {
      const tensor = firstTensor(problems);
      throw new CkptError('INCOMPATIBLE_TENSORS', `EMA ${what}: ${problems.join('; ')}`, { ...(tensor === undefined ? {} : { tensor }), received: problems });
    }
  };

  return {
    decay,
    dynamic,
    get numUpdates() {
      return numUpdates;
    },
    get shadow() {
      unlocked('shadow');
      return shadow;
    },
    decayAt,
    update(weights, opts = {}) {
      unlocked('update');
      const n = opts.numUpdates ?? numUpdates + 1;
      if (!Number.isSafeInteger(n) || n < 1) {
        throw new CkptError('INVALID_ARGUMENT', `EMA update: numUpdates counts updates including this one, so it must be an integer >= 1, got ${String(n)}`, { received: n });
      }
      if (!initialized) {
        if (!(weights instanceof Map)) throw new CkptError('INVALID_ARGUMENT', 'EMA update: weights must be a TensorMap (Map of name -> Tensor)');
        for (const [name, t] of weights) validateTensor(t, name);
        const init: TensorMap = new Map();
        for (const [name, t] of weights) init.set(name, copyTensor(t));
        shadow = init;
        initialized = true;
      } else {
        compatible(weights, 'update');
        const a32 = Math.fround(1 - decayAt32(n));
        const a64 = 1 - decayAt(n);
        for (const [name, w] of weights) updateTensor(shadow.get(name) as Tensor, w, a32, a64);
      }
      numUpdates = n;
    },
    stateDict() {
      unlocked('stateDict');
      return { tensors: shadow, state: { numUpdates, decay, dynamic } };
    },
    loadStateDict(dict) {
      unlocked('loadStateDict');
      const q = new Problems();
      const state = (typeof dict === 'object' && dict !== null ? dict.state : undefined) as Record<string, unknown> | undefined;
      const tensors = (typeof dict === 'object' && dict !== null ? dict.tensors : undefined) as unknown;
      if (typeof state !== 'object' || state === null) q.add('state must be an object {numUpdates, decay, dynamic}');
      else {
        const n = state.numUpdates;
        q.check(Number.isSafeInteger(n) && (n as number) >= 0, `state.numUpdates must be an integer >= 0, got ${String(n)}`);
        q.check(state.decay === decay, `state.decay is ${String(state.decay)}, this EMA's decay is ${decay} (create the EMA with the saved decay)`);
        q.check(state.dynamic === dynamic, `state.dynamic is ${String(state.dynamic)}, this EMA's is ${dynamic}`);
      }
      if (tensors === undefined) q.add('tensors are missing (no `ema` group in the checkpoint?)');
      else if (!(tensors instanceof Map)) q.add('tensors must be a TensorMap (Map of name -> Tensor)');
      else {
        for (const [name, t] of tensors as TensorMap) {
          try {
            validateTensor(t, String(name));
          } catch (e) {
            q.add(e instanceof Error ? e.message : String(e));
          }
        }
        const n = state?.numUpdates;
        if (n === 0 && tensors.size > 0) q.add(`state.numUpdates is 0 but ${tensors.size} tensors were given (the shadow is created by the first update)`);
        if (typeof n === 'number' && n > 0 && tensors.size === 0) q.add(`state.numUpdates is ${n} but no tensors were given`);
        if (initialized && typeof n === 'number' && n > 0) {
          for (const m of describeMismatches(shadow, tensors as TensorMap, 'this EMA', 'the state')) q.add(m);
        }
      }
      const tensor = firstTensor(q.list);
      q.throwIfAny('STATE_INVALID', 'cannot load EMA state', tensor === undefined ? {} : { tensor });

      const loaded = tensors as TensorMap;
      const n = (state as Record<string, unknown>).numUpdates as number;
      if (initialized && n > 0) {
        // Same names, dtypes and shapes (checked above): reuse the shadow's buffers.
        for (const [name, t] of loaded) (shadow.get(name) as Tensor).data.set(t.data);
      } else {
        const next: TensorMap = new Map();
        for (const [name, t] of loaded) next.set(name, copyTensor(t));
        shadow = next;
      }
      initialized = n > 0;
      numUpdates = n;
    },
    async withAveragedWeights(weights, fn) {
      unlocked('withAveragedWeights');
      if (!initialized) throw new CkptError('INVALID_ARGUMENT', 'EMA withAveragedWeights: there is no average yet (call update() first)');
      compatible(weights, 'withAveragedWeights');
      const tmp = new Uint8Array(SWAP_CHUNK);
      const swap = (): void => {
        for (const [name, w] of weights) swapBytes(w.data, (shadow.get(name) as Tensor).data, tmp);
      };
      swap();
      locked = true;
      try {
        return await fn();
      } finally {
        locked = false;
        swap();
      }
    },
  };
}
