/**
 * Worker thread of `bounds.ts`: the inner loop of a verified load or of a verified average with nothing
 * around it (no checkpoint, no planning, no output file), over its share of the tiles.
 */
import { openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { Workspace } from '../src/average/workspace.js';
import { crc32Implementation } from '../src/checkpoint/checksum.js';
import type { BoundSetup } from './bounds.js';

const setup = workerData as BoundSetup;
const port = parentPort;
if (port === null) throw new Error('bound-worker runs only as a worker thread');
const crc32 = crc32Implementation().fn;
const fds = setup.files.map((f) => openSync(f, 'r'));
const counter = new Int32Array(setup.counter);
const workspace = new Workspace({ chunk: setup.tile, slots: 1 });
const output = new Uint8Array(setup.tile);

/** Reads `bytes.byteLength` bytes at `position` of file `k`, all of them. */
function read(k: number, bytes: Uint8Array, position: number): void {
  let got = 0;
  while (got < bytes.byteLength) {
    const n = readSync(fds[k] as number, bytes, got, bytes.byteLength - got, position + got);
    if (n === 0) throw new Error(`${setup.files[k]} ended at ${position + got}`);
    got += n;
  }
}

/** Tile `i`: for a load, read into the shared target and hash there; for an average, every file's tile read, hashed and accumulated. */
function tile(i: number): void {
  const at = i * setup.tile;
  const length = Math.min(setup.tile, setup.bytes - at);
  if (setup.mode === 'load') {
    const bytes = new Uint8Array(setup.target as SharedArrayBuffer, setup.skew + at, length);
    read(0, bytes, at);
    crc32(bytes, 0);
    return;
  }
  for (let k = 0; k < fds.length; k++) {
    const bytes = workspace.place(0, at, length);
    read(k, bytes, at);
    crc32(bytes, 0);
    workspace.accumulate(bytes, 'F32', 1, k === 0);
  }
  workspace.finish(fds.length, 'F32', output.subarray(0, length));
}

port.on('message', () => {
  const tiles = Math.ceil(setup.bytes / setup.tile);
  for (let i = Atomics.add(counter, 0, 1); i < tiles; i = Atomics.add(counter, 0, 1)) tile(i);
  port.postMessage('done');
});
port.postMessage('ready');
