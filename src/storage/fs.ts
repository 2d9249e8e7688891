/**
 * The file-system {@link Backend} (subpath export `ckpt/storage/fs`): keys map to paths under a root
 * directory. This is the only module of ckpt that imports `node:fs`.
 *
 * How it keeps its promises:
 * - a writer writes a hidden partial file (`.ckpt-partial-<random>`) beside its target and renames it
 *   onto the key on `close()`, after an fdatasync (data and size; timestamps need no flush), so a key
 *   never shows a partial object and an existing object stays readable until it is replaced; chunks go
 *   to `pwrite` as they are, never copied;
 * - `writeIfAbsent` writes and syncs a partial file, then hard-links it to the key (`link(2)` fails
 *   atomically when the key exists), so a lock file is never seen empty; on file systems without hard
 *   links it falls back to an exclusive create (`O_EXCL`);
 * - `rename` of a prefix is `rename(2)` of a directory, after checking that the target does not exist
 *   (Linux silently replaces an empty target directory);
 * - `syncDir` fsyncs a directory, which makes creations and renames in it durable;
 * - `removePartials` deletes the hidden partial files a killed process left behind (the checkpoint
 *   manager calls it when it opens a run); `checkContained` follows symbolic links (`realpath`) so that
 *   a checkpoint's file cannot lead outside its directory.
 *
 * @module
 */
import { constants as bufferConstants } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { link, lstat, mkdir, open, readdir, realpath, rename, rm, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { Backend, BackendCapabilities, ObjectReader, ObjectWriter, WriteOptions } from './backend.js';
import { allocReadBuffer } from '../buffers.js';
import { CkptError, ioError } from '../errors.js';
import { RESERVED_SEGMENT_PREFIX, isPrefix, validateKey, validatePrefix } from './keys.js';
import {
  MAX_IO_BYTES,
  checkBytes,
  checkRange,
  isAPrefix,
  lengthMismatch,
  nameConflict,
  notFound,
  rangeView,
  renameInside,
  renameArgs,
  targetExists,
  writeWithWriter,
  writerClosed,
} from './internal.js';

/** Options of {@link fsBackend}. */
export interface FsBackendOptions {
  /**
   * fsync written files and directories. This is the default of {@link WriteOptions.sync} for writes
   * through the backend, and decides whether `syncDir` and `writeIfAbsent` fsync. Off, the backend
   * reports `durable: false`; turn it off only for scratch data (tests, a tmpfs).
   * @default true
   */
  readonly sync?: boolean;
}

interface ResolvedFsOptions {
  readonly root: string;
  readonly sync: boolean;
}

function resolveFsOptions(root: string, options: FsBackendOptions): ResolvedFsOptions {
  const problems: string[] = [];
  if (typeof root !== 'string' || root === '') problems.push('root must be a non-empty string');
  else if (root.includes('\0')) problems.push('root must not contain a NUL character');
  if (typeof options !== 'object' || options === null) problems.push('options must be an object');
  const sync = typeof options === 'object' && options !== null ? (options.sync ?? true) : true;
  if (typeof sync !== 'boolean') problems.push('options.sync must be a boolean');
  if (problems.length > 0) {
    throw new CkptError('INVALID_ARGUMENT', `fsBackend: ${problems.join('; ')}`, { received: root });
  }
  return { root: resolve(root), sync };
}

/** The system error code of `e` (`ENOENT`, …), or `''` (also for a CkptError, whose codes differ). */
function errno(e: unknown): string {
  if (e instanceof CkptError || typeof e !== 'object' || e === null || !('code' in e)) return '';
  return String((e as { code: unknown }).code);
}

/** Codes meaning "no such object" for a lookup: absent, or a path component is a file. */
const ABSENT = new Set(['ENOENT', 'ENOTDIR']);

/** Codes `link(2)` gives on file systems without hard links; `writeIfAbsent` then uses `O_EXCL`. */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV']);

/** Maps a failure to open / read an object: a directory or an absent path is `NOT_FOUND`. */
function readError(e: unknown, operation: string, path: string): CkptError {
  const code = errno(e);
  if (code === 'EISDIR') return notFound(operation, path, 'it is a prefix (directory), not an object', e);
  if (code === 'ENOTDIR') return notFound(operation, path, 'a parent is an object, not a prefix', e);
  return ioError(e, operation, path);
}

/** A name for a partial file; random so that concurrent writers (and processes) never collide. */
function partialName(): string {
  return `${RESERVED_SEGMENT_PREFIX}${randomBytes(8).toString('hex')}`;
}

/** Writes all of `chunk` at `position`, looping over short writes, without copying it. */
async function writeAll(handle: FileHandle, chunk: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < chunk.byteLength) {
    const n = Math.min(chunk.byteLength - done, MAX_IO_BYTES);
    const { bytesWritten } = await handle.write(chunk, done, n, position + done);
    if (bytesWritten <= 0) throw Object.assign(new Error('write(2) made no progress'), { code: 'EIO' });
    done += bytesWritten;
  }
}

/** Reads up to `length` bytes at `position` into `target[0..length)`; returns how many (short at EOF). */
async function readInto(handle: FileHandle, target: Uint8Array, position: number, length: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = Math.min(length - done, MAX_IO_BYTES);
    const { bytesRead } = await handle.read(target, done, n, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** fsyncs a directory; platforms that cannot (Windows, some file systems) are treated as done. */
async function fsyncDir(path: string): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    if (errno(e) === 'EISDIR' || (process.platform === 'win32' && errno(e) === 'EPERM')) return;
    throw e;
  }
  try {
    await handle.sync();
  } catch (e) {
    if (!['EINVAL', 'ENOTSUP', 'EISDIR', 'EBADF'].includes(errno(e))) throw e;
  } finally {
    await handle.close();
  }
}

/**
 * Creates `dir` and its missing ancestors; with `sync`, fsyncs the parent of each directory it created
 * so that the new entries survive a crash (the caller's `syncDir` covers only the directories it names).
 */
async function ensureDir(dir: string, sync: boolean): Promise<void> {
  const first = await mkdir(dir, { recursive: true });
  if (first === undefined || !sync) return;
  const created = [first];
  const rest = relative(first, dir);
  if (rest !== '') {
    let at = first;
    for (const part of rest.split(sep)) created.push((at = join(at, part)));
  }
  for (const d of created) await fsyncDir(dirname(d));
}

/**
 * Creates the file `path` exclusively (`wx`), creating its directory (see {@link ensureDir}) only when
 * it is missing: the directory of a key is nearly always there already, and each call saves a round
 * trip through the thread pool.
 */
async function createExclusive(path: string, sync: boolean): Promise<FileHandle> {
  try {
    return await open(path, 'wx');
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw e;
  }
  await ensureDir(dirname(path), sync);
  return open(path, 'wx');
}

/** Closes a handle whose outcome no longer matters (cleanup after another error). */
async function closeQuietly(handle: FileHandle): Promise<void> {
  await handle.close().catch(() => undefined);
}

/** Removes a file whose outcome no longer matters (cleanup after another error). */
async function unlinkQuietly(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}

/**
 * Creates a backend storing objects as files under `root` (created on first write; resolved to an
 * absolute path, which is the backend's `location`).
 *
 * Capabilities: `atomicRename` (`rename(2)`), `exclusiveCreate` (`link(2)` / `O_EXCL`), `durable`
 * unless `options.sync` is false.
 *
 * @throws CkptError `INVALID_ARGUMENT` for an empty root or invalid options (all problems listed).
 *
 * @example
 * ```ts
 * import { fsBackend } from 'ckpt/storage/fs';
 * const backend = fsBackend('/runs/exp1');
 * await backend.write('notes.txt', new TextEncoder().encode('hello'));
 * ```
 */
export function fsBackend(root: string, options: FsBackendOptions = {}): Backend {
  const resolved = resolveFsOptions(root, options);
  const rootPath = resolved.root;
  const defaultSync = resolved.sync;
  const capabilities: BackendCapabilities = Object.freeze({
    atomicRename: true,
    durable: defaultSync,
    exclusiveCreate: true,
  });

  /** The path of a validated key or prefix; a prefix keeps its trailing separator. */
  const describe = (key: string): string => join(rootPath, key);

  /**
   * The path of a validated key or prefix for system calls, without a trailing separator (with one,
   * `lstat` of a file fails with ENOTDIR instead of describing it).
   */
  const pathOf = (key: string): string => join(rootPath, isPrefix(key) ? key.slice(0, -1) : key);

  const writeSync = (key: string, options: WriteOptions | undefined): boolean => {
    const sync = options?.sync ?? defaultSync;
    if (typeof sync !== 'boolean') {
      throw new CkptError('INVALID_ARGUMENT', `write of ${describe(key)}: options.sync must be a boolean`, {
        path: describe(key),
      });
    }
    return sync;
  };

  const writer = async (key: string, options?: WriteOptions): Promise<ObjectWriter> => {
    validateKey(key);
    const sync = writeSync(key, options);
    const path = describe(key);
    const partial = join(dirname(path), partialName());
    let handle: FileHandle;
    try {
      handle = await createExclusive(partial, sync);
    } catch (e) {
      throw ioError(e, 'writer', path);
    }
    // Positions are reserved when `write` is called, so even unawaited writes land in call order.
    let end = 0;
    let isOpen = true;
    let failure: unknown;
    const inflight = new Set<Promise<void>>();

    const settle = async (): Promise<void> => {
      await Promise.allSettled([...inflight]);
    };

    return {
      write(chunk: Uint8Array): Promise<void> {
        if (!isOpen) return Promise.reject(writerClosed('write', path));
        try {
          checkBytes(chunk, 'write', path);
        } catch (e) {
          return Promise.reject(e);
        }
        const at = end;
        end += chunk.byteLength;
        const pending = writeAll(handle, chunk, at).catch((e: unknown) => {
          const error = ioError(e, 'write', path);
          failure ??= error;
          throw error;
        });
        inflight.add(pending);
        const forget = (): void => {
          inflight.delete(pending);
        };
        pending.then(forget, forget);
        return pending;
      },

      async close(): Promise<number> {
        if (!isOpen) throw writerClosed('close', path);
        isOpen = false;
        let handleOpen = true;
        try {
          await settle();
          if (failure !== undefined) throw failure;
          if (sync) await handle.datasync();
          handleOpen = false;
          await handle.close();
          await rename(partial, path);
          return end;
        } catch (e) {
          if (handleOpen) await closeQuietly(handle);
          await unlinkQuietly(partial);
          throw ioError(e, 'close', path);
        }
      },

      async abort(): Promise<void> {
        if (!isOpen) return;
        isOpen = false;
        await settle();
        await closeQuietly(handle);
        await unlinkQuietly(partial);
      },
    };
  };

  /** Opens an existing object for reading, mapping failures (absent, a directory) to CkptErrors. */
  const openObject = async (operation: string, path: string): Promise<FileHandle> => {
    try {
      return await open(path, 'r');
    } catch (e) {
      throw readError(e, operation, path);
    }
  };

  const writeIfAbsentExclusive = async (path: string, data: Uint8Array, sync: boolean): Promise<boolean> => {
    let handle: FileHandle;
    try {
      handle = await open(path, 'wx');
    } catch (e) {
      if (errno(e) === 'EEXIST') return false;
      throw e;
    }
    try {
      await writeAll(handle, data, 0);
      if (sync) await handle.datasync();
      await handle.close();
      return true;
    } catch (e) {
      // A half-written file would block every later attempt: remove it.
      await closeQuietly(handle);
      await unlinkQuietly(path);
      throw e;
    }
  };

  return {
    capabilities,
    location: rootPath,
    describe,

    async read(key: string): Promise<Uint8Array> {
      validateKey(key);
      const path = describe(key);
      const handle = await openObject('read', path);
      try {
        const info = await handle.stat();
        if (!info.isFile()) throw notFound('read', path, 'it is a prefix (directory), not an object');
        if (info.size > bufferConstants.MAX_LENGTH) {
          throw new CkptError(
            'UNSUPPORTED',
            `read failed for ${path}: the object has ${info.size} bytes, more than one buffer can hold ` +
              `(${bufferConstants.MAX_LENGTH}); read it in parts with readRange`,
            { path, received: info.size },
          );
        }
        const data = allocReadBuffer(info.size);
        const got = await readInto(handle, data, 0, info.size);
        if (got < info.size) {
          throw new CkptError('FILE_LENGTH_MISMATCH', `read failed for ${path}: the object shrank while being read`, {
            path,
            expected: info.size,
            received: got,
          });
        }
        return data;
      } catch (e) {
        throw readError(e, 'read', path);
      } finally {
        await closeQuietly(handle);
      }
    },

    async readRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
      validateKey(key);
      const path = describe(key);
      checkRange(path, offset, length, into);
      const handle = await openObject('readRange', path);
      try {
        const target = into ?? allocReadBuffer(length);
        const got = length === 0 ? 0 : await readInto(handle, target, offset, length);
        if (got < length || length === 0) {
          // Also for length 0: the range must still lie within the object, and it must be a file.
          const info = await handle.stat();
          if (!info.isFile()) throw notFound('readRange', path, 'it is a prefix (directory), not an object');
          if (offset + length > info.size) throw lengthMismatch(path, offset, length, info.size);
          if (got < length) throw lengthMismatch(path, offset, length, offset + got);
        }
        return into === undefined ? target : rangeView(into, length);
      } catch (e) {
        throw readError(e, 'readRange', path);
      } finally {
        await closeQuietly(handle);
      }
    },

    async openReader(key: string): Promise<ObjectReader> {
      validateKey(key);
      const path = describe(key);
      const handle = await openObject('openReader', path);
      let size: number;
      try {
        const info = await handle.stat();
        if (!info.isFile()) throw notFound('openReader', path, 'it is a prefix (directory), not an object');
        size = info.size;
      } catch (e) {
        await closeQuietly(handle);
        throw readError(e, 'openReader', path);
      }
      let closed = false;
      return {
        size,
        fd: handle.fd,
        async read(offset: number, length: number, into: Uint8Array): Promise<Uint8Array> {
          checkRange(path, offset, length, into);
          if (closed) throw new CkptError('CLOSED', `read of ${path} after its reader was closed`, { path });
          try {
            const got = length === 0 ? 0 : await readInto(handle, into, offset, length);
            if (got < length) throw lengthMismatch(path, offset, length, offset + got);
            return rangeView(into, length);
          } catch (e) {
            throw readError(e, 'read', path);
          }
        },
        async close(): Promise<void> {
          if (closed) return;
          closed = true;
          await closeQuietly(handle);
        },
      };
    },

    async size(key: string): Promise<number> {
      validateKey(key);
      const path = describe(key);
      try {
        const info = await stat(path);
        if (!info.isFile()) throw notFound('size', path, 'it is a prefix (directory), not an object');
        return info.size;
      } catch (e) {
        throw readError(e, 'size', path);
      }
    },

    async exists(key: string): Promise<boolean> {
      validateKey(key);
      try {
        return (await stat(describe(key))).isFile();
      } catch (e) {
        if (ABSENT.has(errno(e))) return false;
        throw ioError(e, 'exists', describe(key));
      }
    },

    writer,

    async write(key: string, data: Uint8Array, options?: WriteOptions): Promise<void> {
      checkBytes(data, 'write', describe(key));
      await writeWithWriter(writer, key, data, options);
    },

    async writeIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
      validateKey(key);
      const path = describe(key);
      checkBytes(data, 'writeIfAbsent', path);
      const sync = defaultSync;
      // A writer opening the run may remove our partial file as debris (removePartials): try again.
      for (let attempt = 1; ; attempt++) {
        const partial = join(dirname(path), partialName());
        try {
          const handle = await createExclusive(partial, sync);
          try {
            await writeAll(handle, data, 0);
            if (sync) await handle.datasync();
          } finally {
            await closeQuietly(handle);
          }
          try {
            await link(partial, path);
            return true;
          } catch (e) {
            const code = errno(e);
            if (code === 'ENOENT' && attempt < 3) continue;
            if (code === 'EEXIST') {
              // Gone again already (another process deleted it)? It existed when we tried: still false.
              const existing = await lstat(path).catch(() => undefined);
              if (existing?.isDirectory() === true) {
                throw nameConflict('writeIfAbsent', path, `"${key}" is a prefix, not an object`);
              }
              return false;
            }
            if (NO_HARD_LINKS.has(code)) return await writeIfAbsentExclusive(path, data, sync);
            throw e;
          }
        } catch (e) {
          throw ioError(e, 'writeIfAbsent', path);
        } finally {
          await unlinkQuietly(partial);
        }
      }
    },

    async list(prefix: string): Promise<string[]> {
      const base = validatePrefix(prefix);
      const path = describe(base);
      try {
        const entries = await readdir(path, { withFileTypes: true });
        const names: string[] = [];
        for (const entry of entries) {
          if (entry.name.startsWith(RESERVED_SEGMENT_PREFIX)) continue;
          let directory = entry.isDirectory();
          let file = entry.isFile();
          if (entry.isSymbolicLink()) {
            // A link counts as what it points to; a dangling one is not an object.
            const target = await stat(join(path, entry.name)).catch(() => undefined);
            directory = target?.isDirectory() ?? false;
            file = target?.isFile() ?? false;
          }
          if (directory) names.push(`${entry.name}/`);
          else if (file) names.push(entry.name);
        }
        return names.sort();
      } catch (e) {
        if (ABSENT.has(errno(e))) return [];
        throw ioError(e, 'list', path);
      }
    },

    async delete(key: string): Promise<void> {
      if (isPrefix(key)) {
        const base = validatePrefix(key);
        const path = describe(base);
        try {
          // An object named like the prefix (without the slash) is not under it: leave it alone.
          if (!(await stat(pathOf(base))).isDirectory()) return;
          await rm(pathOf(base), { recursive: true, force: true });
        } catch (e) {
          if (ABSENT.has(errno(e))) return;
          throw ioError(e, 'delete', path);
        }
        return;
      }
      validateKey(key);
      const path = describe(key);
      try {
        await unlink(path);
      } catch (e) {
        const code = errno(e);
        if (ABSENT.has(code)) return;
        if ((code === 'EISDIR' || code === 'EPERM') && (await lstat(path).catch(() => undefined))?.isDirectory()) {
          throw isAPrefix('delete', path, key);
        }
        throw ioError(e, 'delete', path);
      }
    },

    async rename(from: string, to: string): Promise<void> {
      const args = renameArgs(from, to);
      const src = pathOf(args.from);
      const dst = pathOf(args.to);
      try {
        const info = await lstat(src).catch((e: unknown) => {
          if (ABSENT.has(errno(e))) return undefined;
          throw e;
        });
        if (info === undefined || (args.prefixOnly && !info.isDirectory())) {
          throw notFound('rename', describe(from), args.prefixOnly ? 'no such prefix' : 'no such object or prefix');
        }
        const taken = await lstat(dst).then(
          () => true,
          (e: unknown) => {
            if (ABSENT.has(errno(e))) return false;
            throw e;
          },
        );
        if (taken) throw targetExists(describe(from), describe(to));
        if (info.isDirectory() && args.to.startsWith(`${args.from}/`)) throw renameInside(describe(from), describe(to));
        await ensureDir(dirname(dst), defaultSync);
        await rename(src, dst);
      } catch (e) {
        if (['ENOTEMPTY', 'EEXIST'].includes(errno(e))) throw targetExists(describe(from), describe(to), e);
        throw ioError(e, 'rename', describe(from));
      }
    },

    async syncDir(prefix: string): Promise<void> {
      const path = describe(validatePrefix(prefix));
      if (!defaultSync) return;
      try {
        await fsyncDir(path);
      } catch (e) {
        throw ioError(e, 'syncDir', path);
      }
    },

    async removePartials(prefix: string): Promise<number> {
      const path = describe(validatePrefix(prefix));
      let removed = 0;
      try {
        for (const entry of await readdir(path, { withFileTypes: true })) {
          if (!entry.isFile() || !entry.name.startsWith(RESERVED_SEGMENT_PREFIX)) continue;
          await unlink(join(path, entry.name)).then(
            () => void removed++,
            (e: unknown) => {
              if (!ABSENT.has(errno(e))) throw e;
            },
          );
        }
      } catch (e) {
        if (ABSENT.has(errno(e))) return removed;
        throw ioError(e, 'removePartials', path);
      }
      return removed;
    },

    async checkContained(key: string, within: string): Promise<void> {
      validateKey(key);
      const path = describe(key);
      const base = pathOf(validatePrefix(within));
      const name = relative(base, path);
      if (name !== '' && name !== '..' && !name.includes(sep)) {
        // Directly inside `within` and not a link: inside wherever `within` leads. One lstat instead
        // of resolving both paths (listing a run checks every manifest).
        try {
          if (!(await lstat(path)).isSymbolicLink()) return;
        } catch (e) {
          throw readError(e, 'checkContained', path);
        }
      }
      let real: string;
      let realBase: string;
      try {
        [real, realBase] = await Promise.all([realpath(path), realpath(base)]);
      } catch (e) {
        throw readError(e, 'checkContained', path);
      }
      const inside = relative(realBase, real);
      if (inside === '' || inside === '..' || inside.startsWith(`..${sep}`) || isAbsolute(inside)) {
        throw new CkptError('PATH_ESCAPE', `${path} leads outside ${describe(within)} (it resolves to ${real})`, {
          path,
          expected: realBase,
          received: real,
        });
      }
    },
  };
}
