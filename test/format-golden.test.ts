/**
 * Golden safetensors files (test/fixtures/safetensors/, made by test/fixtures/gen-safetensors.ts): each
 * valid file decodes to the expected tensors, each corrupted file is refused with its exact code; the
 * generator still produces the committed bytes (so ckpt's output does not drift unnoticed). Plus
 * interoperability checks: a file laid out as other implementations write it, and ckpt's output read by
 * an independent minimal decoder written from the spec text (and by Python + NumPy when available).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type CkptErrorCode, isCkptError } from '../src/errors.js';
import { decodeSafetensors, serializeSafetensors } from '../src/format/safetensors.js';
import { DTYPES, type DType } from '../src/tensor/dtype.js';
import { type Tensor, type TensorMap, toFloat64, typedView } from '../src/tensor/tensor.js';
import { DTYPE_VALUES, fixturesDir, safetensorsFixtures } from './fixtures/gen-safetensors.js';
import { fuzzRuns } from './helpers.js';

const DIR = fixturesDir();
const RUNS = fuzzRuns(100);

/** Expected outcome of every fixture: 'ok', or the error code (and the tensor the message names). */
const EXPECTED: Readonly<Record<string, 'ok' | CkptErrorCode | readonly [CkptErrorCode, string]>> = {
  'valid-dtype-f64.safetensors': 'ok',
  'valid-dtype-f32.safetensors': 'ok',
  'valid-dtype-f16.safetensors': 'ok',
  'valid-dtype-bf16.safetensors': 'ok',
  'valid-dtype-i64.safetensors': 'ok',
  'valid-dtype-i32.safetensors': 'ok',
  'valid-dtype-i16.safetensors': 'ok',
  'valid-dtype-i8.safetensors': 'ok',
  'valid-dtype-u8.safetensors': 'ok',
  'valid-dtype-bool.safetensors': 'ok',
  'valid-dtype-u16.safetensors': 'ok',
  'valid-dtype-u32.safetensors': 'ok',
  'valid-dtype-u64.safetensors': 'ok',
  'valid-dtype-f8_e4m3.safetensors': 'ok',
  'valid-dtype-f8_e5m2.safetensors': 'ok',
  'valid-rank0.safetensors': 'ok',
  'valid-empty.safetensors': 'ok',
  'valid-metadata.safetensors': 'ok',
  'valid-no-tensors.safetensors': 'ok',
  'valid-model.safetensors': 'ok',
  'valid-foreign-style.safetensors': 'ok',
  'bad-empty-file.safetensors': 'FILE_TOO_SMALL',
  'bad-too-small.safetensors': 'FILE_TOO_SMALL',
  'bad-header-length-beyond-file.safetensors': 'HEADER_TOO_LARGE',
  'bad-header-length-over-limit.safetensors': 'HEADER_TOO_LARGE',
  'bad-header-length-2e60.safetensors': 'HEADER_TOO_LARGE',
  'bad-truncated.safetensors': 'FILE_LENGTH_MISMATCH',
  'bad-extended.safetensors': 'FILE_LENGTH_MISMATCH',
  'bad-header-invalid-utf8.safetensors': 'HEADER_INVALID_UTF8',
  'bad-header-bom.safetensors': 'HEADER_INVALID_JSON',
  'bad-header-empty.safetensors': 'HEADER_INVALID_JSON',
  'bad-header-not-object.safetensors': 'HEADER_INVALID_JSON',
  'bad-header-syntax.safetensors': 'HEADER_INVALID_JSON',
  'bad-header-trailing-garbage.safetensors': 'HEADER_INVALID_JSON',
  'bad-header-trailing-newline.safetensors': 'HEADER_INVALID_JSON',
  'bad-duplicate-tensor.safetensors': 'DUPLICATE_KEY',
  'bad-entry-not-object.safetensors': ['HEADER_INVALID', 'w'],
  'bad-entry-extra-key.safetensors': ['HEADER_INVALID', 'w'],
  'bad-entry-missing-offsets.safetensors': ['HEADER_INVALID', 'w'],
  'bad-unknown-dtype.safetensors': ['UNKNOWN_DTYPE', 'w'],
  'bad-negative-dim.safetensors': ['INVALID_SHAPE', 'w'],
  'bad-fractional-dim.safetensors': ['INVALID_SHAPE', 'w'],
  'bad-rank-65.safetensors': ['INVALID_SHAPE', 'w'],
  'bad-shape-overflow.safetensors': ['SIZE_OVERFLOW', 'w'],
  'bad-shape-2e40-elements.safetensors': 'FILE_LENGTH_MISMATCH',
  'bad-offsets-2e60.safetensors': ['INVALID_OFFSETS', 'w'],
  'bad-size-mismatch.safetensors': ['TENSOR_SIZE_MISMATCH', 'encoder/w'],
  'bad-reversed-offsets.safetensors': ['INVALID_OFFSETS', 'w'],
  'bad-not-from-zero.safetensors': ['INVALID_OFFSETS', 'w'],
  'bad-hole.safetensors': ['INVALID_OFFSETS', 'b'],
  'bad-overlap.safetensors': ['INVALID_OFFSETS', 'b'],
  'bad-metadata-not-object.safetensors': 'INVALID_METADATA',
  'bad-metadata-non-string.safetensors': 'INVALID_METADATA',
};

function read(name: string): Uint8Array {
  return new Uint8Array(readFileSync(join(DIR, name)));
}

interface RefTensor {
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/**
 * A minimal decoder written from the spec text alone (8-byte little-endian u64 N, N bytes of JSON
 * header, then the byte buffer; offsets relative to the buffer), sharing no code with ckpt's reader.
 * It validates nothing: it is only used on files expected to be valid.
 */
function referenceDecode(bytes: Uint8Array): { metadata: Record<string, string>; tensors: Map<string, RefTensor> } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8')) as Record<string, unknown>;
  const start = 8 + n;
  const tensors = new Map<string, RefTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = value as Record<string, string>;
      continue;
    }
    const info = value as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const [begin, end] = info.data_offsets;
    tensors.set(name, { dtype: info.dtype, shape: info.shape, data: bytes.subarray(start + begin, start + end) });
  }
  return { metadata, tensors };
}

function assertMatchesReference(bytes: Uint8Array, tensors: TensorMap, metadata: Readonly<Record<string, string>>): void {
  const ref = referenceDecode(bytes);
  assert.deepStrictEqual({ ...metadata }, ref.metadata);
  assert.deepStrictEqual(new Set(tensors.keys()), new Set(ref.tensors.keys()));
  for (const [name, t] of tensors) {
    const r = ref.tensors.get(name) as RefTensor;
    assert.equal(t.dtype, r.dtype, name);
    assert.deepStrictEqual([...t.shape], [...r.shape], name);
    assert.deepStrictEqual(Buffer.from(t.data), Buffer.from(r.data), name);
  }
}

describe('golden safetensors fixtures', () => {
  it('the table covers exactly the files on disk', () => {
    const onDisk = readdirSync(DIR).filter((f) => f.endsWith('.safetensors')).sort();
    assert.deepStrictEqual(onDisk, Object.keys(EXPECTED).sort());
  });

  it('the generator reproduces the committed bytes (regenerate only for an intended format change)', () => {
    const generated = safetensorsFixtures();
    assert.deepStrictEqual([...generated.keys()].sort(), Object.keys(EXPECTED).sort());
    for (const [name, bytes] of generated) {
      assert.ok(Buffer.from(bytes).equals(read(name)), `${name} differs from the generator's output: run node .build/test/fixtures/gen-safetensors.js if the change is intended`);
    }
  });

  for (const [name, expected] of Object.entries(EXPECTED)) {
    it(`${name}: ${typeof expected === 'string' ? expected : expected.join(' naming ')}`, () => {
      const path = join(DIR, name);
      const bytes = read(name);
      if (expected === 'ok') {
        const d = decodeSafetensors(bytes, path);
        assertMatchesReference(bytes, d.tensors, d.metadata);
        return;
      }
      const [code, tensorName] = typeof expected === 'string' ? [expected, undefined] : expected;
      assert.throws(
        () => decodeSafetensors(bytes, path),
        (e: unknown) => {
          assert.ok(isCkptError(e), String(e));
          assert.equal(e.code, code, e.message);
          assert.equal(e.path, path);
          assert.ok(e.message.includes(path), e.message);
          if (tensorName !== undefined) {
            assert.equal(e.tensor, tensorName);
            assert.ok(e.message.includes(`"${tensorName}"`), e.message);
          }
          return true;
        },
      );
    });
  }

  it('valid dtype files hold the expected values', () => {
    for (const dtype of Object.keys(DTYPES) as DType[]) {
      const { tensors } = decodeSafetensors(read(`valid-dtype-${dtype.toLowerCase()}.safetensors`), dtype);
      const x = tensors.get('x') as Tensor;
      assert.equal(x.dtype, dtype);
      assert.deepStrictEqual(x.shape, [2, 3]);
      const values = dtype === 'F8_E4M3' || dtype === 'F8_E5M2' ? [...x.data] : [...toFloat64(x)];
      assert.deepStrictEqual(values, DTYPE_VALUES[dtype], dtype);
    }
  });

  it('valid files hold what they were made from (scalar, empty tensors, metadata, order)', () => {
    const rank0 = decodeSafetensors(read('valid-rank0.safetensors'), 'rank0');
    assert.deepStrictEqual([...toFloat64(rank0.tensors.get('scalar') as Tensor)], [42]);
    assert.deepStrictEqual(rank0.tensors.get('scalar')?.shape, []);
    const empty = decodeSafetensors(read('valid-empty.safetensors'), 'empty');
    assert.deepStrictEqual([...empty.tensors.keys()], ['empty-first', 'w', 'empty-mid', 'b', 'empty-last']);
    assert.deepStrictEqual(empty.tensors.get('empty-last')?.shape, [0, 3, 1]);
    assert.deepStrictEqual(
      [...empty.tensors.values()].map((t) => t.data.byteLength),
      [0, 8, 0, 4, 0],
    );
    const meta = decodeSafetensors(read('valid-metadata.safetensors'), 'metadata');
    assert.deepStrictEqual({ ...meta.metadata }, { format: 'pt', 'ckpt.step': '7', note: 'é 😀 "quoted" \\ back\nslash' });
    const none = decodeSafetensors(read('valid-no-tensors.safetensors'), 'none');
    assert.equal(none.tensors.size, 0);
    const foreign = decodeSafetensors(read('valid-foreign-style.safetensors'), 'foreign');
    assert.deepStrictEqual([...foreign.tensors.keys()], ['a', 'b']);
    assert.deepStrictEqual([...typedView(foreign.tensors.get('b') as Tensor)], [1, -2]);
    assert.deepStrictEqual([...toFloat64(foreign.tensors.get('a') as Tensor)], [1]);
  });
});

describe('interoperability', () => {
  it('decodes the spec-style example as another implementation writes it (unpadded, metadata last)', () => {
    const header = '{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"foo":"bar"}}';
    const bytes = new Uint8Array([
      // N = 89, u64 little-endian
      ...[89, 0, 0, 0, 0, 0, 0, 0],
      ...Buffer.from(header, 'utf8'),
      // I32 [[1, 2], [3, -4]], little-endian
      ...[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0xfc, 0xff, 0xff, 0xff],
    ]);
    assert.equal(header.length, 89);
    const d = decodeSafetensors(bytes, 'spec-example.safetensors');
    assert.deepStrictEqual({ ...d.metadata }, { foo: 'bar' });
    const t = d.tensors.get('test') as Tensor;
    assert.equal(t.dtype, 'I32');
    assert.deepStrictEqual(t.shape, [2, 2]);
    assert.deepStrictEqual([...typedView(t)], [1, 2, 3, -4]);
    assert.equal(d.index.dataOffset, 97);
    assert.deepStrictEqual(d.index.tensors.get('test'), { dtype: 'I32', shape: [2, 2], begin: 0, end: 16 });
  });

  it("ckpt's output reads back identically with the independent spec decoder (property)", () => {
    const dtypes = Object.keys(DTYPES) as DType[];
    const tensorArb = fc
      .tuple(fc.constantFrom(...dtypes), fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }))
      .chain(([dtype, shape]) =>
        fc.uint8Array({ minLength: shape.reduce((a, b) => a * b, 1) * DTYPES[dtype].size, maxLength: shape.reduce((a, b) => a * b, 1) * DTYPES[dtype].size }).map((data): Tensor => ({ dtype, shape, data })),
      );
    const nameArb = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 10 }).filter((s) => s !== '__metadata__');
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(nameArb, tensorArb), { selector: ([n]) => n, maxLength: 6 }),
        fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 })),
        (entries, metadata) => {
          const map: TensorMap = new Map(entries);
          const bytes = serializeSafetensors(map, metadata);
          assert.equal((8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))) % 8, 0);
          assertMatchesReference(bytes, map, metadata);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('valid fixtures read identically with Python json + NumPy (skipped when unavailable)', (t) => {
    const probe = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' });
    if (probe.error !== undefined || probe.status !== 0) {
      t.skip('python3 with numpy is not available');
      return;
    }
    // The safetensors Python package is not needed: this reader follows the spec with the standard json
    // module and numpy.frombuffer, an implementation independent of ckpt's.
    const script = String.raw`
import json, struct, sys, os
import numpy as np
NP = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4', 'I16': '<i2', 'I8': 'i1',
      'U8': 'u1', 'U16': '<u2', 'U32': '<u4', 'U64': '<u8', 'BOOL': '?', 'F8_E4M3': 'u1', 'F8_E5M2': 'u1'}
out = {}
for name in sys.argv[2:]:
    data = open(os.path.join(sys.argv[1], name), 'rb').read()
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n].decode('utf-8'))
    buf = data[8 + n:]
    tensors = {}
    for key, info in header.items():
        if key == '__metadata__':
            continue
        b, e = info['data_offsets']
        raw = buf[b:e]
        if info['dtype'] == 'BF16':
            arr = (np.frombuffer(raw, '<u2').astype('<u4') << 16).view('<f4')
        else:
            arr = np.frombuffer(raw, NP[info['dtype']])
        arr = arr.reshape(info['shape'])
        tensors[key] = {'dtype': info['dtype'], 'shape': list(arr.shape), 'values': [float(v) for v in arr.reshape(-1)]}
    out[name] = {'metadata': header.get('__metadata__', {}), 'tensors': tensors}
print(json.dumps(out))
`;
    const valid = Object.keys(EXPECTED).filter((n) => EXPECTED[n] === 'ok');
    const run = spawnSync('python3', ['-c', script, DIR, ...valid], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    type PyTensor = { dtype: string; shape: number[]; values: number[] };
    const py = JSON.parse(run.stdout) as Record<string, { metadata: Record<string, string>; tensors: Record<string, PyTensor> }>;
    for (const name of valid) {
      const d = decodeSafetensors(read(name), name);
      const p = py[name];
      assert.ok(p !== undefined, name);
      assert.deepStrictEqual({ ...d.metadata }, p.metadata, name);
      assert.deepStrictEqual(new Set(d.tensors.keys()), new Set(Object.keys(p.tensors)), name);
      for (const [tname, ours] of d.tensors) {
        const pt: PyTensor | undefined = p.tensors[tname];
        assert.ok(pt !== undefined);
        assert.equal(ours.dtype, pt.dtype);
        assert.deepStrictEqual([...ours.shape], pt.shape, `${name} ${tname}`);
        const values = ours.dtype === 'F8_E4M3' || ours.dtype === 'F8_E5M2' ? [...ours.data] : [...toFloat64(ours)];
        assert.deepStrictEqual(values, pt.values, `${name} ${tname}`);
      }
    }
  });
});
