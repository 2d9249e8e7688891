import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createBufferPool, isSharedMemory } from './buffers.js';

describe('createBufferPool', () => {
  it('reuses released buffers of the same size, in shared memory when asked', () => {
    for (const shared of [false, true]) {
      const pool = createBufferPool({ shared });
      const a = pool.allocate(1000);
      assert.equal(a.byteLength, 1000);
      assert.equal(isSharedMemory(a), shared);
      pool.release(a);
      assert.equal(pool.idleBytes, 1000);
      const b = pool.allocate(1000);
      // The same memory (moved to a new ArrayBuffer when not shared).
      if (shared) assert.equal(b.buffer, a.buffer);
      else assert.equal(a.byteLength, 0);
      assert.equal(pool.idleBytes, 0);
      assert.notEqual(pool.allocate(1000).buffer, b.buffer);
      assert.equal(pool.idleBytes, 0);
      // Arrays it did not allocate are not taken.
      pool.release(new Uint8Array(1000));
      assert.equal(pool.idleBytes, 0);
    }
  });

  it('a second release, after the buffer went to another load, is ignored; released memory that is not shared is detached', () => {
    for (const shared of [false, true]) {
      const pool = createBufferPool({ shared });
      const first = pool.allocate(64);
      first.fill(1);
      const w = { data: first.subarray(8, 40) };
      const bias = { data: first.subarray(40, 64) };
      pool.release({ model: new Map([['w', w], ['bias', bias]]) });
      // A use after release sees nothing (not shared), rather than the next load's bytes.
      assert.deepEqual([first.byteLength, w.data.byteLength, bias.data.byteLength], shared ? [64, 32, 24] : [0, 0, 0]);
      const second = pool.allocate(64);
      second.fill(2);
      assert.equal(pool.idleBytes, 0);
      // The first load's arrays, released again: the buffer now serves `second` and stays with it.
      pool.release(w);
      pool.release(bias);
      pool.release({ model: new Map([['w', w]]) });
      if (!shared) pool.release(first); // (shared: `first` is another array of the same memory, not detectable)
      assert.equal(pool.idleBytes, 0, `shared: ${shared}`);
      assert.notEqual(pool.allocate(64).buffer, second.buffer);
      assert.deepEqual([...second.subarray(0, 4)], [2, 2, 2, 2]);
      // What `allocate` returned is released once, however often it is passed.
      pool.release(second);
      pool.release(second);
      assert.equal(pool.idleBytes, 64);
    }
  });

  it('releasing one tensor of a file returns the buffer all of its tensors share (documented)', () => {
    const pool = createBufferPool();
    const file = pool.allocate(64);
    const sibling = file.subarray(40, 64);
    pool.release({ data: file.subarray(8, 40) });
    assert.equal(pool.idleBytes, 64);
    assert.equal(sibling.byteLength, 0);
  });
});
