import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isCkptError } from '../errors.js';
import { type AveragedDType, accumulate, finish } from './accumulate.js';
import { createSimd, simdModuleBytes } from './simd.js';
import { Workspace, exactReciprocal, readPlacement } from './workspace.js';

const SIZE: Readonly<Record<AveragedDType, number>> = { F64: 8, F32: 4, F16: 2, BF16: 2 };

/** The reference: `accumulate` over each input then `finish`, on plain arrays. */
function reference(dtype: AveragedDType, inputs: readonly Uint8Array[], weights: readonly number[]): Uint8Array {
  const n = (inputs[0] as Uint8Array).byteLength / SIZE[dtype];
  const acc = new Float64Array(n);
  inputs.forEach((x, j) => accumulate(acc, x, dtype, weights[j] as number, j === 0));
  const out = new Uint8Array(n * SIZE[dtype]);
  finish(acc, weights.reduce((a, b) => a + b, 0), dtype, out);
  return out;
}

/** The same through a workspace: inputs placed in its slots as reads would be, output to `out`. */
function throughWorkspace(ws: Workspace, dtype: AveragedDType, inputs: readonly Uint8Array[], weights: readonly number[], fileOffsets: readonly number[], out: Uint8Array): void {
  inputs.forEach((x, j) => {
    const view = ws.place(j % ws.slots, fileOffsets[j % fileOffsets.length] as number, x.byteLength);
    view.set(x);
    ws.accumulate(view, dtype, weights[j] as number, j === 0);
  });
  ws.finish(weights.reduce((a, b) => a + b, 0), dtype, out);
}

/**
 * Equal element by element: the same bits, or NaN on both sides. Which NaN comes out when two NaNs meet
 * in an addition is the first operand's on x86, and V8 orders the operands of the plain loop as it likes
 * (its interpreter and its optimised code differ), so NaN payloads are not reproducible even there.
 */
function assertSameValues(dtype: AveragedDType, actual: Uint8Array, expected: Uint8Array, label: string): void {
  assert.equal(actual.byteLength, expected.byteLength);
  const size = SIZE[dtype];
  const isNaN = (b: Uint8Array, at: number): boolean => {
    const view = new DataView(b.buffer, b.byteOffset + at, size);
    if (dtype === 'F64') return Number.isNaN(view.getFloat64(0, true));
    if (dtype === 'F32') return Number.isNaN(view.getFloat32(0, true));
    const bits = view.getUint16(0, true);
    return dtype === 'F16' ? (bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0 : (bits & 0x7f80) === 0x7f80 && (bits & 0x7f) !== 0;
  };
  for (let at = 0; at < actual.byteLength; at += size) {
    if (isNaN(actual, at) && isNaN(expected, at)) continue;
    assert.deepEqual(actual.subarray(at, at + size), expected.subarray(at, at + size), `${label}: element ${at / size}`);
  }
}

/** Random bytes: every bit pattern, so NaNs with payloads, infinities, subnormals and -0 all occur. */
const inputCase = fc
  .record({
    dtype: fc.constantFrom<AveragedDType>('F32', 'F64', 'BF16', 'F16'),
    n: fc.integer({ min: 0, max: 70 }),
    k: fc.integer({ min: 1, max: 5 }),
    seed: fc.integer(),
    // Equal weights (1 or 0.5) often sum to a power of two: the divisions become multiplications then.
    weights: fc.array(fc.oneof(fc.double({ min: 1e-3, max: 1e3, noNaN: true }), fc.constant(1), fc.constant(0.5)), { minLength: 5, maxLength: 5 }),
    offsets: fc.array(fc.nat({ max: 1 << 20 }), { minLength: 1, maxLength: 5 }),
    special: fc.boolean(),
  })
  .map(({ dtype, n, k, seed, weights, offsets, special }) => {
    let s = seed >>> 0 || 1;
    const inputs = Array.from({ length: k }, () => {
      const b = new Uint8Array(n * SIZE[dtype]);
      for (let i = 0; i < b.length; i++) {
        s ^= s << 13;
        s ^= s >>> 17;
        s ^= s << 5;
        b[i] = s & 0xff;
      }
      if (special && n > 0) {
        // Values whose upper bits are all ones or all zeros: NaN, infinity, subnormal, zero patterns.
        b.fill(0xff, 0, Math.min(b.length, SIZE[dtype]));
        b[b.length - 1] = 0x80;
      }
      return b;
    });
    return { dtype, inputs, weights: weights.slice(0, k), offsets: offsets.map((o) => o - (o % SIZE[dtype])) };
  });

describe('Workspace kernels', () => {
  it('use WebAssembly SIMD on this runtime (the fast path is the one tested here)', () => {
    assert.equal(new Workspace({ chunk: 1024, slots: 2 }).kind, 'wasm-simd');
    assert.equal(new Workspace({ chunk: 1024, slots: 2, simd: false }).kind, 'js');
    assert.ok(createSimd(1) !== undefined);
    assert.equal(new Uint8Array(simdModuleBytes().subarray(0, 4)).join(), [0, 0x61, 0x73, 0x6d].join());
  });

  it('give the bits of accumulate + finish; NaN stays NaN (property)', () => {
    const simd = new Workspace({ chunk: 1024, slots: 3 });
    const js = new Workspace({ chunk: 1024, slots: 3, simd: false });
    fc.assert(
      fc.property(inputCase, ({ dtype, inputs, weights, offsets }) => {
        const expected = reference(dtype, inputs, weights);
        for (const ws of [simd, js]) {
          const out = new Uint8Array(expected.byteLength);
          throughWorkspace(ws, dtype, inputs, weights, offsets, out);
          assertSameValues(dtype, out, expected, `${ws.kind} ${dtype}`);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('finish writes into unaligned memory outside the workspace, and into the workspace itself', () => {
    const ws = new Workspace({ chunk: 64, slots: 2 });
    const x = new Uint8Array(new Float32Array([1.5, -2.25, 3, 4, 5]).buffer);
    const v = ws.place(0, 0, x.byteLength);
    v.set(x);
    ws.accumulate(v, 'F32', 2, true);
    const raw = new Uint8Array(21);
    ws.finish(2, 'F32', raw.subarray(1));
    assert.deepEqual(raw.subarray(1), x);
    const inside = ws.place(1, 0, x.byteLength);
    ws.finish(2, 'F32', inside);
    assert.deepEqual(inside, x);
  });

  it('divide by a power of two as a multiplication by its reciprocal, with the same bits (property)', () => {
    const simd = createSimd(4096);
    assert.ok(simd !== undefined);
    const mem = simd.memory.buffer;
    const acc = new Float64Array(mem, 0, 8);
    const accBits = new Uint32Array(mem, 0, 16);
    const y32 = new Float32Array(mem, 1024, 8);
    const y64 = new Float64Array(mem, 2048, 8);
    fc.assert(
      fc.property(fc.array(fc.integer(), { minLength: 16, maxLength: 16 }), fc.integer({ min: -1022, max: 1023 }), (words, k) => {
        accBits.set(words.map((w) => w >>> 0));
        const d = 2 ** k;
        simd.kernels.f32Scale(1024, 0, 7, 1 / d);
        simd.kernels.f64Scale(2048, 0, 7, 1 / d);
        for (let i = 0; i < 7; i++) {
          const q = (acc[i] as number) / d;
          assert.ok(Object.is(y64[i], q) || (Number.isNaN(y64[i]) && Number.isNaN(q)), `f64 ${acc[i]} / 2^${k}`);
          assert.ok(Object.is(y32[i], Math.fround(q)) || (Number.isNaN(y32[i]) && Number.isNaN(q)), `f32 ${acc[i]} / 2^${k}`);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('output buffers are separate, 16-byte aligned and placed away from the start of a page', () => {
    const ws = new Workspace({ chunk: 1024, slots: 2, outputs: { count: 2, bytes: 10_000 } });
    const [a, b] = ws.outputs as [Uint8Array, Uint8Array];
    assert.equal(ws.outputs.length, 2);
    for (const o of [a, b]) {
      assert.equal(o.byteLength, 10_000);
      assert.equal(o.byteOffset % 4096, 2048);
    }
    assert.ok(a.byteOffset + a.byteLength <= b.byteOffset);
    a.fill(1);
    assert.ok(b.every((x) => x === 0));
    // finish writes into an output directly.
    const v = ws.place(0, 0, 8);
    v.set(new Uint8Array(new Float32Array([3, -6]).buffer));
    ws.accumulate(v, 'F32', 1, true);
    ws.finish(2, 'F32', b.subarray(16, 24));
    assert.deepEqual([...new Float32Array(b.buffer, b.byteOffset + 16, 2)], [1.5, -3]);
    assert.deepEqual(new Workspace({ chunk: 8, slots: 1 }).outputs, []);
  });

  it('outputs too large for the kernels\' memory are separate buffers that finish copies into', () => {
    // 2 × 600 MiB: over the 1 GiB kept inside; untouched pages cost address space only.
    const ws = new Workspace({ chunk: 64, slots: 1, outputs: { count: 2, bytes: 600 * 1024 * 1024 } });
    assert.equal(ws.kind, 'wasm-simd');
    const slot = ws.place(0, 0, 8);
    for (const o of ws.outputs) {
      assert.notEqual(o.buffer, slot.buffer);
      assert.equal(o.byteLength, 600 * 1024 * 1024);
    }
    slot.set(new Uint8Array(new Float32Array([5, 7]).buffer));
    ws.accumulate(slot, 'F32', 1, true);
    const out = (ws.outputs[1] as Uint8Array).subarray(1024, 1032);
    ws.finish(4, 'F32', out);
    assert.deepEqual([...new Float32Array(out.buffer, out.byteOffset, 2)], [1.25, 1.75]);
  });

  it('refuses impossible sizes', () => {
    assert.throws(() => new Workspace({ chunk: 12, slots: 2 }), (e) => isCkptError(e, 'INVALID_ARGUMENT'));
    assert.throws(() => new Workspace({ chunk: 16, slots: 0 }), (e) => isCkptError(e, 'INVALID_ARGUMENT'));
    assert.throws(() => new Workspace({ chunk: 16, slots: 1, outputs: { count: 2, bytes: -1 } }), (e) => isCkptError(e, 'INVALID_ARGUMENT'));
    assert.throws(() => new Workspace({ chunk: 16, slots: 1, outputs: { count: 1.5, bytes: 8 } }), (e) => isCkptError(e, 'INVALID_ARGUMENT'));
    const ws = new Workspace({ chunk: 16, slots: 2 });
    assert.throws(() => ws.place(2, 0, 8), (e) => isCkptError(e, 'INVALID_ARGUMENT'));
    assert.throws(() => ws.place(0, 0, 24), (e) => isCkptError(e, 'INVALID_ARGUMENT'));
  });
});

describe('exactReciprocal', () => {
  it('is true exactly for the powers of two with a finite reciprocal', () => {
    for (let k = -1022; k <= 1023; k++) assert.ok(exactReciprocal(2 ** k), `2^${k}`);
    for (const d of [3, 6, 1.5, 0, -0, Infinity, -Infinity, NaN, 2 ** -1074, 2 ** -1023, Number.MAX_VALUE, 1 + Number.EPSILON]) {
      assert.equal(exactReciprocal(d), false, String(d));
    }
    assert.ok(exactReciprocal(-8));
  });
});

describe('readPlacement', () => {
  it('puts the data half a page away from the source position, 16-byte aligned (property)', () => {
    fc.assert(
      fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), (offset) => {
        const at = readPlacement(offset);
        assert.equal(at % 16, 0);
        assert.ok(at >= 0 && at < 4096);
        const distance = (at - (offset % 4096) + 4096) % 4096;
        assert.ok(distance >= 2033 && distance <= 2048, `${offset} -> ${at}`);
      }),
    );
    assert.equal(readPlacement(0), 2048);
    assert.equal(readPlacement(2056), 0);
  });
});
