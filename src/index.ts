/**
 * ckpt: complete, crash-safe training checkpoints for TypeScript.
 *
 * The main entry holds the checkpoint core (tensors, save/load/verify, the manager, policies) and
 * imports nothing optional: the filesystem backend is loaded on demand when a path is used, TF.js only by
 * `ckpt/tfjs`. Schedules and EMA live in `ckpt/schedules` and `ckpt/ema`.
 *
 * @module
 */
export { CkptError, isCkptError } from './errors.js';
export type { CkptErrorCode, CkptErrorContext } from './errors.js';
export { VERSION } from './version.js';
export { createBufferPool } from './buffers.js';
export type { BufferPool, BufferPoolOptions } from './buffers.js';

export {
  DTYPES,
  isDType,
  dtypeSize,
  MAX_RANK,
  numElements,
  byteLength,
  tensor,
  tensorMap,
  validateTensor,
  typedView,
  f16ToF32,
  f32ToF16,
  bf16ToF32,
  f32ToBf16,
  toFloat64,
  fromFloat64,
} from './tensor/index.js';
export type { DType, DTypeInfo, Tensor, TensorMap, NumericArray } from './tensor/index.js';

export {
  save,
  load,
  verify,
  CheckpointReader,
  readCheckpoint,
  readManifest,
  closeLoadThreads,
  writeCheckpoint,
  stepDirName,
  parseStepDirName,
  DEFAULT_SHARD_BYTES,
  openManager,
  listRun,
  deleteCheckpoint,
  shouldSave,
  retainedSteps,
  bestCandidates,
  isBetter,
  acquireLock,
  inspectLock,
  LOCK_NAME,
  onPreemption,
} from './checkpoint/index.js';
export type {
  VerifyResult,
  VerifyOptions,
  LoadOptions,
  TensorLocation,
  SaveOptions,
  CheckpointManager,
  ManagerOptions,
  Clock,
  CheckpointInfo,
  InvalidEntry,
  SaveResult,
  SkippedCheckpoint,
  RestoreResult,
  RestoreTarget,
  SavePolicy,
  RetentionPolicy,
  MetricSpec,
  MetricMode,
  SaveReason,
  SaveDecisionInput,
  RetentionCandidate,
  LockInfo,
  LockOptions,
  WriterLock,
  PreemptionOptions,
  PreemptionHandle,
  Location,
  TrainState,
  Checkpoint,
} from './checkpoint/index.js';
export type { Manifest, ManifestFile, ManifestGroup, JsonValue, ChecksumAlgorithm } from './format/manifest.js';
export type { Backend, BackendCapabilities, ObjectWriter, WriteOptions } from './storage/backend.js';
