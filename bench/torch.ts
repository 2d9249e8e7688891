/**
 * The bench's optional PyTorch comparison: runs bench/torch_bench.py (torch.save, torch.load and a
 * load-add-divide average of the same tensors) with a python that has torch and numpy.
 *
 * The python tried is `/usr/bin/python3` (where Debian's python3-torch installs), then `python3` on PATH.
 * `CKPT_BENCH_PYTHON=/path/to/python` tries only that one; `CKPT_BENCH_PYTHON=/nonexistent` simulates a
 * machine without torch.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Seconds, best of `reps` (after one warm-up each), as printed by bench/torch_bench.py. */
export interface TorchTimes {
  readonly torch: string;
  readonly threads: number;
  readonly reps: number;
  readonly stateBytes: number;
  readonly averageBytes: number;
  /** torch.save(dict, path). */
  readonly save: number;
  /** torch.save into an open file, flush, os.fsync. */
  readonly save_fsync: number;
  /** torch.load(path). */
  readonly load: number;
  /** torch.load each .pt, add in float32, divide, torch.save the result. */
  readonly average: number;
  /** torch.save / torch.load of the many-small-tensors state (when the job names it). */
  readonly small_save?: number;
  readonly small_load?: number;
  readonly smallBytes?: number;
  /** The python that ran it. */
  readonly python: string;
}

export interface TorchJob {
  /** One of our safetensors files: the state saved and loaded. */
  readonly state: string;
  /** Our safetensors files of the checkpoints to average. */
  readonly average: readonly string[];
  /** A safetensors file of many small tensors, saved and loaded too. */
  readonly small?: string;
  /** Scratch directory for the .pt files. */
  readonly dir: string;
  readonly reps: number;
}

/** bench/torch_bench.py in the source tree; this file runs compiled from .build/bench/ (tsconfig.json's outDir). */
function script(): string {
  for (const rel of ['./torch_bench.py', '../../bench/torch_bench.py']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error('bench/torch_bench.py not found next to bench/torch.ts or from .build/bench/');
}

/** The first candidate python that imports torch and numpy, or why none does. */
function findPython(): { python: string } | { reason: string } {
  const env = process.env['CKPT_BENCH_PYTHON'];
  const candidates = env !== undefined && env !== '' ? [env] : ['/usr/bin/python3', 'python3'];
  const failures: string[] = [];
  for (const python of candidates) {
    const probe = spawnSync(python, ['-c', 'import torch, numpy'], { encoding: 'utf8', timeout: 120_000 });
    if (probe.status === 0) return { python };
    const why = probe.error !== undefined ? probe.error.message : (probe.stderr.trim().split('\n').pop() ?? `exit ${probe.status}`);
    failures.push(`${python}: ${why}`);
  }
  return { reason: `no python with torch and numpy (${failures.join('; ')})` };
}

/** Times torch on `job`'s files; `{ reason }` when no python with torch is found. Throws if the script fails. */
export async function timeTorch(job: TorchJob): Promise<TorchTimes | { reason: string }> {
  const found = findPython();
  if ('reason' in found) return found;
  const run = spawnSync(found.python, [script()], { input: JSON.stringify(job), encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (run.error !== undefined || run.status !== 0) {
    throw new Error(`bench/torch_bench.py failed (${run.error?.message ?? `exit ${run.status}`}): ${run.stderr}`);
  }
  const times = JSON.parse(run.stdout) as Omit<TorchTimes, 'python'>;
  return { ...times, python: found.python };
}
