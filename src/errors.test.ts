import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CkptError, ioError, withContext } from './errors.js';

describe('errors', () => {
  it('ioError types system errors and names the path and step', () => {
    const full = ioError(Object.assign(new Error('no space left'), { code: 'ENOSPC' }), 'write', '/runs/a/model.safetensors', { step: 3 });
    assert.equal(full.code, 'NO_SPACE');
    assert.equal(full.path, '/runs/a/model.safetensors');
    assert.equal(full.step, 3);
    assert.match(full.message, /^write failed for \/runs\/a\/model\.safetensors: no space left$/);
    assert.equal(ioError(Object.assign(new Error('gone'), { code: 'ENOENT' }), 'open', 'x').code, 'NOT_FOUND');
  });

  it("a CkptError passing through ioError gains the path and step it lacks, keeping its code, message and own context", () => {
    const bare = new CkptError('FILE_LENGTH_MISMATCH', 'bytes 0..8 requested but the object has 4 bytes', { expected: 8, received: 4 });
    const named = ioError(bare, 'reading', '/runs/a/model.safetensors', { step: 7 });
    assert.notEqual(named, bare);
    assert.deepEqual(
      [named.code, named.message, named.path, named.step, named.expected, named.received, named.cause],
      ['FILE_LENGTH_MISMATCH', bare.message, '/runs/a/model.safetensors', 7, 8, 4, bare],
    );
    // What it says already wins; with nothing to add it is returned as it is.
    const own = new CkptError('IO_ERROR', 'x', { path: '/other', step: 1 });
    assert.equal(ioError(own, 'reading', '/runs/a', { step: 7 }), own);
    const partly = withContext(new CkptError('IO_ERROR', 'x', { path: '/other' }), { path: '/runs/a', step: 7 });
    assert.deepEqual([partly.path, partly.step], ['/other', 7]);
  });
});
