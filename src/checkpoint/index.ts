/**
 * Checkpoints: save / load / verify of a whole training state, and the checkpoint manager.
 *
 * @module
 */
export { save, load, verify } from './api.js';
export type { VerifyOptions, VerifyResult } from './api.js';
export { CheckpointReader, closeLoadThreads, readCheckpoint, readManifest } from './load.js';
export type { LoadOptions, TensorLocation } from './load.js';
export { writeCheckpoint, resolveSaveOptions, stepDirName, parseStepDirName, DEFAULT_SHARD_BYTES } from './save.js';
export type { SaveOptions } from './save.js';
export { openManager, listRun, deleteCheckpoint } from './manager.js';
export type {
  CheckpointManager,
  ManagerOptions,
  Clock,
  CheckpointInfo,
  InvalidEntry,
  SaveResult,
  SkippedCheckpoint,
  RestoreResult,
  RestoreTarget,
} from './manager.js';
export { shouldSave, retainedSteps, bestCandidates, isBetter } from './policies.js';
export type { SavePolicy, RetentionPolicy, MetricSpec, MetricMode, SaveReason, SaveDecisionInput, RetentionCandidate } from './policies.js';
export { acquireLock, inspectLock, LOCK_NAME } from './lock.js';
export type { LockInfo, LockOptions, WriterLock } from './lock.js';
export { onPreemption } from './preemption.js';
export type { PreemptionOptions, PreemptionHandle } from './preemption.js';
export { resolveRoot, resolveItem } from './location.js';
export type { Location, ResolvedLocation } from './location.js';
export type { TrainState, Checkpoint } from './types.js';
