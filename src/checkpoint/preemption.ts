import { isCkptError } from '../errors.js';
import { type CheckpointManager, FREEZE } from './manager.js';
import type { TrainState } from './types.js';

/** Options of {@link onPreemption}. */
export interface PreemptionOptions {
  /** Signals that mean "you are being preempted". @default ['SIGTERM', 'SIGINT'] */
  readonly signals?: readonly NodeJS.Signals[];
  /**
   * `save`: on a signal, save `getState()` at once (forced), close the manager and exit.
   * `flag`: only set `requested`; the training loop checks it between steps, saves and exits itself,
   * which is the only way to be sure the state is not caught between two updates of one step.
   * In `save` mode the training loop keeps running until its next `manager.save` call, and the final
   * save streams the tensors `getState()` returned: if the loop updates tensors in place across an
   * `await`, have `getState()` return copies, or use `flag`.
   * @default 'save'
   */
  readonly mode?: 'save' | 'flag';
  /** Exit code after the final save (mode `save`). @default 0 */
  readonly exitCode?: number;
  /** Called with an error if the final save fails (the process then exits with code 1). */
  readonly onError?: (error: unknown) => void;
}

/** A preemption handler installed by {@link onPreemption}. */
export interface PreemptionHandle {
  /** True once a signal arrived. */
  readonly requested: boolean;
  /** The signal that arrived, if any. */
  readonly signal: NodeJS.Signals | undefined;
  /** Removes the signal handlers. */
  dispose(): void;
}

/**
 * Saves a final checkpoint when the process is asked to stop (SIGTERM from a scheduler, Ctrl-C), then
 * closes the manager (releasing the lock) and exits. From the signal on, further `manager.save` calls
 * of the training loop never resolve, so the loop stops where it is while the final save runs. A second
 * signal during the final save exits at once with code 130.
 *
 * @example
 * ```ts
 * const handle = onPreemption(manager, () => currentState());
 * // … training loop …
 * handle.dispose();
 * ```
 */
export function onPreemption(
  manager: CheckpointManager,
  getState: () => TrainState | Promise<TrainState>,
  options: PreemptionOptions = {},
): PreemptionHandle {
  const signals = options.signals ?? ['SIGTERM', 'SIGINT'];
  const mode = options.mode ?? 'save';
  let requested = false;
  let signal: NodeJS.Signals | undefined;
  const report = (e: unknown, what: string): void => {
    if (options.onError) options.onError(e);
    else process.stderr.write(`ckpt: ${what}: ${isCkptError(e) ? e.message : String(e)}\n`);
  };
  const handler = (sig: NodeJS.Signals): void => {
    if (requested) {
      if (mode === 'save') process.exit(130);
      return;
    }
    requested = true;
    signal = sig;
    if (mode === 'flag') return;
    void (async () => {
      try {
        const state = await getState();
        // The training loop must not save past the final checkpoint nor race the close: park it.
        const internal = manager as unknown as { [FREEZE]?: () => void; save(s: TrainState, o: object): Promise<unknown> };
        internal[FREEZE]?.();
        const final = (): Promise<unknown> => internal.save(state, { force: true, [FREEZE]: true });
        try {
          await final();
        } catch (e) {
          // An earlier background save failed: save() reports that once, instead of saving. Report it,
          // and still save the final state.
          if (!isCkptError(e, 'BACKGROUND_SAVE_FAILED')) throw e;
          report(e, 'an earlier background save failed');
          await final();
        }
        await manager.close();
        process.exit(options.exitCode ?? 0);
      } catch (e) {
        report(e, `final save on ${sig} failed`);
        process.exit(1);
      }
    })();
  };
  for (const s of signals) process.on(s, handler);
  return {
    get requested() {
      return requested;
    },
    get signal() {
      return signal;
    },
    dispose() {
      for (const s of signals) process.off(s, handler);
    },
  };
}
