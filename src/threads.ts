/**
 * How many worker threads averaging and verified loads use (`threads` options). No imports: the main
 * entry reads these without loading the worker pool.
 *
 * @module
 */

/** Most worker threads an averaging or a load may use. */
export const MAX_THREADS = 64;

/** Worker threads by default: one per core, at most this many (memory bandwidth, not cores, runs out next). */
const DEFAULT_MAX_THREADS = 4;

/** The default number of worker threads on a machine of `cores` cores. */
export function coreThreads(cores: number): number {
  return Math.max(1, Math.min(cores, DEFAULT_MAX_THREADS));
}
