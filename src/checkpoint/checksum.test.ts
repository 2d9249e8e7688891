import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { checksumAlgorithm, crc32Combine, crc32Implementation, crc32Implementations, createHasher, tableCrc32 } from './checksum.js';

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('checksums', () => {
  it('crc32 matches the standard check value, incrementally and ignoring empty chunks', () => {
    const h = createHasher('crc32');
    h.update(ascii('1234'));
    h.update(new Uint8Array(new Float32Array(0).buffer, 0, 0));
    h.update(ascii('56789'));
    assert.equal(h.digest(), 'crc32:cbf43926');
    assert.equal(createHasher('crc32').digest(), 'crc32:00000000');
  });
  it('the table fallback agrees with zlib', () => {
    const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7919) & 0xff);
    const h = createHasher('crc32');
    h.update(data);
    assert.equal(h.digest(), `crc32:${tableCrc32(data).toString(16).padStart(8, '0')}`);
    assert.equal(tableCrc32(ascii('56789'), tableCrc32(ascii('1234'))), 0xcbf43926);
  });
  it('every available crc32 implementation agrees with the table one, at every split and alignment', () => {
    const impls = crc32Implementations();
    assert.deepEqual(impls.at(-1)?.name, 'table');
    assert.ok(impls.some((i) => i.name === crc32Implementation().name), `in use: ${crc32Implementation().name}`);
    // The bench machine (linux x64) gets the native binary; other platforms may fall back to zlib.
    if (process.platform === 'linux' && process.arch === 'x64') assert.equal(crc32Implementation().name, 'native');
    const data = Uint8Array.from({ length: 4099 }, (_, i) => (i * 2654435761) >>> 24);
    for (const { name, fn } of impls) {
      for (const start of [0, 1, 3, 7, 13]) {
        for (const len of [0, 1, 15, 16, 17, 63, 64, 65, 255, 1024, 4099 - start]) {
          const view = data.subarray(start, start + len);
          const want = tableCrc32(view);
          assert.equal(fn(view) >>> 0, want, `${name} start ${start} len ${len}`);
          const cut = len >> 1;
          assert.equal(fn(view.subarray(cut), fn(view.subarray(0, cut))) >>> 0, want, `${name} split ${start}/${len}`);
        }
      }
    }
  });
  it('CKPT_CRC32 picks an implementation, an unknown name is ignored', () => {
    const url = new URL('./checksum.js', import.meta.url).href;
    const pick = (value: string): string =>
      execFileSync(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(url)}).then((m) => process.stdout.write(m.crc32Implementation().name))`], {
        env: { ...process.env, CKPT_CRC32: value },
        encoding: 'utf8',
      });
    assert.equal(pick('table'), 'table');
    assert.equal(pick('bogus'), crc32Implementations()[0]?.name);
  });
  it('crc32Combine gives the crc32 of a concatenation, at every split, and through Hasher.append', () => {
    const data = Uint8Array.from({ length: 3000 }, (_, i) => (i * 2654435761) >>> 24);
    const crc = tableCrc32;
    for (let split = 0; split <= data.length; split += split < 40 ? 1 : 97) {
      const a = data.subarray(0, split);
      const b = data.subarray(split);
      assert.equal(crc32Combine(crc(a), crc(b), b.length), crc(data) >>> 0, `split at ${split}`);
    }
    assert.equal(crc32Combine(0x12345678, 0, 0), 0x12345678);
    // Pieces hashed elsewhere, appended in order, after bytes hashed here.
    const h = createHasher('crc32');
    h.update(data.subarray(0, 10));
    h.append?.(crc(data.subarray(10, 2000)), 1990);
    h.append?.(crc(data.subarray(2000)), 1000);
    assert.equal(h.digest(), `crc32:${(crc(data) >>> 0).toString(16).padStart(8, '0')}`);
    assert.equal(createHasher('sha256').append, undefined);
  });
  it('crc32Combine is exact for lengths past 2^32 (files of several GiB)', () => {
    // The crc32 of n zero bytes, by doubling with crc32Combine, against appending 1 MiB blocks one by
    // one: two different paths through the length's bits. 5 GiB + 3 MiB exercises bits above 32.
    const fn = crc32Implementation().fn;
    const block = fn(new Uint8Array(1 << 20));
    const blocks = 5 * 1024 + 3;
    let linear = 0;
    for (let i = 0; i < blocks; i++) linear = crc32Combine(linear, block, 1 << 20);
    let doubled = 0;
    let power = block; // crc32 of 2^k MiB of zeros
    for (let k = 0, n = blocks; n > 0; k++, n = Math.floor(n / 2)) {
      if (n % 2 === 1) doubled = crc32Combine(doubled, power, 2 ** k * (1 << 20));
      power = crc32Combine(power, power, 2 ** k * (1 << 20));
    }
    assert.equal(doubled, linear);
  });
  it('sha256 matches the standard value', () => {
    const h = createHasher('sha256');
    h.update(ascii('abc'));
    assert.equal(h.digest(), 'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    assert.equal(checksumAlgorithm('sha256:00'), 'sha256');
    assert.equal(checksumAlgorithm('crc32:00'), 'crc32');
  });
});
