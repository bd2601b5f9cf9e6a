"""Checkpoint load time, the memory-mapped reader against positioned reads, in fresh processes.

    .venv/bin/python scripts/measure_load.py [--size small] [--rounds 2] [CHECKPOINT]

Writes a seeded random SD1.5 checkpoint of ``--size`` when none is given, then alternates
fresh processes (imports are timed apart from the load): ``mmap`` is the loader as it is,
``read`` the same loader with mapping turned off (the positioned-read path it used
before). Prints one JSON object with the times and their ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
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
    args = parser.parse_args()
    path = args.checkpoint
    if path is None:
        import torch

        from diffusion.synthetic import write_checkpoint

        path = Path(tempfile.gettempdir()) / f"noodlebox-load-{args.size}.safetensors"
        if not path.is_file():
            write_checkpoint(path, "sd15", args.size, 0, torch.float32)
    path.read_bytes()  # into the page cache, as the issue measured it
    times: dict[str, list[float]] = {"mmap": [], "read": []}
    for _ in range(args.rounds):
        for mode in ("read", "mmap"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout
            times[mode].append(round(json.loads(out.splitlines()[-1])["load_s"], 3))
    best = {mode: min(values) for mode, values in times.items()}
    print(json.dumps({"file": str(path), "bytes": path.stat().st_size, "load_s": times,
                      "ratio_mmap_to_read": round(best["mmap"] / best["read"], 3)}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
