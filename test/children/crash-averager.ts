/**
 * Child process of the reliability crash test's averaging part (test/reliability/crash.test.ts):
 * averages the last 3 checkpoints of a run into `<run>/avg` over and over (replacing the previous
 * output each time) until it is killed, on this thread and on two worker threads in turn.
 *
 * argv: RUN_DIR SYNC(1|0)
 * stdout: `averaged N` after each averaging resolved.
 */
import { averageCheckpoints } from '../../src/average/average.js';

const dir = process.argv[2] as string;
const sync = process.argv[3] !== '0';
for (let n = 1; ; n++) {
  await averageCheckpoints(dir, { select: { last: 3 }, overwrite: true, sync, groups: ['model', 'optimizer'], threads: n % 2 === 0 ? 2 : 0 });
  process.stdout.write(`averaged ${n}\n`);
}
