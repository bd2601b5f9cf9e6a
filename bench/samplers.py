"""Per-step time of every KSampler sampler relative to euler, on a random SD1.5 checkpoint.

Each sampler runs ``diffusion.ksampler.ksample`` (the KSampler node's path) at cfg 8 for
``--steps`` steps, after one untimed warm-up run of euler; a step's time is the run's
wall time over the steps. Model calls per step come from the denoiser's UNet-call
counter (each call batches the positive and negative passes), so the 2- and 3-evaluation
samplers (heun, dpm_2, dpmpp_sde, seeds_3, sa_solver_pece, ...) show up in both columns.
Prints one JSON object: ``{"config": ..., "samplers": {name: {"step_s", "relative", "unet_calls_per_step"}}}``.

Usage::

    python bench/samplers.py                          # `small` SD1.5, 256x256, 8 steps
    python bench/samplers.py --size tiny --res 64 --steps 3   # seconds: checks the script works

Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(size: str, res: int, steps: int, names: list[str] | None) -> dict[str, Any]:
    """Time every sampler (or ``names``) on a freshly written checkpoint of ``size``."""
    import torch

    import diffusion.denoiser as denoiser_module
    from diffusion.checkpoint import load_checkpoint
    from diffusion.ksampler import ksample
    from diffusion.sampling import SAMPLER_NAMES
    from diffusion.synthetic import write_checkpoint

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_checkpoint(Path(tmp) / "bench.safetensors", "sd15", size, 0, torch.float32)
        ckpt = load_checkpoint(path, precision="fp32")
    unet = ckpt.unet
    cond = [[torch.randn(1, 77, unet.model.config.cross_attention_dim, generator=torch.Generator().manual_seed(1)),
             {}]]
    uncond = [[torch.zeros_like(cond[0][0]), {}]]
    latent = {"samples": torch.zeros(1, 4, res // 8, res // 8)}
    calls: list[int] = []
    original_run = denoiser_module.Denoiser._run

    def counted_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original_run(self, *args, **kwargs)

    denoiser_module.Denoiser._run = counted_run  # type: ignore[method-assign]

    def one(name: str) -> tuple[float, float]:
        calls.clear()
        start = time.perf_counter()
        ksample(unet, 1, steps, 8.0, name, "karras", cond, uncond, latent)
        return (time.perf_counter() - start) / steps, len(calls) / steps

    try:
        one("euler")  # warm-up: allocations, lazy imports
        results = {name: one(name) for name in (names or SAMPLER_NAMES)}
    finally:
        denoiser_module.Denoiser._run = original_run  # type: ignore[method-assign]
    base = results.get("euler", one("euler"))[0]
    return {
        "config": {"size": size, "res": res, "steps": steps, "cfg": 8.0, "scheduler": "karras", "threads": 1},
        "samplers": {name: {"step_s": round(t, 5), "relative": round(t / base, 3), "unet_calls_per_step": round(c, 3)}
                     for name, (t, c) in results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", help="synthetic checkpoint size (tiny, small, ...)")
    parser.add_argument("--res", type=int, default=256, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps per run")
    parser.add_argument("--only", nargs="*", help="sampler names to time (default: all 42)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.size, args.res, args.steps, args.only), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
