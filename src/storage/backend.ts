/**
 * The storage abstraction under checkpoints. A backend stores byte objects under `/`-separated keys
 * relative to its root (`step-00001000/model.safetensors`). Keys never start with `/`, never contain
 * `.` or `..` segments or empty segments; backends reject such keys (see `keys.ts`: `PATH_ESCAPE` for an
 * absolute key or a `..` segment, `INVALID_ARGUMENT` otherwise).
 *
 * A *prefix* (`''` for the root, or a key ending with `/`) groups objects like a directory. A name is
 * either an object or a prefix, never both: writing `a/b` while `a` is an object, or `a` while `a/`
 * holds objects, fails with `IO_ERROR`. A prefix exists while it holds objects; a backend with real
 * directories (fs) may also keep and list an empty one.
 *
 * ## Call order of a save (what the checkpoint layer does)
 * 1. `writer(tmp/file)` for each file: `write(chunk)` any number of times, then `close()` (which fsyncs
 *    when `sync` is on). `abort()` instead of `close()` discards the partial file.
 * 2. `write(tmp/manifest.json)` last.
 * 3. With `capabilities.atomicRename`: `rename(tmp, final)` (a directory-like prefix) then
 *    `syncDir('')` so the rename is durable. Without it the files are written under the final prefix
 *    directly and the manifest, written last, is the commit marker.
 *
 * Readers call `list`, `read`, `readRange`, `size` at any time; a backend must never expose a file
 * under its final key before its content is complete (fs: rename of a whole directory; memory: a key
 * appears on `close()`).
 *
 * @module
 */

/** What a backend can do; the checkpoint layer picks its commit strategy from this. */
export interface BackendCapabilities {
  /** `rename` of a prefix is atomic (all-or-nothing, visible at once). */
  readonly atomicRename: boolean;
  /** Data survives power loss after `close()` with `sync` / `syncDir` (fsync). */
  readonly durable: boolean;
  /** `writeIfAbsent` is atomic across processes (usable for a lock). */
  readonly exclusiveCreate: boolean;
}

/** Options of {@link Backend.writer} and {@link Backend.write}. */
export interface WriteOptions {
  /**
   * fsync the file's data before `close()` resolves. The object's *name* becomes durable with
   * {@link Backend.syncDir} of its prefix (or of the root after renaming an enclosing prefix); prefixes
   * the writer had to create are made durable by `close()` itself.
   * @default true (a backend's own options may change its default)
   */
  readonly sync?: boolean;
}

/**
 * An open file being written. Call `write` any number of times (awaiting each), then `close` or `abort`.
 *
 * Nothing is visible under the key until `close()` resolves; until then an existing object under the
 * key stays readable, unchanged. When `write` rejects, call `abort()`. When `close()` rejects the
 * partial file has already been discarded (a later `abort()` is a harmless no-op). `write` or `close`
 * after `close` / `abort` rejects with `CLOSED`.
 */
export interface ObjectWriter {
  /**
   * Appends `chunk` (which may be empty). The caller must not modify `chunk` until the promise
   * resolves; after that it may reuse it (backends do not keep a reference).
   */
  write(chunk: Uint8Array): Promise<void>;
  /** Finishes the file (fsync when asked) and makes it visible under its key. Returns bytes written. */
  close(): Promise<number>;
  /** Discards the partial file. Never throws; may be called more than once, and after `close`. */
  abort(): Promise<void>;
}

/** An object opened for several reads (one open file for the fs backend). Call `close` when done. */
export interface ObjectReader {
  /** Size of the object when it was opened. */
  readonly size: number;
  /**
   * An operating-system file descriptor open on the object until `close`, for a backend of local files
   * (the fs backend): lets a worker thread read it directly (`fs.readSync`), which averaging does to
   * spread its work over the cores. Backends without one are read through `read` only.
   */
  readonly fd?: number;
  /**
   * Reads exactly `length` bytes at `offset` into `into` and returns the filled view (`into` itself when
   * the lengths match). `FILE_LENGTH_MISMATCH` when the object is shorter. One read is one I/O request,
   * so a caller can overlap it with work of its own (hashing the previous piece).
   */
  read(offset: number, length: number, into: Uint8Array): Promise<Uint8Array>;
  /** Releases the object. Never throws; idempotent. */
  close(): Promise<void>;
}

/** A storage backend. See the module docs for the call order. */
export interface Backend {
  /** What this backend guarantees. */
  readonly capabilities: BackendCapabilities;
  /** Human-readable location, used in error messages (`/runs/a`, `memory://`). */
  readonly location: string;
  /** Resolves `key` to the string shown in messages (e.g. an absolute path). */
  describe(key: string): string;
  /**
   * Reads a whole object into a new buffer that the caller owns. Throws `NOT_FOUND` when absent (a
   * prefix is not an object), `UNSUPPORTED` when the object is larger than one buffer can be (use
   * `readRange`).
   */
  read(key: string): Promise<Uint8Array>;
  /**
   * Reads `length` bytes at `offset` (non-negative safe integers; offsets beyond 2^32 work). When
   * `into` is given the bytes land in its first `length` bytes (it must be at least `length` long) and
   * a view of exactly those bytes is returned (`into` itself when its length is `length`) with no
   * allocation of data; otherwise a new buffer is allocated. Throws `NOT_FOUND` when absent,
   * `FILE_LENGTH_MISMATCH` (with `expected` = `offset + length`, `received` = the object's size) when
   * the object is shorter than `offset + length`, `INVALID_ARGUMENT` for a bad offset, length or `into`.
   */
  readRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  /**
   * Opens an object for several reads. Optional: callers fall back to `readRange` (see `openReader`
   * in storage/reader.ts). Throws `NOT_FOUND` when absent.
   */
  openReader?(key: string): Promise<ObjectReader>;
  /** Size in bytes of an object. Throws `NOT_FOUND` when absent. */
  size(key: string): Promise<number>;
  /** True when the object exists (false for a prefix). */
  exists(key: string): Promise<boolean>;
  /** Opens a writer for `key` (replacing any existing object on close). */
  writer(key: string, options?: WriteOptions): Promise<ObjectWriter>;
  /** Writes a whole object (writer + write + close). */
  write(key: string, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /**
   * Creates `key` with `data` only if it does not exist; returns false when it already existed. The
   * object appears with its full content (never empty or partial), and its data is synced. Atomic
   * across processes when `capabilities.exclusiveCreate`.
   */
  writeIfAbsent(key: string, data: Uint8Array): Promise<boolean>;
  /**
   * Immediate children of `prefix` ('' = root; `a` and `a/` are the same prefix): object names, and
   * sub-prefixes with a trailing `/`. Sorted by UTF-16 code units (`Array.prototype.sort`). A missing
   * prefix lists as empty. Backends' own partial files are never listed.
   */
  list(prefix: string): Promise<string[]>;
  /**
   * Deletes an object, or a whole prefix recursively when `key` ends with `/`. Missing is not an error.
   * An object key that names a prefix (`a` while `a/` holds objects) throws `INVALID_ARGUMENT` rather
   * than guessing; the root `''` cannot be deleted (`INVALID_ARGUMENT`).
   */
  delete(key: string): Promise<void>;
  /**
   * Renames an object or a whole prefix atomically: `from` is whatever it names, so `rename('tmp', 'a')`
   * moves the prefix `tmp/` when `tmp` is one. A trailing `/` on either argument insists on a prefix
   * (`NOT_FOUND` when `from` is an object). Fails with `NOT_FOUND` when `from` does not exist,
   * `ALREADY_EXISTS` when the target exists (as an object or a prefix), `INVALID_ARGUMENT` when the
   * target is inside the renamed prefix. Present only when `capabilities.atomicRename`.
   */
  rename?(from: string, to: string): Promise<void>;
  /**
   * Makes renames and creations directly under `prefix` durable (fsync of the directory). No-op where
   * moot (not `durable`). A backend that can tell throws `NOT_FOUND` for a missing prefix.
   */
  syncDir(prefix: string): Promise<void>;
  /**
   * Optional (backends whose writers keep hidden partial files: fs). Removes the partial files that
   * writers killed mid-write left directly under `prefix` (they are never listed, so nothing else can
   * see or delete them) and returns how many it removed. Call it only as the single writer of
   * `prefix`: the checkpoint manager does when it opens a run with the writer lock held. A concurrent
   * `writeIfAbsent` under `prefix` whose partial file is removed retries; another concurrent writer's
   * `close()` may fail.
   */
  removePartials?(prefix: string): Promise<number>;
  /**
   * Optional (backends with symbolic links: fs). Throws `PATH_ESCAPE` when the object `key`, followed
   * through symbolic links, resolves to a place outside the prefix `within` (itself resolved through
   * links, so a linked run or checkpoint directory is fine); `NOT_FOUND` when `key` does not exist.
   * Readers of checkpoints call it before trusting a file a manifest lists; backends without links omit
   * it (nothing can escape).
   */
  checkContained?(key: string, within: string): Promise<void>;
}
