/**
 * Optimizer state of TF.js optimizers: slots, counters and the learning rate, per optimizer class.
 *
 * TF.js' own `getWeights` / `setWeights` lose information a resumed run needs:
 * - Adam keeps its bias corrections as running products `accBeta1 = beta1^(t+1)` updated in float32
 *   each step; `setWeights` recomputes them with `pow`, which differs in the last bit (from step 2 for
 *   beta2 = 0.999), so a resumed run drifts. ckpt saves and restores the products exactly.
 * - Slots are matched to variables by position in the gradient list, and named after the
 *   process-dependent variable names. ckpt names them after the weights' stable names and checks, when
 *   capturing, that slot i belongs to variable i of the model's variable list.
 * - Adamax neither reads nor writes its state (`getWeights` throws): it is refused with `UNSUPPORTED`.
 *
 * Supported: Adam (and subclasses such as {@link AdamWOptimizer}), RMSProp (plain and centered),
 * Adagrad, Adadelta, SGD, Momentum (with or without Nesterov).
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs';
import { CkptError } from '../errors.js';
import type { JsonValue } from '../format/manifest.js';
import { isCount } from '../problems.js';
import type { Tensor, TensorMap } from '../tensor/tensor.js';
import { mismatch, readTensor, toTf } from './convert.js';
import { type ModelLike, type ResolvedModel, resolveModel } from './names.js';

/** The JSON part of an optimizer's checkpoint state (`state.optimizer` in state.json). */
export interface OptimizerState {
  /** `getClassName()` of the optimizer (`Adam`, `AdamW`, `SGD`, …). */
  readonly className: string;
  /** The TF.js optimizer class whose state this is (`Adam` for AdamW too). */
  readonly kind: OptimizerKindName;
  /** `optimizer.iterations`: updates applied so far. */
  readonly iterations: number;
  /** The learning rate at capture time (a schedule may have changed it). */
  readonly learningRate: number;
  /** `getConfig()` of the optimizer, as JSON. */
  readonly config: { readonly [key: string]: JsonValue };
}

/** The optimizer part of a checkpoint: slots and counters (group `optimizer`) and {@link OptimizerState}. */
export interface OptimizerSnapshot {
  readonly tensors: TensorMap;
  readonly state: OptimizerState;
}

/** Options of {@link restoreOptimizer}. */
export interface RestoreOptimizerOptions {
  /**
   * Refuse tensors of the group that this optimizer does not use, and a configuration (`getConfig()`,
   * learning rate excepted) that differs from the checkpoint's. Missing or misshapen slots are always
   * refused.
   * @default true
   */
  readonly strict?: boolean;
}

/** The optimizer classes ckpt knows the state of. */
export type OptimizerKindName = 'Adam' | 'RMSProp' | 'Adagrad' | 'Adadelta' | 'Momentum' | 'SGD';

/** A slot array of an optimizer: the field holding it and the suffix TF.js names its variables with. */
interface SlotSpec {
  readonly field: string;
  readonly suffix: string;
}

interface OptimizerKind {
  readonly name: OptimizerKindName;
  /** Slot arrays, in `getWeights` order. */
  slots(fields: OptimizerFields): readonly SlotSpec[];
  /** Scalar variables of the optimizer itself (saved as F32 tensors under these names). */
  readonly scalars: readonly string[];
  /** The learning rate is baked into a tensor by `setLearningRate` (SGD, Momentum). */
  readonly lrMethod: boolean;
}

/** How TF.js keeps one slot variable. */
interface OptimizerVariable {
  originalName: string;
  variable: tf.Variable;
}

/** An optimizer seen through its (typed-private) fields. */
type OptimizerFields = Record<string, unknown>;

const ADAM: OptimizerKind = {
  name: 'Adam',
  slots: () => [
    { field: 'accumulatedFirstMoment', suffix: 'm' },
    { field: 'accumulatedSecondMoment', suffix: 'v' },
  ],
  scalars: ['accBeta1', 'accBeta2'],
  lrMethod: false,
};
const RMSPROP: OptimizerKind = {
  name: 'RMSProp',
  slots: (f) => [
    { field: 'accumulatedMeanSquares', suffix: 'rms' },
    { field: 'accumulatedMoments', suffix: 'momentum' },
    ...(f.centered === true ? [{ field: 'accumulatedMeanGrads', suffix: 'mg' }] : []),
  ],
  scalars: [],
  lrMethod: false,
};
const ADAGRAD: OptimizerKind = { name: 'Adagrad', slots: () => [{ field: 'accumulatedGrads', suffix: 'accumulator' }], scalars: [], lrMethod: false };
const ADADELTA: OptimizerKind = {
  name: 'Adadelta',
  slots: () => [
    { field: 'accumulatedGrads', suffix: 'accum_grad' },
    { field: 'accumulatedUpdates', suffix: 'accum_var' },
  ],
  scalars: [],
  lrMethod: false,
};
const MOMENTUM: OptimizerKind = { name: 'Momentum', slots: () => [{ field: 'accumulations', suffix: 'momentum' }], scalars: [], lrMethod: true };
const SGD: OptimizerKind = { name: 'SGD', slots: () => [], scalars: [], lrMethod: true };

/**
 * The known optimizer of `optimizer`: the most derived TF.js class on its prototype chain. (Not
 * `instanceof`: TF.js gives Optimizer a `Symbol.hasInstance` that its subclasses inherit, so
 * `sgd instanceof tf.AdamOptimizer` is true.)
 */
function kindOf(optimizer: tf.Optimizer): OptimizerKind {
  const table: readonly (readonly [object, OptimizerKind | 'adamax'])[] = [
    [tf.AdamaxOptimizer.prototype, 'adamax'],
    [tf.AdamOptimizer.prototype, ADAM],
    [tf.RMSPropOptimizer.prototype, RMSPROP],
    [tf.AdagradOptimizer.prototype, ADAGRAD],
    [tf.AdadeltaOptimizer.prototype, ADADELTA],
    [tf.MomentumOptimizer.prototype, MOMENTUM],
    [tf.SGDOptimizer.prototype, SGD],
  ];
  const className = classNameOf(optimizer);
  for (let p: object | null = Object.getPrototypeOf(optimizer) as object | null; p !== null; p = Object.getPrototypeOf(p) as object | null) {
    const hit = table.find(([proto]) => proto === p);
    if (hit === undefined) continue;
    if (hit[1] === 'adamax') {
      throw new CkptError(
        'UNSUPPORTED',
        `the state of TF.js' ${className} optimizer cannot be checkpointed: Adamax keeps its moments and counters ` +
          `in fields that getWeights() and setWeights() do not expose (both throw); use Adam or AdamW`,
        { received: className },
      );
    }
    return hit[1];
  }
  throw new CkptError(
    'UNSUPPORTED',
    `optimizer class ${className} is not supported: ckpt checkpoints Adam (and subclasses such as AdamW), ` +
      `RMSProp, Adagrad, Adadelta, SGD and Momentum`,
    { received: className },
  );
}

function classNameOf(optimizer: tf.Optimizer): string {
  try {
    return optimizer.getClassName();
  } catch {
    return (optimizer as { constructor?: { name?: string } }).constructor?.name ?? 'unknown';
  }
}

function fieldsOf(optimizer: tf.Optimizer): OptimizerFields {
  return optimizer as unknown as OptimizerFields;
}

function slotArray(fields: OptimizerFields, field: string): OptimizerVariable[] {
  const v = fields[field];
  return Array.isArray(v) ? (v as OptimizerVariable[]) : [];
}

function scalarVariable(fields: OptimizerFields, name: string): tf.Variable {
  const v = fields[name];
  if (!(v instanceof tf.Variable)) throw new CkptError('UNSUPPORTED', `the optimizer has no variable "${name}" (TF.js version mismatch?)`);
  return v;
}

/** The current learning rate of a supported optimizer. */
export function getLearningRate(optimizer: tf.Optimizer): number {
  kindOf(optimizer);
  const lr = fieldsOf(optimizer).learningRate;
  if (typeof lr !== 'number') throw new CkptError('UNSUPPORTED', `${classNameOf(optimizer)} has no numeric learningRate field`);
  return lr;
}

/**
 * Sets the learning rate of a supported optimizer for the next updates. SGD and Momentum bake it into
 * a tensor, so they need their `setLearningRate` method; the others read their `learningRate` field at
 * every update.
 *
 * @throws CkptError `INVALID_ARGUMENT` unless `learningRate` is a finite number >= 0.
 */
export function setLearningRate(optimizer: tf.Optimizer, learningRate: number): void {
  if (typeof learningRate !== 'number' || !Number.isFinite(learningRate) || learningRate < 0) {
    throw new CkptError('INVALID_ARGUMENT', `a learning rate must be a finite number >= 0, got ${String(learningRate)}`, {
      received: learningRate,
    });
  }
  const kind = kindOf(optimizer);
  if (kind.lrMethod) (optimizer as tf.SGDOptimizer).setLearningRate(learningRate);
  else fieldsOf(optimizer).learningRate = learningRate;
}

function configOf(optimizer: tf.Optimizer): { [key: string]: JsonValue } {
  return JSON.parse(JSON.stringify(optimizer.getConfig())) as { [key: string]: JsonValue };
}

function slotName(weight: string, suffix: string): string {
  return `${weight}/${suffix}`;
}

/**
 * Captures an optimizer's state: slots (named `<weight>/<slot>` after the weights' stable names: `/m`,
 * `/v` for Adam, `/rms`, `/momentum`, `/mg` for RMSProp, `/accumulator` for Adagrad, `/accum_grad`,
 * `/accum_var` for Adadelta, `/momentum` for Momentum), Adam's `accBeta1` / `accBeta2` exactly, and the
 * iteration counter, learning rate and configuration as JSON.
 *
 * @param model the model whose variables the optimizer updates, in the order they are passed to it.
 * @param options `copy: false` leaves the slots in the backend's memory where it hands that out (see
 *   `CaptureOptions.copy`); by default they are copied.
 * @throws CkptError `UNSUPPORTED` for Adamax and unknown classes; `INCOMPATIBLE_TENSORS` when a slot
 * does not belong to the variable at its position (the optimizer was driven with another variable list
 * or order).
 */
export async function captureOptimizer(optimizer: tf.Optimizer, model: ModelLike | ResolvedModel, options: { readonly copy?: boolean } = {}): Promise<OptimizerSnapshot> {
  const copy = options.copy ?? true;
  const resolved = isResolved(model) ? model : resolveModel(model);
  const kind = kindOf(optimizer);
  const fields = fieldsOf(optimizer);
  const tensors: TensorMap = new Map();
  const vars = resolved.varList;
  for (const { field, suffix } of kind.slots(fields)) {
    const slots = slotArray(fields, field);
    if (slots.length === 0) continue;
    if (slots.length !== vars.length) {
      throw new CkptError(
        'INCOMPATIBLE_TENSORS',
        `the optimizer has ${slots.length} "${suffix}" slots but the model's variable list has ${vars.length} variables: ` +
          `drive the optimizer with exactly that list (optimizer.minimize(f, true, varList))`,
        { tensor: slotName(vars[0]?.name ?? '', suffix), expected: vars.length, received: slots.length },
      );
    }
    for (let i = 0; i < vars.length; i++) {
      const entry = vars[i] as (typeof vars)[number];
      const slot = slots[i];
      const name = slotName(entry.name, suffix);
      if (slot === undefined || slot.originalName !== slotName(entry.variable.name, suffix)) {
        throw new CkptError(
          'INCOMPATIBLE_TENSORS',
          `optimizer slot #${i} ("${slot?.originalName ?? 'missing'}") does not belong to variable #${i} of the model ` +
            `("${entry.variable.name}", stored as "${entry.name}"): optimizer slots are matched by position, so drive the ` +
            `optimizer with the model's variable list in its order (optimizer.minimize(f, true, varList))`,
          { tensor: name, expected: slotName(entry.variable.name, suffix), received: slot?.originalName },
        );
      }
      tensors.set(name, await readTensor(slot.variable, name, copy));
    }
  }
  for (const s of kind.scalars) tensors.set(s, await readTensor(scalarVariable(fields, s), s, copy));
  return {
    tensors,
    state: {
      className: classNameOf(optimizer),
      kind: kind.name,
      iterations: optimizer.iterations,
      learningRate: getLearningRate(optimizer),
      config: configOf(optimizer),
    },
  };
}

function isResolved(model: ModelLike | ResolvedModel): model is ResolvedModel {
  return typeof model === 'object' && model !== null && 'varList' in model && 'weights' in model && Array.isArray((model as ResolvedModel).varList);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseOptimizerState(value: unknown): OptimizerState {
  const problems: string[] = [];
  if (!isRecord(value)) {
    throw new CkptError('STATE_INVALID', 'the checkpoint has no valid optimizer state (state.optimizer must be an object)', { received: value });
  }
  if (typeof value.className !== 'string') problems.push('className must be a string');
  if (typeof value.kind !== 'string') problems.push('kind must be a string');
  if (!isCount(value.iterations)) problems.push('iterations must be a non-negative integer');
  if (typeof value.learningRate !== 'number' || !Number.isFinite(value.learningRate) || value.learningRate < 0) {
    problems.push('learningRate must be a finite number >= 0');
  }
  if (!isRecord(value.config)) problems.push('config must be an object');
  if (problems.length > 0) {
    throw new CkptError('STATE_INVALID', `invalid optimizer state in the checkpoint: ${problems.join('; ')}`, { received: problems });
  }
  return value as unknown as OptimizerState;
}

/**
 * Validates a saved optimizer state against `optimizer` and the model, and returns the function that
 * applies it. Nothing is modified until that function runs (so a restore of several parts can check
 * all of them first).
 * @internal
 */
export function prepareOptimizerRestore(
  optimizer: tf.Optimizer,
  resolved: ResolvedModel,
  saved: { readonly tensors: TensorMap | undefined; readonly state: unknown },
  options: RestoreOptimizerOptions = {},
): () => void {
  const strict = options.strict ?? true;
  const kind = kindOf(optimizer);
  const fields = fieldsOf(optimizer);
  const state = parseOptimizerState(saved.state);
  const tensors: TensorMap = saved.tensors ?? new Map();
  if (state.kind !== kind.name) {
    throw new CkptError(
      'INCOMPATIBLE_TENSORS',
      `the checkpoint holds the state of a ${state.className} optimizer (${state.kind}), not of ${classNameOf(optimizer)} (${kind.name})`,
      { expected: kind.name, received: state.kind },
    );
  }
  const problems: string[] = [];
  if (strict) {
    const current = configOf(optimizer);
    for (const key of new Set([...Object.keys(current), ...Object.keys(state.config)])) {
      if (key === 'learningRate') continue;
      const a = JSON.stringify(state.config[key]);
      const b = JSON.stringify(current[key]);
      if (a !== b) problems.push(`config ${key}: the checkpoint has ${a ?? 'nothing'}, the optimizer ${b ?? 'nothing'}`);
    }
    if (problems.length > 0) {
      throw new CkptError(
        'INVALID_ARGUMENT',
        `the optimizer is configured differently from the checkpoint's (pass strict: false to restore anyway): ${problems.join('; ')}`,
        { received: problems },
      );
    }
  }
  const used = new Set<string>();
  const plan: { field: string; suffix: string; filled: boolean }[] = [];
  const bad: string[] = [];
  let firstBad: string | undefined;
  const fail = (name: string, message: string): void => {
    firstBad ??= name;
    bad.push(message);
  };
  for (const { field, suffix } of kind.slots(fields)) {
    const names = resolved.varList.map((e) => slotName(e.name, suffix));
    // A fresh optimizer has no slots yet: all or none of a slot kind must be there.
    const filled = names.some((n) => tensors.has(n));
    plan.push({ field, suffix, filled });
    if (!filled) continue;
    resolved.varList.forEach((entry, i) => {
      const name = names[i] as string;
      const t = tensors.get(name);
      if (t === undefined) return fail(name, `slot "${name}" is missing`);
      used.add(name);
      const m = mismatch(name, t, entry.variable.dtype, entry.variable.shape);
      if (m !== undefined) fail(name, m);
    });
  }
  for (const s of kind.scalars) {
    const t = tensors.get(s);
    if (t === undefined) {
      fail(s, `counter "${s}" is missing`);
      continue;
    }
    used.add(s);
    const m = mismatch(s, t, 'float32', []);
    if (m !== undefined) fail(s, m);
  }
  if (strict) for (const name of tensors.keys()) if (!used.has(name)) fail(name, `tensor "${name}" is not used by this ${kind.name} optimizer and model`);
  if (bad.length > 0) {
    throw new CkptError('INCOMPATIBLE_TENSORS', `cannot restore the ${kind.name} optimizer: ${bad.join('; ')}`, {
      tensor: firstBad ?? '',
      received: bad,
    });
  }
  return () => {
    for (const { field, suffix, filled } of plan) {
      const old = slotArray(fields, field);
      const fresh: OptimizerVariable[] = [];
      if (filled) {
        for (const entry of resolved.varList) {
          const name = slotName(entry.name, suffix);
          const value = toTf(tensors.get(name) as Tensor, name);
          fresh.push({ originalName: slotName(entry.variable.name, suffix), variable: tf.variable(value, false) });
          value.dispose();
        }
      }
      fields[field] = fresh;
      for (const o of old) o.variable.dispose();
    }
    for (const s of kind.scalars) {
      const v = scalarVariable(fields, s);
      tf.tidy(() => v.assign(toTf(tensors.get(s) as Tensor, s)));
    }
    fields.iterations_ = state.iterations;
    setLearningRate(optimizer, state.learningRate);
  };
}

/**
 * Restores an optimizer's state captured by {@link captureOptimizer}: slots (as fresh variables bound
 * to the model's current variables by position), Adam's beta products bit for bit, the iteration
 * counter and the learning rate. Everything is checked before anything is changed.
 *
 * @param model the model whose variables the optimizer updates, in the order they are passed to it.
 * @throws CkptError `INCOMPATIBLE_TENSORS` (naming the tensor) for a missing or misshapen slot, another
 * optimizer class, or (strict) an unused tensor; `INVALID_ARGUMENT` (strict) for another configuration;
 * `STATE_INVALID` for a malformed `state`; `UNSUPPORTED` for Adamax.
 */
export function restoreOptimizer(
  optimizer: tf.Optimizer,
  model: ModelLike | ResolvedModel,
  saved: { readonly tensors: TensorMap | undefined; readonly state: unknown },
  options: RestoreOptimizerOptions = {},
): void {
  prepareOptimizerRestore(optimizer, isResolved(model) ? model : resolveModel(model), saved, options)();
}

/** The `applyGradients` argument of TF.js optimizers. */
type VariableGradients = Parameters<tf.AdamOptimizer['applyGradients']>[0];

/**
 * Adam with decoupled weight decay (AdamW, Loshchilov & Hutter; as Keras' AdamW): before each Adam
 * update, every variable that receives a gradient is shrunk by `w ← w − learningRate · weightDecay · w`.
 * Its checkpoint state is Adam's (it is an `AdamOptimizer`), plus `weightDecay` in its config.
 */
export class AdamWOptimizer extends tf.AdamOptimizer {
  /** The class name TF.js serialization uses. */
  static override get className(): string {
    return 'AdamW';
  }

  /** The decoupled weight-decay coefficient. */
  readonly weightDecay: number;

  constructor(learningRate: number, beta1: number, beta2: number, epsilon: number | undefined, weightDecay: number) {
    super(learningRate, beta1, beta2, epsilon);
    this.weightDecay = weightDecay;
  }

  override applyGradients(variableGradients: VariableGradients): void {
    if (this.weightDecay !== 0) {
      const names = Array.isArray(variableGradients)
        ? variableGradients.filter((g) => g.tensor != null).map((g) => g.name)
        : Object.keys(variableGradients).filter((n) => variableGradients[n] != null);
      const registered = tf.engine().registeredVariables;
      const factor = this.learningRate * this.weightDecay;
      tf.tidy(() => {
        for (const name of names) {
          const v = registered[name];
          if (v !== undefined) v.assign(tf.sub(v, tf.mul(v, factor)));
        }
      });
    }
    super.applyGradients(variableGradients);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), weightDecay: this.weightDecay };
  }
}

/** Options of {@link adamw}. */
export interface AdamWOptions {
  /** @default 0.9 */
  readonly beta1?: number;
  /** @default 0.999 */
  readonly beta2?: number;
  /** @default the backend's epsilon (1e-7 on cpu and wasm), as tf.train.adam */
  readonly epsilon?: number;
  /** Decoupled weight decay. @default 0.004 (Keras' AdamW default) */
  readonly weightDecay?: number;
}

/**
 * Creates an {@link AdamWOptimizer}.
 *
 * @example
 * ```ts
 * const optimizer = adamw(1e-3, { weightDecay: 0.01 });
 * ```
 * @throws CkptError `INVALID_ARGUMENT` listing every invalid option.
 */
export function adamw(learningRate: number, options: AdamWOptions = {}): AdamWOptimizer {
  const beta1 = options.beta1 ?? 0.9;
  const beta2 = options.beta2 ?? 0.999;
  const weightDecay = options.weightDecay ?? 0.004;
  const problems: string[] = [];
  const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  if (!finite(learningRate) || learningRate < 0) problems.push('learningRate must be a finite number >= 0');
  if (!finite(beta1) || beta1 < 0 || beta1 >= 1) problems.push('beta1 must be in [0, 1)');
  if (!finite(beta2) || beta2 < 0 || beta2 >= 1) problems.push('beta2 must be in [0, 1)');
  if (options.epsilon !== undefined && (!finite(options.epsilon) || options.epsilon <= 0)) problems.push('epsilon must be a finite number > 0');
  if (!finite(weightDecay) || weightDecay < 0) problems.push('weightDecay must be a finite number >= 0');
  if (problems.length > 0) throw new CkptError('INVALID_ARGUMENT', `invalid AdamW options: ${problems.join('; ')}`, { received: problems });
  return new AdamWOptimizer(learningRate, beta1, beta2, options.epsilon, weightDecay);
}
