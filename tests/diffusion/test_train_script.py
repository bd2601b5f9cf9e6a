"""scripts/train_demo_model.py end to end at toy step counts: same seed, same bytes; a log that says how."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import torch

from diffusion.checkpoint import inspect_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_demo_model.py"
TOY = ["--vae-steps", "2", "--vae-full-steps", "1", "--vae-mixed-steps", "1", "--vae-batch", "2", "--images", "8",
       "--unet-steps", "2", "--batch", "4", "--log-every", "1"]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_demo_model", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_seed_same_file_and_a_training_log(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        script = _script()
        a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
        assert script.main(["--seed", "5", "--out", str(a), *TOY]) == 0
        assert script.main(["--seed", "5", "--out", str(b), *TOY]) == 0
    finally:
        torch.set_num_threads(threads)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    log = json.loads(a.with_suffix(".json").read_text())
    assert log["seed"] == 5 and log["command"].startswith("scripts/train_demo_model.py --seed 5")
    assert [p["step"] for p in log["unet_losses"]] == [1, 2]
    assert len(log["vae_losses"]) == 4 and log["wall_seconds"] > 0
    info = inspect_checkpoint(a)
    assert info["arch"] == "sd1" and info["dtype"] == "fp16"
    assert info["metadata"]["noodlebox.seed"] == "5"
