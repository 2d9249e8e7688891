/**
 * The canonical-header fast path never decides anything the general parser would decide differently:
 * whenever it returns, JSON.parse of the same text succeeds with exactly its names (in the general
 * parser's order), entries and metadata, and no duplicate key. Checked on headers from the encoder and
 * on random edits of them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DTYPES } from '../tensor/dtype.js';
import { scanCanonicalHeader } from './canonical-header.js';
import { parseJson } from './json.js';
import { encodeSafetensors } from './safetensors.js';
import type { TensorMap } from '../tensor/tensor.js';
import { fuzzRuns } from '../../test/helpers.js';

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** The fast path on a header's text (as the reader calls it: its bytes and their decoding). */
function scan(text: string, maxEntries: number): ReturnType<typeof scanCanonicalHeader> {
  return scanCanonicalHeader(encoder.encode(text), text, maxEntries);
}

/** The JSON text of an encoded header, without the length prefix and padding. */
function headerText(map: TensorMap, metadata?: Record<string, string>): string {
  return decoder.decode(encodeSafetensors(map, metadata).header.subarray(8)).trimEnd();
}

/** What the general parser makes of `text`, in the fast path's shape; undefined when it refuses it. */
function general(text: string): { names: string[]; entries: unknown[]; metadata: unknown } | undefined {
  let root: Record<string, unknown>;
  try {
    const v = parseJson(text, 'h');
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
    root = v as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const names = Object.keys(root).filter((k) => k !== '__metadata__');
  return { names, entries: names.map((n) => root[n]), metadata: root['__metadata__'] };
}

function agrees(text: string): void {
  const fast = scan(text, 1_000_000);
  if (fast === undefined) return;
  const slow = general(text);
  assert.ok(slow !== undefined, `the fast path accepted what the general parser refuses: ${text}`);
  assert.deepStrictEqual(fast.names, slow.names);
  assert.deepStrictEqual([...fast.tensors.keys()], slow.names);
  assert.deepStrictEqual([...fast.tensors.values()], fast.entries);
  assert.deepStrictEqual(
    fast.entries.map((e) => ({ dtype: e.dtype, shape: e.shape, data_offsets: [e.begin, e.end] })),
    slow.entries,
  );
  assert.deepStrictEqual(fast.metadata, slow.metadata);
}

const nameArb = fc.string({ unit: 'binary', minLength: 1, maxLength: 10 }).filter((n) => n !== '__metadata__');
const mapArb = fc
  .uniqueArray(fc.tuple(nameArb, fc.constantFrom(...(Object.keys(DTYPES) as (keyof typeof DTYPES)[])), fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 })), {
    selector: ([n]) => n,
    maxLength: 6,
  })
  .map((entries) => {
    const map: TensorMap = new Map();
    for (const [name, dtype, shape] of entries) {
      const n = shape.reduce((a, b) => a * b, 1) * DTYPES[dtype].size;
      map.set(name, { dtype, shape, data: new Uint8Array(Math.ceil(n)) });
    }
    return map;
  });
const metaArb = fc.option(fc.dictionary(fc.string({ unit: 'binary', maxLength: 6 }), fc.string({ unit: 'binary', maxLength: 6 })), { nil: undefined });

describe('canonical header fast path', () => {
  it('reads what the encoder writes, like the general parser', () => {
    const map: TensorMap = new Map([
      ['a.weight', { dtype: 'F32', shape: [2, 3], data: new Uint8Array(24) }],
      ['__proto__', { dtype: 'U8', shape: [], data: new Uint8Array(1) }],
      ['é/𐀀', { dtype: 'BF16', shape: [0, 4], data: new Uint8Array(0) }],
    ]);
    const text = headerText(map, { format: 'pt', '7': 'x' });
    const fast = scan(text, 1_000_000);
    assert.ok(fast !== undefined);
    assert.deepEqual(fast.names, ['a.weight', '__proto__', 'é/𐀀']);
    assert.deepEqual(fast.entries[0], { dtype: 'F32', shape: [2, 3], begin: 0, end: 24 });
    assert.equal(fast.tensors.get('é/𐀀')?.dtype, 'BF16');
    assert.deepEqual(fast.metadata, { format: 'pt', '7': 'x' });
    agrees(text);
  });

  it('cuts every string from the text at the right place after characters of 2, 3 and 4 UTF-8 bytes', () => {
    // The scan walks bytes and cuts strings from the decoded text: each non-ASCII character before a
    // string moves it (é: 2 bytes for 1 UTF-16 unit, €: 3 for 1, 𐀀: 4 for 2).
    const entry = (b: number): string => `{"dtype":"U8","shape":[1],"data_offsets":[${b},${b + 1}]}`;
    const text = `{"é":${entry(0)},"€€":${entry(1)},"𐀀x":${entry(2)},"__metadata__":{"ü":"€𐀀é","k":"v"},"plain":${entry(3)},"a𐀀€éz":${entry(4)}}`;
    const fast = scan(text, 10);
    assert.ok(fast !== undefined);
    assert.deepEqual(fast.names, ['é', '€€', '𐀀x', 'plain', 'a𐀀€éz']);
    assert.deepEqual(fast.metadata, { ü: '€𐀀é', k: 'v' });
    assert.deepEqual(
      fast.entries.map((e) => e.begin),
      [0, 1, 2, 3, 4],
    );
    agrees(text);
  });

  it('leaves everything outside the canonical form to the general parser', () => {
    const base = '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    assert.ok(scan(base, 10) !== undefined);
    for (const text of [
      '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', // duplicate
      '{"w":{"shape":[1],"dtype":"F32","data_offsets":[0,4]}}', // member order
      '{"w": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', // whitespace
      '{"w":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}', // leading zero
      '{"w":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}', // sign
      '{"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', // fraction
      '{"w":{"dtype":"F32","shape":[9007199254740993],"data_offsets":[0,4]}}', // above 2^53
      '{"w\\u0000":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', // escape
      '{"0":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', // an index-like name
      '{"__metadata__":{"__proto__":"x"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
      '{"__metadata__":{},"__metadata__":{}}',
      '{"__metadata__":{"a":1}}',
      `${base} `,
      `${base}}`,
      '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},}',
    ]) {
      assert.equal(scan(text, 10), undefined, text);
    }
    assert.equal(scan('{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[],"data_offsets":[1,2]}}', 1), undefined, 'over maxEntries');
  });

  it('agrees with the general parser on encoded headers and on random edits of them', () => {
    const insert = fc.constantFrom('', '0', '9', '-', '"', ',', '{', '}', '[', ']', ':', ' ', '1e3', '2.5', 'null', '"__metadata__"', '\\u0041', '\u00e9', 'dtype', '"shape":[1]');
    const edit = fc.record({ at: fc.nat(), remove: fc.integer({ min: 0, max: 3 }), insert });
    fc.assert(
      fc.property(mapArb, metaArb, fc.array(edit, { maxLength: 3 }), (map, metadata, edits) => {
        let text = headerText(map, metadata);
        agrees(text);
        for (const e of edits) {
          const at = e.at % (text.length + 1);
          text = text.slice(0, at) + e.insert + text.slice(at + e.remove);
          agrees(text);
        }
      }),
      { numRuns: fuzzRuns(1000) },
    );
  });
});
