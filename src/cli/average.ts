import { type AverageSelection, DEFAULT_AVERAGE_LAST, averageCheckpoints } from '../average/average.js';
import { CkptError } from '../errors.js';
import { type Command, type CommandArgs, intOption, modeOption, printJson, stringOption, threadsOption, usage } from './command.js';
import { resolveTarget } from './target.js';
import { formatNumber } from './text.js';

/** Parses a comma-separated list with `parse`, naming the option in a USAGE error. */
function listOption<T>(args: CommandArgs, name: string, what: string, parse: (s: string) => T | undefined): T[] | undefined {
  const v = stringOption(args, name);
  if (v === undefined) return undefined;
  const items = v.split(',').map((s) => s.trim());
  const values = items.map(parse);
  const bad = items.filter((_, i) => values[i] === undefined);
  if (items.length === 0 || bad.length > 0) throw usage(`--${name} must be a comma-separated list of ${what}, got "${v}"`);
  return values as T[];
}

function parseStep(s: string): number | undefined {
  const n = Number(s);
  return /^\d+$/.test(s) && Number.isSafeInteger(n) ? n : undefined;
}

function parseWeight(s: string): number | undefined {
  const n = Number(s);
  return s !== '' && Number.isFinite(n) && n > 0 ? n : undefined;
}

function parseGroup(s: string): string | undefined {
  return s === '' ? undefined : s;
}

function selection(args: CommandArgs): AverageSelection {
  const last = intOption(args, 'last');
  const steps = listOption(args, 'steps', 'steps (non-negative integers)', parseStep);
  const best = intOption(args, 'best');
  const metric = stringOption(args, 'metric');
  const given = [last === undefined ? '' : '--last', steps === undefined ? '' : '--steps', best === undefined ? '' : '--best'].filter(Boolean);
  if (given.length > 1) throw usage(`${given.join(', ')}: choose one way to select checkpoints`);
  if (best === undefined && (metric !== undefined || args.values.mode !== undefined)) throw usage('--metric and --mode go with --best K');
  if (best !== undefined) {
    if (metric === undefined) throw usage('--best K needs --metric NAME');
    return { best: { k: best, metric, mode: modeOption(args) } };
  }
  if (steps !== undefined) return { steps };
  return { last: last ?? DEFAULT_AVERAGE_LAST };
}

function describeSelection(s: AverageSelection): string {
  if ('last' in s) return `the last ${s.last}`;
  if ('steps' in s) return `${s.steps.length} steps`;
  return `the best ${s.best.k} by ${s.best.metric} (${s.best.mode ?? 'min'})`;
}

/** `ckpt average RUN_DIR`: average the weights of several checkpoints into one. */
export const averageCommand: Command = {
  name: 'average',
  summary: 'average the weights of the last N / given / best K checkpoints of a run',
  help: `Usage: ckpt average RUN_DIR [--last N | --steps A,B,C | --best K --metric NAME [--mode min|max]]
                    [--weights W1,W2,…] [--groups model,…] [--out DIR] [--overwrite] [--no-verify]
                    [--threads N] [--json]

Averages the model weights of committed checkpoints of RUN_DIR, tensor by tensor (memory: a few times
the largest tensor), in float64 with one rounding to each tensor's dtype at the end. Integer and
boolean tensors are copied from the newest selected checkpoint, as are its step, optimizer and other
groups, and state.json, so training can resume from the result. Checkpoints whose tensor names, dtypes
or shapes differ are refused, each mismatch listed. Input files are verified against their checksums
while they are read. With fewer checkpoints than asked for, the ones there are averaged (with a note).

Selection (one of; default --last ${DEFAULT_AVERAGE_LAST}, as OpenNMT-tf):
  --last N               the newest N checkpoints
  --steps A,B,C          exactly these steps
  --best K               the K best by --metric NAME (--mode min|max, default min)

Options:
  --weights W1,W2,…      one positive weight per selected checkpoint (oldest first; with --steps, in the
                         order given), normalised to sum 1 (default: equal)
  --groups G1,G2         tensor groups to average (default: model); other groups come from the newest
  --out DIR              where to write the averaged checkpoint (default: RUN_DIR/avg)
  --overwrite            replace an existing checkpoint at --out (the new one is complete
                         before the old one moves aside; a crash between the two renames
                         is undone by the next average)
  --no-verify            do not check input checksums
  --threads N            worker threads that read, hash and accumulate the inputs (0: none; default:
                         one per core, at most 4, when there is 1 GiB or more to read)
  --json                 machine-readable output: {"out","step","steps","weights","requested",…}
`,
  options: {
    last: { type: 'string' },
    steps: { type: 'string' },
    best: { type: 'string' },
    metric: { type: 'string' },
    mode: { type: 'string' },
    weights: { type: 'string' },
    groups: { type: 'string' },
    out: { type: 'string' },
    overwrite: { type: 'boolean' },
    'no-verify': { type: 'boolean' },
    threads: { type: 'string' },
    json: { type: 'boolean' },
  },
  positionals: 1,
  async run(args, io) {
    const path = args.positionals[0] as string;
    const select = selection(args);
    const weights = listOption(args, 'weights', 'positive numbers', parseWeight);
    const groups = listOption(args, 'groups', 'group names', parseGroup);
    const out = stringOption(args, 'out');
    if (out === '') throw usage('--out must not be empty');
    const threads = threadsOption(args);
    const target = await resolveTarget(path);
    if (target.kind !== 'run') throw new CkptError('INVALID_ARGUMENT', `${path} is a ${target.kind}, not a run directory`, { path });
    const r = await averageCheckpoints(
      { backend: target.backend, key: target.key },
      {
        select,
        ...(weights === undefined ? {} : { weights }),
        ...(groups === undefined ? {} : { groups }),
        ...(out === undefined ? {} : { out }),
        overwrite: args.values.overwrite === true,
        verify: args.values['no-verify'] !== true,
        ...(threads === undefined ? {} : { threads }),
      },
    );
    const short = r.steps.length < r.requested;
    if (args.values.json === true) {
      printJson(io, {
        out: r.location,
        step: r.manifest.step,
        steps: r.steps,
        weights: r.weights,
        requested: r.requested,
        averaged: r.averaged,
        copied: r.copied,
        ignored: r.ignored,
        threads: r.threads,
        method: 'mean-float64',
      });
    } else {
      const equal = r.weights.every((w) => w === r.weights[0]);
      const w = equal ? 'equal weights' : `weights ${r.weights.map(formatNumber).join(', ')}`;
      const n = r.steps.length;
      io.stdout(`averaged ${n} checkpoint${n === 1 ? '' : 's'} (steps ${r.steps.join(', ')}; ${w}) into ${r.location}\n`);
      io.stdout(`  averaged: ${r.averaged.join(', ')}; from step ${r.manifest.step}: ${[...r.copied, 'state.json'].join(', ')}\n`);
    }
    if (short) {
      const have = 'best' in select ? `only ${r.steps.length} record ${select.best.metric}` : `the run has only ${r.steps.length}`;
      io.stderr(`ckpt average: note: asked for ${describeSelection(select)}, ${have}\n`);
    }
    for (const x of r.ignored) io.stderr(`ckpt average: note: ignored invalid ${x.name} (${x.code})\n`);
    return 0;
  },
};
