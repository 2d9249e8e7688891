/**
 * Checkpoint averaging: the weights of the last N, explicit, or best K checkpoints of a run, averaged
 * tensor by tensor in float64 into one committed checkpoint that training can resume from.
 *
 * @module
 */
export {
  averageCheckpoints,
  resolveAverageOptions,
  selectCheckpoints,
  normalizeWeights,
  tensorMismatches,
  DEFAULT_AVERAGE_LAST,
  DEFAULT_AVERAGE_DIR,
  AVERAGE_METHOD,
  MAX_THREADS,
} from './average.js';
export type {
  AverageSelection,
  AverageOptions,
  AverageResult,
  ResolvedAverageOptions,
  SelectionCandidate,
  Selection,
  TensorShapeInfo,
  TensorSet,
} from './average.js';
export { accumulate, finish, isAveragedDType, f64ToF16, f64ToBf16 } from './accumulate.js';
export type { AveragedDType } from './accumulate.js';
