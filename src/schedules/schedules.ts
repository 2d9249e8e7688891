/**
 * Learning-rate schedules: pure functions of the step with a JSON config, matching OpenNMT-tf's
 * schedules (NoamDecay, RsqrtDecay, InvSqrtDecay, CosineAnnealing, RNMTPlusDecay, ScheduleWrapper) and
 * Keras' (ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, PolynomialDecay, CosineDecay).
 *
 * **The step** is the optimizer's update counter *before* the update (OpenNMT-tf's and Keras'
 * convention: the optimizer reads `schedule(iterations)` and then increments `iterations`). The first
 * update uses `schedule(0)`, the second `schedule(1)`, and a run resumed after `k` updates continues
 * with `schedule(k)`.
 *
 * **Precision**: values are computed in float64; TensorFlow computes them in float32. The formulas, the
 * order of operations, the branch points and the floors are TensorFlow's, so the two differ only by
 * float32 rounding: about 1e-7 relative for most values, e.g. the worked example (NoamDecay, scale 2,
 * model_dim 4, warmup_steps 8000, step 1) is 2.7950849718747372e-6 here and 2.795085e-6
 * (2.7950850380875636e-6) in TensorFlow, 2.4e-8 apart. The difference grows where float32 rounding is
 * amplified: in the tail of a cosine schedule, float32's absolute error of ~6e-8 · peak is large next
 * to `1 + cos(…)` (CosineAnnealing(1, maxStep 100): 1.7e-6 relative at step 90, 5.5e-5 at step 99; at
 * step 100 both give 0); in large exponents (RNMTPlusDecay with 8 replicas: 8.9e-7 relative at step
 * 1,000,000); and at steps above 2^24 = 16,777,216, which float32 cannot represent exactly. The tests
 * compare ours with these float32 values (TensorFlow's operations replayed in NumPy float32).
 *
 * Every schedule's doc gives its formula and step → value examples; the examples are executed by the
 * tests (schedules.test.ts reads them from this file).
 *
 * @module
 */
import { CkptError } from '../errors.js';
import type { JsonValue } from '../format/manifest.js';
import { Problems } from '../problems.js';

/**
 * The serialisable form of a schedule: `scheduleFromConfig(s.config)` rebuilds `s`. A type alias, so it
 * is assignable to JSON values (a checkpoint's `state: { schedule: lr.config }`).
 */
export type ScheduleConfig = {
  /** Schedule type, as OpenNMT-tf / Keras name it (`NoamDecay`, `ExponentialDecay`, …). */
  readonly type: string;
  /**
   * Constructor parameters in camelCase (`modelDim`, `warmupSteps`) with every default filled in, or,
   * for `ScheduleWrapper`, the wrapped schedule's config under `schedule`.
   */
  readonly params: Readonly<Record<string, JsonValue>>;
};

/** A learning-rate schedule: call it with a step (≥ 0) to get the rate; `config` describes it. */
export interface Schedule {
  (step: number): number;
  readonly config: ScheduleConfig;
}

// ------------------------------------------------------------------------------------------------
// Parameter specs and the one resolver that validates them (for the factories, scheduleFromConfig
// and fromOpenNMTConfig alike).

type Kind = 'positive' | 'nonNegative' | 'fraction' | 'finite' | 'boolean' | 'count' | 'positiveInteger' | 'numbers';

interface ParamSpec {
  readonly kind: Kind;
  /** Filled in when the parameter is absent. Absent and no default: the parameter is required. */
  readonly default?: JsonValue;
  /** May be absent, with no default (e.g. CosineAnnealing's warmupSteps). */
  readonly optional?: true;
}

type Params = Readonly<Record<string, JsonValue>>;

/** @internal One schedule type: its parameters (constructor order: the first one is the first argument). */
export interface ScheduleSpec {
  readonly params: Readonly<Record<string, ParamSpec>>;
  /** Checks between parameters, run once each parameter is valid on its own: [ok, key, problem]. */
  readonly relations?: (p: Params) => readonly (readonly [boolean, string, string])[];
  readonly formula: (p: Params) => (step: number) => number;
}

const REQUIREMENT: Readonly<Record<Kind, string>> = {
  positive: 'a number > 0',
  nonNegative: 'a number >= 0',
  fraction: 'a number in [0, 1]',
  finite: 'a finite number',
  boolean: 'a boolean',
  count: 'an integer >= 0',
  positiveInteger: 'an integer > 0',
  numbers: 'a list of finite numbers',
};

const isFinite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

function satisfies(kind: Kind, v: unknown): boolean {
  switch (kind) {
    case 'positive':
      return isFinite(v) && v > 0;
    case 'nonNegative':
      return isFinite(v) && v >= 0;
    case 'fraction':
      return isFinite(v) && v >= 0 && v <= 1;
    case 'finite':
      return isFinite(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'count':
      return Number.isSafeInteger(v) && (v as number) >= 0;
    case 'positiveInteger':
      return Number.isSafeInteger(v) && (v as number) > 0;
    case 'numbers':
      return Array.isArray(v) && v.every(isFinite);
  }
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
  if (typeof v === 'object' && v !== null) return 'an object';
  return String(v);
}

/**
 * @internal Validates `given` against `spec` and fills in defaults. Every problem (unknown, missing or
 * invalid parameter, broken relation) is added to `problems`, each naming the parameter as `spell`
 * writes it (camelCase for the factories, OpenNMT-tf's snake_case for its configs).
 */
export function resolveParams(
  spec: ScheduleSpec,
  given: Readonly<Record<string, unknown>>,
  problems: Problems,
  spell: (key: string) => string = (k) => k,
): Params {
  const out: Record<string, JsonValue> = {};
  let valid = true;
  for (const key of Object.keys(given)) {
    if (!Object.prototype.hasOwnProperty.call(spec.params, key) && given[key] !== undefined) {
      problems.add(`unknown parameter ${spell(key)} (expected ${Object.keys(spec.params).map(spell).join(', ')})`);
    }
  }
  for (const [key, p] of Object.entries(spec.params)) {
    const v = Object.prototype.hasOwnProperty.call(given, key) ? given[key] : undefined;
    if (v === undefined) {
      if (p.default !== undefined) out[key] = p.default;
      else if (p.optional !== true) valid = problems.check(false, `${spell(key)} is required (${REQUIREMENT[p.kind]})`) && valid;
      continue;
    }
    if (!problems.check(satisfies(p.kind, v), `${spell(key)} must be ${REQUIREMENT[p.kind]}, got ${show(v)}`)) valid = false;
    else out[key] = Array.isArray(v) ? [...(v as number[])] : (v as JsonValue);
  }
  if (valid && spec.relations !== undefined) {
    for (const [ok, key, problem] of spec.relations(out)) problems.check(ok, `${spell(key)} ${problem}`);
  }
  return out;
}

function checkStep(step: number): void {
  if (typeof step !== 'number' || !Number.isFinite(step) || step < 0) {
    throw new CkptError('INVALID_ARGUMENT', `a schedule step must be a finite number >= 0, got ${String(step)}`, { received: step });
  }
}

/** @internal Wraps a formula as a {@link Schedule} with its frozen config. */
export function toSchedule(type: string, params: Params, f: (step: number) => number): Schedule {
  const fn = (step: number): number => {
    checkStep(step);
    return f(step);
  };
  const frozen: Record<string, JsonValue> = {};
  for (const [k, v] of Object.entries(params)) frozen[k] = Array.isArray(v) ? Object.freeze([...v]) as JsonValue : v;
  return Object.assign(fn, { config: Object.freeze({ type, params: Object.freeze(frozen) }) });
}

/** Builds schedule `type` from camelCase params, or throws one INVALID_CONFIG error listing every problem. */
function create(type: string, given: Readonly<Record<string, unknown>>): Schedule {
  const spec = SPECS[type] as ScheduleSpec;
  const problems = new Problems();
  const params = resolveParams(spec, given, problems);
  problems.throwIfAny('INVALID_CONFIG', `invalid ${type} schedule`);
  return toSchedule(type, params, spec.formula(params));
}

const num = (p: Params, key: string): number => p[key] as number;

// ------------------------------------------------------------------------------------------------
// The schedules.

/**
 * A constant learning rate (what OpenNMT-tf uses when no `decay_type` is configured): lr = learningRate.
 *
 * @example
 * ```ts
 * const lr = constant(0.001);
 * lr(0); // → 0.001
 * lr(123456); // → 0.001
 * ```
 */
export function constant(learningRate: number): Schedule {
  return create('Constant', { learningRate });
}

const CONSTANT: ScheduleSpec = {
  params: { learningRate: { kind: 'nonNegative' } },
  formula: (p) => {
    const lr = num(p, 'learningRate');
    return () => lr;
  },
};

/** Options of {@link noamDecay}. */
export interface NoamOptions {
  /** The model dimension d (OpenNMT-tf's model_dim). */
  readonly modelDim: number;
  /** Warm-up steps w (warmup_steps). */
  readonly warmupSteps: number;
}

/**
 * NoamDecay (Vaswani et al. 2017), as OpenNMT-tf: with s = step + 1,
 * lr = scale · d^-0.5 · min(s^-0.5, s · w^-1.5). It rises linearly to its peak at step w − 1, then
 * decays as 1/√s.
 *
 * @example
 * ```ts
 * const lr = noamDecay(2, { modelDim: 512, warmupSteps: 4000 });
 * lr(0); // → 3.493856214843422e-7
 * lr(3999); // → 0.0013975424859373686 (the peak)
 * lr(9999); // → 0.0008838834764831845
 * noamDecay(2, { modelDim: 4, warmupSteps: 8000 })(1); // → 2.7950849718747372e-6
 * ```
 */
export function noamDecay(scale: number, options: NoamOptions): Schedule {
  return create('NoamDecay', { scale, ...options });
}

const NOAM: ScheduleSpec = {
  params: { scale: { kind: 'positive' }, modelDim: { kind: 'positive' }, warmupSteps: { kind: 'positive' } },
  formula: (p) => {
    const [scale, d, w] = [num(p, 'scale'), num(p, 'modelDim'), num(p, 'warmupSteps')];
    return (step) => {
      const s = step + 1;
      return scale * d ** -0.5 * Math.min(s ** -0.5, s * w ** -1.5);
    };
  },
};

/** Options of {@link rsqrtDecay}. */
export interface RsqrtOptions {
  /** Warm-up steps w: the rate is held at scale / √w until step w (warmup_steps). */
  readonly warmupSteps: number;
}

/**
 * RsqrtDecay, as OpenNMT-tf: lr = scale / √max(step, w).
 *
 * @example
 * ```ts
 * const lr = rsqrtDecay(1, { warmupSteps: 4000 });
 * lr(0); // → 0.015811388300841896
 * lr(4000); // → 0.015811388300841896
 * lr(10000); // → 0.01
 * ```
 */
export function rsqrtDecay(scale: number, options: RsqrtOptions): Schedule {
  return create('RsqrtDecay', { scale, ...options });
}

const RSQRT: ScheduleSpec = {
  params: { scale: { kind: 'positive' }, warmupSteps: { kind: 'positive' } },
  formula: (p) => {
    const [scale, w] = [num(p, 'scale'), num(p, 'warmupSteps')];
    return (step) => scale / Math.sqrt(Math.max(step, w));
  },
};

/** Options of {@link invSqrtDecay}. */
export interface InvSqrtOptions {
  /** Warm-up steps w (warmup_steps). */
  readonly warmupSteps: number;
  /** Rate at step 0, the start of the linear warm-up (initial_learning_rate). @default 0 */
  readonly initialLearningRate?: number;
}

/**
 * InvSqrtDecay, as OpenNMT-tf (Fairseq's `inverse_sqrt`, Marian's `--lr-decay-inv-sqrt`): while
 * step < w, lr = init + (learningRate − init) · step / w; then lr = learningRate · √(w / step).
 *
 * @example
 * ```ts
 * const lr = invSqrtDecay(0.002, { warmupSteps: 4000 });
 * lr(0); // → 0
 * lr(2000); // → 0.001
 * lr(4000); // → 0.002
 * lr(16000); // → 0.001
 * invSqrtDecay(0.002, { warmupSteps: 4000, initialLearningRate: 1e-7 })(2000); // → 0.0010000500000000002
 * ```
 */
export function invSqrtDecay(learningRate: number, options: InvSqrtOptions): Schedule {
  return create('InvSqrtDecay', { learningRate, ...options });
}

const INV_SQRT: ScheduleSpec = {
  params: { learningRate: { kind: 'positive' }, warmupSteps: { kind: 'positive' }, initialLearningRate: { kind: 'nonNegative', default: 0 } },
  formula: (p) => {
    const [lr, w, init] = [num(p, 'learningRate'), num(p, 'warmupSteps'), num(p, 'initialLearningRate')];
    return (step) => (step < w ? init + (lr - init) * (step / w) : lr * Math.sqrt(w / step));
  },
};

/** Options of {@link cosineAnnealing} (OpenNMT-tf's names in parentheses). */
export interface CosineAnnealingOptions {
  /** The rate at maxStep (eta_min). @default 0 */
  readonly etaMin?: number;
  /** The step where the cosine reaches etaMin (max_step). @default 1000000 */
  readonly maxStep?: number;
  /** Linear warm-up from 0 to etaMax over this many steps (warmup_steps). @default no warm-up */
  readonly warmupSteps?: number;
}

/**
 * CosineAnnealing, as OpenNMT-tf: lr = etaMin + ½ (etaMax − etaMin)(1 + cos(π · step / maxStep)); with
 * warmupSteps w, lr = etaMax · step / w while step < w. Like OpenNMT-tf, steps past maxStep follow the
 * cosine back up (stop training at maxStep, or use {@link cosineDecay}, which stays at its floor).
 *
 * @example
 * ```ts
 * const lr = cosineAnnealing(1, { maxStep: 100 });
 * lr(0); // → 1
 * lr(50); // → 0.5
 * lr(100); // → 0
 * lr(150); // → 0.4999999999999999 (back up: past maxStep the cosine rises again)
 * const warm = cosineAnnealing(1, { maxStep: 100, warmupSteps: 10 });
 * warm(5); // → 0.5
 * warm(10); // → 0.9755282581475768
 * ```
 */
export function cosineAnnealing(etaMax: number, options: CosineAnnealingOptions = {}): Schedule {
  return create('CosineAnnealing', { etaMax, ...options });
}

const COSINE_ANNEALING: ScheduleSpec = {
  params: {
    etaMax: { kind: 'positive' },
    etaMin: { kind: 'nonNegative', default: 0 },
    maxStep: { kind: 'positive', default: 1_000_000 },
    warmupSteps: { kind: 'positive', optional: true },
  },
  formula: (p) => {
    const [max, min, maxStep] = [num(p, 'etaMax'), num(p, 'etaMin'), num(p, 'maxStep')];
    const w = p.warmupSteps as number | undefined;
    return (step) => {
      if (w !== undefined && step < w) return (max * step) / w;
      return min + 0.5 * (max - min) * (1 + Math.cos((Math.PI * step) / maxStep));
    };
  },
};

/** Options of {@link rnmtPlusDecay} (OpenNMT-tf's names in parentheses). */
export interface RnmtPlusOptions {
  /** Number of concurrent model replicas n (num_replicas). */
  readonly numReplicas: number;
  /** Warm-up steps p (warmup_steps). @default 500 */
  readonly warmupSteps?: number;
  /** Start s of the exponential decay (start_step). @default 600000 */
  readonly startStep?: number;
  /** End e of the exponential decay (end_step); must be greater than startStep. @default 1200000 */
  readonly endStep?: number;
}

/**
 * RNMTPlusDecay (Chen et al. 2018), as OpenNMT-tf: with t = step,
 * lr = scale · min(1 + t(n − 1)/(n p), n, n · (2n)^((s − n t)/(e − s))).
 *
 * @example
 * ```ts
 * const lr = rnmtPlusDecay(1, { numReplicas: 1 });
 * lr(0); // → 1
 * lr(1200000); // → 0.5
 * const eight = rnmtPlusDecay(1, { numReplicas: 8, warmupSteps: 500 });
 * eight(250); // → 1.4375
 * eight(1000000); // → 1.1279162862139436e-14
 * ```
 */
export function rnmtPlusDecay(scale: number, options: RnmtPlusOptions): Schedule {
  return create('RNMTPlusDecay', { scale, ...options });
}

const RNMT_PLUS: ScheduleSpec = {
  params: {
    scale: { kind: 'positive' },
    numReplicas: { kind: 'positive' },
    warmupSteps: { kind: 'positive', default: 500 },
    startStep: { kind: 'nonNegative', default: 600_000 },
    endStep: { kind: 'finite', default: 1_200_000 },
  },
  relations: (p) => [[num(p, 'endStep') > num(p, 'startStep'), 'endStep', `must be greater than startStep (${num(p, 'startStep')})`]],
  formula: (p) => {
    const [scale, n, w, s, e] = ['scale', 'numReplicas', 'warmupSteps', 'startStep', 'endStep'].map((k) => num(p, k)) as [number, number, number, number, number];
    return (t) => scale * Math.min(Math.min(1 + (t * (n - 1)) / (n * w), n), n * (2 * n) ** ((s - n * t) / (e - s)));
  },
};

/** Options of {@link exponentialDecay} (Keras' names in parentheses). */
export interface ExponentialOptions {
  /** Steps per decay period (decay_steps). */
  readonly decaySteps: number;
  /** Multiplier per period (decay_rate). */
  readonly decayRate: number;
  /** Floor step / decaySteps, so the rate drops in steps (staircase). @default false */
  readonly staircase?: boolean;
}

/**
 * ExponentialDecay, as Keras: lr = initial · rate^(step / decaySteps), the exponent floored when
 * `staircase`.
 *
 * @example
 * ```ts
 * const lr = exponentialDecay(0.1, { decaySteps: 1000, decayRate: 0.5 });
 * lr(1000); // → 0.05
 * lr(1500); // → 0.03535533905932738
 * const stairs = exponentialDecay(0.1, { decaySteps: 1000, decayRate: 0.5, staircase: true });
 * stairs(999); // → 0.1
 * stairs(1500); // → 0.05
 * ```
 */
export function exponentialDecay(initialLearningRate: number, options: ExponentialOptions): Schedule {
  return create('ExponentialDecay', { initialLearningRate, ...options });
}

const EXPONENTIAL: ScheduleSpec = {
  params: {
    initialLearningRate: { kind: 'nonNegative' },
    decaySteps: { kind: 'positive' },
    decayRate: { kind: 'positive' },
    staircase: { kind: 'boolean', default: false },
  },
  formula: (p) => {
    const [lr, rate, periods] = [num(p, 'initialLearningRate'), num(p, 'decayRate'), decayPeriods(p)];
    return (step) => lr * rate ** periods(step);
  },
};

/** Keras' decay progress shared by ExponentialDecay and InverseTimeDecay: step / decaySteps, floored when `staircase`. */
function decayPeriods(p: Params): (step: number) => number {
  const steps = num(p, 'decaySteps');
  return p.staircase === true ? (step) => Math.floor(step / steps) : (step) => step / steps;
}

/** Options of {@link inverseTimeDecay} (Keras' names in parentheses). */
export interface InverseTimeOptions {
  /** Steps per decay period (decay_steps). */
  readonly decaySteps: number;
  /** Added to the denominator per period (decay_rate). */
  readonly decayRate: number;
  /** Floor step / decaySteps (staircase). @default false */
  readonly staircase?: boolean;
}

/**
 * InverseTimeDecay, as Keras: lr = initial / (1 + rate · step / decaySteps), step / decaySteps floored
 * when `staircase`.
 *
 * @example
 * ```ts
 * const lr = inverseTimeDecay(0.1, { decaySteps: 1000, decayRate: 0.5 });
 * lr(0); // → 0.1
 * lr(2000); // → 0.05
 * lr(1500); // → 0.05714285714285715
 * inverseTimeDecay(0.1, { decaySteps: 1000, decayRate: 0.5, staircase: true })(1500); // → 0.06666666666666667
 * ```
 */
export function inverseTimeDecay(initialLearningRate: number, options: InverseTimeOptions): Schedule {
  return create('InverseTimeDecay', { initialLearningRate, ...options });
}

const INVERSE_TIME: ScheduleSpec = {
  params: {
    initialLearningRate: { kind: 'nonNegative' },
    decaySteps: { kind: 'positive' },
    decayRate: { kind: 'nonNegative' },
    staircase: { kind: 'boolean', default: false },
  },
  formula: (p) => {
    const [lr, rate, periods] = [num(p, 'initialLearningRate'), num(p, 'decayRate'), decayPeriods(p)];
    return (step) => lr / (1 + rate * periods(step));
  },
};

/**
 * PiecewiseConstantDecay, as Keras: values[0] while step ≤ boundaries[0], values[i] while
 * boundaries[i−1] < step ≤ boundaries[i], and the last value after the last boundary. Boundaries must
 * increase; there is one more value than boundaries.
 *
 * @example
 * ```ts
 * const lr = piecewiseConstant([100, 200], [1, 0.5, 0.1]);
 * lr(0); // → 1
 * lr(100); // → 1
 * lr(101); // → 0.5
 * lr(200); // → 0.5
 * lr(201); // → 0.1
 * ```
 */
export function piecewiseConstant(boundaries: readonly number[], values: readonly number[]): Schedule {
  return create('PiecewiseConstantDecay', { boundaries, values });
}

const PIECEWISE: ScheduleSpec = {
  params: { boundaries: { kind: 'numbers' }, values: { kind: 'numbers' } },
  relations: (p) => {
    const b = p.boundaries as number[];
    const v = p.values as number[];
    return [
      [b.every((x, i) => i === 0 || x > (b[i - 1] as number)), 'boundaries', 'must increase'],
      [v.length === b.length + 1, 'values', `must have one more entry than boundaries (${b.length + 1}), got ${v.length}`],
      [v.every((x) => x >= 0), 'values', 'must be >= 0'],
    ];
  },
  formula: (p) => {
    const b = [...(p.boundaries as number[])];
    const v = [...(p.values as number[])];
    const last = v[v.length - 1] as number;
    return (step) => {
      for (let i = 0; i < b.length; i++) if (step <= (b[i] as number)) return v[i] as number;
      return last;
    };
  },
};

/** Options of {@link polynomialDecay} (Keras' names in parentheses). */
export interface PolynomialOptions {
  /** Steps to go from the initial to the end rate (decay_steps). */
  readonly decaySteps: number;
  /** The final rate (end_learning_rate). @default 0.0001 (Keras' default) */
  readonly endLearningRate?: number;
  /** Exponent; 1 is a linear decay (power). @default 1 */
  readonly power?: number;
  /** Restart after decaySteps, decaying over the next multiple of decaySteps (cycle). @default false */
  readonly cycle?: boolean;
}

/**
 * PolynomialDecay, as Keras: lr = (initial − end) · (1 − t / D)^power + end, where t = min(step,
 * decaySteps) and D = decaySteps, or, with `cycle`, t = step and D = decaySteps · ⌈step / decaySteps⌉
 * (D = decaySteps at step 0).
 *
 * @example
 * ```ts
 * polynomialDecay(1, { decaySteps: 100, endLearningRate: 0 })(25); // → 0.75
 * polynomialDecay(1, { decaySteps: 100, endLearningRate: 0 })(200); // → 0
 * polynomialDecay(1, { decaySteps: 100 })(200); // → 0.0001
 * polynomialDecay(1, { decaySteps: 100, endLearningRate: 0, power: 2 })(50); // → 0.25
 * polynomialDecay(1, { decaySteps: 100, endLearningRate: 0, cycle: true })(150); // → 0.25
 * ```
 */
export function polynomialDecay(initialLearningRate: number, options: PolynomialOptions): Schedule {
  return create('PolynomialDecay', { initialLearningRate, ...options });
}

const POLYNOMIAL: ScheduleSpec = {
  params: {
    initialLearningRate: { kind: 'nonNegative' },
    decaySteps: { kind: 'positive' },
    endLearningRate: { kind: 'nonNegative', default: 0.0001 },
    power: { kind: 'positive', default: 1 },
    cycle: { kind: 'boolean', default: false },
  },
  formula: (p) => {
    const [lr, steps, end, power] = [num(p, 'initialLearningRate'), num(p, 'decaySteps'), num(p, 'endLearningRate'), num(p, 'power')];
    const cycle = p.cycle === true;
    return (step) => {
      const d = cycle ? steps * (step === 0 ? 1 : Math.ceil(step / steps)) : steps;
      const t = cycle ? step : Math.min(step, steps);
      return (lr - end) * (1 - t / d) ** power + end;
    };
  },
};

/** Options of {@link linearDecay}. */
export interface LinearOptions {
  /** Steps to go from the initial to the end rate. */
  readonly decaySteps: number;
  /** The final rate, held after decaySteps. @default 0 */
  readonly endLearningRate?: number;
}

/**
 * A linear decay from `initialLearningRate` to `endLearningRate` over `decaySteps`, then constant
 * (PolynomialDecay with power 1, but ending at 0 by default): lr = initial + (end − initial) ·
 * min(step, decaySteps) / decaySteps, computed as Keras' PolynomialDecay computes it.
 *
 * @example
 * ```ts
 * const lr = linearDecay(1, { decaySteps: 100 });
 * lr(25); // → 0.75
 * lr(100); // → 0
 * lr(1000); // → 0
 * ```
 */
export function linearDecay(initialLearningRate: number, options: LinearOptions): Schedule {
  return create('LinearDecay', { initialLearningRate, ...options });
}

const LINEAR: ScheduleSpec = {
  params: {
    initialLearningRate: { kind: 'nonNegative' },
    decaySteps: { kind: 'positive' },
    endLearningRate: { kind: 'nonNegative', default: 0 },
  },
  formula: (p) => POLYNOMIAL.formula({ ...p, power: 1, cycle: false }),
};

/** Options of {@link cosineDecay} (Keras' names in parentheses). */
export interface CosineDecayOptions {
  /** Steps of the cosine decay, after the warm-up (decay_steps). */
  readonly decaySteps: number;
  /** Floor, as a fraction of the peak (alpha). @default 0 */
  readonly alpha?: number;
  /** Linear warm-up steps before the decay; needs warmupTarget (warmup_steps). @default 0 */
  readonly warmupSteps?: number;
  /** Peak reached at the end of the warm-up (warmup_target). @default no warm-up; the peak is initialLearningRate */
  readonly warmupTarget?: number;
}

/**
 * CosineDecay with linear warm-up, as Keras: while step < w (warmupSteps), lr = initial + (target −
 * initial) · step / w; then, with t = min(step − w, decaySteps),
 * lr = peak · ((1 − alpha) · ½ (1 + cos(π t / decaySteps)) + alpha), where peak = warmupTarget, or
 * initialLearningRate without a warm-up. Keras ignores warmup_steps when warmup_target is not set; here
 * that combination is an error rather than a silent no-op.
 *
 * @example
 * ```ts
 * const lr = cosineDecay(0, { decaySteps: 1000, warmupSteps: 100, warmupTarget: 1 });
 * lr(50); // → 0.5
 * lr(100); // → 1
 * lr(600); // → 0.5
 * lr(1100); // → 0
 * lr(5000); // → 0
 * cosineDecay(1, { decaySteps: 10 })(5); // → 0.5
 * cosineDecay(1, { decaySteps: 10, alpha: 0.1 })(20); // → 0.1
 * ```
 */
export function cosineDecay(initialLearningRate: number, options: CosineDecayOptions): Schedule {
  return create('CosineDecay', { initialLearningRate, ...options });
}

const COSINE_DECAY: ScheduleSpec = {
  params: {
    initialLearningRate: { kind: 'nonNegative' },
    decaySteps: { kind: 'positive' },
    alpha: { kind: 'fraction', default: 0 },
    warmupSteps: { kind: 'nonNegative', default: 0 },
    warmupTarget: { kind: 'nonNegative', optional: true },
  },
  relations: (p) => [[num(p, 'warmupSteps') === 0 || p.warmupTarget !== undefined, 'warmupSteps', 'needs warmupTarget (Keras would ignore it)']],
  formula: (p) => {
    const [lr, steps, alpha, w] = [num(p, 'initialLearningRate'), num(p, 'decaySteps'), num(p, 'alpha'), num(p, 'warmupSteps')];
    const target = p.warmupTarget as number | undefined;
    const peak = target ?? lr;
    return (step) => {
      if (target !== undefined && step < w) return (target - lr) * (step / w) + lr;
      const t = Math.min(step - w, steps);
      return peak * ((1 - alpha) * (0.5 * (1 + Math.cos(Math.PI * (t / steps)))) + alpha);
    };
  },
};

/** Options of {@link scheduleWrapper} (OpenNMT-tf's names in parentheses). */
export interface WrapperOptions {
  /** Hold the schedule at its step 0 until this step (start_decay_steps). @default 0 */
  readonly startDecaySteps?: number;
  /** Training steps per schedule step (decay_step_duration). @default 1 */
  readonly decayStepDuration?: number;
  /** Never go below this rate (minimum_learning_rate). @default 0 */
  readonly minimumLearningRate?: number;
}

/** @internal The wrapper's own parameters (its `schedule` is handled by the callers). */
export const WRAPPER_SPEC: ScheduleSpec = {
  params: {
    startDecaySteps: { kind: 'count', default: 0 },
    decayStepDuration: { kind: 'positiveInteger', default: 1 },
    minimumLearningRate: { kind: 'nonNegative', default: 0 },
  },
  formula: () => () => 0, // unused: wrapSchedule composes with the inner schedule
};

/** @internal Composes a validated wrapper around `inner`. */
export function wrapSchedule(inner: Schedule, p: Params): Schedule {
  const [start, duration, minimum] = [num(p, 'startDecaySteps'), num(p, 'decayStepDuration'), num(p, 'minimumLearningRate')];
  return toSchedule('ScheduleWrapper', { schedule: inner.config as unknown as JsonValue, ...p }, (step) =>
    Math.max(inner(Math.floor(Math.max(step - start, 0) / duration)), minimum),
  );
}

/**
 * OpenNMT-tf's ScheduleWrapper around any schedule:
 * step' = ⌊max(step − startDecaySteps, 0) / decayStepDuration⌋; lr = max(inner(step'), minimumLearningRate).
 *
 * @example
 * ```ts
 * const noam = noamDecay(2, { modelDim: 4, warmupSteps: 8000 });
 * noam(1); // → 2.7950849718747372e-6
 * scheduleWrapper(noam, { minimumLearningRate: 0.0001 })(1); // → 0.0001
 * const held = scheduleWrapper(noam, { startDecaySteps: 10, decayStepDuration: 2 });
 * held(10); // → 1.3975424859373686e-6 (noam(0))
 * held(15); // → 4.192627457812106e-6 (noam(2))
 * ```
 */
export function scheduleWrapper(inner: Schedule, options: WrapperOptions = {}): Schedule {
  const problems = new Problems();
  problems.check(typeof inner === 'function' && typeof (inner as Partial<Schedule>).config === 'object', 'inner must be a Schedule');
  const params = resolveParams(WRAPPER_SPEC, { ...options }, problems);
  problems.throwIfAny('INVALID_CONFIG', 'invalid ScheduleWrapper');
  return wrapSchedule(inner, params);
}

/**
 * @internal Every schedule type by its OpenNMT-tf / Keras name. (`Constant` and `LinearDecay` are ours:
 * OpenNMT-tf has no decay_type for them.)
 */
export const SPECS: Readonly<Record<string, ScheduleSpec>> = Object.freeze({
  Constant: CONSTANT,
  NoamDecay: NOAM,
  RsqrtDecay: RSQRT,
  InvSqrtDecay: INV_SQRT,
  CosineAnnealing: COSINE_ANNEALING,
  RNMTPlusDecay: RNMT_PLUS,
  ExponentialDecay: EXPONENTIAL,
  InverseTimeDecay: INVERSE_TIME,
  PiecewiseConstantDecay: PIECEWISE,
  PolynomialDecay: POLYNOMIAL,
  LinearDecay: LINEAR,
  CosineDecay: COSINE_DECAY,
});
