/**
 * Save and retention policies: pure functions of explicit inputs (no clock reads, no I/O), so every rule
 * is testable with plain numbers. The manager feeds them the time from its injected clock.
 *
 * @module
 */
import { type Problems, isCount, isPositive } from '../problems.js';

/** Whether smaller (`min`, a loss) or larger (`max`, an accuracy) metric values are better. */
export type MetricMode = 'min' | 'max';

/** A monitored metric. */
export interface MetricSpec {
  /** Metric name, as given in `TrainState.metrics`. */
  readonly metric: string;
  /** @default 'min' */
  readonly mode?: MetricMode;
}

/**
 * When to save. Rules combine with "save if any rule fires"; with no rule at all, every `save` call
 * saves. A step is never saved twice.
 */
export interface SavePolicy {
  /** Save when `step` is a multiple of this (and not yet saved). */
  readonly everySteps?: number;
  /** Save when at least this many seconds passed since the last save (or since the manager opened). */
  readonly everySeconds?: number;
  /** Save at exactly these steps. */
  readonly atSteps?: readonly number[];
  /** Save when this metric is better than at every earlier checkpoint that recorded it. */
  readonly onImprovement?: MetricSpec;
}

/** Inputs of {@link shouldSave}. */
export interface SaveDecisionInput {
  readonly step: number;
  /** Current time in ms. */
  readonly now: number;
  /** Time of the last save (or of opening the manager) in ms. */
  readonly lastSaveTime: number;
  /** Metrics of the state about to be saved. */
  readonly metrics: Readonly<Record<string, number>>;
  /** Best value of the monitored metric among existing checkpoints, if any. */
  readonly bestMetric: number | undefined;
}

/** Why a save happened (or `undefined` when no rule fired). */
export type SaveReason = 'policy:none' | 'everySteps' | 'everySeconds' | 'atSteps' | 'onImprovement' | 'forced';

/** True when `a` is strictly better than `b` under `mode`. */
export function isBetter(a: number, b: number, mode: MetricMode): boolean {
  return mode === 'min' ? a < b : a > b;
}

/** Validates a {@link SavePolicy}; reports every problem. */
export function validateSavePolicy(policy: SavePolicy, p: Problems): void {
  if (policy.everySteps !== undefined) p.check(isCount(policy.everySteps) && policy.everySteps > 0, 'save.everySteps must be a positive integer');
  if (policy.everySeconds !== undefined) p.check(isPositive(policy.everySeconds), 'save.everySeconds must be a positive number');
  if (policy.atSteps !== undefined) {
    p.check(Array.isArray(policy.atSteps) && policy.atSteps.every(isCount), 'save.atSteps must be a list of non-negative integers');
  }
  if (policy.onImprovement !== undefined) validateMetricSpec(policy.onImprovement, 'save.onImprovement', p);
}

/** Validates a {@link MetricSpec}. */
export function validateMetricSpec(spec: MetricSpec, where: string, p: Problems): void {
  p.check(typeof spec.metric === 'string' && spec.metric.length > 0, `${where}.metric must be a non-empty string`);
  p.check(spec.mode === undefined || spec.mode === 'min' || spec.mode === 'max', `${where}.mode must be "min" or "max"`);
}

/**
 * Decides whether the state at `input.step` should be saved. Returns the first rule that fires (checked
 * in the order atSteps, everySteps, everySeconds, onImprovement), or undefined.
 *
 * @example
 * ```ts
 * shouldSave({ everySteps: 100 }, { step: 200, now: 0, lastSaveTime: 0, metrics: {}, bestMetric: undefined });
 * // 'everySteps'
 * ```
 */
export function shouldSave(policy: SavePolicy, input: SaveDecisionInput): SaveReason | undefined {
  const { everySteps, everySeconds, atSteps, onImprovement } = policy;
  if (everySteps === undefined && everySeconds === undefined && atSteps === undefined && onImprovement === undefined) {
    return 'policy:none';
  }
  if (atSteps?.includes(input.step)) return 'atSteps';
  if (everySteps !== undefined && input.step % everySteps === 0) return 'everySteps';
  // A clock that went back (before the last save) counts as elapsed: the interval restarts at this save.
  if (everySeconds !== undefined && (input.now - input.lastSaveTime >= everySeconds * 1000 || input.now < input.lastSaveTime)) return 'everySeconds';
  if (onImprovement !== undefined) {
    const value = input.metrics[onImprovement.metric];
    if (value !== undefined && Number.isFinite(value)) {
      if (input.bestMetric === undefined || isBetter(value, input.bestMetric, onImprovement.mode ?? 'min')) return 'onImprovement';
    }
  }
  return undefined;
}

/**
 * What to keep. Rules combine with "keep if any rule keeps"; with no rule at all every checkpoint is
 * kept. The newest checkpoint is always kept.
 */
export interface RetentionPolicy {
  /** Keep the newest N checkpoints. */
  readonly last?: number;
  /** Keep the K best by a metric (checkpoints without the metric never count as best). */
  readonly best?: MetricSpec & { readonly k: number };
  /** Keep every checkpoint whose step is a multiple of this. */
  readonly everySteps?: number;
  /**
   * Keep one checkpoint per this many hours: walking from the oldest, a checkpoint is kept when it is at
   * least this long after the previous one kept by this rule (TensorFlow's keep_checkpoint_every_n_hours).
   */
  readonly everyHours?: number;
}

/** What a retention decision needs to know about a checkpoint. */
export interface RetentionCandidate {
  readonly step: number;
  /** Creation time in ms. */
  readonly time: number;
  readonly metrics: Readonly<Record<string, number>>;
}

/** Validates a {@link RetentionPolicy}; reports every problem. */
export function validateRetentionPolicy(policy: RetentionPolicy, p: Problems): void {
  if (policy.last !== undefined) p.check(isCount(policy.last) && policy.last > 0, 'keep.last must be a positive integer');
  if (policy.best !== undefined) {
    p.check(isCount(policy.best.k) && policy.best.k > 0, 'keep.best.k must be a positive integer');
    validateMetricSpec(policy.best, 'keep.best', p);
  }
  if (policy.everySteps !== undefined) p.check(isCount(policy.everySteps) && policy.everySteps > 0, 'keep.everySteps must be a positive integer');
  if (policy.everyHours !== undefined) p.check(isPositive(policy.everyHours), 'keep.everyHours must be a positive number');
}

/** The best `k` candidates by `spec` (ties: the newer wins), best first. */
export function bestCandidates<T extends RetentionCandidate>(candidates: readonly T[], spec: MetricSpec, k = Infinity): T[] {
  const mode = spec.mode ?? 'min';
  return candidates
    .filter((c) => typeof c.metrics[spec.metric] === 'number' && Number.isFinite(c.metrics[spec.metric]))
    .sort((a, b) => {
      const va = a.metrics[spec.metric] as number;
      const vb = b.metrics[spec.metric] as number;
      if (va !== vb) return isBetter(va, vb, mode) ? -1 : 1;
      return b.step - a.step;
    })
    .slice(0, k);
}

/**
 * The steps to keep among `candidates` under `policy` (pure). The newest is always kept.
 *
 * @example
 * ```ts
 * retainedSteps([{ step: 1, time: 0, metrics: {} }, { step: 2, time: 1, metrics: {} }], { last: 1 }); // Set {2}
 * ```
 */
export function retainedSteps(candidates: readonly RetentionCandidate[], policy: RetentionPolicy): Set<number> {
  const sorted = [...candidates].sort((a, b) => a.step - b.step);
  const keep = new Set<number>();
  const newest = sorted[sorted.length - 1];
  if (newest === undefined) return keep;
  const { last, best, everySteps, everyHours } = policy;
  if (last === undefined && best === undefined && everySteps === undefined && everyHours === undefined) {
    return new Set(sorted.map((c) => c.step));
  }
  keep.add(newest.step);
  if (last !== undefined) for (const c of sorted.slice(-last)) keep.add(c.step);
  if (best !== undefined) for (const c of bestCandidates(sorted, best, best.k)) keep.add(c.step);
  if (everySteps !== undefined) for (const c of sorted) if (c.step % everySteps === 0) keep.add(c.step);
  if (everyHours !== undefined) {
    let lastKept = -Infinity;
    for (const c of sorted) {
      if (c.time - lastKept >= everyHours * 3600_000) {
        keep.add(c.step);
        lastKept = c.time;
      }
    }
  }
  return keep;
}
