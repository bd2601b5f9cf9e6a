"""One ControlNet against none: sampling time and peak RSS on a random SD1.5 checkpoint.

Each mode runs in its own subprocess (so each peak RSS is its own): the txt2img prompt,
with ``--mode controlnet`` a ControlNetApplyAdvanced on both sides, through the real
registry and :class:`graph.executor.Executor`. The prompt runs once to load the models,
then again with another seed, timed (only KSampler and what follows re-run). The parent
prints one JSON object with both modes and the time ratio (issue 13's target: at most 1.6).

Usage::

    python bench/controlnet.py                      # `small` SD1.5 (full-width first level), 256x256, 4 steps
    python bench/controlnet.py --size tiny --res 64 --steps 2   # seconds: checks the script works

Files are written under a temporary folder with ``make-checkpoint``/``make-model``'s writers.
Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("none", "controlnet")


def prompt(mode: str, res: int, steps: int, seed: int) -> dict[str, Any]:
    """txt2img at ``res`` pixels, with one ControlNet on both conditionings when ``mode`` is ``controlnet``."""
    graph: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "bench.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": res, "height": res, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass bottle on a beach", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["8", 0]}},
    }
    if mode == "controlnet":
        graph["10"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "bench-cn.safetensors"}}
        graph["11"] = {"class_type": "EmptyImage", "inputs": {"width": res, "height": res, "batch_size": 1,
                                                              "color": 0x808080}}
        graph["12"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "control_net": ["10", 0], "image": ["11", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
        graph["3"]["inputs"].update(positive=["12", 0], negative=["12", 1])
    return graph


def child(base: Path, mode: str, res: int, steps: int) -> dict[str, Any]:
    """Run the prompt twice in this process; the second run's time and this process's peak RSS."""
    import torch

    from graph.executor import Executor
    from graph.validate import validate_prompt
    from nodes.api import Services
    from nodes.folders import Folders
    from nodes.registry import build_registry

    torch.set_num_threads(1)  # the machine is shared: one thread gives steadier ratios
    registry = build_registry(Services(folders=Folders(base), precision="fp32"))
    executor = Executor(registry)
    times = []
    for seed in (1, 2):
        checked = validate_prompt(prompt(mode, res, steps, seed), registry)
        if not checked.ok:
            raise SystemExit(f"invalid prompt: {checked.node_errors}")
        start = time.perf_counter()
        result = executor.run(checked.prompt, f"p{seed}", checked.outputs)
        times.append(time.perf_counter() - start)
        if result.status != "success":
            raise SystemExit(f"run failed: {result.error}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"mode": mode, "first_run_s": round(times[0], 3), "seed_change_s": round(times[1], 3),
            "peak_rss_gib": round(peak / 2**30, 3)}


def write_files(base: Path, size: str) -> None:
    """The checkpoint and a ControlNet for it, under ``base/models``."""
    from diffusion.control.synthetic import write_controlnet
    from diffusion.synthetic import write_checkpoint

    ckpt = write_checkpoint(base / "models" / "checkpoints" / "bench.safetensors", "sd15", size, 0)
    write_controlnet(base / "models" / "controlnet" / "bench-cn.safetensors", base=ckpt, seed=1)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; as parent, run each mode in a subprocess and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "small"), default="small")
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", nargs=2, metavar=("BASE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1], args.res, args.steps)))
        return 0
    with tempfile.TemporaryDirectory(prefix="noodlebox-bench-cn-") as tmp:
        write_files(Path(tmp), args.size)
        results = {}
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--child", tmp, mode, "--res", str(args.res),
                                  "--steps", str(args.steps)], check=True, capture_output=True, text=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = results["controlnet"]["seed_change_s"] / max(results["none"]["seed_change_s"], 1e-9)
    print(json.dumps({"size": args.size, "res": args.res, "steps": args.steps, **results,
                      "time_ratio": round(ratio, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
