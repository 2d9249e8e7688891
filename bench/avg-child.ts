/**
 * Child process of the averaging benchmark: averages the last N checkpoints of RUN into OUT
 * (`--no-verify`: without checksums; `--threads=K`: K worker threads, default automatic) and reports
 * time, peak RSS and the worker threads used.
 */
import { readFileSync } from 'node:fs';
import { averageCheckpoints } from '../src/average/average.js';

/**
 * Peak resident memory of this process. On Linux `getrusage` (`process.resourceUsage().maxRSS`) also
 * counts the parent's resident memory at the time of the fork, since exec keeps the larger of the old and
 * new images' peaks; `VmHWM` in /proc/self/status is this image's own peak.
 */
function peakRss(): number {
  try {
    const m = /^VmHWM:\s*(\d+)\s*kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m !== null) return Number(m[1]) * 1024;
  } catch {
    // Not Linux: fall through.
  }
  return process.resourceUsage().maxRSS * 1024;
}

const [run, out, last, ...flags] = process.argv.slice(2) as [string, string, string, ...string[]];
const threads = flags.find((f) => f.startsWith('--threads='));
const t = process.hrtime.bigint();
const r = await averageCheckpoints(run, {
  select: { last: Number(last) },
  out,
  sync: false,
  verify: !flags.includes('--no-verify'),
  ...(threads === undefined ? {} : { threads: Number(threads.slice('--threads='.length)) }),
});
const seconds = Number(process.hrtime.bigint() - t) / 1e9;
process.stdout.write(JSON.stringify({ seconds, maxRssBytes: peakRss(), threads: r.threads }));
