/**
 * Child of preemption.test.ts: a background save fails (one EIO while it writes), then SIGTERM arrives
 * before the next save. The handler must report the earlier failure and still save the final state.
 * Prints the errors reported, then the steps stored when the process exits.
 */
import { onPreemption } from '../../src/checkpoint/preemption.js';
import { openManager } from '../../src/checkpoint/manager.js';
import type { TrainState } from '../../src/checkpoint/types.js';
import { isCkptError } from '../../src/errors.js';
import type { Backend } from '../../src/storage/backend.js';
import { memoryBackend } from '../../src/storage/memory.js';

const raw = memoryBackend();
let failNext = false;
const backend: Backend = {
  ...raw,
  writer: async (...args: Parameters<Backend['writer']>) => {
    if (failNext) {
      failNext = false;
      throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
    }
    return raw.writer(...args);
  },
};
const state = (step: number): TrainState => ({ step, tensors: { model: new Map([['w', { dtype: 'F32', shape: [1], data: new Uint8Array(new Float32Array([step]).buffer) }]]) } });

const m = await openManager({ backend, key: 'run' }, { background: true, save: { everySteps: 100 } });
let step = 100;
const exit = process.exit.bind(process);
process.exit = ((code?: number) => {
  void raw.list('run').then((names) => {
    process.stdout.write(`stored ${names.filter((n) => n.startsWith('step-')).join(',')}\n`);
    exit(code);
  });
}) as typeof process.exit;
onPreemption(m, () => state(step), { onError: (e) => process.stdout.write(`reported ${isCkptError(e) ? e.code : String(e)}\n`) });
failNext = true;
await m.save(state(100)); // returns after the snapshot; its write fails afterwards
for (step = 101; step <= 150; step++) await new Promise((resolve) => setTimeout(resolve, 1));
process.kill(process.pid, 'SIGTERM');
await new Promise((resolve) => setTimeout(resolve, 10_000));
