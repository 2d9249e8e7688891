/**
 * The write pipeline of a save: small tensors staged into alternating buffers (hashed once per buffer,
 * written while the next one fills), large ones written from their own memory, every write chained in
 * file order. These tests mix sizes around every boundary and check the bytes, the checksum, the order
 * and the number of writes in flight, and failures at every write.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { load } from '../src/checkpoint/api.js';
import { tableCrc32 } from '../src/checkpoint/checksum.js';
import { writeCheckpoint } from '../src/checkpoint/save.js';
import { isCkptError } from '../src/errors.js';
import type { Backend, ObjectWriter } from '../src/storage/backend.js';
import { faultyBackend } from '../src/storage/faulty.js';
import { memoryBackend } from '../src/storage/memory.js';
import type { TensorMap } from '../src/tensor/tensor.js';

const KiB = 1024;

/** Tensors whose sizes straddle the staging thresholds (256 KiB per chunk, 1 MiB per buffer). */
function mixedTensors(): TensorMap {
  const sizes = [4, 1 * KiB, 255 * KiB, 256 * KiB, 3 * KiB, 700 * KiB, 200 * KiB, 200 * KiB, 200 * KiB, 200 * KiB, 200 * KiB, 0, 1200 * KiB, 8];
  for (let i = 0; i < 600; i++) sizes.push(((i * 37) % 9) * KiB + 4);
  const map: TensorMap = new Map();
  let seed = 1;
  sizes.forEach((bytes, i) => {
    const data = new Uint8Array(bytes);
    for (let k = 0; k < bytes; k++) data[k] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    map.set(`t${i}`, { dtype: 'U8', shape: [bytes], data });
  });
  return map;
}

/** A backend whose writers record the largest number of writes in flight at once. */
function watched(inner: Backend): { backend: Backend; maxInFlight: () => number; writes: () => number } {
  let inFlight = 0;
  let max = 0;
  let writes = 0;
  const backend: Backend = Object.create(inner) as Backend;
  Object.assign(backend, {
    async writer(key: string, options?: { sync?: boolean }): Promise<ObjectWriter> {
      const w = await inner.writer(key, options);
      return {
        async write(chunk: Uint8Array): Promise<void> {
          inFlight++;
          writes++;
          max = Math.max(max, inFlight);
          try {
            await new Promise((r) => setTimeout(r, 1));
            await w.write(chunk);
          } finally {
            inFlight--;
          }
        },
        close: () => w.close(),
        abort: () => w.abort(),
      };
    },
  });
  return { backend, maxInFlight: () => max, writes: () => writes };
}

describe('save pipeline', () => {
  it('mixed small and large tensors round-trip, with the checksum of the bytes written and one write at a time', async () => {
    const mem = memoryBackend();
    const { backend, maxInFlight, writes } = watched(mem);
    const tensors = mixedTensors();
    const manifest = await writeCheckpoint(backend, 'ck', { step: 3, tensors: { model: tensors } });
    assert.equal(maxInFlight(), 1);
    // Staging coalesces the 600 small tensors into a few writes.
    assert.ok(writes() < 40, `${writes()} writes`);
    const file = await mem.read('ck/model.safetensors');
    const entry = manifest.files.find((f) => f.path === 'model.safetensors');
    assert.equal(entry?.bytes, file.byteLength);
    assert.equal(entry?.checksum, `crc32:${tableCrc32(file).toString(16).padStart(8, '0')}`);
    const back = await load({ backend: mem, key: 'ck' });
    const model = back.tensors['model'];
    assert.ok(model);
    assert.deepEqual([...model.keys()], [...tensors.keys()]);
    for (const [name, t] of tensors) assert.deepEqual(model.get(name)?.data, t.data, name);
  });

  it('a failure at any write fails the save, names the file and leaves nothing behind', async () => {
    const tensors = mixedTensors();
    // Count the writes of a clean save, then fail each one in turn.
    const probe = faultyBackend(memoryBackend(), { operations: ['write'] });
    await writeCheckpoint(probe, 'ck', { step: 1, tensors: { model: tensors } });
    const total = probe.events.length;
    assert.ok(total > 3);
    for (let at = 0; at < total; at++) {
      const mem = memoryBackend();
      const faulty = faultyBackend(mem, { operations: ['write'], failAt: [at] });
      await assert.rejects(writeCheckpoint(faulty, 'ck', { step: 1, tensors: { model: tensors } }), (e: unknown) => {
        assert.ok(isCkptError(e, 'NO_SPACE'), String(e));
        assert.match(e.message, /ENOSPC|injected/);
        assert.ok(e.path?.includes('ck') === true, e.message);
        return true;
      });
      assert.deepEqual(await mem.list(''), [], `after a failure at write #${at}`);
    }
  });
});
