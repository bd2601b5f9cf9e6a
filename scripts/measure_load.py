"""Checkpoint load time, the memory-mapped reader against positioned reads (or an older commit), in fresh processes.

    .venv/bin/python scripts/measure_load.py [--size small] [--rounds 2] [CHECKPOINT]
    .venv/bin/python scripts/measure_load.py --size full --against e32e732   # issue 18's "before"

Writes a seeded random SD1.5 checkpoint of ``--size`` when none is given, then alternates
fresh processes (imports are timed apart from the load): ``mmap`` is the loader as it is,
``read`` the same loader with mapping turned off (the positioned-read path it used
before). With ``--against COMMIT`` the second contender is instead that commit's own loader,
run from a git worktree of it (made once under the temp folder) with this venv. Prints one
JSON object with the times and their ratio (best of the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
import os
import torch
torch.set_num_threads(int(os.environ.get("LOAD_THREADS", "1")))
import diffusion.checkpoint as checkpoint
if sys.argv[2] == "read":
    import mmap
    class _NoMap:
        ACCESS_COPY = mmap.ACCESS_COPY
        def mmap(self, *args, **kwargs):
            raise OSError("mapping turned off")
    checkpoint.mmap = _NoMap()
start = time.perf_counter()
checkpoint.load_checkpoint(sys.argv[1], precision="fp32")
print(json.dumps({"load_s": time.perf_counter() - start}))
"""


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path)
    parser.add_argument("--size", default="small", choices=("tiny", "small", "full"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child (default 1)")
    parser.add_argument("--against", metavar="COMMIT", help="compare with this commit's loader instead of 'read'")
    args = parser.parse_args()
    path = args.checkpoint
    if path is None:
        import torch

        from diffusion.synthetic import write_checkpoint

        path = Path(tempfile.gettempdir()) / f"noodlebox-load-{args.size}.safetensors"
        if not path.is_file():
            write_checkpoint(path, "sd15", args.size, 0, torch.float32)
    path.read_bytes()  # into the page cache, as the issue measured it
    other = "read" if args.against is None else args.against
    where = {"mmap": ROOT, other: ROOT if args.against is None else _worktree(args.against)}
    times: dict[str, list[float]] = {"mmap": [], other: []}
    for _ in range(args.rounds):
        for mode in (other, "mmap"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), "read" if mode == "read" else "mmap"],
                                 cwd=where[mode], check=True, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(where[mode]),
                                      "LOAD_THREADS": str(args.threads)}).stdout
            times[mode].append(round(json.loads(out.splitlines()[-1])["load_s"], 3))
    best = {mode: min(values) for mode, values in times.items()}
    print(json.dumps({"file": str(path), "bytes": path.stat().st_size, "load_s": times,
                      f"ratio_mmap_to_{'read' if args.against is None else 'commit'}":
                          round(best["mmap"] / best[other], 3)}))


def _worktree(commit: str) -> Path:
    """A git worktree of ``commit`` under the temp folder (made once)."""
    target = Path(tempfile.gettempdir()) / f"noodlebox-worktree-{commit}"
    if not target.is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(target), commit], cwd=ROOT, check=True,
                       capture_output=True)
    return target


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
