import { type CkptError, isCkptError } from '../errors.js';
import type { Manifest } from '../format/manifest.js';
import { CheckpointReader, type LoadOptions, loadThreads, readCheckpoint } from './load.js';
import { type Location, resolveItem } from './location.js';
import { type SaveOptions, writeCheckpoint } from './save.js';
import type { Checkpoint, TrainState } from './types.js';

/**
 * Saves `state` as one committed checkpoint directory at `location` (atomic and durable; see
 * docs/FORMAT.md). Most training loops use a {@link CheckpointManager} instead, which names directories
 * `step-XXXXXXXX` inside a run directory and applies save and retention policies.
 *
 * @example
 * ```ts
 * await save('/tmp/run/step-00000010', { step: 10, tensors: { model: weights } });
 * ```
 */
export async function save(location: Location, state: TrainState, options: SaveOptions = {}): Promise<Manifest> {
  const { backend, key } = await resolveItem(location);
  return writeCheckpoint(backend, key, state, options);
}

/** Loads the checkpoint directory at `location`, verifying checksums unless `verify: false`. */
export async function load(location: Location, options: LoadOptions = {}): Promise<Checkpoint> {
  const { backend, key } = await resolveItem(location);
  return readCheckpoint(backend, key, options);
}

/** Result of {@link verify}. */
export interface VerifyResult {
  /** True when the checkpoint is complete and every checksum matches. */
  readonly valid: boolean;
  /** The manifest, when it could be read. */
  readonly manifest?: Manifest;
  /** Every problem found, each a typed error naming its file. */
  readonly problems: readonly CkptError[];
}

/** Options of {@link verify}. */
export interface VerifyOptions {
  /**
   * Worker threads that read and hash the tensor files (local filesystem, crc32, files of at least
   * 32 MiB; into shared memory verify allocates itself); 0 reads on this thread.
   * @default as for `load`: one per core (at most 4) from 256 MiB of tensors, else 0
   */
  readonly threads?: number;
}

/**
 * Verifies the checkpoint directory at `location` completely; never throws for content problems (a bad
 * option is `INVALID_ARGUMENT`).
 */
export async function verify(location: Location, options: VerifyOptions = {}): Promise<VerifyResult> {
  const threads = loadThreads(options);
  const { backend, key } = await resolveItem(location);
  let reader: CheckpointReader;
  try {
    reader = await CheckpointReader.open(backend, key);
  } catch (e) {
    if (isCkptError(e)) return { valid: false, problems: [e] };
    throw e;
  }
  const problems = await reader.verify(threads);
  return { valid: problems.length === 0, manifest: reader.manifest, problems };
}
