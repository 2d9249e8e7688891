/**
 * Argument checks and error builders shared by the backends, so that every backend reports the same
 * codes with the same context. Internal: not exported from `storage/index.ts`.
 *
 * @module
 */
import { CkptError } from '../errors.js';
import type { ObjectWriter, WriteOptions } from './backend.js';
import { validateKey, validatePrefix } from './keys.js';

/**
 * Largest number of bytes handed to one `read` / `write` system call. Node rejects lengths above
 * 2^31 - 1 and Linux transfers at most 0x7ffff000 bytes per call anyway; callers loop.
 */
export const MAX_IO_BYTES = 1 << 30;

function isNonNegativeSafeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Validates the arguments of `readRange`, reporting every problem at once.
 *
 * @throws CkptError `INVALID_ARGUMENT`.
 */
export function checkRange(path: string, offset: number, length: number, into: Uint8Array | undefined): void {
  const problems: string[] = [];
  if (!isNonNegativeSafeInteger(offset)) problems.push(`offset ${String(offset)} is not a non-negative safe integer`);
  if (!isNonNegativeSafeInteger(length)) problems.push(`length ${String(length)} is not a non-negative safe integer`);
  else if (isNonNegativeSafeInteger(offset) && !Number.isSafeInteger(offset + length)) {
    problems.push(`offset + length (${offset} + ${length}) is beyond the safe integer range`);
  }
  if (into !== undefined) {
    if (!(into instanceof Uint8Array)) problems.push('into is not a Uint8Array');
    else if (isNonNegativeSafeInteger(length) && into.byteLength < length) {
      problems.push(`into holds ${into.byteLength} bytes, fewer than length ${length}`);
    }
  }
  if (problems.length > 0) {
    throw new CkptError('INVALID_ARGUMENT', `readRange of ${path}: ${problems.join('; ')}`, { path });
  }
}

/** The value `readRange` returns for a caller buffer: exactly its first `length` bytes, without copying. */
export function rangeView(into: Uint8Array, length: number): Uint8Array {
  return into.byteLength === length ? into : into.subarray(0, length);
}

/**
 * The error for an object shorter than `offset + length`.
 *
 * @param size the object's size when known; otherwise the end of what could be read.
 */
export function lengthMismatch(path: string, offset: number, length: number, size: number): CkptError {
  return new CkptError(
    'FILE_LENGTH_MISMATCH',
    `readRange failed for ${path}: bytes ${offset}..${offset + length} requested but the object has ${size} bytes`,
    { path, expected: offset + length, received: size },
  );
}

/**
 * Validates a chunk or object body.
 *
 * @throws CkptError `INVALID_ARGUMENT` when `data` is not a Uint8Array.
 */
export function checkBytes(data: Uint8Array, operation: string, path: string): void {
  if (!(data instanceof Uint8Array)) {
    throw new CkptError('INVALID_ARGUMENT', `${operation} of ${path}: data is not a Uint8Array`, {
      path,
      received: typeof data,
    });
  }
}

/** The error for using a writer after `close()` / `abort()`. */
export function writerClosed(operation: string, path: string): CkptError {
  return new CkptError('CLOSED', `${operation} of ${path}: the writer is already closed or aborted`, { path });
}

/** The error for a missing object (or a prefix where an object was expected). */
export function notFound(operation: string, path: string, why = 'no such object', cause?: unknown): CkptError {
  return new CkptError('NOT_FOUND', `${operation} failed for ${path}: ${why}`, { path, cause });
}

/** The error for a name that is already used by the other kind (object vs prefix). */
export function nameConflict(operation: string, path: string, why: string): CkptError {
  return new CkptError('IO_ERROR', `${operation} failed for ${path}: ${why}`, { path });
}

/** The error for a prefix passed where an object key is expected (delete). */
export function isAPrefix(operation: string, path: string, key: string): CkptError {
  return new CkptError(
    'INVALID_ARGUMENT',
    `${operation} failed for ${path}: "${key}" is a prefix; pass "${key}/" to act on everything under it`,
    { path },
  );
}

/**
 * Validates the arguments of `rename` and returns them without trailing `/`, and whether a prefix is
 * insisted on (a trailing `/` on either).
 */
export function renameArgs(from: string, to: string): { from: string; to: string; prefixOnly: boolean } {
  const body = (key: string): string => (key.endsWith('/') ? validatePrefix(key).slice(0, -1) : validateKey(key));
  return { from: body(from), to: body(to), prefixOnly: from.endsWith('/') || to.endsWith('/') };
}

/** The error for a `rename` of a prefix into itself. */
export function renameInside(from: string, to: string): CkptError {
  return new CkptError('INVALID_ARGUMENT', `rename of ${from} to ${to}: the target is inside the source`, {
    path: from,
  });
}

/** The error for a `rename` onto an existing object or prefix. */
export function targetExists(from: string, to: string, cause?: unknown): CkptError {
  return new CkptError('ALREADY_EXISTS', `rename of ${from} failed: target ${to} already exists`, {
    path: to,
    cause,
  });
}

/**
 * `Backend.write` on top of `Backend.writer`: one writer, one write, close; the partial object is
 * aborted when the write fails. Every backend whose `write` is nothing more uses this.
 */
export async function writeWithWriter(
  writer: (key: string, options?: WriteOptions) => Promise<ObjectWriter>,
  key: string,
  data: Uint8Array,
  options?: WriteOptions,
): Promise<void> {
  const w = await writer(key, options);
  try {
    await w.write(data);
  } catch (e) {
    await w.abort();
    throw e;
  }
  await w.close();
}
