import { type ParseArgsConfig, parseArgs } from 'node:util';
import { CkptError } from '../errors.js';
import { MAX_THREADS } from '../threads.js';

/** Where a command writes. `bin.ts` binds these to the process; tests capture them. */
export interface CliIO {
  stdout(text: string): void;
  stderr(text: string): void;
}

/** Parsed command line of one command. */
export interface CommandArgs {
  readonly positionals: readonly string[];
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
}

/** One `ckpt` sub-command. */
export interface Command {
  readonly name: string;
  /** One line for `ckpt --help`. */
  readonly summary: string;
  /** Full `--help` text. */
  readonly help: string;
  /** Options in node:util parseArgs form (`--json`, `--help`, `--debug` are added for every command). */
  readonly options: NonNullable<ParseArgsConfig['options']>;
  /** Exact number of positionals, or [min, max]. */
  readonly positionals: number | readonly [number, number];
  /** Runs the command; returns the exit code. Throws CkptError for failures. */
  run(args: CommandArgs, io: CliIO): Promise<number>;
}

/** Options every command accepts. */
export const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  debug: { type: 'boolean' },
} as const;

/** A usage error (exit code 2). */
export function usage(message: string): CkptError {
  return new CkptError('USAGE', message);
}

/** Parses `argv` for `command`, turning every parse problem into a `USAGE` error. */
export function parseCommandArgs(command: Command, argv: readonly string[]): CommandArgs {
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: [...argv],
      options: { ...COMMON_OPTIONS, ...command.options },
      allowPositionals: true,
      strict: true,
    }) as { values: Record<string, unknown>; positionals: string[] };
  } catch (e) {
    throw usage(`${command.name}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help !== true) {
    const [min, max] = typeof command.positionals === 'number' ? [command.positionals, command.positionals] : command.positionals;
    const n = parsed.positionals.length;
    if (n < min || n > max) {
      const want = min === max ? `${min}` : `${min} to ${max}`;
      throw usage(`${command.name}: expected ${want} argument${max === 1 ? '' : 's'}, got ${n} (see ckpt ${command.name} --help)`);
    }
  }
  return { positionals: parsed.positionals, values };
}

/** A string option's value, or undefined. */
export function stringOption(args: CommandArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === 'string' ? v : undefined;
}

/** A positive-integer option's value (USAGE error when malformed), or undefined. */
export function intOption(args: CommandArgs, name: string, min = 1): number | undefined {
  const v = stringOption(args, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min) throw usage(`--${name} must be an integer >= ${min}, got "${v}"`);
  return n;
}

/** `--threads N`: an integer from 0 to {@link MAX_THREADS} (USAGE error otherwise), or undefined. */
export function threadsOption(args: CommandArgs): number | undefined {
  const threads = intOption(args, 'threads', 0);
  if (threads !== undefined && threads > MAX_THREADS) throw usage(`--threads must be at most ${MAX_THREADS}, got ${threads}`);
  return threads;
}

/** A positive-number option's value (USAGE error when malformed), or undefined. */
export function numberOption(args: CommandArgs, name: string): number | undefined {
  const v = stringOption(args, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw usage(`--${name} must be a positive number, got "${v}"`);
  return n;
}

/** `--mode` as min|max (default min). */
export function modeOption(args: CommandArgs): 'min' | 'max' {
  const v = stringOption(args, 'mode') ?? 'min';
  if (v !== 'min' && v !== 'max') throw usage(`--mode must be "min" or "max", got "${v}"`);
  return v;
}

/** Writes `value` as pretty JSON plus a newline. */
export function printJson(io: CliIO, value: unknown): void {
  io.stdout(`${JSON.stringify(value, null, 2)}\n`);
}
