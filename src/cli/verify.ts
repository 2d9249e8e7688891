import { verify } from '../checkpoint/api.js';
import { listRun } from '../checkpoint/manager.js';
import { childKey } from '../checkpoint/location.js';
import { type CkptError, ioError, isCkptError } from '../errors.js';
import { decodeSafetensors } from '../format/safetensors.js';
import type { Backend } from '../storage/backend.js';
import { type Command, printJson, threadsOption } from './command.js';
import { resolveTarget } from './target.js';

interface ItemReport {
  readonly item: string;
  readonly step?: number;
  readonly valid: boolean;
  readonly problems: readonly { readonly code: string; readonly message: string; readonly path?: string }[];
}

function report(item: string, problems: readonly CkptError[], step?: number): ItemReport {
  return {
    item,
    ...(step === undefined ? {} : { step }),
    valid: problems.length === 0,
    problems: problems.map((e) => ({ code: e.code, message: e.message, ...(e.path === undefined ? {} : { path: e.path }) })),
  };
}

/** Every problem of the checkpoint at `key` (`verify`), read on `threads` worker threads (undefined: the default). */
async function verifyCheckpointAt(backend: Backend, key: string, threads: number | undefined): Promise<readonly CkptError[]> {
  return (await verify({ backend, key }, threads === undefined ? {} : { threads })).problems;
}

async function verifyFile(backend: Backend, key: string): Promise<CkptError[]> {
  const where = backend.describe(key);
  try {
    decodeSafetensors(await backend.read(key), where);
    return [];
  } catch (e) {
    return [isCkptError(e) ? e : ioError(e, 'reading', where)];
  }
}

/** `ckpt verify PATH`: full integrity check of a run, a checkpoint or a safetensors file. */
export const verifyCommand: Command = {
  name: 'verify',
  summary: 'check a run, checkpoint or .safetensors file completely (exit 1 if anything is invalid)',
  help: `Usage: ckpt verify PATH [--threads N] [--json]

PATH is a run directory (every checkpoint in it is verified), a checkpoint directory, or a .safetensors
file. A checkpoint is valid when its manifest is valid, every file it lists is present with the listed
size and checksum, and every tensor file is well-formed. Each problem is listed with the file it concerns.

Exit status: 0 all valid, 1 something is invalid or corrupt, 2 usage error.

Options:
  --threads N  worker threads that read and hash tensor files of 32 MiB or more (0: none; default: one
               per core, at most 4, for checkpoints of 256 MiB or more)
  --json       machine-readable output: {"valid":bool,"items":[{"item","step","valid","problems":[…]}]}
`,
  options: { json: { type: 'boolean' }, threads: { type: 'string' } },
  positionals: 1,
  async run(args, io) {
    const path = args.positionals[0] as string;
    const threads = threadsOption(args);
    const target = await resolveTarget(path);
    const items: ItemReport[] = [];
    if (target.kind === 'file') items.push(report(path, await verifyFile(target.backend, target.key)));
    else if (target.kind === 'checkpoint') items.push(report(path, await verifyCheckpointAt(target.backend, target.key, threads)));
    else {
      const { valid, invalid } = await listRun(target.backend, target.key);
      const all = [...valid.map((c) => ({ step: c.step, name: c.name })), ...invalid.map((x) => ({ step: x.step, name: x.name }))];
      all.sort((a, b) => a.step - b.step);
      for (const c of all) {
        items.push(report(c.name, await verifyCheckpointAt(target.backend, childKey(target.key, c.name), threads), c.step));
      }
    }
    const ok = items.every((i) => i.valid);
    if (args.values.json === true) printJson(io, { path, valid: ok, items });
    else {
      if (items.length === 0) io.stdout(`${path}: no checkpoints to verify\n`);
      for (const i of items) {
        io.stdout(`${i.valid ? 'OK     ' : 'INVALID'} ${i.item}\n`);
        for (const p of i.problems) io.stdout(`  ${p.code}: ${p.message}\n`);
      }
      const bad = items.filter((i) => !i.valid).length;
      io.stdout(ok ? `all ${items.length} valid\n` : `${bad} of ${items.length} invalid\n`);
    }
    return ok ? 0 : 1;
  },
};
