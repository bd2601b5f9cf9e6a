"""The KSampler's live preview of a demo-model run (64x64, the default prompt, 20 steps of euler, cfg 5).

The demo model's VAE is not SD's, so SD1.5's fixed latent2rgb factors draw the wrong
colours; the palette fitted to the checkpoint's own VAE gives the decoded image's
dominant colours. With ``preview_method: taesd`` and a decoder in
``models/vae_approx/`` the preview comes from TAESD at 8x the latent size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from models_kit import place_checkpoint
from PIL import Image

from diffusion.train.shapes import dominant_colours, dominant_rgb
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.default_model import DEMO_CFG, DEMO_CHECKPOINT_PATH, DEMO_PROMPT, DEMO_RESOLUTION
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CKPT = DEMO_CHECKPOINT_PATH.name


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo-preview")
    place_checkpoint(root / "models" / "checkpoints", CKPT)
    return root


@pytest.fixture(scope="module")
def registry(base: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(base), precision="fp32"))


def txt2img(seed: int = 1) -> dict[str, Any]:
    """The default demo prompt: 64x64, 20 steps of euler, cfg 5, decoded and saved."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": DEMO_PROMPT, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": DEMO_RESOLUTION, "height": DEMO_RESOLUTION, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": seed, "steps": 20, "cfg": DEMO_CFG, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "preview", "images": ["8", 0]}},
    }


def run_with_previews(base: Path, registry: NodeRegistry, method: str | None,
                      latents: list[Any] | None = None) -> tuple[list[Image.Image], np.ndarray]:
    """(the KSampler's previews in order, the saved image); ``latents`` collects each step's denoised latent."""
    import diffusion.preview

    checked = validate_prompt(txt2img(), registry)
    assert checked.ok, (checked.error, checked.node_errors)
    previews: list[Image.Image] = []

    def sink(event: str, data: dict[str, Any]) -> None:
        if event == "preview":
            previews.append(data["preview"][1])

    extra = {} if method is None else {"preview_method": method}
    real = diffusion.preview.preview_tuple

    def keep(x0: Any, *args: Any) -> Any:
        if latents is not None:
            latents.append(x0.clone())
        return real(x0, *args)

    diffusion.preview.preview_tuple = keep  # type: ignore[assignment]  # nodes.previews looks it up per run
    try:
        result = Executor(registry).run(checked.prompt, "p", checked.outputs, extra, sink)
    finally:
        diffusion.preview.preview_tuple = real  # type: ignore[assignment]
    assert result.status == "success", result.error
    info = result.outputs["9"]["images"][0]
    image = np.asarray(Image.open(base / "output" / info["subfolder"] / info["filename"]).convert("RGB"))
    return previews, image


def _distance(preview: Image.Image, image: np.ndarray) -> float:
    """Mean RGB distance between a latent-size preview and the image averaged over 8x8 blocks."""
    size = DEMO_RESOLUTION // 8
    blocks = image.reshape(size, 8, size, 8, 3).astype(np.float64).mean(axis=(1, 3))
    return float(np.linalg.norm(np.asarray(preview.convert("RGB"), dtype=np.float64) - blocks, axis=-1).mean())


def test_last_preview_has_the_dominant_colours_of_the_image(base: Path, registry: NodeRegistry) -> None:
    import torch

    from diffusion.preview import latent_to_rgb

    captured: list[torch.Tensor] = []
    previews, image = run_with_previews(base, registry, None, captured)
    assert len(previews) == 20
    assert previews[-1].size == (DEMO_RESOLUTION // 8, DEMO_RESOLUTION // 8)
    assert dominant_colours(image) == ("red", "blue")  # what the demo model draws for this prompt and seed
    last = np.asarray(previews[-1].convert("RGB").resize((DEMO_RESOLUTION, DEMO_RESOLUTION), Image.NEAREST))
    assert dominant_colours(last, border=8) == ("red", "blue")
    foreground, background = dominant_rgb(last, border=8)
    image_foreground, image_background = dominant_rgb(image)
    assert foreground is not None and image_foreground is not None
    assert np.abs(background - image_background).max() < 60 and np.abs(foreground - image_foreground).max() < 80
    # SD1.5's fixed factors, which the preview used before, get neither colour and are much farther off
    fixed = latent_to_rgb(captured[-1], "sd1")
    assert dominant_colours(np.asarray(fixed.resize((DEMO_RESOLUTION, DEMO_RESOLUTION), Image.NEAREST)),
                            border=8) != ("red", "blue")
    assert _distance(previews[-1], image) < 0.5 * _distance(fixed, image)


def test_taesd_preview_decodes_at_full_size(base: Path, registry: NodeRegistry) -> None:
    from diffusion.taesd import write_taesd_decoder

    write_taesd_decoder(base / "models" / "vae_approx" / "taesd_decoder.safetensors", seed=3)
    try:
        previews, _ = run_with_previews(base, registry, "taesd")
    finally:
        (base / "models" / "vae_approx" / "taesd_decoder.safetensors").unlink()
    assert len(previews) == 20 and previews[-1].size == (DEMO_RESOLUTION, DEMO_RESOLUTION)
    fallback, _ = run_with_previews(base, registry, "taesd")  # no decoder file: latent2rgb, as ComfyUI
    assert fallback[-1].size == (DEMO_RESOLUTION // 8, DEMO_RESOLUTION // 8)
