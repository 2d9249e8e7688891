import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CkptError, type CkptErrorCode, isCkptError } from '../errors.js';
import { MAX_JSON_DEPTH, type ParseJsonOptions, parseJson, parseJsonReference } from './json.js';
import { fuzzRuns } from '../../test/helpers.js';

const PATH = '/runs/a/step-00000001/state.json';
const PARSERS = [
  ['parseJson', parseJson],
  ['parseJsonReference', parseJsonReference],
] as const;

function throwsCode(f: () => unknown, code: CkptErrorCode, ...fragments: string[]): CkptError {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  assert.ok(isCkptError(caught), `expected a CkptError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  for (const fragment of fragments) assert.ok(caught.message.includes(fragment), `"${caught.message}" should include "${fragment}"`);
  return caught;
}

/** JSON.parse's verdict, for comparison. */
function native(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}

/** True when any object in a JSON.parse result nests deeper than `max` (root = 1). */
function deeperThan(value: unknown, max: number, depth = 1): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (depth > max) return true;
  return Object.values(value).some((v) => deeperThan(v, max, depth + 1));
}

for (const [label, parse] of PARSERS) {
  describe(label, () => {
    it('returns the same values as JSON.parse', () => {
      const texts = [
        '{}',
        '[]',
        '0',
        '-0',
        '1.5e-7',
        '12345678901234567890',
        '123456789012345',
        '-123456789012345',
        '1E+2',
        '"a\\u00e9\\ud83d\\ude00\\n\\"\\\\\\/\\b\\f\\r\\t"',
        'true',
        'false',
        'null',
        ' \t\r\n{ "a" : [ 1 , { "b" : null } ] , "c" : "d" } \n',
        '{"ünïcødé":"😀","\\ud800":"lone"}',
        '{"constructor":1,"toString":2,"hasOwnProperty":3,"0":4,"10":5,"1":6}',
        '[[[[[[]]]]]]',
        '"a:b"',
        '{"x":":y","z":"\\":"}',
      ];
      for (const text of texts) assert.deepStrictEqual(parse(text, PATH), JSON.parse(text), text);
      assert.ok(Object.is(parse('-0', PATH), -0));
    });

    it('keeps "__proto__" as an ordinary own key and never touches prototypes', () => {
      const value = parse('{"__proto__":{"polluted":true},"a":{"__proto__":[1]}}', PATH) as Record<string, unknown>;
      assert.equal(Object.getPrototypeOf(value), Object.prototype);
      assert.ok(Object.hasOwn(value, '__proto__'));
      assert.deepStrictEqual(Object.keys(value), ['__proto__', 'a']);
      assert.equal((value as { polluted?: unknown }).polluted, undefined);
      assert.equal(({} as { polluted?: unknown }).polluted, undefined);
      const inner = value['a'] as Record<string, unknown>;
      assert.equal(Object.getPrototypeOf(inner), Object.prototype);
      assert.deepStrictEqual(Object.getOwnPropertyDescriptor(inner, '__proto__')?.value, [1]);
      throwsCode(() => parse('{"__proto__":1,"__proto__":2}', PATH), 'DUPLICATE_KEY', '"__proto__"');
    });

    it('refuses duplicate keys at any depth, naming the key and the file', () => {
      const e = throwsCode(() => parse('{"a":1,"b":2,"a":3}', PATH), 'DUPLICATE_KEY', '"a"', PATH, 'line 1, column 14 (byte 13)');
      assert.equal(e.path, PATH);
      assert.equal(e.received, 'a');
      throwsCode(() => parse('[{"x":{"k":1,"k":1}}]', PATH), 'DUPLICATE_KEY', '"k"');
      // Escapes are decoded before comparing: "\u0061" is "a".
      throwsCode(() => parse('{"a":1,"\\u0061":2}', PATH), 'DUPLICATE_KEY', '"a"');
      // Same key in sibling objects is fine.
      assert.deepStrictEqual(parse('[{"a":1},{"a":2}]', PATH), [{ a: 1 }, { a: 2 }]);
    });

    it('refuses every syntax error with HEADER_INVALID_JSON, the file and the position', () => {
      const bad: [string, string][] = [
        ['', 'line 1, column 1 (byte 0)'],
        ['   ', 'column 4'],
        ['{', 'column 2'],
        ['{"a":1,}', 'column 8'],
        ['[1,]', 'column 4'],
        ['[1 2]', 'column 4'],
        ['{"a" 1}', 'column 6'],
        ['{a:1}', 'column 2'],
        ["{'a':1}", 'column 2'],
        ['01', 'column 2'],
        ['1.', 'column 3'],
        ['.5', 'column 1'],
        ['+1', 'column 1'],
        ['-', 'column 2'],
        ['1e', 'column 3'],
        ['1e+', 'column 4'],
        ['NaN', 'column 1'],
        ['Infinity', 'column 1'],
        ['tru', 'column 1'],
        ['nul', 'column 1'],
        ['"abc', 'column 5'],
        ['"a\tb"', 'column 3'],
        ['"a\nb"', 'column 3'],
        ['"\\x"', 'column 2'],
        ['"\\u12G4"', 'column 6'],
        ['"\\u12"', 'column 6'],
        ['{} {}', 'column 4'],
        ['{}x', 'column 3'],
        ['\ufeff{}', 'column 1'],
        ['{}\u00a0', 'column 3'],
        ['// c\n{}', 'line 1, column 1'],
        ['{\n"a":\n}', 'line 3, column 1 (byte 7)'],
        ['["é", x]', 'column 7 (byte 7)'],
        ['["😀", x]', 'column 8 (byte 9)'],
      ];
      for (const [text, where] of bad) {
        const e = throwsCode(() => parse(text, PATH), 'HEADER_INVALID_JSON', PATH, where);
        assert.equal(e.path, PATH);
        assert.equal(native(text).ok, false, `JSON.parse accepts ${JSON.stringify(text)}`);
      }
    });

    it(`limits nesting to ${MAX_JSON_DEPTH} levels by default, or maxDepth`, () => {
      const nest = (n: number): string => '['.repeat(n) + ']'.repeat(n);
      assert.doesNotThrow(() => parse(nest(MAX_JSON_DEPTH), PATH));
      throwsCode(() => parse(nest(MAX_JSON_DEPTH + 1), PATH), 'HEADER_INVALID_JSON', 'nesting deeper than 64', 'column 65');
      throwsCode(() => parse('{"a":'.repeat(65) + '0' + '}'.repeat(65), PATH), 'HEADER_INVALID_JSON', 'nesting');
      assert.doesNotThrow(() => parse(nest(3), PATH, { maxDepth: 3 }));
      throwsCode(() => parse(nest(4), PATH, { maxDepth: 3 }), 'HEADER_INVALID_JSON', 'nesting deeper than 3');
      // A hostile document far deeper than the limit fails fast, without exhausting the stack.
      throwsCode(() => parse(nest(100_000), PATH), 'HEADER_INVALID_JSON', 'nesting');
    });

    it('refuses objects with too many members while parsing', () => {
      const options: ParseJsonOptions = {
        maxMembers: { limit: 3, error: (depth) => new CkptError('TOO_MANY_TENSORS', `too many at depth ${depth}`, {}) },
      };
      assert.deepStrictEqual(parse('{"a":1,"b":2,"c":{"d":1,"e":2,"f":3}}', PATH, options), JSON.parse('{"a":1,"b":2,"c":{"d":1,"e":2,"f":3}}'));
      throwsCode(() => parse('{"a":1,"b":2,"c":3,"d":4}', PATH, options), 'TOO_MANY_TENSORS', 'depth 1');
      throwsCode(() => parse('{"a":{"a":1,"b":2,"c":3,"d":4}}', PATH, options), 'TOO_MANY_TENSORS', 'depth 2');
      // Checked while parsing: the error comes before the syntax error further on.
      throwsCode(() => parse('{"a":1,"b":2,"c":3,"d":4, oops', PATH, options), 'TOO_MANY_TENSORS');
    });

    it('refuses invalid options with INVALID_ARGUMENT', () => {
      for (const maxDepth of [0, -1, 1.5, 1001, Number.NaN]) {
        throwsCode(() => parse('[]', PATH, { maxDepth }), 'INVALID_ARGUMENT', 'maxDepth');
      }
      throwsCode(() => parse('[]', PATH, { maxMembers: { limit: -1, error: () => new CkptError('USAGE', 'x', {}) } }), 'INVALID_ARGUMENT');
    });

    it('agrees with JSON.parse on random JSON documents (property)', () => {
      fc.assert(
        fc.property(fc.json({ maxDepth: 5, stringUnit: 'binary' }), (text) => {
          assert.deepStrictEqual(parse(text, PATH), JSON.parse(text));
        }),
        { numRuns: fuzzRuns(150) },
      );
    });

    it('agrees with JSON.parse on random pretty-printed values (property)', () => {
      fc.assert(
        fc.property(fc.jsonValue({ maxDepth: 6 }), fc.constantFrom(undefined, 2, '\t', '\r\n '), (value, space) => {
          const text = JSON.stringify(value, null, space as string | number | undefined);
          assert.deepStrictEqual(parse(text, PATH), JSON.parse(text));
        }),
        { numRuns: fuzzRuns(200) },
      );
    });

    it('on random text: equal to JSON.parse, or a typed error where JSON.parse fails or keys repeat (property)', () => {
      const jsonish = fc.string({
        unit: fc.constantFrom('{', '}', '[', ']', ':', ',', '"', '\\', 'u', '0', '1', '-', '.', 'e', 'a', 'true', 'null', ' ', '\n', '\t', '\u00e9', '\ud800'),
        maxLength: 40,
      });
      fc.assert(
        fc.property(fc.oneof(jsonish, fc.string({ unit: 'binary', maxLength: 20 })), (text) => {
          const expected = native(text);
          let value: unknown;
          try {
            value = parse(text, PATH);
          } catch (e) {
            assert.ok(isCkptError(e), `non-CkptError for ${JSON.stringify(text)}: ${String(e)}`);
            if (e.code === 'HEADER_INVALID_JSON') assert.ok(!expected.ok || deeperThan(expected.value, MAX_JSON_DEPTH), text);
            else assert.equal(e.code, 'DUPLICATE_KEY');
            return;
          }
          assert.ok(expected.ok, `accepted what JSON.parse refuses: ${JSON.stringify(text)}`);
          assert.deepStrictEqual(value, expected.value);
        }),
        { numRuns: fuzzRuns(1000) },
      );
    });

    it('detects duplicates exactly when keys repeat (property)', () => {
      const member = fc.tuple(fc.constantFrom('a', 'b', 'c', '\\u0061', '__proto__', 'a:', ':'), fc.constantFrom('1', '"x"', '":"', '{}', '[":"]'));
      fc.assert(
        fc.property(fc.array(member, { maxLength: 6 }), fc.boolean(), (members, nested) => {
          const inner = `{${members.map(([k, v]) => `"${k}":${v}`).join(',')}}`;
          const text = nested ? `[{"outer":${inner}}]` : inner;
          const keys = members.map(([k]) => (k === '\\u0061' ? 'a' : k));
          const duplicated = new Set(keys).size !== keys.length;
          if (duplicated) throwsCode(() => parse(text, PATH), 'DUPLICATE_KEY');
          else assert.deepStrictEqual(parse(text, PATH), JSON.parse(text));
        }),
        { numRuns: fuzzRuns(300) },
      );
    });
  });
}

describe('parseJson fast path', () => {
  it('parses a large header-like document correctly', () => {
    const entries: string[] = [];
    for (let i = 0; i < 10_000; i++) entries.push(`"layer_${i}/kernel":{"dtype":"F32","shape":[1,2],"data_offsets":[${i * 8},${i * 8 + 8}]}`);
    const text = `{"__metadata__":{"format":"pt"},${entries.join(',')}}`;
    assert.deepStrictEqual(parseJson(text, PATH), JSON.parse(text));
    const dup = `{${entries.join(',')},${entries[5_000] ?? ''}}`;
    throwsCode(() => parseJson(dup, PATH), 'DUPLICATE_KEY', '"layer_5000/kernel"');
  });
});
