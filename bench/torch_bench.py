"""Times PyTorch on the bench's own tensors, for the "torch" rows of BENCHMARKS.md (see bench/torch.ts).

Job (JSON, as argv[1] or on stdin):
  {"state": "<one of our model.safetensors>", "average": ["<8 of our safetensors files>"],
   "small": "<a safetensors file of many small tensors>" (optional),
   "dir": "<scratch directory, created if missing, emptied of our files at the end>", "reps": 3}
Prints one JSON object, in seconds (best of `reps` after one unmeasured warm-up each):
  save       torch.save(dict of the state's tensors, path)
  save_fsync the same plus flush + os.fsync of the file
  load       torch.load(path)
  average    torch.load each of the .pt copies of `average`, acc[k] += t[k] in float32, acc[k] /= n,
             torch.save(acc, out)
  small_save, small_load   torch.save / torch.load of the small file's tensors (when "small" is given)
plus threads (torch.get_num_threads(), left at torch's default), torch (version) and the byte counts.

Our files are read with numpy only (no safetensors package): an 8-byte little-endian header length, a
JSON header {name: {dtype, shape, data_offsets: [begin, end]}} with an optional "__metadata__", then the
data; offsets count from the first byte after the header. Each tensor is read into its own array so every
torch tensor has its own storage (views of one shared buffer would make torch.save write one storage).
"""
import json
import os
import struct
import sys
import time

import numpy as np
import torch

# safetensors dtype -> (numpy dtype of the bytes, torch dtype to view them as, or None = numpy's own).
# torch 1.13 has no unsigned 16/32/64-bit or float8 types: those keep their bytes under the signed type
# of the same width (the timings only move bytes).
DTYPES = {
    "F64": (np.float64, None),
    "F32": (np.float32, None),
    "F16": (np.float16, None),
    "BF16": (np.int16, torch.bfloat16),
    "I64": (np.int64, None),
    "I32": (np.int32, None),
    "I16": (np.int16, None),
    "I8": (np.int8, None),
    "U8": (np.uint8, None),
    "BOOL": (np.bool_, None),
    "U16": (np.int16, None),
    "U32": (np.int32, None),
    "U64": (np.int64, None),
    "F8_E4M3": (np.uint8, None),
    "F8_E5M2": (np.uint8, None),
}


def read_safetensors(path):
    """{name: torch tensor} of one of our safetensors files, each tensor on its own storage."""
    tensors = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            np_dtype, torch_dtype = DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            raw = np.empty(end - begin, dtype=np.uint8)
            f.seek(base + begin)
            if f.readinto(raw) != end - begin:
                raise ValueError(f"{path}: short read of {name}")
            t = torch.from_numpy(raw.view(np_dtype).reshape(info["shape"]))
            tensors[name] = t.view(torch_dtype) if torch_dtype is not None else t
    return tensors


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors.values())


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def best_time(fn, reps, between=None):
    """Best of `reps` timed runs of fn after one unmeasured warm-up; `between` runs after each, untimed."""
    best = float("inf")
    for i in range(reps + 1):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        if i > 0:
            best = min(best, dt)
        if between is not None:
            between()
    return best


def save_fsync(obj, path):
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def main():
    job = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    reps = int(job.get("reps", 3))
    work = job["dir"]
    os.makedirs(work, exist_ok=True)
    made = []

    def scratch(name):
        p = os.path.join(work, name)
        made.append(p)
        return p

    try:
        state = read_safetensors(job["state"])
        pt = scratch("state.pt")
        save = best_time(lambda: torch.save(state, pt), reps, lambda: remove(pt))
        fsync = best_time(lambda: save_fsync(state, pt), reps, lambda: remove(pt))
        torch.save(state, pt)
        state_bytes = nbytes(state)
        del state
        load = best_time(lambda: torch.load(pt), reps)
        remove(pt)

        # Untimed setup: each checkpoint as a .pt, as a torch user's run would have them.
        pts = []
        avg_bytes = 0
        for i, f in enumerate(job["average"]):
            ts = read_safetensors(f)
            avg_bytes += nbytes(ts)
            p = scratch(f"avg-{i}.pt")
            torch.save(ts, p)
            pts.append(p)
            del ts
        out = scratch("avg-out.pt")

        def average():
            acc = torch.load(pts[0])
            for p in pts[1:]:
                t = torch.load(p)
                for k, v in t.items():
                    acc[k] += v
                del t
            for v in acc.values():
                v /= len(pts)
            torch.save(acc, out)

        avg = best_time(average, reps, lambda: remove(out))

        small = {}
        if job.get("small"):
            tensors = read_safetensors(job["small"])
            sp = scratch("small.pt")
            small["small_save"] = best_time(lambda: torch.save(tensors, sp), reps, lambda: remove(sp))
            torch.save(tensors, sp)
            small["small_load"] = best_time(lambda: torch.load(sp), reps)
            small["smallBytes"] = nbytes(tensors)
    finally:
        for p in made:
            remove(p)

    json.dump(
        {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "reps": reps,
            "stateBytes": state_bytes,
            "averageBytes": avg_bytes,
            "save": save,
            "save_fsync": fsync,
            "load": load,
            "average": avg,
            **small,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
