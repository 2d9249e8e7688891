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
      assert.equal(b.buffer, a.buffer);
      // A new array for each allocation.
      assert.notEqual(b, a);
      assert.equal(pool.idleBytes, 0);
      assert.notEqual(pool.allocate(1000).buffer, b.buffer);
      assert.equal(pool.idleBytes, 0);
      // Arrays it did not allocate are not taken.
      pool.release(new Uint8Array(1000));
      assert.equal(pool.idleBytes, 0);
    }
  });

  it('a second release, after the buffer went to another load, is ignored', () => {
    for (const shared of [false, true]) {
      const pool = createBufferPool({ shared });
      const first = pool.allocate(64);
      first.fill(1);
      const w = { data: first.subarray(8, 40) };
      const bias = { data: first.subarray(40, 64) };
      pool.release({ model: new Map([['w', w], ['bias', bias]]) });
      const second = pool.allocate(64);
      second.fill(2);
      assert.equal(pool.idleBytes, 0);
      // The first load's arrays, released again: the buffer now serves `second` and stays with it.
      pool.release(w);
      pool.release(bias);
      pool.release({ model: new Map([['w', w]]) });
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
    pool.release({ data: file.subarray(8, 40) });
    assert.equal(pool.idleBytes, 64);
    assert.equal(pool.allocate(64).buffer, file.buffer);
  });
});
