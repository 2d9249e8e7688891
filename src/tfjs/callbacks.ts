/**
 * Callbacks for `model.fit`: checkpointing through a {@link CheckpointManager}, an LR schedule that
 * drives the optimizer every batch, an EMA updated every batch, and early stopping that can restore
 * the best checkpoint.
 *
 * Order matters within a batch: pass them as {@link fitCallbacks} builds them (schedule, EMA,
 * checkpoint, early stopping), so a checkpoint taken after a batch holds the EMA of that batch.
 *
 * Resuming `fit` exactly: restore with `resume(manager, { model, optimizer: model.optimizer, … })`
 * and call `fit` with `initialEpoch: epoch`. `fit` restarts epochs at their first batch and shuffles
 * with `Math.random`, so checkpoint at epoch ends (the default) and use `shuffle: false` (or shuffle
 * the data yourself with a seeded order) when the resumed run must match an uninterrupted one.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs';
import type { CheckpointManager } from '../checkpoint/manager.js';
import type { Checkpoint } from '../checkpoint/types.js';
import { CkptError, isCkptError } from '../errors.js';
import type { JsonValue } from '../format/manifest.js';
import type { Schedule } from '../schedules/schedules.js';
import type { TfExponentialMovingAverage } from './ema.js';
import { setLearningRate } from './optimizers.js';
import { type TrainingTarget, captureState, restoreState } from './state.js';

/** The logs `fit` hands to callbacks: numbers, or scalars not yet read. */
type FitLogs = { [key: string]: number | tf.Scalar };

/** Reads the logs into numbers; non-finite values are left out (a manager refuses them as metrics). */
async function resolveLogs(logs: FitLogs | undefined): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [key, v] of Object.entries(logs ?? {})) {
    const value = typeof v === 'number' ? v : ((await v.data())[0] as number);
    if (Number.isFinite(value)) out[key] = value;
  }
  return out;
}

function optimizerOf(model: tf.LayersModel | null, what: string): tf.Optimizer {
  const optimizer = model?.optimizer;
  if (optimizer == null) throw new CkptError('INVALID_ARGUMENT', `${what}: the model has no optimizer (compile it before fit)`);
  return optimizer;
}

/** What a checkpoint taken during `fit` holds besides the model and its optimizer. */
export interface FitStateOptions {
  /** The EMA to checkpoint (update it with {@link emaCallback}). @default none */
  readonly ema?: TfExponentialMovingAverage;
  /** The LR schedule whose config to record (drive the optimizer with {@link lrScheduleCallback}). @default none */
  readonly schedule?: Schedule;
  /** Your own JSON state, read at each save. @default none */
  readonly state?: () => Readonly<Record<string, JsonValue>>;
  /** Hyper-parameters recorded in each manifest. @default none */
  readonly hyperParameters?: Readonly<Record<string, JsonValue>>;
}

/** Options of {@link checkpointCallback}. */
export interface CheckpointCallbackOptions extends FitStateOptions {
  /**
   * When to offer a checkpoint to the manager's save policy (`everySteps`, `everySeconds`, `atSteps`,
   * `onImprovement`): after every batch (metrics: the batch logs) or after every epoch (metrics: the
   * epoch logs, with `val_*`). The step is `optimizer.iterations`; the recorded epoch is the number of
   * completed epochs.
   * @default 'epoch'
   */
  readonly on?: 'batch' | 'epoch';
  /** Save the final state when training ends, whatever the policy says. @default true */
  readonly saveOnEnd?: boolean;
}

function targetOf(model: tf.LayersModel, options: FitStateOptions, what: string): TrainingTarget {
  return {
    model,
    optimizer: optimizerOf(model, what),
    ...(options.ema === undefined ? {} : { ema: options.ema }),
    ...(options.schedule === undefined ? {} : { schedule: options.schedule }),
  };
}

/** Saves through the manager (when its policy fires, or forced); returns whether a checkpoint was written. */
async function saveFit(
  manager: CheckpointManager,
  target: TrainingTarget,
  options: FitStateOptions,
  epoch: number,
  metrics: Record<string, number>,
  force: boolean,
): Promise<boolean> {
  const step = target.optimizer?.iterations ?? 0;
  if (!force && manager.shouldSave(step, metrics) === undefined) return false;
  // No copy out of TF.js: the manager writes the state before this resolves, or copies it first in the
  // background, and fit waits for this callback, so the model does not change meanwhile.
  const state = await captureState(target, {
    copy: false,
    step,
    epoch,
    metrics,
    ...(options.state === undefined ? {} : { state: options.state() }),
    ...(options.hyperParameters === undefined ? {} : { hyperParameters: options.hyperParameters }),
  });
  return (await manager.save(state, { force })).saved;
}

/**
 * Checkpoints a `fit` run through `manager`, whose save and retention policies decide when to save and
 * what to keep. Call order: fit calls it; it never closes the manager (flushes it at the end of
 * training).
 */
export class CheckpointCallback extends tf.Callback {
  private readonly manager: CheckpointManager;
  private readonly options: CheckpointCallbackOptions;
  private completedEpochs = 0;

  constructor(manager: CheckpointManager, options: CheckpointCallbackOptions = {}) {
    super();
    const on = options.on ?? 'epoch';
    if (on !== 'batch' && on !== 'epoch') throw new CkptError('INVALID_ARGUMENT', `checkpointCallback: on must be 'batch' or 'epoch', got ${String(on)}`);
    this.manager = manager;
    this.options = options;
  }

  override async onEpochBegin(epoch: number): Promise<void> {
    this.completedEpochs = epoch;
  }

  override async onBatchEnd(_batch: number, logs?: FitLogs): Promise<void> {
    if ((this.options.on ?? 'epoch') !== 'batch') return;
    await saveFit(this.manager, targetOf(this.model, this.options, 'checkpointCallback'), this.options, this.completedEpochs, await resolveLogs(logs), false);
  }

  override async onEpochEnd(epoch: number, logs?: FitLogs): Promise<void> {
    this.completedEpochs = epoch + 1;
    if ((this.options.on ?? 'epoch') !== 'epoch') return;
    await saveFit(this.manager, targetOf(this.model, this.options, 'checkpointCallback'), this.options, this.completedEpochs, await resolveLogs(logs), false);
  }

  override async onTrainEnd(): Promise<void> {
    if (this.options.saveOnEnd ?? true) {
      const target = targetOf(this.model, this.options, 'checkpointCallback');
      const saved = await this.manager.list();
      if (saved.at(-1)?.step !== target.optimizer?.iterations) await saveFit(this.manager, target, this.options, this.completedEpochs, {}, true);
    }
    await this.manager.flush();
  }
}

/**
 * A {@link CheckpointCallback}: checkpoints `fit` through `manager`.
 *
 * @example
 * ```ts
 * const manager = await openManager('runs/exp1', { save: { everySteps: 500 }, keep: { last: 3 } });
 * await model.fit(xs, ys, { epochs: 10, callbacks: [checkpointCallback(manager, { on: 'batch' })] });
 * ```
 */
export function checkpointCallback(manager: CheckpointManager, options: CheckpointCallbackOptions = {}): CheckpointCallback {
  return new CheckpointCallback(manager, options);
}

/** Sets the optimizer's learning rate to `schedule(optimizer.iterations)` before every batch. */
export class LrScheduleCallback extends tf.Callback {
  private readonly schedule: Schedule;

  constructor(schedule: Schedule) {
    super();
    if (typeof schedule !== 'function') throw new CkptError('INVALID_ARGUMENT', 'lrScheduleCallback needs a schedule (a function of the step)');
    this.schedule = schedule;
  }

  override async onBatchBegin(): Promise<void> {
    const optimizer = optimizerOf(this.model, 'lrScheduleCallback');
    setLearningRate(optimizer, this.schedule(optimizer.iterations));
  }
}

/**
 * A {@link LrScheduleCallback}: drives the optimizer with `schedule`, evaluated at the number of
 * updates made before each batch (SGD and Momentum through `setLearningRate`, the others through their
 * `learningRate` field).
 */
export function lrScheduleCallback(schedule: Schedule): LrScheduleCallback {
  return new LrScheduleCallback(schedule);
}

/** Updates an EMA after every batch. */
export class EmaCallback extends tf.Callback {
  private readonly ema: TfExponentialMovingAverage;

  constructor(ema: TfExponentialMovingAverage) {
    super();
    this.ema = ema;
  }

  override async onBatchEnd(): Promise<void> {
    this.ema.update();
  }
}

/** An {@link EmaCallback}: `ema.update()` after every batch (with TF.js ops, no copy out of the backend). */
export function emaCallback(ema: TfExponentialMovingAverage): EmaCallback {
  return new EmaCallback(ema);
}

/** Options of {@link earlyStopping}. */
export interface EarlyStoppingOptions {
  /** The epoch log to watch. @default 'val_loss' */
  readonly monitor?: string;
  /** Whether lower or higher is better. @default 'max' when monitor contains 'acc', else 'min' */
  readonly mode?: 'min' | 'max';
  /** The smallest change that counts as an improvement. @default 0 */
  readonly minDelta?: number;
  /** Epochs without improvement after which training stops. @default 0 */
  readonly patience?: number;
  /** A value the monitored quantity must beat to count as an improvement. @default none */
  readonly baseline?: number;
  /**
   * Restore the best checkpoint when training stops early: every improvement is saved (forced)
   * through this manager with the monitored value as a metric, and the best one is restored into the
   * model, its optimizer and `ema`. Keep it with retention `best: { k: 1, metric: monitor, mode }`.
   * @default none (just stop)
   */
  readonly restoreBest?: { readonly manager: CheckpointManager } & FitStateOptions;
}

/**
 * Stops `fit` when the monitored epoch log stops improving, and can restore the best checkpoint. As
 * TF.js' EarlyStopping, an epoch improves when `current − minDelta` beats the best so far (`+` for max);
 * training stops once `patience` epochs in a row have not improved.
 */
export class EarlyStoppingCallback extends tf.Callback {
  private readonly monitor: string;
  private readonly mode: 'min' | 'max';
  private readonly minDelta: number;
  private readonly patience: number;
  private readonly baseline: number | undefined;
  private readonly restore: EarlyStoppingOptions['restoreBest'];
  private wait = 0;
  private bestValue = 0;
  private bestAt: number | undefined;
  private stoppedAt: number | undefined;

  constructor(options: EarlyStoppingOptions = {}) {
    super();
    const monitor = options.monitor ?? 'val_loss';
    const mode = options.mode ?? (monitor.includes('acc') ? 'max' : 'min');
    const minDelta = options.minDelta ?? 0;
    const patience = options.patience ?? 0;
    const problems: string[] = [];
    if (typeof monitor !== 'string' || monitor.length === 0) problems.push('monitor must be a non-empty string');
    if (mode !== 'min' && mode !== 'max') problems.push(`mode must be 'min' or 'max', got ${String(mode)}`);
    if (typeof minDelta !== 'number' || !Number.isFinite(minDelta) || minDelta < 0) problems.push('minDelta must be a finite number >= 0');
    if (!Number.isSafeInteger(patience) || patience < 0) problems.push('patience must be an integer >= 0');
    if (options.baseline !== undefined && !Number.isFinite(options.baseline)) problems.push('baseline must be a finite number');
    if (problems.length > 0) throw new CkptError('INVALID_ARGUMENT', `invalid early-stopping options: ${problems.join('; ')}`, { received: problems });
    this.monitor = monitor;
    this.mode = mode;
    this.minDelta = minDelta;
    this.patience = patience;
    this.baseline = options.baseline;
    this.restore = options.restoreBest;
  }

  /** The best monitored value so far (undefined before the first improvement). */
  get best(): number | undefined {
    return this.bestAt === undefined && this.baseline === undefined ? undefined : this.bestValue;
  }

  /** The step (optimizer iterations) of the best epoch, undefined before the first improvement. */
  get bestStep(): number | undefined {
    return this.bestAt;
  }

  /** The epoch after which training was stopped, undefined while it was not. */
  get stoppedEpoch(): number | undefined {
    return this.stoppedAt;
  }

  override async onTrainBegin(): Promise<void> {
    this.wait = 0;
    this.bestAt = undefined;
    this.stoppedAt = undefined;
    this.bestValue = this.baseline ?? (this.mode === 'min' ? Infinity : -Infinity);
  }

  override async onEpochEnd(epoch: number, logs?: FitLogs): Promise<void> {
    const metrics = await resolveLogs(logs);
    const current = metrics[this.monitor];
    if (current === undefined) {
      throw new CkptError(
        'INVALID_ARGUMENT',
        `early stopping monitors "${this.monitor}", which the epoch logs do not have (finite values: ${Object.keys(metrics).join(', ') || 'none'}); ` +
          `val_* logs need validation data`,
        { expected: this.monitor, received: Object.keys(metrics) },
      );
    }
    const improved = this.mode === 'min' ? current - this.minDelta < this.bestValue : current + this.minDelta > this.bestValue;
    if (improved) {
      this.bestValue = current;
      this.wait = 0;
      const step = optimizerOf(this.model, 'earlyStopping').iterations;
      this.bestAt = step;
      if (this.restore !== undefined) {
        const { manager, ...stateOptions } = this.restore;
        const target = targetOf(this.model, stateOptions, 'earlyStopping');
        await saveFit(manager, target, stateOptions, epoch + 1, metrics, true);
      }
      return;
    }
    this.wait++;
    if (this.wait >= this.patience) {
      this.stoppedAt = epoch;
      this.model.stopTraining = true;
    }
  }

  override async onTrainEnd(): Promise<void> {
    if (this.restore === undefined || this.stoppedAt === undefined || this.bestAt === undefined) return;
    const { manager, ...stateOptions } = this.restore;
    await manager.flush();
    let checkpoint: Checkpoint;
    try {
      ({ checkpoint } = await manager.restore({ step: this.bestAt }));
    } catch (e) {
      if (isCkptError(e, 'NOT_FOUND')) {
        throw new CkptError(
          'NOT_FOUND',
          `early stopping: the best checkpoint (step ${this.bestAt}, ${this.monitor} ${this.bestValue}) is gone; ` +
            `keep it with retention best: { k: 1, metric: '${this.monitor}', mode: '${this.mode}' }`,
          { step: this.bestAt, cause: e },
        );
      }
      throw e;
    }
    await restoreState(targetOf(this.model, stateOptions, 'earlyStopping'), checkpoint);
  }
}

/**
 * An {@link EarlyStoppingCallback}.
 *
 * @example
 * ```ts
 * const manager = await openManager('runs/exp1', { keep: { last: 2, best: { k: 1, metric: 'val_loss', mode: 'min' } } });
 * await model.fit(xs, ys, {
 *   epochs: 100, validationData: [vx, vy],
 *   callbacks: [earlyStopping({ patience: 3, restoreBest: { manager } })],
 * });
 * ```
 * @throws CkptError `INVALID_ARGUMENT` listing every invalid option.
 */
export function earlyStopping(options: EarlyStoppingOptions = {}): EarlyStoppingCallback {
  return new EarlyStoppingCallback(options);
}

/** Options of {@link fitCallbacks}. */
export interface FitCallbacksOptions extends CheckpointCallbackOptions {
  /** Early stopping; with `restoreBest: true` it saves and restores through the same manager. @default none */
  readonly earlyStopping?: Omit<EarlyStoppingOptions, 'restoreBest'> & { readonly restoreBest?: boolean };
}

/**
 * The callbacks of a checkpointed `fit`, in the order they must run: LR schedule (if `schedule`), EMA
 * (if `ema`), checkpointing, early stopping (if asked).
 *
 * @example
 * ```ts
 * const ema = createTfEma(model, { decay: 0.999 });
 * await model.fit(xs, ys, { epochs: 20, shuffle: false,
 *   callbacks: fitCallbacks(manager, { schedule, ema, earlyStopping: { patience: 2, restoreBest: true } }) });
 * ```
 */
export function fitCallbacks(manager: CheckpointManager, options: FitCallbacksOptions = {}): tf.Callback[] {
  const { earlyStopping: early, ...checkpointOptions } = options;
  const list: tf.Callback[] = [];
  if (options.schedule !== undefined) list.push(lrScheduleCallback(options.schedule));
  if (options.ema !== undefined) list.push(emaCallback(options.ema));
  list.push(checkpointCallback(manager, checkpointOptions));
  if (early !== undefined) {
    const { restoreBest, ...rest } = early;
    const stateOptions: FitStateOptions = {
      ...(options.ema === undefined ? {} : { ema: options.ema }),
      ...(options.schedule === undefined ? {} : { schedule: options.schedule }),
      ...(options.state === undefined ? {} : { state: options.state }),
      ...(options.hyperParameters === undefined ? {} : { hyperParameters: options.hyperParameters }),
    };
    list.push(earlyStopping({ ...rest, ...(restoreBest === true ? { restoreBest: { manager, ...stateOptions } } : {}) }));
  }
  return list;
}
