import { hostname } from 'node:os';
import { CkptError, ioError, isCkptError } from '../errors.js';
import type { Backend } from '../storage/backend.js';
import { randomId } from './save.js';

/** Name of the writer lock inside a run directory. */
export const LOCK_NAME = 'ckpt.lock';
const TAKEOVER_NAME = 'ckpt.lock.takeover';

/** Contents of ckpt.lock. */
export interface LockInfo {
  readonly pid: number;
  readonly hostname: string;
  /** ISO time the lock was taken. */
  readonly createdAt: string;
  /** Random token identifying this holder. */
  readonly token: string;
}

/** A held writer lock. */
export interface WriterLock {
  readonly info: LockInfo;
  /** Releases the lock (only if it is still ours). Never throws. */
  release(): Promise<void>;
}

/** Options of {@link acquireLock}. */
export interface LockOptions {
  /**
   * Take the lock even when it looks held by a live process (use after checking by hand that the other
   * writer is gone, e.g. a lock left on another host).
   * @default false
   */
  readonly force?: boolean;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to someone else.
    return (e as { code?: string }).code === 'EPERM';
  }
}

/**
 * The lock's content, or undefined when it is not a lock (garbage, or half-written): treated as stale
 * below. Throws `NOT_FOUND` when it is gone, and a read that fails (an I/O error) as it is: a lock that
 * cannot be read is not known to be stale.
 */
async function readLock(backend: Backend, key: string): Promise<LockInfo | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await backend.read(key);
  } catch (e) {
    throw ioError(e, 'reading lock', backend.describe(key));
  }
  try {
    const parsed = JSON.parse(dec.decode(bytes)) as Partial<LockInfo>;
    if (typeof parsed.pid !== 'number' || typeof parsed.hostname !== 'string' || typeof parsed.token !== 'string') return undefined;
    return parsed as LockInfo;
  } catch {
    return undefined;
  }
}

/**
 * Reads a takeover marker (`{pid, hostname, createdAt}`, no token: readLock would call it unreadable, and
 * a competitor would then delete a live process's marker and take over at the same time as it).
 */
async function readMarker(backend: Backend, key: string): Promise<Pick<LockInfo, 'pid' | 'hostname' | 'createdAt'> | undefined> {
  try {
    const parsed = JSON.parse(dec.decode(await backend.read(key))) as Partial<LockInfo>;
    if (typeof parsed.pid !== 'number' || typeof parsed.hostname !== 'string' || typeof parsed.createdAt !== 'string') return undefined;
    return { pid: parsed.pid, hostname: parsed.hostname, createdAt: parsed.createdAt };
  } catch {
    return undefined; // absent, unreadable or half-written: stale
  }
}

/** True when `info` certainly belongs to a dead process on this host (a lock we may take over). */
function isStale(info: LockInfo | undefined, ownTokens: ReadonlySet<string>): boolean {
  if (info === undefined) return true;
  if (info.hostname !== hostname()) return false;
  // Our own pid: held by a live manager of this process only if its token is one we hold.
  if (info.pid === process.pid) return !ownTokens.has(info.token);
  return !alive(info.pid);
}

/** Tokens of locks held by this process, so a second manager in the same process is refused too. */
const heldTokens = new Set<string>();

/**
 * Takes the writer lock of the run rooted at `prefix`. A lock whose holder is a dead process on this
 * host is taken over: the takeover itself is serialised by a second exclusive file so that two
 * processes finding the same stale lock cannot both win. Throws `LOCK_HELD` naming the holder.
 */
export async function acquireLock(backend: Backend, prefix: string, options: LockOptions = {}): Promise<WriterLock> {
  const key = prefix === '' ? LOCK_NAME : `${prefix}/${LOCK_NAME}`;
  const takeoverKey = prefix === '' ? TAKEOVER_NAME : `${prefix}/${TAKEOVER_NAME}`;
  const info: LockInfo = { pid: process.pid, hostname: hostname(), createdAt: new Date().toISOString(), token: randomId() };
  const bytes = enc.encode(`${JSON.stringify(info)}\n`);
  const where = backend.describe(key);

  for (let attempt = 0; attempt < 5; attempt++) {
    if (await backend.writeIfAbsent(key, bytes).catch((e: unknown) => Promise.reject(ioError(e, 'creating lock', where)))) {
      heldTokens.add(info.token);
      return makeLock(backend, key, info);
    }
    let holder: LockInfo | undefined;
    try {
      holder = await readLock(backend, key);
      if (holder === undefined) {
        // Possibly a lock being written right now: only an unreadable lock that stays so is stale.
        await new Promise((r) => setTimeout(r, 100));
        holder = await readLock(backend, key);
      }
    } catch (e) {
      if (isCkptError(e, 'NOT_FOUND')) continue; // vanished between our create and read: try again
      throw e;
    }
    if (!options.force && !isStale(holder, heldTokens)) {
      const who = holder === undefined ? 'an unknown writer' : `pid ${holder.pid} on ${holder.hostname} since ${holder.createdAt}`;
      throw new CkptError('LOCK_HELD', `${where} is held by ${who}; only one writer may use a run directory`, {
        path: where,
        received: holder,
      });
    }
    // Stale (or forced): serialise the takeover so that only one process removes the old lock.
    const marker = enc.encode(JSON.stringify({ pid: process.pid, hostname: info.hostname, createdAt: info.createdAt }));
    if (!(await backend.writeIfAbsent(takeoverKey, marker))) {
      const other = await readMarker(backend, takeoverKey);
      const created = other === undefined ? Number.NaN : Date.parse(other.createdAt);
      const age = Number.isNaN(created) ? Infinity : Date.now() - created;
      // A takeover marker from a dead process (or garbage) older than a few seconds is itself stale.
      if (age > 10_000 || (other !== undefined && other.hostname === info.hostname && !alive(other.pid))) {
        await backend.delete(takeoverKey);
      } else {
        await new Promise((r) => setTimeout(r, 50));
      }
      continue;
    }
    try {
      const again = await readLock(backend, key).catch(() => undefined);
      if (again?.token === holder?.token) await backend.delete(key);
    } finally {
      await backend.delete(takeoverKey);
    }
  }
  throw new CkptError('LOCK_HELD', `could not take ${where}: another process keeps competing for it`, { path: where });
}

function makeLock(backend: Backend, key: string, info: LockInfo): WriterLock {
  let released = false;
  return {
    info,
    async release() {
      if (released) return;
      released = true;
      heldTokens.delete(info.token);
      try {
        const current = await readLock(backend, key);
        if (current?.token === info.token) await backend.delete(key);
      } catch {
        // Already gone: nothing to release.
      }
    },
  };
}

/** Reads the current lock of a run without taking it (for `ckpt ls` / diagnostics). */
export async function inspectLock(backend: Backend, prefix: string): Promise<(LockInfo & { stale: boolean }) | undefined> {
  const key = prefix === '' ? LOCK_NAME : `${prefix}/${LOCK_NAME}`;
  try {
    const info = await readLock(backend, key);
    if (info === undefined) return undefined;
    return { ...info, stale: isStale(info, heldTokens) };
  } catch {
    return undefined;
  }
}
