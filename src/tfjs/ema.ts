/**
 * Exponential moving average of a TF.js model's weights, computed with TF.js ops on the backend: the
 * shadow weights are `tf.Variable`s, and an update never copies weights out of the backend.
 *
 * Same formula, decay semantics and state dict as `ckpt/ema` (`createEma`):
 *
 *     d = dynamic ? min(decay, (1 + n) / (10 + n)) : decay
 *     shadow ← shadow − (1 − d) · (shadow − w)
 *
 * where n counts the updates, this one included (the k-th update uses n = k, OpenNMT-tf's
 * `num_updates` = the optimizer step after the update; or pass n). The first update only copies the
 * weights into the shadow. float32 weights are updated with the float32 operations
 * `sub(shadow, mul(sub(shadow, w), float32(1 − d)))`, d computed in float32 as TensorFlow does, exactly
 * as `ckpt/ema` rounds them, so both give the same bits; other dtypes are copied. The state dict (`ema`
 * group keyed by the weights' stable names, and `{ numUpdates, decay, dynamic }`) loads into either.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs';
import { type EmaOptions, type EmaStateDict, updateF32 } from '../ema/ema.js';
import { CkptError } from '../errors.js';
import type { Tensor, TensorMap } from '../tensor/tensor.js';
import { mismatch, readTensor, toTf } from './convert.js';
import { type ModelLike, type WeightEntry, resolveModel } from './names.js';

/** Options of {@link createTfEma}. */
export interface TfEmaOptions extends EmaOptions {
  /**
   * Which weights to average: the trainable ones (as TensorFlow's and OpenNMT-tf's EMA), or all
   * (batch-norm statistics too).
   * @default 'trainable'
   */
  readonly weights?: 'trainable' | 'all';
}

/** The argument of {@link TfExponentialMovingAverage.loadStateDict}: an EMA state dict, e.g. from a checkpoint. */
export interface EmaStateInput {
  readonly tensors: TensorMap | undefined;
  readonly state: unknown;
}

/**
 * An exponential moving average of a TF.js model's weights, held on the backend.
 * Call order: update* (stateDict | withAveragedWeights)*; dispose when done.
 */
export interface TfExponentialMovingAverage {
  /** The configured (maximum) decay. */
  readonly decay: number;
  /** Whether the decay ramps up as min(decay, (1 + n) / (10 + n)). */
  readonly dynamic: boolean;
  /** Updates made so far; the next update uses n = numUpdates + 1 unless told otherwise. */
  readonly numUpdates: number;
  /** The shadow variables by stable weight name (empty before the first update). Do not assign to them. */
  readonly shadow: ReadonlyMap<string, tf.Variable>;
  /** The decay of an update with counter n, in float64 (float32 weights use TensorFlow's float32 computation of it). */
  decayAt(n: number): number;
  /**
   * Moves the shadow toward the model's current weights (call after each optimizer update); the first
   * update copies them. `numUpdates` is n for this update, counting it (an integer >= 1); the counter
   * continues from it.
   */
  update(options?: { readonly numUpdates?: number }): void;
  /**
   * Shadow (copied out of the backend) and counters, for the checkpoint: group `ema` + `state.ema`.
   * `copy: false` skips the copy where the backend hands out its own memory (cpu): the tensors are then
   * views of the shadow, which the next `update` changes in place; use them before it (see
   * `CaptureOptions.copy`).
   */
  stateDict(options?: { readonly copy?: boolean }): Promise<EmaStateDict>;
  /**
   * Restores a state dict (from this class or from `ckpt/ema`), so a resumed run continues the same
   * average. `decay` and `dynamic` must equal this EMA's (`STATE_INVALID`); the tensors must be the
   * averaged weights of the model (`INCOMPATIBLE_TENSORS` naming the tensor). numUpdates 0 with no
   * tensors resets the EMA. On error nothing changes.
   */
  loadStateDict(dict: EmaStateInput): void;
  /**
   * Puts the averaged weights into the model, runs `fn`, and puts the raw weights back, even when `fn`
   * throws (no copy: the variables are pointed at the shadow's data and back).
   */
  withAveragedWeights<T>(fn: () => T | Promise<T>): Promise<T>;
  /** Releases the shadow variables. */
  dispose(): void;
}

/** Internal hook: validates a state dict and returns the function that loads it (all-or-nothing restores). */
export const PREPARE_LOAD: unique symbol = Symbol('ckpt.tfjs.ema.prepareLoad');

/** A {@link TfExponentialMovingAverage} with the internal hook. @internal */
export interface TfEmaInternal extends TfExponentialMovingAverage {
  [PREPARE_LOAD](dict: EmaStateInput): () => void;
}

/**
 * Creates an EMA of `model`'s weights (trainable ones by default), updated with TF.js ops.
 *
 * @example
 * ```ts
 * const ema = createTfEma(model, { decay: 0.999 });
 * await trainStep({ model, optimizer, ema }, loss);      // or ema.update() after each update
 * await ema.withAveragedWeights(() => model.evaluate(xs, ys));
 * ```
 * @throws CkptError `INVALID_ARGUMENT` listing every invalid option.
 */
export function createTfEma(model: ModelLike, options: TfEmaOptions = {}): TfExponentialMovingAverage {
  const decay = options.decay ?? 0.9999;
  const dynamic = options.dynamic ?? true;
  const which = options.weights ?? 'trainable';
  const problems: string[] = [];
  if (typeof decay !== 'number' || !(decay > 0 && decay < 1)) problems.push(`decay must be a number in (0, 1), got ${String(decay)}`);
  if (typeof dynamic !== 'boolean') problems.push('dynamic must be a boolean');
  if (which !== 'trainable' && which !== 'all') problems.push(`weights must be 'trainable' or 'all', got ${String(which)}`);
  if (problems.length > 0) throw new CkptError('INVALID_ARGUMENT', `invalid EMA options: ${problems.join('; ')}`, { received: problems });

  let tracked: readonly WeightEntry[] | undefined;
  let shadow = new Map<string, tf.Variable>();
  let initialized = false;
  let numUpdates = 0;
  const decay32 = Math.fround(decay);
  const decayAt = (n: number): number => (dynamic ? Math.min(decay, (1 + n) / (10 + n)) : decay);
  /** TensorFlow: min(float32(decay), float32(1 + float32(n)) / float32(10 + float32(n))), all float32. */
  const decayAt32 = (n: number): number => {
    if (!dynamic) return decay32;
    const nf = Math.fround(n);
    return Math.min(decay32, Math.fround(Math.fround(1 + nf) / Math.fround(10 + nf)));
  };
  // Resolved at first use: a LayersModel has no weights before it is built.
  const weights = (): readonly WeightEntry[] => {
    tracked ??= resolveModel(model).weights.filter((w) => which === 'all' || w.trainable);
    return tracked;
  };
  const release = (): void => {
    for (const v of shadow.values()) v.dispose();
    shadow = new Map();
  };

  const ema: TfEmaInternal = {
    decay,
    dynamic,
    get numUpdates() {
      return numUpdates;
    },
    get shadow() {
      return shadow;
    },
    decayAt,
    update(opts = {}) {
      const n = opts.numUpdates ?? numUpdates + 1;
      if (!Number.isSafeInteger(n) || n < 1) {
        throw new CkptError('INVALID_ARGUMENT', `EMA update: numUpdates counts updates including this one, so it must be an integer >= 1, got ${String(n)}`, {
          received: n,
        });
      }
      const ws = weights();
      if (!initialized) {
        // Variables share the weights' current data; assignments replace data, never mutate it.
        for (const w of ws) shadow.set(w.name, tf.variable(w.variable, false));
        initialized = true;
      } else {
        const a = Math.fround(1 - decayAt32(n));
        const inPlace = cpuInPlace();
        tf.tidy(() => {
          const factor = tf.scalar(a, 'float32');
          for (const w of ws) {
            const s = shadow.get(w.name);
            if (s === undefined) throw new CkptError('INCOMPATIBLE_TENSORS', `weight "${w.name}" is not in the average`, { tensor: w.name });
            if (w.variable.dtype !== 'float32') s.assign(w.variable);
            else if (inPlace === undefined || !inPlace(s, w.variable, a)) s.assign(tf.sub(s, tf.mul(tf.sub(s, w.variable), factor)));
          }
        });
      }
      numUpdates = n;
    },
    async stateDict(opts = {}) {
      const tensors: TensorMap = new Map();
      for (const [name, v] of shadow) tensors.set(name, await readTensor(v, name, opts.copy ?? true));
      return { tensors, state: { numUpdates, decay, dynamic } };
    },
    loadStateDict(dict) {
      ema[PREPARE_LOAD](dict)();
    },
    [PREPARE_LOAD](dict) {
      const state = (typeof dict === 'object' && dict !== null ? dict.state : undefined) as Record<string, unknown> | undefined;
      const tensors = (typeof dict === 'object' && dict !== null ? dict.tensors : undefined) as unknown;
      const q: string[] = [];
      let n = 0;
      if (typeof state !== 'object' || state === null) q.push('state must be an object {numUpdates, decay, dynamic}');
      else {
        if (!Number.isSafeInteger(state.numUpdates) || (state.numUpdates as number) < 0) q.push(`state.numUpdates must be an integer >= 0, got ${String(state.numUpdates)}`);
        else n = state.numUpdates as number;
        if (state.decay !== decay) q.push(`state.decay is ${String(state.decay)}, this EMA's decay is ${decay} (create the EMA with the saved decay)`);
        if (state.dynamic !== dynamic) q.push(`state.dynamic is ${String(state.dynamic)}, this EMA's is ${dynamic}`);
      }
      if (!(tensors instanceof Map)) q.push('tensors must be a TensorMap (no `ema` group in the checkpoint?)');
      else if (n === 0 && tensors.size > 0) q.push(`state.numUpdates is 0 but ${tensors.size} tensors were given (the shadow is created by the first update)`);
      else if (n > 0 && tensors.size === 0) q.push(`state.numUpdates is ${n} but no tensors were given`);
      if (q.length > 0) throw new CkptError('STATE_INVALID', `cannot load EMA state: ${q.join('; ')}`, { received: q });
      const saved = tensors as TensorMap;
      const ws = n > 0 ? weights() : [];
      const bad: string[] = [];
      let first: string | undefined;
      const names = new Set(ws.map((w) => w.name));
      for (const w of ws) {
        const t = saved.get(w.name);
        const m = t === undefined ? `tensor "${w.name}" is missing from the average` : mismatch(w.name, t, w.variable.dtype, w.variable.shape);
        if (m !== undefined) {
          first ??= w.name;
          bad.push(m);
        }
      }
      for (const name of n > 0 ? saved.keys() : []) {
        if (!names.has(name)) {
          first ??= name;
          bad.push(`tensor "${name}" of the average is not a ${which === 'all' ? '' : 'trainable '}weight of the model`);
        }
      }
      if (bad.length > 0) throw new CkptError('INCOMPATIBLE_TENSORS', `cannot load EMA state: ${bad.join('; ')}`, { tensor: first ?? '', received: bad });
      return () => {
        const next = new Map<string, tf.Variable>();
        for (const w of ws) {
          const value = toTf(saved.get(w.name) as Tensor, w.name);
          next.set(w.name, tf.variable(value, false));
          value.dispose();
        }
        release();
        shadow = next;
        initialized = n > 0;
        numUpdates = n;
      };
    },
    async withAveragedWeights(fn) {
      if (!initialized) throw new CkptError('INVALID_ARGUMENT', 'the EMA has no average yet: call update() first');
      const ws = weights();
      const raw = ws.map((w) => w.variable.clone());
      ws.forEach((w) => w.variable.assign(shadow.get(w.name) as tf.Variable));
      try {
        return await fn();
      } finally {
        ws.forEach((w, i) => w.variable.assign(raw[i] as tf.Tensor));
        for (const r of raw) r.dispose();
      }
    },
    dispose() {
      release();
      initialized = false;
      numUpdates = 0;
    },
  };
  return ema;
}

/** The parts of TF.js' cpu backend the in-place update uses (public methods of its `KernelBackend`). */
interface CpuBackendLike {
  refCount(dataId: object): number;
  readSync(dataId: object): unknown;
}

/**
 * On the cpu backend, an update that works in place on the shadow's own float32 array: the same three
 * float32 operations as the op path, `s - (s - w) * a` with each result rounded to float32, in one pass
 * over memory instead of three kernels (the cpu backend's broadcasting multiply by a scalar is ~20x slower
 * than a plain loop) and three fresh arrays. Returns false, changing nothing, unless the shadow's data
 * belongs to the shadow alone (a first update shares the weight's data; `withAveragedWeights` and clones
 * share it too), so no other tensor ever sees a value change. Undefined on other backends.
 */
function cpuInPlace(): ((shadow: tf.Variable, weight: tf.Variable, a: number) => boolean) | undefined {
  if (tf.getBackend() !== 'cpu') return undefined;
  const backend = tf.backend() as unknown as Partial<CpuBackendLike>;
  if (typeof backend.refCount !== 'function' || typeof backend.readSync !== 'function') return undefined;
  const cpu = backend as CpuBackendLike;
  return (shadow, weight, a) => {
    if (cpu.refCount(shadow.dataId) !== 1) return false;
    const s = cpu.readSync(shadow.dataId);
    const w = cpu.readSync(weight.dataId);
    if (!(s instanceof Float32Array) || !(w instanceof Float32Array) || s.length !== w.length || s === w) return false;
    updateF32(s, w, a);
    return true;
  };
}

/** True when `ema` was made by {@link createTfEma}. @internal */
export function isTfEmaInternal(ema: TfExponentialMovingAverage): ema is TfEmaInternal {
  return typeof (ema as Partial<TfEmaInternal>)[PREPARE_LOAD] === 'function';
}
