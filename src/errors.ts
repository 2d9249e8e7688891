/**
 * The one error type of ckpt. Every failure the library reports is a {@link CkptError} with a stable
 * {@link CkptErrorCode}, structured context (file, step, tensor, expected / received) and the underlying
 * `cause` where there is one. Scripts branch on `code`; people read `message`.
 *
 * @module
 */

/**
 * Every error code ckpt can raise. The union is closed: adding a code is a deliberate API change.
 */
export type CkptErrorCode =
  // --- arguments and options -------------------------------------------------------------------
  /** An argument or option is invalid; `message` lists every problem found. */
  | 'INVALID_ARGUMENT'
  /** The operation is not supported by this backend / optimizer / environment. */
  | 'UNSUPPORTED'
  // --- tensors ---------------------------------------------------------------------------------
  /** A dtype name is not one ckpt knows. */
  | 'UNKNOWN_DTYPE'
  /** The byte length of a tensor does not match its dtype and shape. */
  | 'TENSOR_SIZE_MISMATCH'
  /** A shape is not a list of non-negative safe integers, or its rank exceeds the limit. */
  | 'INVALID_SHAPE'
  // --- safetensors files -----------------------------------------------------------------------
  /** The file is shorter than the 8-byte header-length prefix. */
  | 'FILE_TOO_SMALL'
  /** The declared header length is beyond the file or beyond {@link MAX_HEADER_BYTES}. */
  | 'HEADER_TOO_LARGE'
  /** The header bytes are not valid UTF-8. */
  | 'HEADER_INVALID_UTF8'
  /** The header is not valid JSON, or it does not start with `{`. */
  | 'HEADER_INVALID_JSON'
  /** The header is JSON but not of the shape the spec requires (object of tensor entries). */
  | 'HEADER_INVALID'
  /** A name appears twice in a JSON object of the header. */
  | 'DUPLICATE_KEY'
  /** The header declares more tensors than {@link MAX_TENSORS}. */
  | 'TOO_MANY_TENSORS'
  /** Offsets are reversed, overlap, leave a hole, or do not cover the data buffer. */
  | 'INVALID_OFFSETS'
  /** A size computation overflowed the safe integer range. */
  | 'SIZE_OVERFLOW'
  /** The file length is not exactly 8 + header length + end of the last tensor. */
  | 'FILE_LENGTH_MISMATCH'
  /** `__metadata__` is not a string-to-string map. */
  | 'INVALID_METADATA'
  // --- checkpoints -----------------------------------------------------------------------------
  /** A checkpoint, file or run directory does not exist. */
  | 'NOT_FOUND'
  /** A named tensor is not in a file / group. */
  | 'TENSOR_NOT_FOUND'
  /** manifest.json is missing: the directory is not a committed checkpoint. */
  | 'MANIFEST_MISSING'
  /** manifest.json is not a valid manifest. */
  | 'MANIFEST_INVALID'
  /** The manifest's format version is newer than this library understands. */
  | 'UNSUPPORTED_VERSION'
  /** A path in a manifest escapes the checkpoint directory. */
  | 'PATH_ESCAPE'
  /** A file's checksum does not match the manifest. */
  | 'CHECKSUM_MISMATCH'
  /** A file's size does not match the manifest. */
  | 'SIZE_MISMATCH'
  /** A file listed by the manifest is missing. */
  | 'FILE_MISSING'
  /** state.json is not valid. */
  | 'STATE_INVALID'
  /** A checkpoint for this step already exists. */
  | 'ALREADY_EXISTS'
  /** Tensors differ in names, shapes or dtypes where they must agree (e.g. averaging). */
  | 'INCOMPATIBLE_TENSORS'
  /** No valid checkpoint could be restored. */
  | 'NO_VALID_CHECKPOINT'
  // --- manager / storage -----------------------------------------------------------------------
  /** Another writer holds the run directory's lock. */
  | 'LOCK_HELD'
  /** The manager has been closed. */
  | 'CLOSED'
  /** A background save failed; the error is in `cause`. */
  | 'BACKGROUND_SAVE_FAILED'
  /** The device is full (ENOSPC / EDQUOT). */
  | 'NO_SPACE'
  /** Any other I/O error; the system error is in `cause`. */
  | 'IO_ERROR'
  // --- schedules / config / CLI ----------------------------------------------------------------
  /** A schedule or training configuration is invalid. */
  | 'INVALID_CONFIG'
  /** A command line is invalid (exit code 2). */
  | 'USAGE';

/** Structured context attached to a {@link CkptError}. All fields are optional. */
export interface CkptErrorContext {
  /** File or directory the error is about. */
  readonly path?: string;
  /** Training step of the checkpoint concerned. */
  readonly step?: number;
  /** Tensor name concerned. */
  readonly tensor?: string;
  /** What was expected (a value, a size, a checksum). */
  readonly expected?: unknown;
  /** What was found instead. */
  readonly received?: unknown;
  /** The underlying error. */
  readonly cause?: unknown;
}

/** The base (and only) error class thrown by ckpt. */
export class CkptError extends Error {
  /** Stable machine-readable code. */
  readonly code: CkptErrorCode;
  /** File or directory concerned, if any. */
  readonly path?: string;
  /** Step concerned, if any. */
  readonly step?: number;
  /** Tensor name concerned, if any. */
  readonly tensor?: string;
  /** Expected value, if meaningful. */
  readonly expected?: unknown;
  /** Received value, if meaningful. */
  readonly received?: unknown;

  constructor(code: CkptErrorCode, message: string, context: CkptErrorContext = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.name = 'CkptError';
    this.code = code;
    if (context.path !== undefined) this.path = context.path;
    if (context.step !== undefined) this.step = context.step;
    if (context.tensor !== undefined) this.tensor = context.tensor;
    if (context.expected !== undefined) this.expected = context.expected;
    if (context.received !== undefined) this.received = context.received;
  }
}

/**
 * True when `e` is a {@link CkptError} (and, when `code` is given, has that code).
 *
 * @example
 * ```ts
 * try { await load(dir); } catch (e) { if (isCkptError(e, 'CHECKSUM_MISMATCH')) console.error(e.path); }
 * ```
 */
export function isCkptError(e: unknown, code?: CkptErrorCode): e is CkptError {
  return e instanceof CkptError && (code === undefined || e.code === code);
}

/**
 * `e` completed with what it does not say of `context` (path, step, tensor, expected, received): a new
 * error with the same code and message and `e` as its cause, or `e` itself when it lacks none of them.
 */
export function withContext(e: CkptError, context: CkptErrorContext): CkptError {
  const keys = ['path', 'step', 'tensor', 'expected', 'received'] as const;
  if (keys.every((k) => context[k] === undefined || e[k] !== undefined)) return e;
  const merged: Record<string, unknown> = { cause: e };
  for (const k of keys) merged[k] = e[k] ?? context[k];
  return new CkptError(e.code, e.message, merged as CkptErrorContext);
}

/** Node.js system error codes that mean the device is full. */
const NO_SPACE_CODES = new Set(['ENOSPC', 'EDQUOT']);

/**
 * Wraps an unknown failure from an I/O call into a {@link CkptError}: full-disk errors become `NO_SPACE`,
 * missing files `NOT_FOUND`, anything else `IO_ERROR`. A CkptError keeps its code and message; one that
 * does not name a path, step, … that `path` and `extra` give is completed with them ({@link withContext}:
 * a new error, the original as its cause).
 */
export function ioError(e: unknown, operation: string, path: string, extra: CkptErrorContext = {}): CkptError {
  if (e instanceof CkptError) return withContext(e, { ...extra, path });
  const sys = typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '';
  const detail = e instanceof Error ? e.message : String(e);
  const code: CkptErrorCode = NO_SPACE_CODES.has(sys) ? 'NO_SPACE' : sys === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR';
  return new CkptError(code, `${operation} failed for ${path}: ${detail}`, { ...extra, path, cause: e });
}
