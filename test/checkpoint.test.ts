import assert from 'node:assert/strict';
import { readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { load, save, verify } from '../src/checkpoint/api.js';
import { CheckpointReader } from '../src/checkpoint/load.js';
import type { TrainState } from '../src/checkpoint/types.js';
import { isCkptError } from '../src/errors.js';
import { fsBackend } from '../src/storage/fs.js';
import { memoryBackend } from '../src/storage/memory.js';
import { tensor } from '../src/tensor/tensor.js';
import { VERSION } from '../src/version.js';
import { sampleState, tmpDir } from './helpers.js';

function assertSameState(actual: TrainState, expected: TrainState): void {
  assert.equal(actual.step, expected.step);
  assert.equal(actual.epoch, expected.epoch);
  assert.deepEqual(Object.keys(actual.tensors), Object.keys(expected.tensors));
  for (const [g, map] of Object.entries(expected.tensors)) {
    const got = actual.tensors[g];
    assert.ok(got, `group ${g}`);
    assert.deepEqual([...got.keys()], [...map.keys()], `tensor order of ${g}`);
    for (const [name, t] of map) {
      const u = got.get(name);
      assert.ok(u);
      assert.equal(u.dtype, t.dtype);
      assert.deepEqual(u.shape, t.shape);
      assert.deepEqual(Buffer.from(u.data), Buffer.from(t.data), `${g}/${name} bytes`);
    }
  }
  assert.deepEqual(actual.state, expected.state);
  assert.deepEqual(actual.metrics, expected.metrics);
  assert.deepEqual(actual.hyperParameters, expected.hyperParameters);
  assert.deepEqual(actual.metadata, expected.metadata);
}

async function rejectsWith(p: Promise<unknown>, code: string, mentions?: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isCkptError(e), `expected a CkptError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (mentions !== undefined) assert.ok(e.message.includes(mentions), `"${e.message}" should mention ${mentions}`);
    return true;
  });
}

describe('save / load on the filesystem', () => {
  it('round-trips every part of the training state bit for bit', async () => {
    const dir = await tmpDir();
    const state = sampleState(1000, { loss: 0.25, acc: 0.9 });
    const manifest = await save(join(dir, 'step-00001000'), state);
    assert.equal(manifest.step, 1000);
    assert.equal(manifest.versions.ckpt, VERSION);
    assert.equal(manifest.versions.framework, 'none');
    assert.equal(manifest.versions.node, process.version);
    const files = (await readdir(join(dir, 'step-00001000'))).sort();
    assert.deepEqual(files, ['ema.safetensors', 'manifest.json', 'model.safetensors', 'optimizer.safetensors', 'state.json']);
    for (const f of manifest.files) assert.equal((await stat(join(dir, 'step-00001000', f.path))).size, f.bytes);
    const loaded = await load(join(dir, 'step-00001000'));
    assertSameState(loaded, state);
    assert.equal(loaded.manifest.runId, manifest.runId);
    // Nothing but the committed directory is left behind.
    assert.deepEqual(await readdir(dir), ['step-00001000']);
  });

  it('writes deterministic tensor files', async () => {
    const dir = await tmpDir();
    await save(join(dir, 'a'), sampleState(5));
    await save(join(dir, 'b'), sampleState(5));
    for (const f of ['model.safetensors', 'optimizer.safetensors', 'ema.safetensors', 'state.json']) {
      assert.deepEqual(await readFile(join(dir, 'a', f)), await readFile(join(dir, 'b', f)), f);
    }
  });

  it('writes files any safetensors reader accepts (checked with a reader written from the spec)', async () => {
    const dir = await tmpDir();
    await save(join(dir, 'c'), sampleState(3));
    const bytes = await readFile(join(dir, 'c', 'model.safetensors'));
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    assert.equal((8 + n) % 8, 0, 'data starts 8-byte aligned');
    const w = header['encoder/w'];
    assert.ok(w);
    assert.equal(w.dtype, 'F32');
    assert.deepEqual(w.shape, [4, 3]);
    const data = bytes.subarray(8 + n + w.data_offsets[0], 8 + n + w.data_offsets[1]);
    const expected = sampleState(3).tensors.model?.get('encoder/w')?.data;
    assert.ok(expected);
    assert.deepEqual(Buffer.from(data), Buffer.from(expected));
    const ends = Object.entries(header).filter(([k]) => k !== '__metadata__').map(([, v]) => v.data_offsets[1]);
    assert.equal(bytes.length, 8 + n + Math.max(...ends));
  });

  it('refuses to overwrite a committed checkpoint', async () => {
    const dir = await tmpDir();
    await save(join(dir, 's'), sampleState(1));
    await rejectsWith(save(join(dir, 's'), sampleState(1)), 'ALREADY_EXISTS');
  });

  it('reports every problem of an invalid state at once, writing nothing', async () => {
    const dir = await tmpDir();
    const bad = {
      step: -1,
      tensors: { 'bad name': new Map(), model: new Map([['w', { dtype: 'F32', shape: [2], data: new Uint8Array(3) }]]) },
      metrics: { loss: Number.NaN },
    } as unknown as TrainState;
    await assert.rejects(save(join(dir, 'x'), bad), (e: unknown) => {
      assert.ok(isCkptError(e, 'INVALID_ARGUMENT'));
      for (const s of ['step', 'bad name', 'tensor "w"', 'loss']) assert.ok(e.message.includes(s), `${e.message} / ${s}`);
      return true;
    });
    assert.deepEqual(await readdir(dir), []);
  });

  it('shards a large group in the Hugging Face layout and loads it back', async () => {
    const dir = await tmpDir();
    const state = sampleState(7);
    const m = await save(join(dir, 'sh'), state, { shardBytes: 40 });
    assert.deepEqual(m.groups.model?.files, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    const index = JSON.parse(await readFile(join(dir, 'sh', 'model.safetensors.index.json'), 'utf8')) as {
      weight_map: Record<string, string>;
    };
    assert.equal(index.weight_map['encoder/w'], 'model-00001-of-00002.safetensors');
    assertSameState(await load(join(dir, 'sh')), state);
    assert.equal((await verify(join(dir, 'sh'))).valid, true);
  });

  it("a sharded group's headers are read at once, and a failure is reported in shard order", async () => {
    const dir = await tmpDir();
    const t = () => tensor(new Float32Array(256), [256]);
    const state: TrainState = { step: 1, tensors: { model: new Map([['ta', t()], ['tb', t()], ['tc', t()], ['td', t()]]) } };
    const shards = ['model-00001-of-00004.safetensors', 'model-00002-of-00004.safetensors', 'model-00003-of-00004.safetensors', 'model-00004-of-00004.safetensors'];
    const fresh = async (name: string): Promise<string> => {
      const m = await save(join(dir, name), state, { shardBytes: 1024, sync: false });
      assert.deepEqual(m.groups.model?.files, shards);
      return join(dir, name);
    };
    const index = async (ck: string): Promise<unknown> => (await CheckpointReader.open(fsBackend(dir), ck.slice(dir.length + 1))).index('model');
    // Shard 2 repeats shard 1's name, shard 4 is missing: the repeat comes first in shard order.
    const a = await fresh('a');
    const second = await readFile(join(a, shards[1] as string));
    second.write('"ta"', second.indexOf('"tb"'));
    await writeFile(join(a, shards[1] as string), second);
    await rm(join(a, shards[3] as string));
    await rejectsWith(index(a), 'DUPLICATE_KEY', `(${shards[0]}, ${shards[1]})`);
    // Shard 2 missing, shard 3's header damaged: shard 2's error, whichever read fails first.
    const b = await fresh('b');
    await rm(join(b, shards[1] as string));
    await writeFile(join(b, shards[2] as string), new Uint8Array(4));
    await rejectsWith(index(b), 'FILE_MISSING', shards[1]);
    // Intact: every tensor, each located in its own shard.
    const c = await fresh('c');
    const all = (await index(c)) as Map<string, { file: string }>;
    assert.deepEqual([...all].map(([name, loc]) => [name, loc.file]), ['ta', 'tb', 'tc', 'td'].map((n, k) => [n, shards[k]]));
  });

  it('loads selected groups only, and with verification off', async () => {
    const dir = await tmpDir();
    await save(join(dir, 'g'), sampleState(2));
    const only = await load(join(dir, 'g'), { groups: ['model'], verify: false });
    assert.deepEqual(Object.keys(only.tensors), ['model']);
    await rejectsWith(load(join(dir, 'g'), { groups: ['nope'] }), 'NOT_FOUND', 'nope');
  });

  it('supports rank-0, empty and every writable dtype', async () => {
    const dir = await tmpDir();
    const model = new Map([
      ['f64', tensor(new Float64Array([1.5]), [])],
      ['f16', tensor(new Uint16Array([0x3c00, 0xc000]), [2], 'F16')],
      ['bf16', tensor(new Uint16Array([0x3f80]), [1], 'BF16')],
      ['i32', tensor(new Int32Array([-1, 2]), [2])],
      ['i16', tensor(new Int16Array([-3]), [1])],
      ['i8', tensor(new Int8Array([-4]), [1])],
      ['u8', tensor(new Uint8Array([250]), [1])],
      ['bool', tensor(new Uint8Array([1, 0]), [2], 'BOOL')],
      ['empty', tensor(new Float32Array(0), [0, 5])],
    ]);
    const state: TrainState = { step: 1, tensors: { model } };
    await save(join(dir, 'd'), state);
    const back = await load(join(dir, 'd'));
    for (const [name, t] of model) {
      const u = back.tensors.model?.get(name);
      assert.equal(u?.dtype, t.dtype, name);
      assert.deepEqual(u?.shape, t.shape, name);
      assert.deepEqual(Buffer.from(u?.data ?? []), Buffer.from(t.data), name);
    }
  });
});

describe('corruption is detected and names the file', () => {
  async function fresh(): Promise<string> {
    const dir = await tmpDir();
    await save(join(dir, 'step-00000009'), sampleState(9));
    return join(dir, 'step-00000009');
  }

  it('a flipped bit: CHECKSUM_MISMATCH', async () => {
    const ck = await fresh();
    const f = join(ck, 'optimizer.safetensors');
    const bytes = await readFile(f);
    bytes[bytes.length - 3] = (bytes[bytes.length - 3] as number) ^ 0x10;
    await writeFile(f, bytes);
    await rejectsWith(load(ck), 'CHECKSUM_MISMATCH', 'optimizer.safetensors');
    const v = await verify(ck);
    assert.equal(v.valid, false);
    assert.deepEqual(
      v.problems.map((p) => p.code),
      ['CHECKSUM_MISMATCH'],
    );
    // Without verification the flipped bit goes unnoticed by design; the file is still well-formed.
    await load(ck, { verify: false });
  });

  it('a truncated file: SIZE_MISMATCH', async () => {
    const ck = await fresh();
    await truncate(join(ck, 'model.safetensors'), 10);
    await rejectsWith(load(ck), 'SIZE_MISMATCH', 'model.safetensors');
  });

  it('a missing file: FILE_MISSING', async () => {
    const ck = await fresh();
    await rm(join(ck, 'ema.safetensors'));
    await rejectsWith(load(ck), 'FILE_MISSING', 'ema.safetensors');
  });

  it('a corrupt state.json: CHECKSUM_MISMATCH', async () => {
    const ck = await fresh();
    const f = join(ck, 'state.json');
    const text = await readFile(f, 'utf8');
    await writeFile(f, text.replace('hello', 'hellp'));
    await rejectsWith(load(ck), 'CHECKSUM_MISMATCH', 'state.json');
  });

  it('a missing manifest: MANIFEST_MISSING', async () => {
    const ck = await fresh();
    await rm(join(ck, 'manifest.json'));
    await rejectsWith(load(ck), 'MANIFEST_MISSING', 'manifest.json');
  });

  it('a garbled manifest: MANIFEST_INVALID', async () => {
    const ck = await fresh();
    await writeFile(join(ck, 'manifest.json'), '{"format":"ckpt",');
    await rejectsWith(load(ck), 'MANIFEST_INVALID', 'manifest.json');
  });

  it('a manifest from the future: UNSUPPORTED_VERSION', async () => {
    const ck = await fresh();
    const m = JSON.parse(await readFile(join(ck, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(ck, 'manifest.json'), JSON.stringify({ ...m, formatVersion: 99 }));
    await rejectsWith(load(ck), 'UNSUPPORTED_VERSION');
  });

  for (const bad of ['../outside.safetensors', '/etc/passwd', 'sub/dir.safetensors', '..']) {
    it(`a manifest path escaping the directory (${bad}): PATH_ESCAPE`, async () => {
      const ck = await fresh();
      const m = JSON.parse(await readFile(join(ck, 'manifest.json'), 'utf8')) as { files: { path: string }[] };
      (m.files[0] as { path: string }).path = bad;
      await writeFile(join(ck, 'manifest.json'), JSON.stringify(m));
      await rejectsWith(load(ck), 'PATH_ESCAPE');
    });
  }

  it('a duplicate key in the manifest: MANIFEST_INVALID', async () => {
    const ck = await fresh();
    const text = await readFile(join(ck, 'manifest.json'), 'utf8');
    await writeFile(join(ck, 'manifest.json'), text.replace('"step": 9,', '"step": 9, "step": 10,'));
    await rejectsWith(load(ck), 'MANIFEST_INVALID');
  });
});

describe('save / load through the memory backend', () => {
  it('round-trips and lists no temp directory', async () => {
    const backend = memoryBackend();
    const state = sampleState(4, { loss: 1 });
    await save({ backend, key: 'run/step-00000004' }, state);
    assertSameState(await load({ backend, key: 'run/step-00000004' }), state);
    assert.deepEqual(await backend.list('run'), ['step-00000004/']);
  });
});
