import assert from 'node:assert/strict';
import { mkdtemp, open, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { crc32Implementation } from '../checkpoint/checksum.js';
import { TilePool, JobFailed, TILE, tileCount } from './parallel.js';

describe('TilePool', () => {
  it('reports a worker that cannot start (the averaging then runs on its own thread)', async () => {
    const pool = TilePool.start(2, new URL('./no-such-worker.js', import.meta.url));
    assert.equal(await pool.ready, false);
    await pool.close();
  });

  it('runs a job over tiles shared by its workers: averaged and copied tensors, crc32 of every read tile', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ckpt-pool-'));
    const n = (2 * TILE + 1000) / 4; // 2 whole tiles and a partial one
    const a = Float32Array.from({ length: n }, (_, i) => i);
    const b = Float32Array.from({ length: n }, (_, i) => 3 * i + 1);
    await writeFile(join(dir, 'a'), new Uint8Array(a.buffer));
    await writeFile(join(dir, 'b'), new Uint8Array(b.buffer));
    const fa = await open(join(dir, 'a'));
    const fb = await open(join(dir, 'b'));
    const pool = TilePool.start(2);
    try {
      assert.equal(await pool.ready, true);
      pool.configure(2 * n * 4 + 64, 2);
      const reads = [
        { fd: fa.fd, offset: 0 },
        { fd: fb.fd, offset: 0 },
      ];
      const crcs = await pool.run({
        output: 1,
        divisor: 2,
        hash: true,
        tensors: [
          { dtype: 'F32', at: 0, length: n * 4, reads, weights: [1, 1], keep: 1 },
          { dtype: 'F32', at: n * 4 + 64, length: n * 4, reads, weights: undefined, keep: 1 },
        ],
      });
      const out = pool.outputs[1] as Uint8Array;
      const mean = new Float32Array(out.slice(0, n * 4).buffer);
      assert.ok(mean.every((x, i) => x === Math.fround((i + 3 * i + 1) / 2)));
      assert.deepEqual(new Float32Array(out.slice(n * 4 + 64, n * 4 + 64 + n * 4).buffer), b);
      // Tile t of the job, read k: crc32 of that tile's bytes of input k.
      const crc = crc32Implementation().fn;
      const inputs = [new Uint8Array(a.buffer), new Uint8Array(b.buffer)];
      const tiles = tileCount(n * 4);
      for (let t = 0; t < 2 * tiles; t++) {
        const at = (t % tiles) * TILE;
        inputs.forEach((bytes, k) => assert.equal(crcs[t * 2 + k], crc(bytes.subarray(at, Math.min(at + TILE, bytes.length)), 0) >>> 0, `tile ${t} read ${k}`));
      }
      // A read past the end of a file: the worker says which tensor and read, and how short.
      await assert.rejects(
        pool.run({ output: 0, divisor: 1, hash: false, tensors: [{ dtype: 'F32', at: 0, length: 4096, reads: [{ fd: fa.fd, offset: n * 4 - 100 }], weights: [1], keep: 0 }] }),
        (e) => e instanceof JobFailed && e.failure.tensor === 0 && e.failure.read === 0 && e.failure.short?.got === 100,
      );
    } finally {
      await pool.close();
      await fa.close();
      await fb.close();
    }
  });
});
