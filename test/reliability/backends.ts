/**
 * Backend wrappers for the reliability suites: one whose target can be swapped while a manager holds it
 * (a disk that fills up and is freed again), and one that makes every write slow (a disk slower than
 * training).
 */
import type { Backend, ObjectWriter, WriteOptions } from '../../src/storage/backend.js';
import { writeWithWriter } from '../../src/storage/internal.js';

/** A backend forwarding every call to `current`, which a test may replace at any time. */
export interface SwitchableBackend extends Backend {
  current: Backend;
}

/** Wraps `initial` in a {@link SwitchableBackend}; capabilities, location and `describe` stay `initial`'s. */
export function switchable(initial: Backend): SwitchableBackend {
  const b: SwitchableBackend = {
    current: initial,
    capabilities: initial.capabilities,
    location: initial.location,
    describe: (key) => initial.describe(key),
    read: (key) => b.current.read(key),
    readRange: (key, offset, length, into) => b.current.readRange(key, offset, length, into),
    size: (key) => b.current.size(key),
    exists: (key) => b.current.exists(key),
    writer: (key, options) => b.current.writer(key, options),
    write: (key, data, options) => b.current.write(key, data, options),
    writeIfAbsent: (key, data) => b.current.writeIfAbsent(key, data),
    list: (prefix) => b.current.list(prefix),
    delete: (key) => b.current.delete(key),
    syncDir: (prefix) => b.current.syncDir(prefix),
    rename: (from, to) => {
      const rename = b.current.rename;
      if (rename === undefined) throw new Error('the current backend cannot rename');
      return rename.call(b.current, from, to);
    },
    removePartials: async (prefix) => (await b.current.removePartials?.(prefix)) ?? 0,
    checkContained: async (key, within) => {
      await b.current.checkContained?.(key, within);
    },
  };
  return b;
}

/** Counters of a {@link slowBackend}. */
export interface SlowStats {
  /** Writes (chunks) currently being written. */
  inflight: number;
  /** Most writes in flight at once. */
  maxInflight: number;
  /** Bytes written so far. */
  bytes: number;
}

/**
 * Wraps `inner` so that every chunk written takes at least `msPerMiB` per MiB (at least 1 ms): storage
 * slower than the training loop that feeds it.
 */
export function slowBackend(inner: Backend, msPerMiB: number): { backend: Backend; stats: SlowStats } {
  const stats: SlowStats = { inflight: 0, maxInflight: 0, bytes: 0 };
  const delay = (bytes: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(1, (bytes / 2 ** 20) * msPerMiB)));
  const writer = async (key: string, options?: WriteOptions): Promise<ObjectWriter> => {
    const w = await inner.writer(key, options);
    return {
      async write(chunk: Uint8Array): Promise<void> {
        stats.inflight++;
        stats.maxInflight = Math.max(stats.maxInflight, stats.inflight);
        try {
          await delay(chunk.byteLength);
          await w.write(chunk);
          stats.bytes += chunk.byteLength;
        } finally {
          stats.inflight--;
        }
      },
      close: () => w.close(),
      abort: () => w.abort(),
    };
  };
  const backend: Backend = {
    ...inner,
    describe: (key) => inner.describe(key),
    writer,
    async write(key: string, data: Uint8Array, options?: WriteOptions): Promise<void> {
      await writeWithWriter(writer, key, data, options);
    },
  };
  return { backend, stats };
}
