/**
 * Running independent I/O at once without making its errors depend on timing.
 *
 * @module
 */
import { CkptError } from './errors.js';

/**
 * `fn` of every item, at most `concurrency` calls at a time (each starts when one ends, in item order).
 * Resolves to the results in item order. When calls fail, rejects with the failure of the first failed
 * item in item order, once every call started has settled: which error is reported never depends on
 * which finished first, and nothing is left running behind the caller (who may close what the calls
 * use). No call starts after one failed (the items after it cannot change the outcome).
 *
 * @example
 * ```ts
 * const manifests = await mapSettled(names, 8, (name) => readManifest(backend, name));
 * ```
 */
export async function mapSettled<T, R>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new CkptError('INVALID_ARGUMENT', `mapSettled: concurrency must be a positive integer, got ${String(concurrency)}`, { received: concurrency });
  }
  const results: R[] = new Array<R>(items.length);
  let failed: { index: number; error: unknown } | undefined;
  const fail = (index: number, error: unknown): void => {
    if (failed === undefined || index < failed.index) failed = { index, error };
  };
  const stopped = (): boolean => failed !== undefined;
  let next = 0;
  const lane = async (): Promise<void> => {
    // Items start in order, so once one failed, every item that could fail before it has started.
    while (next < items.length && !stopped()) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T, i);
      } catch (error) {
        fail(i, error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, lane));
  // `failed` is assigned by the lanes (TypeScript does not see it).
  const f = failed as { index: number; error: unknown } | undefined;
  if (f !== undefined) throw f.error;
  return results;
}
