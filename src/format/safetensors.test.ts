import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type CkptError, type CkptErrorCode, isCkptError } from '../errors.js';
import { DTYPES, type DType } from '../tensor/dtype.js';
import { MAX_RANK, type Tensor, type TensorMap, fromFloat64, tensor, typedView } from '../tensor/tensor.js';
import {
  DATA_ALIGNMENT,
  type DecodedSafetensors,
  MAX_HEADER_BYTES,
  MAX_TENSORS,
  decodeSafetensors,
  encodeSafetensors,
  parseHeader,
  readHeaderLength,
  serializeSafetensors,
} from './safetensors.js';
import { fuzzRuns } from '../../test/helpers.js';

const PATH = '/x/model.safetensors';
const ALL_DTYPES = Object.keys(DTYPES) as DType[];
const utf8 = new TextEncoder();

/** A tensor of `dtype` and `shape` whose bytes are a deterministic pattern. */
function patterned(dtype: DType, shape: number[], seed = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1) * DTYPES[dtype].size;
  const data = new Uint8Array(n);
  for (let i = 0; i < n; i++) data[i] = (i * 31 + seed * 17) & 0xff;
  return { dtype, shape, data };
}

/** A file assembled by hand: the 8-byte prefix, `header` as given (no padding added), `data` bytes. */
function rawFile(header: string | Uint8Array, dataBytes: number | Uint8Array = 0): Uint8Array {
  const h = typeof header === 'string' ? utf8.encode(header) : header;
  const data = typeof dataBytes === 'number' ? new Uint8Array(dataBytes) : dataBytes;
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

function entry(dtype: string, shape: unknown[], begin: unknown, end: unknown): string {
  return JSON.stringify({ dtype, shape, data_offsets: [begin, end] });
}

function caught(f: () => unknown): CkptError {
  try {
    f();
  } catch (e) {
    assert.ok(isCkptError(e), `expected a CkptError, got ${e instanceof Error ? e.stack : String(e)}`);
    return e;
  }
  assert.fail('expected an error');
}

/** Asserts `f` throws `code`, that the message names `path` (and `tensor`, if given), and returns it. */
function refuses(f: () => unknown, code: CkptErrorCode, opts: { path?: string; tensor?: string; message?: string } = {}): CkptError {
  const e = caught(f);
  assert.equal(e.code, code, e.message);
  const path = opts.path ?? PATH;
  assert.ok(e.message.includes(path), `message should name ${path}: ${e.message}`);
  assert.equal(e.path, path);
  if (opts.tensor !== undefined) {
    assert.ok(e.message.includes(`"${opts.tensor}"`), `message should name tensor ${opts.tensor}: ${e.message}`);
    assert.equal(e.tensor, opts.tensor);
  }
  if (opts.message !== undefined) assert.equal(e.message, opts.message);
  return e;
}

function decodeHeader(header: string, dataBytes = 0): DecodedSafetensors {
  return decodeSafetensors(rawFile(header, dataBytes), PATH);
}

function assertSameTensors(actual: TensorMap, expected: TensorMap): void {
  assert.deepStrictEqual([...actual.keys()], [...expected.keys()]);
  for (const [name, t] of expected) {
    const a = actual.get(name);
    assert.ok(a !== undefined, name);
    assert.equal(a.dtype, t.dtype, name);
    assert.deepStrictEqual([...a.shape], [...t.shape], name);
    assert.deepStrictEqual(Buffer.from(a.data), Buffer.from(t.data), name);
  }
}

/** The invariants every successfully decoded file keeps, whatever its origin. */
function assertConsistent(bytes: Uint8Array, d: DecodedSafetensors): void {
  const { index } = d;
  assert.equal(index.fileLength, bytes.byteLength);
  assert.equal(index.dataOffset, 8 + index.headerLength);
  assert.equal(index.dataOffset + index.dataLength, bytes.byteLength);
  let cursor = 0;
  for (const [name, info] of index.tensors) {
    assert.equal(info.begin, cursor, name);
    assert.equal(info.end - info.begin, info.shape.reduce((a, b) => a * b, 1) * DTYPES[info.dtype].size, name);
    assert.ok(info.shape.length <= MAX_RANK);
    cursor = info.end;
    const t = d.tensors.get(name);
    assert.ok(t !== undefined);
    assert.equal(t.data.buffer, bytes.buffer);
    assert.equal(t.data.byteLength, info.end - info.begin);
  }
  assert.equal(cursor, index.dataLength);
  for (const v of Object.values(index.metadata)) assert.equal(typeof v, 'string');
}

describe('encodeSafetensors / decodeSafetensors round trip', () => {
  it('round-trips every dtype', () => {
    const map: TensorMap = new Map(ALL_DTYPES.map((dt, i) => [`t/${dt}`, patterned(dt, [2, 3], i)] as const));
    const bytes = serializeSafetensors(map);
    const d = decodeSafetensors(bytes, PATH);
    assertSameTensors(d.tensors, map);
    assertConsistent(bytes, d);
    assert.deepStrictEqual(d.metadata, {});
  });

  it('round-trips values through typed views (F32, F64, F16, BF16, I64, BOOL)', () => {
    const map: TensorMap = new Map([
      ['f32', tensor(new Float32Array([1.5, -2, 3.25, Number.NaN]), [2, 2])],
      ['f64', tensor(new Float64Array([Math.PI]), [])],
      ['f16', fromFloat64([0.5, -1, 65504], [3], 'F16')],
      ['bf16', fromFloat64([1, 2, -3], [3], 'BF16')],
      ['i64', tensor(new BigInt64Array([-(2n ** 62n), 7n]), [2])],
      ['bool', fromFloat64([1, 0, 1], [3], 'BOOL')],
    ]);
    const { tensors } = decodeSafetensors(serializeSafetensors(map), PATH);
    for (const [name, t] of map) assert.deepStrictEqual(typedView(tensors.get(name) as Tensor), typedView(t), name);
  });

  it('handles rank-0 (one element) and empty tensors anywhere in the file', () => {
    const map: TensorMap = new Map([
      ['empty-first', patterned('F32', [0])],
      ['scalar', patterned('F64', [])],
      ['empty-mid', patterned('I8', [3, 0, 2])],
      ['empty-mid-2', patterned('BF16', [0, 5])],
      ['m', patterned('U8', [3])],
      ['empty-last', patterned('I64', [1, 0])],
    ]);
    const bytes = serializeSafetensors(map);
    const d = decodeSafetensors(bytes, PATH);
    assertSameTensors(d.tensors, map);
    assertConsistent(bytes, d);
    assert.deepStrictEqual(d.index.tensors.get('scalar'), { dtype: 'F64', shape: [], begin: 0, end: 8 });
    assert.deepStrictEqual(d.index.tensors.get('empty-last'), { dtype: 'I64', shape: [1, 0], begin: 11, end: 11 });
  });

  it('round-trips an empty map, with and without metadata', () => {
    for (const metadata of [undefined, {}, { a: 'b' }]) {
      const bytes = serializeSafetensors(new Map(), metadata);
      const d = decodeSafetensors(bytes, PATH);
      assert.equal(d.tensors.size, 0);
      assert.equal(d.index.dataLength, 0);
      assert.deepStrictEqual(d.metadata, metadata ?? {});
    }
  });

  it('round-trips metadata, including awkward keys and values', () => {
    const metadata = { format: 'pt', 'ckpt.step': '12', '': 'empty key', quote: 'a"b\\c\n\u0000', unicode: 'é😀', __proto__x: 'y', constructor: 'c' };
    const d = decodeSafetensors(serializeSafetensors(new Map([['w', patterned('F32', [2])]]), metadata), PATH);
    assert.deepStrictEqual({ ...d.metadata }, metadata);
    const proto = decodeHeader('{"__metadata__":{"__proto__":"p"}}');
    assert.equal(Object.getPrototypeOf(proto.metadata), Object.prototype);
    assert.equal(Object.getOwnPropertyDescriptor(proto.metadata, '__proto__')?.value, 'p');
  });

  it('round-trips awkward tensor names, including ones that look like object internals', () => {
    const names = ['__proto__', 'constructor', 'toString', '0', '10', '2', 'é/😀', 'with "quotes" and \\', ' '];
    const map: TensorMap = new Map(names.map((n, i) => [n, patterned('U8', [i + 1])] as const));
    const d = decodeSafetensors(serializeSafetensors(map), PATH);
    assertSameTensors(d.tensors, map);
    assert.equal(({} as Record<string, unknown>)['dtype'], undefined);
  });

  it('is deterministic: equal inputs give identical bytes', () => {
    const make = (): TensorMap => new Map([
      ['b', patterned('F32', [3, 2], 2)],
      ['a', patterned('I16', [5], 3)],
    ]);
    const x = serializeSafetensors(make(), { k: 'v', a: 'b' });
    const y = serializeSafetensors(make(), { k: 'v', a: 'b' });
    assert.deepStrictEqual(Buffer.from(x), Buffer.from(y));
  });

  it('writes __metadata__ first, then tensors in map order, data in the same order, padded with spaces', () => {
    const map: TensorMap = new Map([
      ['z', patterned('F32', [1])],
      ['a', patterned('U8', [3])],
    ]);
    const enc = encodeSafetensors(map, { m: '1' });
    const json = '{"__metadata__":{"m":"1"},"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[3],"data_offsets":[4,7]}}';
    const n = Math.ceil(json.length / 8) * 8;
    assert.equal(enc.header.byteLength, 8 + n);
    assert.equal(enc.header.byteLength % DATA_ALIGNMENT, 0);
    assert.equal(new DataView(enc.header.buffer).getBigUint64(0, true), BigInt(n));
    assert.equal(Buffer.from(enc.header.subarray(8)).toString('latin1'), json.padEnd(n, ' '));
    assert.equal(enc.byteLength, 8 + n + 7);
    // The chunks are the tensors' own bytes: nothing is copied.
    assert.equal(enc.chunks.length, 2);
    assert.equal(enc.chunks[0], map.get('z')?.data);
    assert.equal(enc.chunks[1], map.get('a')?.data);
  });

  it('pads every header length to a multiple of 8 (alignment of the data buffer)', () => {
    for (let len = 1; len <= 24; len++) {
      const enc = encodeSafetensors(new Map([['x'.repeat(len), patterned('F64', [1])]]));
      assert.equal(enc.header.byteLength % 8, 0, `name length ${len}`);
      const d = decodeSafetensors(serializeSafetensors(new Map([['x'.repeat(len), patterned('F64', [1])]])), PATH);
      assert.equal(d.index.dataOffset % 8, 0);
    }
  });

  it('decodes zero-copy: tensors are views into the file bytes', () => {
    const bytes = serializeSafetensors(new Map([['w', patterned('F32', [4])]]));
    const d = decodeSafetensors(bytes, PATH);
    const w = d.tensors.get('w') as Tensor;
    assert.equal(w.data.buffer, bytes.buffer);
    assert.equal(w.data.byteOffset, d.index.dataOffset);
  });

  it('lists tensors in file order, whatever the header key order', () => {
    // As another writer might produce: tensors out of offset order, metadata last, no padding.
    const header = `{"b":${entry('U8', [2], 3, 5)},"a":${entry('U8', [3], 0, 3)},"e":${entry('F32', [0], 3, 3)},"__metadata__":{"x":"y"}}`;
    const d = decodeHeader(header, 5);
    assert.deepStrictEqual([...d.tensors.keys()], ['a', 'e', 'b']);
    assert.deepStrictEqual(d.metadata, { x: 'y' });
  });

  it('accepts the 10,000-tensor header of a large model (correctness only; timing is in bench/)', () => {
    const map: TensorMap = new Map();
    for (let i = 0; i < 10_000; i++) map.set(`model/layer_${i}/attention/query/kernel`, patterned('F16', [2, i % 3], i));
    const bytes = serializeSafetensors(map, { format: 'pt' });
    const d = decodeSafetensors(bytes, PATH);
    assert.equal(d.tensors.size, 10_000);
    assertSameTensors(d.tensors, map);
  });
});

describe('encodeSafetensors refuses invalid input', () => {
  const ok = patterned('F32', [1]);
  it('refuses bad names', () => {
    assert.equal(caught(() => encodeSafetensors(new Map([['', ok]]))).code, 'INVALID_ARGUMENT');
    assert.equal(caught(() => encodeSafetensors(new Map([['__metadata__', ok]]))).code, 'INVALID_ARGUMENT');
    assert.equal(caught(() => encodeSafetensors(new Map([['a\ud800', ok]]))).code, 'INVALID_ARGUMENT');
    assert.doesNotThrow(() => encodeSafetensors(new Map([['a\ud83d\ude00', ok]])));
  });
  it('refuses invalid tensors with the tensor code', () => {
    assert.equal(caught(() => encodeSafetensors(new Map([['w', { dtype: 'F32', shape: [2], data: new Uint8Array(4) }]]))).code, 'TENSOR_SIZE_MISMATCH');
    assert.equal(caught(() => encodeSafetensors(new Map([['w', { dtype: 'F128' as DType, shape: [1], data: new Uint8Array(16) }]]))).code, 'UNKNOWN_DTYPE');
    assert.equal(caught(() => encodeSafetensors(new Map([['w', { dtype: 'U8', shape: [-1], data: new Uint8Array(0) }]]))).code, 'INVALID_SHAPE');
    assert.equal(caught(() => encodeSafetensors(new Map([['w', { dtype: 'U8', shape: new Array<number>(MAX_RANK + 1).fill(1), data: new Uint8Array(1) }]]))).code, 'INVALID_SHAPE');
  });
  it('refuses metadata that is not a string-to-string map', () => {
    for (const bad of [{ a: 1 }, { a: null }, ['a'], null, 'x']) {
      assert.equal(caught(() => encodeSafetensors(new Map(), bad as unknown as Record<string, string>)).code, 'INVALID_METADATA');
    }
  });
  it('refuses a non-Map', () => {
    assert.equal(caught(() => encodeSafetensors({} as unknown as TensorMap)).code, 'INVALID_ARGUMENT');
  });
});

describe('readHeaderLength', () => {
  const prefix = (n: bigint): Uint8Array => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, n, true);
    return b;
  };
  it('returns N when it fits', () => {
    assert.equal(readHeaderLength(prefix(16n), 100, PATH), 16);
    assert.equal(readHeaderLength(prefix(92n), 100, PATH), 92);
    assert.equal(readHeaderLength(prefix(0n), 8, PATH), 0);
  });
  it('refuses files shorter than 8 bytes with FILE_TOO_SMALL', () => {
    for (const len of [0, 1, 7]) refuses(() => readHeaderLength(new Uint8Array(len), len, PATH), 'FILE_TOO_SMALL');
  });
  it('refuses N beyond the file, beyond the limit or beyond 2^53 with HEADER_TOO_LARGE', () => {
    refuses(() => readHeaderLength(prefix(93n), 100, PATH), 'HEADER_TOO_LARGE');
    refuses(() => readHeaderLength(prefix(BigInt(MAX_HEADER_BYTES) + 1n), 2 ** 40, PATH), 'HEADER_TOO_LARGE');
    assert.equal(readHeaderLength(prefix(BigInt(MAX_HEADER_BYTES)), 2 ** 40, PATH), MAX_HEADER_BYTES);
    const e = refuses(() => readHeaderLength(prefix(2n ** 60n), 2 ** 40, PATH), 'HEADER_TOO_LARGE');
    assert.ok(e.message.includes(String(2n ** 60n)), e.message);
    refuses(() => readHeaderLength(prefix(2n ** 64n - 1n), 2 ** 40, PATH), 'HEADER_TOO_LARGE');
    refuses(() => readHeaderLength(prefix(2n ** 53n), 2 ** 53 - 1, PATH), 'HEADER_TOO_LARGE');
  });
  it('refuses a file length that is not a size with INVALID_ARGUMENT', () => {
    for (const len of [-1, 1.5, Number.NaN, 2 ** 53]) assert.equal(caught(() => readHeaderLength(prefix(0n), len, PATH)).code, 'INVALID_ARGUMENT');
  });
});

describe('parseHeader: every rule has its error code, naming the file and tensor', () => {
  const f32 = (shape: unknown[], begin: unknown, end: unknown): string => entry('F32', shape, begin, end);

  it('HEADER_TOO_LARGE when the header bytes exceed the file', () => {
    refuses(() => parseHeader(utf8.encode('{}'), 9, PATH), 'HEADER_TOO_LARGE');
  });

  it('HEADER_INVALID_UTF8 for invalid UTF-8 anywhere in the header', () => {
    for (const bad of [[0xff], [0xc3], [0xed, 0xa0, 0x80] /* an encoded surrogate */, [0xc0, 0xaf] /* overlong */]) {
      const header = new Uint8Array([...utf8.encode('{"a'), ...bad, ...utf8.encode(`":${f32([0], 0, 0)}}`)]);
      refuses(() => decodeSafetensors(rawFile(header), PATH), 'HEADER_INVALID_UTF8');
    }
  });

  it("HEADER_INVALID_JSON when the header does not start with '{', is not JSON, or has trailing bytes other than spaces", () => {
    for (const header of ['', ' {}', '\ufeff{}', '[]', '"x"', '{', '{}x', '{} x', '{}\n', '{}\t', '{"a":}', '{"a":1,}', '{"a"}', '{}}']) {
      refuses(() => decodeHeader(header), 'HEADER_INVALID_JSON');
    }
    const e = refuses(() => decodeHeader('{"a":1,,}'), 'HEADER_INVALID_JSON');
    assert.ok(e.message.includes('column 8'), e.message);
  });

  it('accepts trailing spaces (padding) of any length', () => {
    for (const pad of ['', ' ', '       ', ' '.repeat(100)]) assert.equal(decodeHeader(`{"a":${f32([1], 0, 4)}}${pad}`, 4).tensors.size, 1);
  });

  it('DUPLICATE_KEY for a repeated tensor name or a repeated key inside an entry', () => {
    const e = refuses(() => decodeHeader(`{"w":${f32([1], 0, 4)},"w":${f32([1], 4, 8)}}`, 8), 'DUPLICATE_KEY');
    assert.ok(e.message.includes('"w"'));
    refuses(() => decodeHeader(`{"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4), 'DUPLICATE_KEY');
    refuses(() => decodeHeader(`{"__metadata__":{},"__metadata__":{}}`), 'DUPLICATE_KEY');
  });

  it('HEADER_INVALID for entries of the wrong shape', () => {
    const cases = [
      '{"w":1}',
      '{"w":null}',
      '{"w":[]}',
      '{"w":"F32"}',
      `{"w":{"dtype":"F32","shape":[1]}}`,
      `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}`,
      `{"w":{"dtype":"F32","shape":[1],"offsets":[0,4]}}`,
      `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"__proto__":1}}`,
      `{"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`,
      `{"w":{"dtype":"F32","shape":1,"data_offsets":[0,4]}}`,
      `{"w":{"dtype":"F32","shape":[1],"data_offsets":4}}`,
      `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`,
      `{"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}}`,
    ];
    for (const header of cases) refuses(() => decodeHeader(header, 4), 'HEADER_INVALID', { tensor: 'w' });
  });

  it('UNKNOWN_DTYPE for a dtype outside the table (names are case-sensitive)', () => {
    for (const dtype of ['F128', 'f32', 'float16', 'C64', '']) {
      refuses(() => decodeHeader(`{"w":${entry(dtype, [1], 0, 4)}}`, 4), 'UNKNOWN_DTYPE', { tensor: 'w' });
    }
  });

  it('INVALID_SHAPE for a bad dimension or a rank above the limit', () => {
    for (const shape of [[-1], [1.5], ['2'], [null], [2 ** 53], [[2]], [true]]) {
      refuses(() => decodeHeader(`{"w":${f32(shape, 0, 4)}}`, 4), 'INVALID_SHAPE', { tensor: 'w' });
    }
    refuses(() => decodeHeader(`{"w":${entry('U8', new Array(MAX_RANK + 1).fill(1), 0, 1)}}`, 1), 'INVALID_SHAPE', { tensor: 'w' });
    assert.equal(decodeHeader(`{"w":${entry('U8', new Array(MAX_RANK).fill(1), 0, 1)}}`, 1).tensors.size, 1);
  });

  it('SIZE_OVERFLOW when elements or bytes pass 2^53, before anything is allocated', () => {
    refuses(() => decodeHeader(`{"w":${f32([2 ** 40, 2 ** 40], 0, 4)}}`, 4), 'SIZE_OVERFLOW', { tensor: 'w' });
    refuses(() => decodeHeader(`{"w":${entry('F64', [2 ** 51], 0, 4)}}`, 4), 'SIZE_OVERFLOW', { tensor: 'w' });
  });

  it('refuses a 2^40-element shape and 2^60-byte offsets in a small file', () => {
    // Consistent with each other but not with the file: only the file length check can catch it.
    refuses(() => decodeHeader(`{"w":${entry('U8', [2 ** 40], 0, 2 ** 40)}}`, 4), 'FILE_LENGTH_MISMATCH');
    refuses(() => decodeHeader(`{"w":${entry('U8', [2 ** 40], 0, 16)}}`, 16), 'TENSOR_SIZE_MISMATCH', { tensor: 'w' });
    refuses(() => decodeHeader(`{"w":${entry('U8', [2 ** 50], 0, 2 ** 60)}}`, 4), 'INVALID_OFFSETS', { tensor: 'w' });
  });

  it('TENSOR_SIZE_MISMATCH when the offsets do not cover dtype x shape bytes (exact message)', () => {
    refuses(() => decodeSafetensors(rawFile(`{"encoder/w":${f32([2, 2], 0, 12)}}`, 12), '/x/model.safetensors'), 'TENSOR_SIZE_MISMATCH', {
      tensor: 'encoder/w',
      message: 'tensor "encoder/w" in /x/model.safetensors: data_offsets [0, 12] cover 12 bytes but F32 [2, 2] needs 16',
    });
    refuses(() => decodeHeader(`{"w":${f32([0], 0, 4)}}`, 4), 'TENSOR_SIZE_MISMATCH', { tensor: 'w' });
    refuses(() => decodeHeader(`{"w":${f32([], 0, 0)}}`, 0), 'TENSOR_SIZE_MISMATCH', { tensor: 'w' });
  });

  it('refuses shapes and offsets written with a fraction, an exponent or a minus (2.0, 1e3, -0), as the reference implementation does', () => {
    const e = refuses(() => decodeHeader('{"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', 8), 'INVALID_SHAPE', { tensor: 'w' });
    assert.match(e.message, /shape has the number 2\.0/);
    refuses(() => decodeHeader('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"F32","shape":[ 2E0 ],"data_offsets":[1,9]}}', 9), 'INVALID_SHAPE', { tensor: 'w' });
    refuses(() => decodeHeader('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}}', 8), 'INVALID_OFFSETS', { tensor: 'w' });
    refuses(() => decodeHeader('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0e0,8]}}', 8), 'INVALID_OFFSETS', { tensor: 'w' });
    // Names with brackets, dots and escapes are fine (they only send the header through the slower scan).
    const ok = decodeHeader('{"__metadata__":{"v":"[1.5]"},"a[1.5]":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b\\"[2e0]":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8);
    assert.deepEqual([...ok.tensors.keys()], ['a[1.5]', 'b"[2e0]']);
    // -0 parses as a number JavaScript calls an integer; the reference implementation refuses it too.
    refuses(() => decodeHeader('{"w":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}', 0), 'INVALID_SHAPE', { tensor: 'w' });
    refuses(() => decodeHeader('{"w":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]}}', 4), 'INVALID_OFFSETS', { tensor: 'w' });
    const named = refuses(() => decodeHeader('{"x.y[0]":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', 4), 'INVALID_SHAPE', { tensor: 'x.y[0]' });
    assert.equal(named.received, '1.0');
  });

  it('INVALID_OFFSETS for reversed, non-integer, holes, overlaps and a buffer not starting at 0', () => {
    const cases: [string, number, string][] = [
      [`{"w":${f32([1], 4, 0)}}`, 4, 'w'],
      [`{"w":${f32([1], -4, 0)}}`, 4, 'w'],
      [`{"w":${f32([1], 0.5, 4.5)}}`, 4, 'w'],
      [`{"w":${f32([1], '0', 4)}}`, 4, 'w'],
      [`{"w":${f32([1], 2 ** 53, 2 ** 53 + 4)}}`, 4, 'w'],
      [`{"w":${f32([1], 4, 8)}}`, 8, 'w'], // starts after 0: a hole
      [`{"a":${f32([1], 0, 4)},"b":${f32([1], 8, 12)}}`, 12, 'b'], // hole
      [`{"a":${f32([2], 0, 8)},"b":${f32([1], 4, 8)}}`, 8, 'b'], // overlap
      [`{"a":${f32([1], 0, 4)},"b":${f32([1], 0, 4)}}`, 4, 'b'], // the same range twice
      [`{"a":${f32([2], 0, 8)},"e":${f32([0], 4, 4)}}`, 8, 'e'], // an empty tensor inside another
    ];
    for (const [header, data, tensorName] of cases) refuses(() => decodeHeader(header, data), 'INVALID_OFFSETS', { tensor: tensorName });
    // Empty tensors at the boundaries are fine.
    assert.equal(decodeHeader(`{"e1":${f32([0], 0, 0)},"a":${f32([1], 0, 4)},"e2":${f32([0], 4, 4)}}`, 4).tensors.size, 3);
  });

  it('FILE_LENGTH_MISMATCH when the file is longer or shorter than 8 + N + data, with expected and received', () => {
    const header = `{"w":${f32([2], 0, 8)}}`;
    const n = utf8.encode(header).byteLength;
    const longer = refuses(() => decodeHeader(header, 9), 'FILE_LENGTH_MISMATCH');
    assert.equal(longer.expected, 8 + n + 8);
    assert.equal(longer.received, 8 + n + 9);
    const shorter = refuses(() => decodeHeader(header, 7), 'FILE_LENGTH_MISMATCH');
    assert.equal(shorter.received, 8 + n + 7);
    refuses(() => decodeHeader('{}', 1), 'FILE_LENGTH_MISMATCH');
  });

  it('INVALID_METADATA unless __metadata__ is an object of strings', () => {
    for (const meta of ['1', '"x"', 'null', '[]', '["a"]', '{"a":1}', '{"a":null}', '{"a":{}}', '{"a":["x"]}', '{"a":true}']) {
      refuses(() => decodeHeader(`{"__metadata__":${meta}}`), 'INVALID_METADATA');
    }
  });

  it('TOO_MANY_TENSORS above the limit, detected while the header is parsed', () => {
    // The entries are not even looked at: the header is refused while it is parsed.
    const parts: string[] = [];
    for (let i = 0; i <= MAX_TENSORS; i++) parts.push(`"t${i.toString(36)}":0`);
    refuses(() => decodeHeader(`{${parts.join(',')}}`), 'TOO_MANY_TENSORS');
  });

  it('checks sizes with overflow-safe arithmetic on the index it returns', () => {
    const d = decodeHeader(`{"w":${f32([2], 0, 8)}}    `, 8);
    assert.equal(d.index.headerLength, utf8.encode(`{"w":${f32([2], 0, 8)}}    `).byteLength);
    assert.deepStrictEqual([...d.index.tensors], [['w', { dtype: 'F32', shape: [2], begin: 0, end: 8 }]]);
  });
});

describe('properties', () => {
  const dtypeArb = fc.constantFrom(...ALL_DTYPES);
  const tensorArb = fc
    .tuple(dtypeArb, fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 4 }), fc.integer({ min: 0, max: 255 }))
    .map(([dtype, shape, seed]) => patterned(dtype, shape, seed));
  const nameArb = fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }).filter((n) => n !== '__metadata__');
  const mapArb = fc.uniqueArray(fc.tuple(nameArb, tensorArb), { selector: ([n]) => n, maxLength: 8 }).map((entries) => new Map(entries) as TensorMap);
  const metaArb = fc.option(fc.dictionary(fc.string({ unit: 'binary', maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 8 })), { nil: undefined });

  it('round-trips random tensor maps and metadata, deterministically', () => {
    fc.assert(
      fc.property(mapArb, metaArb, (map, metadata) => {
        const bytes = serializeSafetensors(map, metadata);
        const d = decodeSafetensors(bytes, PATH);
        // Offsets grow in map order, so file order is the map's order, except that empty tensors at the
        // same offset may come in another order.
        assertSameTensors(d.tensors, new Map([...d.tensors.keys()].map((k) => [k, map.get(k) as Tensor] as const)));
        const nonEmpty = (keys: Iterable<string>): string[] => [...keys].filter((k) => (map.get(k) as Tensor).data.byteLength > 0);
        assert.deepStrictEqual(nonEmpty(d.tensors.keys()), nonEmpty(map.keys()));
        assert.equal(d.tensors.size, map.size);
        assert.deepStrictEqual({ ...d.metadata }, { ...(metadata ?? {}) });
        assertConsistent(bytes, d);
        assert.deepStrictEqual(Buffer.from(serializeSafetensors(map, metadata)), Buffer.from(bytes));
        assert.equal(encodeSafetensors(map, metadata).byteLength, bytes.byteLength);
      }),
      { numRuns: fuzzRuns(200) },
    );
  });

  it('writes exactly the documented JSON, whatever the names (escapes, non-ASCII) and sizes', () => {
    // The encoder writes bytes directly; the layout it promises, spelled with JSON.stringify, is the oracle.
    const bigShape = fc.array(fc.constantFrom<number>(0, 1, 9, 10, 99, 1000, 65536, 123456789), { maxLength: 3 });
    // Every partial product below 2^53 (the encoder refuses others) and at most 1 MiB of data.
    const fits = (shape: number[]): boolean => shape.every((_, i) => Number.isSafeInteger(shape.slice(0, i + 1).reduce((a, b) => a * b, 1)));
    const zeroData = fc.tuple(dtypeArb, bigShape).filter(([d, shape]) => fits(shape) && shape.reduce((a, b) => a * b, 1) * DTYPES[d].size <= 1 << 20);
    const entries = fc.uniqueArray(fc.tuple(fc.oneof(nameArb, fc.string({ minLength: 1, maxLength: 6 })), fc.oneof(tensorArb, zeroData.map(([d, shape]) => patterned(d, shape)))), {
      selector: ([n]) => n,
      maxLength: 8,
    });
    fc.assert(
      fc.property(
        entries.filter((e) => e.every(([n]) => n !== '__metadata__')),
        metaArb,
        (list, metadata) => {
          const map: TensorMap = new Map(list);
          const parts: string[] = metadata === undefined ? [] : [`"__metadata__":{${Object.entries(metadata).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`];
          let offset = 0;
          for (const [name, t] of map) {
            const end = offset + t.data.byteLength;
            parts.push(`${JSON.stringify(name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${end}]}`);
            offset = end;
          }
          const json = utf8.encode(`{${parts.join(',')}}`);
          const n = Math.ceil(json.byteLength / DATA_ALIGNMENT) * DATA_ALIGNMENT;
          const expected = new Uint8Array(8 + n).fill(0x20, 8 + json.byteLength);
          new DataView(expected.buffer).setBigUint64(0, BigInt(n), true);
          expected.set(json, 8);
          assert.deepStrictEqual(Buffer.from(encodeSafetensors(map, metadata).header), Buffer.from(expected));
        },
      ),
      { numRuns: fuzzRuns(300) },
    );
  });

  it('decoding random bytes returns or throws a CkptError, quickly', () => {
    const header = fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.json({ maxDepth: 3 }).map((j) => utf8.encode(j)),
    );
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 80 }), fc.tuple(header, fc.integer({ min: 0, max: 32 })).map(([h, n]) => rawFile(h, n))), (bytes) => {
        expectTypedOrConsistent(bytes);
      }),
      { numRuns: fuzzRuns(500) },
    );
  });

  it('decoding mutated valid files returns a consistent result or throws a CkptError, quickly', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 9 }) }),
      fc.record({ kind: fc.constant('prefix' as const), value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
      fc.record({ kind: fc.constant('edit' as const), at: fc.nat(), remove: fc.integer({ min: 0, max: 4 }), insert: fc.constantFrom('', '0', '9', '-', '"', ',', '{', '}', '[', ']', ':', ' ', '1e3', '2.5', 'null', 'F32', '__metadata__', '\\u0000', '\u00e9') }),
    );
    fc.assert(
      fc.property(mapArb, metaArb, fc.array(mutation, { minLength: 1, maxLength: 3 }), (map, metadata, mutations) => {
        let bytes = serializeSafetensors(map, metadata);
        for (const m of mutations) bytes = mutate(bytes, m);
        expectTypedOrConsistent(bytes);
      }),
      { numRuns: fuzzRuns(500) },
    );
  });
});

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; bytes: Uint8Array }
  | { kind: 'prefix'; value: bigint }
  | { kind: 'edit'; at: number; remove: number; insert: string };

function mutate(bytes: Uint8Array, m: Mutation): Uint8Array {
  const out = Uint8Array.from(bytes);
  switch (m.kind) {
    case 'flip':
      if (out.byteLength > 0) out[m.at % out.byteLength] = (out[m.at % out.byteLength] as number) ^ (1 << m.bit);
      return out;
    case 'truncate':
      return out.subarray(0, m.at % (out.byteLength + 1));
    case 'extend':
      return new Uint8Array([...out, ...m.bytes]);
    case 'prefix':
      if (out.byteLength >= 8) new DataView(out.buffer).setBigUint64(0, m.value, true);
      return out;
    case 'edit': {
      // Edit the header text and fix the length prefix, so that the JSON rules are what is exercised.
      if (out.byteLength < 8) return out;
      const n = Number(new DataView(out.buffer).getBigUint64(0, true));
      if (8 + n > out.byteLength) return out;
      const header = out.subarray(8, 8 + n);
      const at = m.at % (n + 1);
      const edited = new Uint8Array([...header.subarray(0, at), ...utf8.encode(m.insert), ...header.subarray(Math.min(n, at + m.remove))]);
      return rawFile(edited, out.subarray(8 + n));
    }
  }
}

function expectTypedOrConsistent(bytes: Uint8Array): void {
  const start = performance.now();
  let d: DecodedSafetensors | undefined;
  try {
    d = decodeSafetensors(bytes, PATH);
  } catch (e) {
    assert.ok(isCkptError(e), `threw a non-CkptError: ${e instanceof Error ? e.stack : String(e)}`);
    assert.ok(e.message.includes(PATH), e.message);
  }
  const ms = performance.now() - start;
  assert.ok(ms < 1000, `decoding took ${ms.toFixed(0)} ms`);
  if (d !== undefined) assertConsistent(bytes, d);
}
