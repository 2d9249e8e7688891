/**
 * Capture and restore of the whole training state of a TF.js model: weights (group `model`, keyed by
 * stable names), optimizer slots and counters (group `optimizer` + `state.optimizer`), the EMA shadow
 * (group `ema` + `state.ema`), the LR schedule's config (`state.schedule`) and, for a LayersModel, its
 * topology (`state.tfjs`) so that the checkpoint can be loaded as a TF.js model.
 *
 * Restoring sets exactly the saved bits, so on a deterministic backend (cpu) a run resumed from step k
 * produces the same losses and weights as a run that was never interrupted.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs';
import type { TrainState } from '../checkpoint/types.js';
import { CkptError } from '../errors.js';
import type { JsonValue } from '../format/manifest.js';
import type { Schedule } from '../schedules/schedules.js';
import type { Tensor, TensorMap } from '../tensor/tensor.js';
import { mismatch, readTensors, toTf } from './convert.js';
import { type TfExponentialMovingAverage, isTfEmaInternal, PREPARE_LOAD } from './ema.js';
import { type ModelLike, type ResolvedModel, resolveModel } from './names.js';
import { type OptimizerState, captureOptimizer, prepareOptimizerRestore } from './optimizers.js';

/** What a training loop trains: the model and, optionally, its optimizer, EMA and LR schedule. */
export interface TrainingTarget {
  /** A LayersModel or a custom model's variables. */
  readonly model: ModelLike;
  /** The optimizer updating `model` (for a compiled LayersModel, `model.optimizer`). */
  readonly optimizer?: tf.Optimizer;
  /** An EMA of the model's weights ({@link createTfEma}). */
  readonly ema?: TfExponentialMovingAverage;
  /** The LR schedule driving the optimizer: its config is saved in `state.schedule`. */
  readonly schedule?: Schedule;
}

/** The topology and weight names of a LayersModel, stored as `state.tfjs` so the checkpoint loads as a model. */
export interface TfjsModelState {
  /** Always `layers-model`. */
  readonly format: string;
  /** Which library wrote it. */
  readonly generatedBy: string;
  /** `model.toJSON(null, false)`: what model.json holds as `modelTopology`. */
  readonly modelTopology: JsonValue;
  /** `[stable name, originalName]` of each weight, in the model's order. */
  readonly weights: readonly (readonly [string, string])[];
}

/** Options of {@link captureState}: everything of a {@link TrainState} that is not captured from the model. */
export interface CaptureOptions {
  /** Training step. @default `optimizer.iterations` (0 without an optimizer) */
  readonly step?: number;
  /** Epochs completed. @default none */
  readonly epoch?: number;
  /**
   * Your own JSON state (data position, RNG, …). The keys `optimizer`, `ema`, `schedule` and `tfjs` are
   * filled by ckpt and must not be given.
   * @default {}
   */
  readonly state?: Readonly<Record<string, JsonValue>>;
  /** Metrics at this step. @default none */
  readonly metrics?: Readonly<Record<string, number>>;
  /** Hyper-parameters of the run. @default none */
  readonly hyperParameters?: Readonly<Record<string, JsonValue>>;
  /** Free metadata. @default none */
  readonly metadata?: Readonly<Record<string, JsonValue>>;
  /** Store a LayersModel's topology (`state.tfjs`) so the checkpoint loads with `ckptIO`. @default true */
  readonly topology?: boolean;
  /**
   * Copy every tensor out of TF.js into memory the state owns. `false` skips that copy: on the cpu
   * backend the state's tensors are then views of TF.js's own memory, valid until the next training step
   * (the EMA updates its shadow in place; writing into them would change the model); other backends
   * (wasm, webgl) hand out copies anyway. Pass such a state straight to `manager.save`, which writes it
   * before it resolves or, in the background, copies it first: a copy of the state less per checkpoint
   * (the checkpoint callbacks do this).
   * @default true
   */
  readonly copy?: boolean;
}

/** Options of {@link restoreState} and {@link restoreWeights}. */
export interface RestoreOptions {
  /**
   * Refuse checkpoint tensors that the model (optimizer) does not have, and an optimizer configured
   * differently from the checkpoint's (learning rate excepted). Missing or misshapen tensors are always
   * refused.
   * @default true
   */
  readonly strict?: boolean;
}

/** What {@link restoreState} reads: a loaded {@link Checkpoint} or a {@link TrainState}. */
export interface SavedState {
  readonly tensors: Readonly<Record<string, TensorMap>>;
  readonly state?: Readonly<Record<string, JsonValue>>;
}

const RESERVED_STATE_KEYS = ['optimizer', 'ema', 'schedule', 'tfjs'] as const;

/** Reads a model's weights into a {@link TensorMap} keyed by their stable names (copies). */
export async function captureWeights(model: ModelLike): Promise<TensorMap> {
  return readTensors(resolveModel(model).weights.map((w) => [w.name, w.variable] as const));
}

/** Checks `tensors` against the model and returns the function that assigns them. @internal */
export function prepareWeightsRestore(resolved: ResolvedModel, tensors: TensorMap | undefined, options: RestoreOptions = {}): () => void {
  if (tensors === undefined) throw new CkptError('INCOMPATIBLE_TENSORS', 'the checkpoint has no "model" group');
  const strict = options.strict ?? true;
  const bad: string[] = [];
  let first: string | undefined;
  const names = new Set<string>();
  for (const w of resolved.weights) {
    names.add(w.name);
    const t = tensors.get(w.name);
    const m = t === undefined ? `weight "${w.name}" is missing from the checkpoint` : mismatch(w.name, t, w.variable.dtype, w.variable.shape);
    if (m !== undefined) {
      first ??= w.name;
      bad.push(m);
    }
  }
  if (strict) {
    for (const name of tensors.keys()) {
      if (!names.has(name)) {
        first ??= name;
        bad.push(`tensor "${name}" of the checkpoint is not a weight of the model`);
      }
    }
  }
  if (bad.length > 0) throw new CkptError('INCOMPATIBLE_TENSORS', `cannot restore the model's weights: ${bad.join('; ')}`, { tensor: first ?? '', received: bad });
  return () => {
    // Straight to the tf.Variable: LayerVariable.write would apply constraints to already-constrained values.
    for (const w of resolved.weights) tf.tidy(() => w.variable.assign(toTf(tensors.get(w.name) as Tensor, w.name)));
  };
}

/**
 * Assigns saved weights (keyed by stable names) to a model's variables, bit for bit. Every tensor is
 * checked before any is assigned.
 *
 * @throws CkptError `INCOMPATIBLE_TENSORS` naming the first tensor that is missing, has another dtype or
 * shape, or (strict) is not a weight of the model.
 */
export function restoreWeights(model: ModelLike, tensors: TensorMap, options: RestoreOptions = {}): void {
  prepareWeightsRestore(resolveModel(model), tensors, options)();
}

/** The topology and weight names of a LayersModel for `state.tfjs`. */
export function modelState(model: tf.LayersModel, resolved: ResolvedModel = resolveModel(model)): TfjsModelState {
  return {
    format: 'layers-model',
    generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
    modelTopology: model.toJSON(null, false) as unknown as JsonValue,
    weights: resolved.weights.map((w) => [w.name, w.exportName] as const),
  };
}

/**
 * Captures the complete training state of `target` as a {@link TrainState} for `save` or
 * `manager.save`: weights, optimizer slots and counters, EMA shadow, schedule config, topology, the
 * TF.js version, plus the step, epoch, metrics and JSON state you give.
 *
 * @example
 * ```ts
 * const target = { model, optimizer };
 * await manager.save(await captureState(target, { state: { data: { position } }, metrics: { loss } }));
 * ```
 * @throws CkptError `INVALID_ARGUMENT` for a reserved key in `options.state`; see {@link captureOptimizer}.
 */
export async function captureState(target: TrainingTarget, options: CaptureOptions = {}): Promise<TrainState> {
  const user = options.state ?? {};
  const clash = RESERVED_STATE_KEYS.filter((k) => Object.hasOwn(user, k));
  if (clash.length > 0) {
    throw new CkptError('INVALID_ARGUMENT', `state keys ${clash.map((k) => `"${k}"`).join(', ')} are filled by ckpt/tfjs; use other keys`, {
      received: clash,
    });
  }
  const resolved = resolveModel(target.model);
  const copy = options.copy ?? true;
  const tensors: Record<string, TensorMap> = {
    model: await readTensors(resolved.weights.map((w) => [w.name, w.variable] as const), copy),
  };
  const state: Record<string, JsonValue> = { ...user };
  if (target.optimizer !== undefined) {
    const opt = await captureOptimizer(target.optimizer, resolved, { copy });
    if (opt.tensors.size > 0) tensors.optimizer = opt.tensors;
    state.optimizer = opt.state as unknown as JsonValue;
  }
  if (target.ema !== undefined) {
    const dict = await target.ema.stateDict({ copy });
    if (dict.tensors.size > 0) tensors.ema = dict.tensors;
    state.ema = { ...dict.state };
  }
  if (target.schedule !== undefined) state.schedule = target.schedule.config as unknown as JsonValue;
  if (resolved.layersModel !== undefined && options.topology !== false) {
    state.tfjs = modelState(resolved.layersModel, resolved) as unknown as JsonValue;
  }
  const step = options.step ?? target.optimizer?.iterations ?? 0;
  return {
    step,
    ...(options.epoch === undefined ? {} : { epoch: options.epoch }),
    tensors,
    state,
    ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
    ...(options.hyperParameters === undefined ? {} : { hyperParameters: options.hyperParameters }),
    ...(options.metadata === undefined ? {} : { metadata: options.metadata }),
    versions: { tfjs: tf.version.tfjs },
  };
}

/**
 * Restores what {@link captureState} captured into `target`: weights, and (when the target has them)
 * the optimizer's slots, counters and learning rate, and the EMA. Everything is checked before anything
 * is changed, so a failed restore leaves the model and optimizer as they were.
 *
 * @param checkpoint a loaded checkpoint (`manager.restore()).checkpoint`, `load(dir)`) or a TrainState.
 * @throws CkptError `INCOMPATIBLE_TENSORS` naming the tensor for missing or mismatched weights, slots or
 * shadow, or when the target has an optimizer / EMA that the checkpoint lacks; `STATE_INVALID` for
 * malformed saved state; `INVALID_ARGUMENT` (strict) for a differently configured optimizer.
 */
export async function restoreState(target: TrainingTarget, checkpoint: SavedState, options: RestoreOptions = {}): Promise<void> {
  const resolved = resolveModel(target.model);
  const steps: (() => void)[] = [prepareWeightsRestore(resolved, checkpoint.tensors.model, options)];
  const state = checkpoint.state ?? {};
  if (target.optimizer !== undefined) {
    if (state.optimizer === undefined) {
      throw new CkptError('INCOMPATIBLE_TENSORS', 'the checkpoint has no optimizer state (state.optimizer) to restore the optimizer from');
    }
    steps.push(prepareOptimizerRestore(target.optimizer, resolved, { tensors: checkpoint.tensors.optimizer, state: state.optimizer }, options));
  }
  if (target.ema !== undefined) {
    const ema = target.ema;
    const emaState = state.ema;
    if (emaState === undefined || typeof emaState !== 'object' || emaState === null || Array.isArray(emaState)) {
      throw new CkptError('INCOMPATIBLE_TENSORS', 'the checkpoint has no EMA state (state.ema) to restore the EMA from');
    }
    const dict = { tensors: checkpoint.tensors.ema ?? new Map<string, Tensor>(), state: emaState };
    steps.push(isTfEmaInternal(ema) ? ema[PREPARE_LOAD](dict) : () => ema.loadStateDict(dict));
  }
  for (const apply of steps) apply();
}

/** The optimizer state saved in a checkpoint's JSON state, if any (for inspection). */
export function savedOptimizerState(checkpoint: SavedState): OptimizerState | undefined {
  const s = checkpoint.state?.optimizer;
  return typeof s === 'object' && s !== null && !Array.isArray(s) ? (s as unknown as OptimizerState) : undefined;
}
