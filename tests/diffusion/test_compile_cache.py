"""``--compile``: what ``auto`` picks and why, and compiled kernels read back from the disk cache.

The cache test runs the same tiny txt2img graph in three fresh processes: eager, compiled
with an empty cache, compiled again with that cache. Inductor's own FX-graph cache counters
say whether the third process compiled anything; its image must match the eager one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion.precision import precision_reason, resolve_precision
from diffusion.unet_patches.compute import compile_choice

ROOT = Path(__file__).resolve().parents[2]
AMX = "flags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n"
ZEN3 = "flags\t\t: fpu sse2 avx2 fma\n"


def test_auto_compiles_on_cuda_only_and_says_why() -> None:
    assert compile_choice("off", "cuda") == (False, "--compile off")
    assert compile_choice("on", "cpu")[0] is True
    assert compile_choice("auto", "cuda")[0] is True
    enabled, why = compile_choice("auto", "cpu")
    assert not enabled and "cpu" in why
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        compile_choice("fast", "cpu")


def test_precision_reasons_name_the_cpu_feature_they_rest_on() -> None:
    assert resolve_precision("auto", "cpu", AMX).name == "bf16"
    assert "bf16 units" in precision_reason("auto", "cpu", AMX)
    assert resolve_precision("auto", "cpu", ZEN3).name == "fp32"
    assert "no bf16 units" in precision_reason("auto", "cpu", ZEN3)
    assert precision_reason("fp16", "cpu") == "--precision fp16"


def _pixels(folder: Path, prefix: str) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    (path,) = folder.glob(f"{prefix}_*.png")
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float64))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0**2 / mse)).item()


SCRIPT = r"""
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import build_registry
import torch._dynamo.utils as dynamo_utils

base, mode, prefix = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
registry = build_registry(Services(folders=Folders(base), precision="fp32", compile=mode))
prompt = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0,
          "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0],
          "latent_image": ["4", 0], "denoise": 1.0}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
}
checked = validate_prompt(prompt, registry)
start = time.perf_counter()
result = Executor(registry, cache="none").run(checked.prompt, "p", checked.outputs)
elapsed = time.perf_counter() - start
assert result.status == "success", result.error
counters = dict(dynamo_utils.counters["inductor"])
print(json.dumps({"seconds": elapsed, "hits": counters.get("fxgraph_cache_hit", 0),
                  "misses": counters.get("fxgraph_cache_miss", 0),
                  "runtime": registry.services.runtime_choices()}))
"""


@pytest.mark.slow
def test_a_fresh_process_reads_compiled_kernels_from_the_cache(tiny_sd15_path: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "tiny.safetensors").symlink_to(tiny_sd15_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)

    def run(mode: str, prefix: str) -> dict:
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(base), mode, prefix],
                              env=env, capture_output=True, text=True, timeout=500, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    eager = run("off", "eager")
    assert eager["misses"] == 0 and eager["runtime"]["compile"]["enabled"] is False
    cold = run("on", "cold")
    cache = base / "user" / "cache" / "torch-compile"
    assert cold["misses"] > 0 and cold["runtime"]["compile"] == {
        "setting": "on", "enabled": True, "why": "--compile on", "cache_dir": str(cache)}
    assert any(cache.rglob("*")), "nothing was written to the compile cache"
    warm = run("on", "warm")
    assert warm["misses"] == 0 and warm["hits"] >= cold["misses"], (cold, warm)
    images = {name: _pixels(base / "output", name) for name in ("eager", "cold", "warm")}
    assert _psnr(images["eager"], images["cold"]) >= 40 and _psnr(images["eager"], images["warm"]) >= 40
    print(f"\ncompiled run, cold cache {cold['seconds']:.1f} s, warm cache {warm['seconds']:.1f} s")
