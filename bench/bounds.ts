/**
 * Measured limits for the work ckpt spreads over worker threads: the same number of threads running
 * only the inner loop of a verified load (read each 1 MiB tile into shared memory, crc32 it there) or of
 * a verified average (read each 128 KiB tile of every input, crc32 and accumulate it), with no
 * checkpoint around it: no threads to start, no plan, no output to write. What this machine can do with
 * that many threads, against which the real thing is compared in the same run.
 */
import { Worker } from 'node:worker_threads';

/** What each bound worker is given. @internal */
export interface BoundSetup {
  readonly mode: 'load' | 'average';
  readonly files: readonly string[];
  /** Bytes read from each file (from offset 0). */
  readonly bytes: number;
  readonly tile: number;
  /** The next tile to take (one Int32). */
  readonly counter: SharedArrayBuffer;
  /** Load: where the bytes go (pre-touched), `skew` bytes in. */
  readonly target?: SharedArrayBuffer;
  readonly skew: number;
}

/**
 * Best seconds over `reps` of `threads` threads working through `bytes` of each of `files` (`load`: one
 * file, into shared memory; `average`: every file's tiles accumulated as float32).
 */
export async function timeBound(mode: BoundSetup['mode'], files: readonly string[], bytes: number, tile: number, threads: number, reps: number): Promise<number> {
  const counter = new SharedArrayBuffer(4);
  // Half a page from the file offsets' position in their pages, as ckpt places its reads.
  const skew = 2048;
  const target = mode === 'load' ? new SharedArrayBuffer(bytes + skew) : undefined;
  if (target !== undefined) new Uint8Array(target).fill(1);
  const setup: BoundSetup = { mode, files, bytes, tile, counter, skew, ...(target === undefined ? {} : { target }) };
  const workers = Array.from({ length: threads }, () => new Worker(new URL('./bound-worker.js', import.meta.url), { workerData: setup, execArgv: [] }));
  const next = (w: Worker): Promise<void> =>
    new Promise((resolve, reject) => {
      w.once('message', () => resolve());
      w.once('error', reject);
    });
  try {
    await Promise.all(workers.map(next));
    let best = Infinity;
    for (let r = 0; r <= reps; r++) {
      Atomics.store(new Int32Array(counter), 0, 0);
      const t = process.hrtime.bigint();
      await Promise.all(
        workers.map((w) => {
          const done = next(w);
          w.postMessage('go');
          return done;
        }),
      );
      // The first round warms up (compiles the loop, brings the files into the page cache).
      if (r > 0) best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e9);
    }
    return best;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
