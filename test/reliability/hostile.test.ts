/**
 * Hostile input: manifests and checkpoints made to break the reader.
 *
 * - The manifest parser (property tests with fast-check) on random bytes, random JSON, valid manifests
 *   and mutated valid ones: it returns a manifest that keeps every invariant readers rely on, or throws
 *   a typed error (MANIFEST_INVALID, UNSUPPORTED_VERSION, PATH_ESCAPE), never anything else, within a
 *   bounded time. A manifest naming a file outside the directory (`..`, absolute, with a separator) is
 *   refused with PATH_ESCAPE; any byte-level change to a sealed manifest is refused.
 * - Tensor files inside a checkpoint whose manifest vouches for them (right size, right checksum, so
 *   that the safetensors parser is what must refuse them): a header claiming 2^60 bytes, a shape of 2^40
 *   elements, overflowing shapes, … are refused before anything of that size is allocated; random
 *   mutations of a valid file only ever load consistently or throw typed errors.
 * - Symbolic links (fs): a listed file, or manifest.json, that leads outside the checkpoint directory
 *   is refused with PATH_ESCAPE before it is read; links that stay inside, and linked run or checkpoint
 *   directories, are fine.
 *
 * CKPT_FUZZ_RUNS (default 2000) sets the runs of each property; scripts/long-reliability.mjs runs
 * hundreds of thousands. CKPT_SEED replays.
 */
import assert from 'node:assert/strict';
import { cp, mkdir, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { load, save, verify } from '../../src/checkpoint/api.js';
import { MANIFEST_CHECKSUM_KEY, createHasher, sealManifest } from '../../src/checkpoint/checksum.js';
import { CheckpointReader, readManifest } from '../../src/checkpoint/load.js';
import { openManager } from '../../src/checkpoint/manager.js';
import type { CkptErrorCode } from '../../src/errors.js';
import { isCkptError } from '../../src/errors.js';
import { type Manifest, parseManifest } from '../../src/format/manifest.js';
import type { Backend } from '../../src/storage/backend.js';
import { fsBackend } from '../../src/storage/fs.js';
import { memoryBackend } from '../../src/storage/memory.js';
import { DTYPES, type DType } from '../../src/tensor/dtype.js';
import { numElements, tensor } from '../../src/tensor/tensor.js';
import { fuzzRuns, randomF32, sampleState, tmpDir } from '../helpers.js';
import { suiteSeed } from './procs.js';

const RUNS = fuzzRuns(2000);
/** A single parse or load of a small hostile input taking longer than this counts as a hang. */
const HANG_MS = 2000;
const MANIFEST_CODES: readonly CkptErrorCode[] = ['MANIFEST_INVALID', 'UNSUPPORTED_VERSION', 'PATH_ESCAPE'];
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const enc = new TextEncoder();

/** Totals across the file, printed at the end for docs/GUARANTEES.md. */
const totals = { cases: 0, accepted: 0, refused: 0, slowestMs: 0 };

type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/** Checks the outcome of one hostile input: a value, or a CkptError with one of `codes`, quickly. */
function settle<T>(outcome: Outcome<T>, start: number, codes: readonly CkptErrorCode[] | undefined, what: string): T | undefined {
  const ms = performance.now() - start;
  totals.cases++;
  totals.slowestMs = Math.max(totals.slowestMs, ms);
  if (ms > HANG_MS) throw new Error(`${what}: took ${ms.toFixed(0)} ms`);
  if (outcome.ok) {
    totals.accepted++;
    return outcome.value;
  }
  totals.refused++;
  const e = outcome.error;
  if (!isCkptError(e)) throw new Error(`${what}: threw a non-CkptError: ${e instanceof Error ? e.stack : String(e)}`);
  if (codes !== undefined && !codes.includes(e.code)) throw new Error(`${what}: unexpected code ${e.code}: ${e.message}`);
  return undefined;
}

/** Runs `f` on a hostile input: it returns, or throws a CkptError with one of `codes` (any code when undefined). */
function expectTyped<T>(f: () => T, codes: readonly CkptErrorCode[] | undefined, what: string): T | undefined {
  const start = performance.now();
  let outcome: Outcome<T>;
  try {
    outcome = { ok: true, value: f() };
  } catch (error) {
    outcome = { ok: false, error };
  }
  return settle(outcome, start, codes, what);
}

/** Async version of {@link expectTyped}. */
async function expectTypedAsync<T>(f: () => Promise<T>, codes: readonly CkptErrorCode[] | undefined, what: string): Promise<T | undefined> {
  const start = performance.now();
  let outcome: Outcome<T>;
  try {
    outcome = { ok: true, value: await f() };
  } catch (error) {
    outcome = { ok: false, error };
  }
  return settle(outcome, start, codes, what);
}

/** The invariants every accepted manifest keeps (what the checkpoint reader relies on). */
function assertSound(m: Manifest): void {
  assert.equal(m.format, 'ckpt');
  assert.ok(Number.isSafeInteger(m.step) && m.step >= 0);
  const paths = new Set<string>();
  for (const f of m.files) {
    assert.ok(typeof f.path === 'string' && NAME_RE.test(f.path) && f.path !== 'manifest.json', `file path ${JSON.stringify(f.path)}`);
    assert.ok(!paths.has(f.path), `file ${f.path} listed twice`);
    paths.add(f.path);
    assert.ok(Number.isSafeInteger(f.bytes) && f.bytes >= 0);
    assert.match(f.checksum, /^(crc32:[0-9a-f]{8}|sha256:[0-9a-f]{64})$/);
  }
  for (const [g, group] of Object.entries(m.groups)) {
    assert.match(g, /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/);
    assert.ok(group.files.length > 0);
    for (const f of group.files) assert.ok(paths.has(f), `group ${g} names unlisted ${String(f)}`);
  }
}

// --- arbitraries -------------------------------------------------------------------------------

const fileName = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,24}$/).filter((n) => n !== 'manifest.json');
const groupName = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_-]{0,12}$/);
const checksum = fc.oneof(fc.stringMatching(/^crc32:[0-9a-f]{8}$/), fc.stringMatching(/^sha256:[0-9a-f]{64}$/));
const finite = fc.double({ noNaN: true, noDefaultInfinity: true });

/** Valid manifest objects (as JSON values). */
const validManifest = fc.uniqueArray(fileName, { minLength: 1, maxLength: 6 }).chain((names) =>
  fc.record({
    format: fc.constant('ckpt'),
    formatVersion: fc.constant(1),
    step: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
    epoch: fc.option(fc.nat(), { nil: null }),
    createdAt: fc.date({ min: new Date(0), max: new Date(Date.UTC(3000, 0)), noInvalidDate: true }).map((d) => d.toISOString()),
    runId: fc.string({ minLength: 1, maxLength: 20 }),
    parentStep: fc.option(fc.nat(), { nil: null }),
    metrics: fc.dictionary(fc.string({ maxLength: 8 }), finite, { maxKeys: 4 }),
    hyperParameters: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }),
    metadata: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }),
    versions: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }),
    groups: fc.dictionary(groupName, fc.record({ files: fc.subarray(names, { minLength: 1 }), tensors: fc.nat(), bytes: fc.nat() }), { maxKeys: 3 }),
    files: fc.tuple(...names.map((path) => fc.record({ path: fc.constant(path), bytes: fc.nat({ max: Number.MAX_SAFE_INTEGER }), checksum }))),
  }),
);

/** Values an attacker would put anywhere in a manifest. */
const hostileValue = fc.oneof(
  fc.constantFrom<unknown>(
    -1, 1.5, 2 ** 53, 2 ** 60, -0, 0, null, true, '', [], {}, '..', '.', '../x', '/etc/passwd', 'a/b', 'a\\b', 'C:\\x', '..\\x',
    'x\u0000y', 'manifest.json', '.hidden', 'x'.repeat(200), '\u202e', 'ckpt', 2, 99, '1', 'crc32:ZZZZZZZZ', 'crc32:0000000', '__inf__',
  ),
  fc.jsonValue({ maxDepth: 4 }),
  fc.string(),
);

/** Paths that leave the checkpoint directory; the parser must answer PATH_ESCAPE for each. */
const escapingPath = fc.oneof(
  fc.constantFrom('..', '../x', '/etc/passwd', 'a/b', 'a\\b', '..\\..\\x', '/', '\\', 'step-00000001/model.safetensors', '../../../../etc/shadow'),
  fc.tuple(fc.string({ maxLength: 6 }), fc.constantFrom('/', '\\'), fc.string({ maxLength: 6 })).map(([a, s, b]) => `${a}${s}${b}`),
);

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every [container, key] pair of a JSON tree (paths to mutate). */
function slots(v: Json, out: [Json[] | { [k: string]: Json }, string | number][] = []): [Json[] | { [k: string]: Json }, string | number][] {
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push([v, i]);
      slots(x, out);
    });
  } else if (typeof v === 'object' && v !== null) {
    for (const k of Object.keys(v)) {
      out.push([v, k]);
      slots(v[k] as Json, out);
    }
  }
  return out;
}

/** Applies one mutation (chosen by `pick`) to a copy of `m`. */
function mutate(m: Json, pick: number, value: unknown): Json {
  const copy = structuredClone(m);
  const all = slots(copy);
  const [container, key] = all[pick % all.length] as [Json[] | { [k: string]: Json }, string | number];
  const kind = Math.floor(pick / all.length) % 3;
  if (kind === 0) (container as Record<string | number, unknown>)[key] = value;
  else if (kind === 1 && !Array.isArray(container)) delete container[key as string];
  else if (Array.isArray(container)) container.push(structuredClone(container[key as number] as Json));
  else (container as Record<string, unknown>)[`${String(key)}x`] = value;
  return copy;
}

// --- the manifest parser -----------------------------------------------------------------------

describe('hostile manifests', () => {
  const seed = suiteSeed();
  const params = { numRuns: RUNS, seed };

  it(`valid manifests parse and keep every invariant (seed ${seed})`, () => {
    fc.assert(
      fc.property(validManifest, (m) => {
        const parsed = expectTyped(() => parseManifest(enc.encode(JSON.stringify(m)), 'm.json'), [], 'valid manifest');
        assert.ok(parsed);
        assertSound(parsed);
        assert.equal(parsed.step, m.step);
      }),
      params,
    );
  });

  it(`random bytes and random JSON: a sound manifest or a typed error (seed ${seed})`, () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 512 }), fc.jsonValue({ maxDepth: 6 }).map((v) => enc.encode(JSON.stringify(v)))), (bytes) => {
        const parsed = expectTyped(() => parseManifest(bytes, 'm.json'), MANIFEST_CODES, 'random manifest');
        if (parsed !== undefined) assertSound(parsed);
      }),
      params,
    );
  });

  it(`mutated valid manifests: a sound manifest or a typed error (seed ${seed})`, () => {
    fc.assert(
      fc.property(validManifest, fc.array(fc.tuple(fc.nat(), hostileValue), { minLength: 1, maxLength: 4 }), (m, mutations) => {
        let v = m as unknown as Json;
        for (const [pick, value] of mutations) v = mutate(v, pick, value);
        // Numbers JSON cannot write (1e400 parses as Infinity) and deep nesting, spliced into the text.
        const text = JSON.stringify(v).replace(/"__inf__"/g, '1e400');
        const parsed = expectTyped(() => parseManifest(enc.encode(text), 'm.json'), MANIFEST_CODES, `mutated manifest ${text.slice(0, 300)}`);
        if (parsed !== undefined) assertSound(parsed);
      }),
      params,
    );
  });

  it(`a file path leaving the directory is refused with PATH_ESCAPE (seed ${seed})`, () => {
    fc.assert(
      fc.property(validManifest, fc.nat(), escapingPath, (m, i, path) => {
        const files = m.files.map((f) => ({ ...f }));
        (files[i % files.length] as { path: string }).path = path;
        const bytes = enc.encode(JSON.stringify({ ...m, files }));
        assert.equal(expectTyped(() => parseManifest(bytes, 'm.json'), ['PATH_ESCAPE'], `path ${JSON.stringify(path)}`), undefined);
      }),
      params,
    );
  });

  it(`any change to the bytes of a sealed manifest is refused (seed ${seed})`, async () => {
    const backend = memoryBackend();
    const manifest = await save({ backend, key: 'ck' }, sampleState(7, { loss: 0.5 }));
    const sealed = await backend.read('ck/manifest.json');
    const reparsed = await readManifest(backend, 'ck');
    assert.equal((reparsed as unknown as Record<string, unknown>)[MANIFEST_CHECKSUM_KEY] !== undefined, true);
    assert.equal(reparsed.step, manifest.step);
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
      fc.record({ kind: fc.constant('remove' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
      fc.record({ kind: fc.constant('whitespace' as const), at: fc.nat() }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(edit, { minLength: 1, maxLength: 3 }), async (edits) => {
        let b = Buffer.from(sealed);
        for (const e of edits) {
          const at = e.at % (b.length + 1);
          if (e.kind === 'flip') {
            const i = at % b.length;
            b = Buffer.from(b);
            b[i] = (b[i] as number) ^ (1 << e.bit);
          } else if (e.kind === 'insert') b = Buffer.concat([b.subarray(0, at), e.bytes, b.subarray(at)]);
          else if (e.kind === 'remove') b = Buffer.concat([b.subarray(0, at), b.subarray(at + e.n)]);
          else b = Buffer.concat([b.subarray(0, at), Buffer.from(' '), b.subarray(at)]);
        }
        if (b.equals(Buffer.from(sealed))) return;
        await backend.write('ck/manifest.json', b);
        const got = await expectTypedAsync(() => readManifest(backend, 'ck'), [...MANIFEST_CODES, 'CHECKSUM_MISMATCH'], 'edited manifest');
        assert.equal(got, undefined, `an edited manifest was accepted: ${JSON.stringify(edits)}`);
      }),
      params,
    );
  });

  it('a metric that is not finite (1e400 parses as Infinity) is refused', () => {
    const m = { format: 'ckpt', formatVersion: 1, step: 1, epoch: null, createdAt: new Date(0).toISOString(), runId: 'r', parentStep: null, metrics: { loss: 0 }, hyperParameters: {}, metadata: {}, versions: {}, groups: {}, files: [] };
    const text = JSON.stringify(m).replace('"loss":0', '"loss":1e400');
    assert.throws(() => parseManifest(enc.encode(text), 'm.json'), (e: unknown) => isCkptError(e, 'MANIFEST_INVALID'));
  });

  it('a manifest over 64 MiB is refused before it is read', async () => {
    const dir = await tmpDir('ckpt-rel-hostile-');
    await save(join(dir, 'step-00000001'), sampleState(1));
    await truncate(join(dir, 'step-00000001', 'manifest.json'), 65 * 1024 * 1024); // sparse: costs no disk
    const inner = fsBackend(dir, { sync: false });
    const reads: number[] = [];
    const backend: Backend = {
      ...inner,
      read: async (key) => {
        reads.push(await inner.size(key));
        return inner.read(key);
      },
      readRange: async (key, offset, length, into) => {
        reads.push(length);
        return inner.readRange(key, offset, length, into);
      },
      openReader: async (key) => {
        const r = await (inner.openReader as NonNullable<Backend['openReader']>)(key);
        return { size: r.size, close: () => r.close(), read: (o, l, into) => (reads.push(l), r.read(o, l, into)) };
      },
    };
    await assert.rejects(readManifest(backend, 'step-00000001'), (e: unknown) => isCkptError(e, 'MANIFEST_INVALID') && e.message.includes('64'));
    assert.deepEqual(reads, [], 'nothing was read');
  });
});

// --- hostile tensor files vouched for by the manifest -------------------------------------------

/** A checkpoint in a memory backend whose model.safetensors can be replaced by anything. */
async function plantable(): Promise<{ backend: Backend; plant: (bytes: Uint8Array) => Promise<void>; original: Uint8Array }> {
  const store = new Map<string, Uint8Array>();
  const backend = memoryBackend({ store });
  await save({ backend, key: 'ck' }, {
    step: 3,
    tensors: {
      model: new Map([
        ['w', randomF32([3, 4], 1)],
        ['b', tensor(new Float64Array([1, 2]), [2])],
        ['e', tensor(new Float32Array(0), [0, 3])],
        ['s', tensor(new Int32Array([7]), [])],
      ]),
      ema: new Map([['w', randomF32([3, 4], 2)]]),
    },
  });
  const original = await backend.read('ck/model.safetensors');
  const manifestText = new TextDecoder().decode(await backend.read('ck/manifest.json'));
  const plant = async (bytes: Uint8Array): Promise<void> => {
    const m = JSON.parse(manifestText) as Record<string, unknown> & { files: { path: string; bytes: number; checksum: string }[] };
    delete m[MANIFEST_CHECKSUM_KEY];
    const entry = m.files.find((f) => f.path === 'model.safetensors');
    assert.ok(entry);
    const h = createHasher('crc32');
    h.update(bytes);
    entry.bytes = bytes.byteLength;
    entry.checksum = h.digest();
    store.set('ck/model.safetensors', Uint8Array.from(bytes));
    store.set('ck/manifest.json', sealManifest(JSON.stringify(m, null, 2), 'crc32'));
  };
  return { backend, plant, original };
}

/** A safetensors file with header `header` (a JSON value or raw text) and `data` bytes after it. */
function stFile(header: unknown, data: Uint8Array = new Uint8Array(0), declaredLength?: bigint): Uint8Array {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const h = enc.encode(text);
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

/** Loads, verifies and indexes the planted checkpoint; every allocation is recorded. */
async function probe(backend: Backend, what: string, codes?: readonly CkptErrorCode[]): Promise<{ loaded: boolean; biggest: number }> {
  let biggest = 0;
  const allocate = (size: number): Uint8Array => {
    biggest = Math.max(biggest, size);
    return new Uint8Array(size);
  };
  const ck = await expectTypedAsync(() => load({ backend, key: 'ck' }, { allocate }), codes, `load of ${what}`);
  if (ck !== undefined) {
    for (const [name, t] of ck.tensors.model ?? new Map()) {
      assert.equal(t.data.byteLength, numElements(t.shape) * DTYPES[t.dtype as DType].size, `${what}: tensor ${name} is consistent`);
    }
  }
  const v = await verify({ backend, key: 'ck' });
  assert.equal(v.valid, ck !== undefined, `${what}: verify agrees with load`);
  for (const p of v.problems) assert.notEqual(p.code, 'IO_ERROR', `${what}: verify hid an unexpected exception: ${p.message}`);
  await expectTypedAsync(async () => {
    const reader = await CheckpointReader.open(backend, 'ck');
    for (const name of (await reader.index('model')).keys()) await reader.tensor('model', name);
  }, codes, `tensor reads of ${what}`);
  return { loaded: ck !== undefined, biggest };
}

describe('hostile tensor files vouched for by a sealed manifest', () => {
  const seed = suiteSeed();

  const cases: [string, Uint8Array, CkptErrorCode][] = [
    ['a header length of 2^60 bytes', stFile({}, new Uint8Array(0), 2n ** 60n), 'HEADER_TOO_LARGE'],
    ['a header length of 2^64 - 1 bytes', stFile({}, new Uint8Array(0), 2n ** 64n - 1n), 'HEADER_TOO_LARGE'],
    ['a header longer than the file', stFile({}, new Uint8Array(0), 3n), 'HEADER_TOO_LARGE'],
    ['a shape of 2^40 elements', stFile({ w: { dtype: 'F32', shape: [2 ** 40], data_offsets: [0, 4] } }, new Uint8Array(4)), 'TENSOR_SIZE_MISMATCH'],
    ['a shape of 2^40 elements with matching offsets', stFile({ w: { dtype: 'F32', shape: [2 ** 40], data_offsets: [0, 2 ** 42] } }, new Uint8Array(4)), 'FILE_LENGTH_MISMATCH'],
    ['a shape whose product overflows', stFile({ w: { dtype: 'F32', shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 4] } }, new Uint8Array(4)), 'SIZE_OVERFLOW'],
    ['a dimension of 2^60', stFile({ w: { dtype: 'U8', shape: [2 ** 60], data_offsets: [0, 2 ** 60] } }, new Uint8Array(4)), 'INVALID_SHAPE'],
    ['offsets of 2^60', stFile({ w: { dtype: 'U8', shape: [4], data_offsets: [2 ** 60, 2 ** 60 + 4] } }, new Uint8Array(4)), 'INVALID_OFFSETS'],
    ['a rank of 100', stFile({ w: { dtype: 'U8', shape: new Array(100).fill(1), data_offsets: [0, 1] } }, new Uint8Array(1)), 'INVALID_SHAPE'],
    ['nesting 100,000 deep', stFile(`{"w":${'['.repeat(100_000)}${']'.repeat(100_000)}}`), 'HEADER_INVALID_JSON'],
    ['an unknown dtype', stFile({ w: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, new Uint8Array(16)), 'UNKNOWN_DTYPE'],
    ['overlapping tensors', stFile({ a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] }, b: { dtype: 'U8', shape: [4], data_offsets: [2, 6] } }, new Uint8Array(6)), 'INVALID_OFFSETS'],
    ['a duplicate tensor name', stFile('{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', new Uint8Array(1)), 'DUPLICATE_KEY'],
    ['non-string metadata', stFile({ __metadata__: { a: 1 } }), 'INVALID_METADATA'],
    ['a 7-byte file', new Uint8Array(7), 'FILE_TOO_SMALL'],
  ];
  for (const [what, bytes, code] of cases) {
    it(`${what}: ${code}, nothing allocated beyond the file`, async () => {
      const { backend, plant } = await plantable();
      await plant(bytes);
      const before = process.memoryUsage().arrayBuffers;
      const { loaded, biggest } = await probe(backend, what, [code]);
      assert.equal(loaded, false);
      assert.ok(biggest <= bytes.byteLength, `${what}: allocated ${biggest} bytes for a ${bytes.byteLength}-byte file`);
      assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024, `${what}: memory stayed bounded`);
      await assert.rejects(load({ backend, key: 'ck' }), (e: unknown) => isCkptError(e, code) && e.message.includes('model.safetensors'));
    });
  }

  it(`random mutations of a valid tensor file: consistent tensors or typed errors (seed ${seed})`, async () => {
    const { backend, plant, original } = await plantable();
    const n = Number(new DataView(original.buffer, original.byteOffset).getBigUint64(0, true));
    const header = new TextDecoder().decode(original.subarray(8, 8 + n)).trimEnd();
    const numbers = [...header.matchAll(/\d+/g)];
    const mutation = fc.oneof(
      // Bit flips anywhere, mostly in the header.
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat({ max: 8 + n + 8 }), bit: fc.nat({ max: 7 }) }),
      // A number of the header (shape, offsets) replaced by a hostile one.
      fc.record({
        kind: fc.constant('number' as const),
        which: fc.nat(),
        value: fc.oneof(fc.constantFrom('0', '1', '-1', '1.5', '1e400', '9007199254740993', '1152921504606846976', '4294967296', '18446744073709551615'), fc.nat().map(String)),
      }),
      // The length prefix replaced.
      fc.record({ kind: fc.constant('length' as const), value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
      // Truncated or extended.
      fc.record({ kind: fc.constant('resize' as const), size: fc.nat({ max: original.byteLength + 16 }) }),
    );
    let loads = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (mutations) => {
        let bytes: Uint8Array = Uint8Array.from(original);
        for (const m of mutations) {
          if (m.kind === 'flip') {
            if (bytes.byteLength === 0) continue;
            const i = m.at % bytes.byteLength;
            bytes[i] = (bytes[i] as number) ^ (1 << m.bit);
          } else if (m.kind === 'number' && numbers.length > 0) {
            const hit = numbers[m.which % numbers.length] as RegExpMatchArray;
            const text = `${header.slice(0, hit.index)}${m.value}${header.slice((hit.index as number) + hit[0].length)}`;
            bytes = stFile(text, original.subarray(8 + n));
          } else if (m.kind === 'length') {
            if (bytes.byteLength < 8) continue;
            new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(0, m.value, true);
          } else if (m.kind === 'resize') {
            const out = new Uint8Array(m.size);
            out.set(bytes.subarray(0, Math.min(m.size, bytes.byteLength)));
            bytes = out;
          }
        }
        await plant(bytes);
        const { loaded, biggest } = await probe(backend, `mutated file ${JSON.stringify(mutations, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
        if (loaded) loads++;
        assert.ok(biggest <= bytes.byteLength, `allocated ${biggest} bytes for a ${bytes.byteLength}-byte file`);
      }),
      { numRuns: Math.max(100, Math.floor(RUNS / 4)), seed },
    );
    console.log(`# hostile tensor-file mutations: ${JSON.stringify({ seed, runs: Math.max(100, Math.floor(RUNS / 4)), loadedConsistently: loads })}`);
  });
});

// --- symbolic links (fs) -----------------------------------------------------------------------

describe('symbolic links may not lead outside a checkpoint', () => {
  /** A run with steps 1 and 2, and a directory outside it holding copies of step 2's files. */
  async function linkedRun(): Promise<{ dir: string; ck: string; outside: string }> {
    const root = await tmpDir('ckpt-rel-links-');
    const dir = join(root, 'run');
    const m = await openManager(dir, { sync: false });
    await m.save(sampleState(1));
    await m.save(sampleState(2));
    await m.close();
    const outside = join(root, 'outside');
    await cp(join(dir, 'step-00000002'), outside, { recursive: true });
    return { dir, ck: join(dir, 'step-00000002'), outside };
  }

  async function refusedEverywhere(dir: string, ck: string, file: string): Promise<void> {
    const path = join(ck, file);
    await assert.rejects(load(ck), (e: unknown) => isCkptError(e, 'PATH_ESCAPE') && e.path === path && e.message.includes(file));
    const v = await verify(ck);
    assert.equal(v.valid, false);
    assert.ok(v.problems.some((p) => p.code === 'PATH_ESCAPE' && p.path === path), v.problems.map((p) => p.message).join('; '));
    const reader = await openManager(dir, { readOnly: true });
    const { checkpoint, skipped } = await reader.restore();
    assert.equal(checkpoint.step, 1, 'restore falls back to the previous checkpoint');
    assert.deepEqual(skipped.map((s) => [s.step, s.error.code, s.error.path]), [[2, 'PATH_ESCAPE', path]]);
    await reader.close();
  }

  for (const file of ['model.safetensors', 'optimizer.safetensors', 'state.json']) {
    it(`${file} linked to an identical copy outside: PATH_ESCAPE (load, verify, restore)`, async () => {
      const { dir, ck, outside } = await linkedRun();
      await rm(join(ck, file));
      await symlink(join(outside, file), join(ck, file));
      await refusedEverywhere(dir, ck, file);
    });
  }

  it('a relative link to another checkpoint of the run: PATH_ESCAPE', async () => {
    const { dir, ck } = await linkedRun();
    await rm(join(ck, 'ema.safetensors'));
    await symlink('../step-00000001/ema.safetensors', join(ck, 'ema.safetensors'));
    await refusedEverywhere(dir, ck, 'ema.safetensors');
    // Reading a single tensor goes through the same check.
    const reader = await CheckpointReader.open(fsBackend(dir), 'step-00000002');
    await assert.rejects(reader.tensor('ema', 'encoder/w'), (e: unknown) => isCkptError(e, 'PATH_ESCAPE'));
  });

  it('state.json linked to a system file: PATH_ESCAPE before anything is read', async () => {
    const { ck } = await linkedRun();
    await rm(join(ck, 'state.json'));
    await symlink('/etc/passwd', join(ck, 'state.json'));
    await assert.rejects(load(ck), (e: unknown) => isCkptError(e, 'PATH_ESCAPE') && e.message.includes('state.json'));
  });

  it('manifest.json linked to a copy outside: PATH_ESCAPE, and the run lists it as invalid', async () => {
    const { dir, ck, outside } = await linkedRun();
    await rm(join(ck, 'manifest.json'));
    await symlink(join(outside, 'manifest.json'), join(ck, 'manifest.json'));
    await refusedEverywhere(dir, ck, 'manifest.json');
    const reader = await openManager(dir, { readOnly: true });
    assert.deepEqual((await reader.listInvalid()).map((x) => [x.step, x.error.code]), [[2, 'PATH_ESCAPE']]);
    await reader.close();
  });

  it('links that stay inside the checkpoint, a linked checkpoint directory and a linked run load', async () => {
    const { dir, ck } = await linkedRun();
    // A file linked to another name inside the same checkpoint directory.
    await writeFile(join(ck, 'ema-real.bin'), await readFile(join(ck, 'ema.safetensors')));
    await rm(join(ck, 'ema.safetensors'));
    await symlink('ema-real.bin', join(ck, 'ema.safetensors'));
    assert.equal((await verify(ck)).valid, true);
    // A checkpoint directory that is itself a link (to a complete checkpoint elsewhere).
    const elsewhere = join(dir, '..', 'elsewhere');
    await cp(ck, elsewhere, { recursive: true, verbatimSymlinks: true });
    await rm(ck, { recursive: true });
    await symlink(elsewhere, ck);
    assert.equal((await load(ck)).step, 2);
    // A run directory reached through a link.
    const runLink = join(dir, '..', 'run-link');
    await symlink(dir, runLink);
    const reader = await openManager(runLink, { readOnly: true });
    assert.deepEqual((await reader.list()).map((c) => c.step), [1, 2]);
    assert.deepEqual((await reader.restore()).skipped, []);
    await reader.close();
  });

  it('a dangling link: FILE_MISSING; a listed file that is a directory: FILE_MISSING', async () => {
    const { ck } = await linkedRun();
    await rm(join(ck, 'ema.safetensors'));
    await symlink('nowhere.safetensors', join(ck, 'ema.safetensors'));
    await assert.rejects(load(ck), (e: unknown) => isCkptError(e, 'FILE_MISSING') && e.message.includes('ema.safetensors'));
    await rm(join(ck, 'ema.safetensors'));
    await mkdir(join(ck, 'ema.safetensors'));
    await assert.rejects(load(ck), (e: unknown) => isCkptError(e, 'FILE_MISSING') && e.message.includes('ema.safetensors'));
  });

  it('prints the totals of the hostile-input suite', () => {
    console.log(`# hostile: ${JSON.stringify({ runsPerProperty: RUNS, ...totals, slowestMs: Math.round(totals.slowestMs) })}`);
  });
});
