/**
 * A fault-injecting {@link Backend} wrapper for tests: it counts the operations it forwards and makes
 * chosen ones fail as the operating system would (`ENOSPC`, `EIO`, …), so code above the storage layer
 * can be tested under a full disk or a failing device at every step of a save.
 *
 * @example Fail every mutating operation of a save in turn
 * ```ts
 * const probe = faultyBackend(memoryBackend(), {});
 * await save(probe);                          // count the operations of one save
 * for (let k = 0; k < probe.count; k++) {
 *   const backend = faultyBackend(memoryBackend(), { failAt: k, errno: 'ENOSPC' });
 *   await assert.rejects(save(backend), { code: 'NO_SPACE' });
 *   // ... and the previous checkpoint is still loadable
 * }
 * ```
 *
 * @module
 */
import type { Backend, ObjectWriter, WriteOptions } from './backend.js';
import { CkptError, ioError } from '../errors.js';
import { writeWithWriter } from './internal.js';

/** The backend operations a {@link FaultPlan} can count and fail (`abort` never fails). */
export type FaultOperation =
  | 'writer'
  | 'write'
  | 'close'
  | 'writeIfAbsent'
  | 'delete'
  | 'rename'
  | 'syncDir'
  | 'read'
  | 'readRange'
  | 'size'
  | 'exists'
  | 'list';

/** Every {@link FaultOperation}. */
export const FAULT_OPERATIONS: readonly FaultOperation[] = Object.freeze([
  'writer',
  'write',
  'close',
  'writeIfAbsent',
  'delete',
  'rename',
  'syncDir',
  'read',
  'readRange',
  'size',
  'exists',
  'list',
]);

/** The operations that change the store: those counted by default. */
export const MUTATING_OPERATIONS: readonly FaultOperation[] = Object.freeze([
  'writer',
  'write',
  'close',
  'writeIfAbsent',
  'delete',
  'rename',
  'syncDir',
]);

/** Which operations {@link faultyBackend} fails, and how. */
export interface FaultPlan {
  /**
   * 0-based index (or indices) among the counted operations of those that fail. Omit to fail nothing
   * and only count (a probe run).
   * @default undefined (no faults)
   */
  readonly failAt?: number | readonly number[];
  /**
   * The operations that are counted (and so can fail). `Backend.write` is counted as its three steps
   * `writer`, `write`, `close`.
   * @default MUTATING_OPERATIONS
   */
  readonly operations?: readonly FaultOperation[];
  /**
   * System error code of the injected failure; it is mapped like a real one (`ENOSPC` / `EDQUOT` →
   * `NO_SPACE`, `ENOENT` → `NOT_FOUND`, anything else → `IO_ERROR`).
   * @default 'ENOSPC'
   */
  readonly errno?: string;
  /**
   * After the first fault every later counted operation fails too, like a disk that stays full.
   * @default false
   */
  readonly sticky?: boolean;
}

/** One counted operation, as recorded in {@link FaultyBackend.events}. */
export interface FaultEvent {
  /** Index among the counted operations (what `failAt` refers to). */
  readonly index: number;
  /** The operation. */
  readonly operation: FaultOperation;
  /** The key or prefix it was called with (`rename`: the source). */
  readonly key: string;
  /** True when the fault was injected here. */
  readonly failed: boolean;
}

/** A backend with fault injection; see {@link faultyBackend}. */
export interface FaultyBackend extends Backend {
  /** Number of counted operations so far. */
  readonly count: number;
  /** Number of injected failures so far. */
  readonly failures: number;
  /** Every counted operation, in order. */
  readonly events: readonly FaultEvent[];
}

interface ResolvedPlan {
  readonly failAt: ReadonlySet<number>;
  readonly operations: ReadonlySet<FaultOperation>;
  readonly errno: string;
  readonly sticky: boolean;
}

function resolvePlan(plan: FaultPlan): ResolvedPlan {
  if (typeof plan !== 'object' || plan === null) {
    throw new CkptError('INVALID_ARGUMENT', 'faultyBackend: plan must be an object');
  }
  const problems: string[] = [];
  const { failAt = [], operations = MUTATING_OPERATIONS, errno = 'ENOSPC', sticky = false } = plan;
  const indices: readonly unknown[] = typeof failAt === 'number' ? [failAt] : Array.isArray(failAt) ? failAt : [failAt];
  for (const index of indices) {
    if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0) {
      problems.push(`failAt ${String(index)} is not a non-negative integer`);
    }
  }
  if (!Array.isArray(operations)) problems.push('operations must be an array');
  else {
    for (const op of operations as readonly unknown[]) {
      if (!FAULT_OPERATIONS.includes(op as FaultOperation)) {
        problems.push(`operations: unknown operation ${JSON.stringify(op)} (known: ${FAULT_OPERATIONS.join(', ')})`);
      }
    }
  }
  if (typeof errno !== 'string' || !/^E[A-Z0-9]+$/.test(errno)) {
    problems.push(`errno ${JSON.stringify(errno)} is not a system error code such as "ENOSPC"`);
  }
  if (typeof sticky !== 'boolean') problems.push('sticky must be a boolean');
  if (problems.length > 0) {
    throw new CkptError('INVALID_ARGUMENT', `faultyBackend: invalid plan: ${problems.join('; ')}`);
  }
  return {
    failAt: new Set(indices as readonly number[]),
    operations: new Set(operations),
    errno,
    sticky,
  };
}

/**
 * Wraps `inner` so that the operations chosen by `plan` fail with a system error.
 *
 * Counting: each call of a counted operation (see {@link FaultPlan.operations}) gets the next index,
 * whether or not it fails, and is recorded in `events`. A failing operation does not reach `inner`;
 * the one exception is a failing writer `close()`, which aborts the inner writer, since a real failed
 * close discards the partial object too. Calls with invalid arguments are still counted before `inner`
 * rejects them. Capabilities, `location` and `describe` are `inner`'s; `rename` is present exactly
 * when `inner` has it.
 *
 * @throws CkptError `INVALID_ARGUMENT` for an invalid plan (all problems listed).
 */
export function faultyBackend(inner: Backend, plan: FaultPlan): FaultyBackend {
  const resolved = resolvePlan(plan);
  const events: FaultEvent[] = [];
  let failures = 0;

  /** Counts `operation`, and throws the injected error when it is to fail. */
  const step = (operation: FaultOperation, key: string): void => {
    if (!resolved.operations.has(operation)) return;
    const index = events.length;
    const failed = resolved.failAt.has(index) || (resolved.sticky && failures > 0);
    events.push(Object.freeze({ index, operation, key, failed }));
    if (!failed) return;
    failures++;
    const cause = Object.assign(new Error(`${resolved.errno}: injected fault (${operation} #${index})`), {
      code: resolved.errno,
      syscall: operation,
    });
    throw ioError(cause, operation, inner.describe(key));
  };

  const writer = async (key: string, options?: WriteOptions): Promise<ObjectWriter> => {
    step('writer', key);
    const w = await inner.writer(key, options);
    return {
      async write(chunk: Uint8Array): Promise<void> {
        step('write', key);
        await w.write(chunk);
      },
      async close(): Promise<number> {
        try {
          step('close', key);
        } catch (e) {
          await w.abort();
          throw e;
        }
        return w.close();
      },
      abort: () => w.abort(),
    };
  };

  const backend: FaultyBackend = {
    get count(): number {
      return events.length;
    },
    get failures(): number {
      return failures;
    },
    get events(): readonly FaultEvent[] {
      return events;
    },
    capabilities: inner.capabilities,
    location: inner.location,
    describe: (key: string) => inner.describe(key),

    async read(key: string): Promise<Uint8Array> {
      step('read', key);
      return inner.read(key);
    },
    async readRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
      step('readRange', key);
      return inner.readRange(key, offset, length, into);
    },
    async size(key: string): Promise<number> {
      step('size', key);
      return inner.size(key);
    },
    async exists(key: string): Promise<boolean> {
      step('exists', key);
      return inner.exists(key);
    },
    writer,
    async write(key: string, data: Uint8Array, options?: WriteOptions): Promise<void> {
      await writeWithWriter(writer, key, data, options);
    },
    async writeIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
      step('writeIfAbsent', key);
      return inner.writeIfAbsent(key, data);
    },
    async list(prefix: string): Promise<string[]> {
      step('list', prefix);
      return inner.list(prefix);
    },
    async delete(key: string): Promise<void> {
      step('delete', key);
      return inner.delete(key);
    },
    async syncDir(prefix: string): Promise<void> {
      step('syncDir', prefix);
      return inner.syncDir(prefix);
    },
  };
  const rename = inner.rename?.bind(inner);
  if (rename !== undefined) {
    return Object.assign(backend, {
      async rename(from: string, to: string): Promise<void> {
        step('rename', from);
        return rename(from, to);
      },
    });
  }
  return backend;
}
