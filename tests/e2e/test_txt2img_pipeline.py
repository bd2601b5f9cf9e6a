"""Whole workflows through the real validator, executor and nodes, on tiny random checkpoints.

Checkpoint -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode -> SaveImage
and its variants (img2img, KSamplerAdvanced, SDXL base + refiner, inpainting), at fp32 so
that reruns are bit-exact.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.synthetic import write_checkpoint
from graph.executor import Executor, RunResult
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

ARCHS = ("sd15", "sdxl", "sdxl-refiner", "sd15-inpaint")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    for arch in ARCHS:
        write_checkpoint(root / "models" / "checkpoints" / f"{arch}.safetensors", arch, "tiny", 3, torch.float32)
    return root


@pytest.fixture(scope="module")
def registry(base: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(base), precision="fp32"))


@pytest.fixture(scope="module")
def executor(registry: NodeRegistry) -> Executor:
    return Executor(registry)


def run(registry: NodeRegistry, executor: Executor, prompt: dict, extra_data: dict | None = None,
        events: list | None = None) -> RunResult:
    checked = validate_prompt(prompt, registry)
    assert checked.ok, (checked.error, checked.node_errors)
    sink = (lambda e, d: events.append((e, d))) if events is not None else None
    return executor.run(checked.prompt, "p", checked.outputs, extra_data=extra_data, sink=sink)


def txt2img(seed: int = 5, ckpt: str = "sd15.safetensors", steps: int = 3, size: int = 64) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "e2e", "images": ["8", 0]}},
    }


def saved_pixels(base: Path, result: RunResult, node: str = "9") -> np.ndarray:
    info = result.outputs[node]["images"][0]
    path = base / "output" / info["subfolder"] / info["filename"]
    return np.asarray(Image.open(path))


def test_txt2img_writes_png_reproducibly_and_seed_change_reruns_only_the_sampler_side(
        base: Path, registry: NodeRegistry, executor: Executor) -> None:
    first = run(registry, executor, txt2img(seed=5))
    assert first.status == "success", first.error
    pixels = saved_pixels(base, first)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 0

    changed = run(registry, executor, txt2img(seed=6))
    assert changed.status == "success"
    assert changed.executed == ["3", "8", "9"]  # loader and prompts come from the cache
    assert not np.array_equal(saved_pixels(base, changed), pixels)

    executor.clear_cache()
    again = run(registry, executor, txt2img(seed=5))
    assert np.array_equal(saved_pixels(base, again), pixels)  # same seed, fresh run: the same bits


def test_img2img_and_ksampler_advanced_windows(base: Path, registry: NodeRegistry, executor: Executor) -> None:
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[:, None, None] * 4, (1, 64, 3))).save(
        base / "input" / "ramp.png" if (base / "input").is_dir() else _mkdir(base / "input") / "ramp.png")
    prompt = txt2img()
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "ramp.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"].update(latent_image=["11", 0], denoise=0.5)
    result = run(registry, executor, prompt)
    assert result.status == "success", result.error

    # A base run that stops at step 2 with its noise left in, then a refiner-style run from step 2.
    adv = txt2img()
    common = {"model": ["4", 0], "noise_seed": 5, "steps": 4, "cfg": 7.0, "sampler_name": "euler",
              "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0]}
    adv["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "enable", "latent_image": ["5", 0], "start_at_step": 0, "end_at_step": 2,
        "return_with_leftover_noise": "enable"}}
    adv["12"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "disable", "latent_image": ["3", 0], "start_at_step": 2, "end_at_step": 10000,
        "return_with_leftover_noise": "disable"}}
    adv["8"]["inputs"]["samples"] = ["12", 0]
    events: list = []
    split = run(registry, executor, adv, events=events)
    assert split.status == "success", split.error
    steps = [(d["node"], d["value"], d["max"]) for e, d in events if e == "progress"]
    assert steps == [("3", 1, 2), ("3", 2, 2), ("12", 1, 2), ("12", 2, 2)]
    whole = run(registry, executor, txt2img(steps=4))
    # Two halves of one schedule give the whole run's image (up to float noise of the split).
    diff = np.abs(saved_pixels(base, split).astype(int) - saved_pixels(base, whole).astype(int))
    assert diff.max() <= 2


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_sdxl_base_then_refiner(base: Path, registry: NodeRegistry, executor: Executor) -> None:
    prompt = txt2img(ckpt="sdxl.safetensors")
    prompt["6"] = {"class_type": "CLIPTextEncodeSDXL", "inputs": {
        "clip": ["4", 1], "width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64,
        "target_height": 64, "text_g": "a red fox", "text_l": "a red fox"}}
    prompt["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl-refiner.safetensors"}}
    prompt["21"] = {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
        "ascore": 6.0, "width": 64, "height": 64, "text": "a red fox", "clip": ["20", 1]}}
    prompt["22"] = {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
        "ascore": 2.5, "width": 64, "height": 64, "text": "blurry", "clip": ["20", 1]}}
    prompt["23"] = {"class_type": "KSampler", "inputs": {
        "model": ["20", 0], "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
        "positive": ["21", 0], "negative": ["22", 0], "latent_image": ["3", 0], "denoise": 0.3}}
    prompt["8"]["inputs"] = {"samples": ["23", 0], "vae": ["20", 2]}
    result = run(registry, executor, prompt)
    assert result.status == "success", result.error
    assert saved_pixels(base, result).shape == (64, 64, 3)


def test_inpaint_model_with_noise_mask(base: Path, registry: NodeRegistry, executor: Executor) -> None:
    prompt = txt2img(ckpt="sd15-inpaint.safetensors")
    prompt["13"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}}
    prompt["14"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["5", 0], "mask": ["13", 0]}}
    prompt["3"]["inputs"]["latent_image"] = ["14", 0]
    result = run(registry, executor, prompt)
    assert result.status == "success", result.error


def test_previews_follow_preview_method(registry: NodeRegistry, executor: Executor) -> None:
    events: list = []
    executor.clear_cache()
    run(registry, executor, txt2img(seed=11), events=events)
    previews = [d for e, d in events if e == "preview"]
    assert len(previews) == 3 and all(d["node_id"] == "3" for d in previews)
    kind, image, size = previews[0]["preview"]
    assert kind == "JPEG" and image.size == (8, 8) and size is None

    events.clear()
    run(registry, executor, txt2img(seed=12), extra_data={"preview_method": "none"}, events=events)
    assert [e for e, _ in events if e == "preview"] == []
    assert len([e for e, _ in events if e == "progress"]) == 3


def test_interrupt_during_sampling(registry: NodeRegistry, executor: Executor) -> None:
    events: list = []

    def sink(event: str, data: dict) -> None:
        events.append((event, data))
        if event == "progress" and data["value"] == 2:
            threading.Thread(target=executor.interrupt).start()

    checked = validate_prompt(txt2img(seed=21, steps=30), registry)
    result = executor.run(checked.prompt, "p", checked.outputs, sink=sink)
    assert result.status == "interrupted"
    stopped = [d for e, d in events if e == "execution_interrupted"]
    assert stopped and stopped[0]["node_id"] == "3"
    assert len([e for e, _ in events if e == "progress"]) < 30
