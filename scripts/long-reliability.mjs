#!/usr/bin/env node
// The long versions of the reliability suites (test/reliability), with the numbers docs/GUARANTEES.md
// quotes. Each suite runs alone (node --test), sized by environment variables; the "# ..." lines the
// suites print (trials run, cases, failures) are collected into a summary at the end.
//
//   npm run build:test && node scripts/long-reliability.mjs            # everything (~20-25 min here)
//   node scripts/long-reliability.mjs crash hostile                    # only the named suites
//   CKPT_LONG_KILLS=5000 node scripts/long-reliability.mjs crash       # override a size
//
// Sizes (defaults): CKPT_LONG_KILLS 2000 SIGKILLs of saves, CKPT_LONG_AVERAGE_KILLS 500 of averaging; CKPT_LONG_FUZZ_RUNS 60000 runs per hostile-input
// property (about 330,000 cases); CKPT_LONG_FORMAT_FUZZ_RUNS 20000 runs per property of the
// safetensors / JSON reader fuzz tests of src/format; CKPT_LONG_CORRUPTION_TRIALS 150 (about 3,500
// damaged checkpoints); CKPT_LONG_LOCK_ROUNDS 200 writer races; CKPT_LONG_READER_MS 60000 of reading
// during saves; CKPT_LONG_PREEMPT_TRIALS 40 SIGTERMs. CKPT_SEED replays the randomised suites.
// Exit code: 0 when every suite passed.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

const env = (name, fallback) => process.env[name] ?? String(fallback);

const suites = [
  {
    name: 'crash',
    files: ['.build/test/reliability/crash.test.js'],
    env: { CKPT_CRASH_KILLS: env('CKPT_LONG_KILLS', 2000), CKPT_CRASH_AVERAGE_KILLS: env('CKPT_LONG_AVERAGE_KILLS', 500) },
  },
  { name: 'corruption', files: ['.build/test/reliability/corruption.test.js'], env: { CKPT_CORRUPTION_TRIALS: env('CKPT_LONG_CORRUPTION_TRIALS', 150) } },
  { name: 'hostile', files: ['.build/test/reliability/hostile.test.js'], env: { CKPT_FUZZ_RUNS: env('CKPT_LONG_FUZZ_RUNS', 60000) } },
  {
    name: 'format-fuzz',
    files: ['.build/src/format/safetensors.test.js', '.build/src/format/json.test.js', '.build/src/format/canonical-header.test.js'],
    env: { CKPT_FUZZ_RUNS: env('CKPT_LONG_FORMAT_FUZZ_RUNS', 20000) },
  },
  { name: 'enospc', files: ['.build/test/reliability/enospc.test.js'], env: {} },
  {
    name: 'concurrency',
    files: ['.build/test/reliability/concurrency.test.js'],
    env: { CKPT_LOCK_ROUNDS: env('CKPT_LONG_LOCK_ROUNDS', 200), CKPT_READER_MS: env('CKPT_LONG_READER_MS', 60000) },
  },
  { name: 'background', files: ['.build/test/reliability/background.test.js'], env: {} },
  { name: 'preemption', files: ['.build/test/reliability/preemption.test.js'], env: { CKPT_PREEMPT_TRIALS: env('CKPT_LONG_PREEMPT_TRIALS', 40) } },
];

const wanted = process.argv.slice(2);
const chosen = suites.filter((s) => wanted.length === 0 || wanted.includes(s.name));
if (chosen.length === 0) {
  console.error(`unknown suite(s) ${wanted.join(', ')}; known: ${suites.map((s) => s.name).join(', ')}`);
  process.exit(2);
}

/** Runs one suite; resolves with its exit code, duration, test counts and the "# ..." stats lines. */
function run(suite) {
  const files = suite.files.filter((f) => existsSync(f));
  if (files.length === 0) return Promise.resolve({ code: 1, seconds: 0, stats: [`no compiled files (${suite.files.join(', ')}): run npm run build:test`], counts: {} });
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--test', '--test-concurrency=1', ...files], {
      env: { ...process.env, ...suite.env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const stats = [];
    const counts = {};
    let buffer = '';
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      buffer += d.toString();
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        const stat = /^#\s+\\?#\s+(.*)$/.exec(line);
        if (stat) stats.push(stat[1]);
        const count = /^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$/.exec(line);
        if (count) counts[count[1]] = Number(count[2]);
      }
    });
    child.on('close', (code) => resolve({ code: code ?? 1, seconds: Math.round((Date.now() - started) / 1000), stats, counts }));
  });
}

const results = [];
for (const suite of chosen) {
  console.log(`\n=== ${suite.name} ${JSON.stringify(suite.env)} ===`);
  results.push({ suite, ...(await run(suite)) });
}

console.log('\n=== summary ===');
for (const r of results) {
  const c = r.counts;
  console.log(`${r.code === 0 ? 'PASS' : 'FAIL'} ${r.suite.name} (${r.seconds} s; tests ${c.tests ?? '?'}, pass ${c.pass ?? '?'}, fail ${c.fail ?? '?'}, todo ${c.todo ?? 0}) ${JSON.stringify(r.suite.env)}`);
  for (const s of r.stats) console.log(`    ${s}`);
}
const total = results.reduce((s, r) => s + r.seconds, 0);
console.log(`total ${Math.round(total / 60)} min; ${results.filter((r) => r.code !== 0).length} suite(s) failed`);
process.exit(results.every((r) => r.code === 0) ? 0 : 1);
