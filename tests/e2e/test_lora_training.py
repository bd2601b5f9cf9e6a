"""TrainLoraNode on the demo model: 8 pictures of one shape pull the model's output toward them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from diffusion.train.shapes import COLOURS, ShapeSample, dominant_rgb, render
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.default_model import write_default_checkpoint
from nodes.folders import Folders
from nodes.registry import build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPT = "a red circle on a blue background"
TARGET = ("green", "yellow")


def _dataset(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i in range(8):
        centre = (24.0 + 2 * i, 40.0 - 2 * i)
        sample = ShapeSample("square", TARGET[0], TARGET[1], None, None, centre, 15.0, "")
        PILImage.fromarray(render(sample)).save(folder / f"{i}.png")


def _distance(path: Path) -> float:
    """Mean RGB distance of the picture's (foreground, background) to the target colours."""
    fg, bg = dominant_rgb(np.asarray(PILImage.open(path).convert("RGB")))
    fg = bg if fg is None else fg
    return float((np.linalg.norm(fg - COLOURS[TARGET[0]]) + np.linalg.norm(bg - COLOURS[TARGET[1]])) / 2)


def test_a_trained_lora_moves_the_output_toward_its_pictures(tmp_path: Path) -> None:
    write_default_checkpoint(tmp_path / "models" / "checkpoints" / "demo.safetensors")
    _dataset(tmp_path / "input" / "squares")
    registry = build_registry(Services(folders=Folders(tmp_path)))

    def sampler(model: list) -> dict:
        return {"model": model, "seed": 3, "steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}

    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "demo.safetensors"}},
        "2": {"class_type": "LoadImageSetFromFolderNode", "inputs": {"folder": "squares", "resize_method": "None"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "7": {"class_type": "TrainLoraNode", "inputs": {
            "model": ["1", 0], "latents": ["6", 0], "positive": ["3", 0], "batch_size": 4,
            "grad_accumulation_steps": 1, "steps": 80, "learning_rate": 0.003, "rank": 4, "optimizer": "AdamW",
            "loss_function": "MSE", "seed": 0, "training_dtype": "fp32", "lora_dtype": "fp32", "algorithm": "LoRA",
            "gradient_checkpointing": False, "existing_lora": "[None]"}},
        "8": {"class_type": "KSampler", "inputs": sampler(["1", 0])},
        "9": {"class_type": "KSampler", "inputs": sampler(["7", 0])},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "before"}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "after"}},
        "14": {"class_type": "SaveLoRANode", "inputs": {"lora": ["7", 1], "prefix": "loras/trained",
                                                        "steps": ["7", 3]}},
        "15": {"class_type": "LossGraphNode", "inputs": {"loss": ["7", 2], "filename_prefix": "loss_graph"}},
    }
    checked = validate_prompt(prompt, registry)
    assert checked.ok and not checked.node_errors, checked.node_errors
    result = Executor(registry).run(checked.prompt, "p", checked.outputs)
    assert result.status == "success", (result.error or {}).get("exception_message", result.error)

    before = _distance(tmp_path / "output" / "before_00001_.png")
    after = _distance(tmp_path / "output" / "after_00001_.png")
    print(f"colour distance to {TARGET}: before {before:.1f}, after {after:.1f}")
    assert after < 0.6 * before
    saved = tmp_path / "output" / "loras" / "trained_80_steps_00001_.safetensors"
    assert saved.is_file()
    assert list((tmp_path / "temp").glob("loss_graph_*.png"))

    # The saved file loads back (LoraModelLoader's input) as the same LoRA: train further from it.
    from diffusion.checkpoint import load_checkpoint
    from diffusion.train.lora import read_trained_lora

    unet = load_checkpoint(tmp_path / "models" / "checkpoints" / "demo.safetensors", precision="fp32").unet
    again = read_trained_lora(saved, unet)
    assert again.rank == 4 and len(again.factors) > 0
