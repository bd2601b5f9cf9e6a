"""VAELoader's extra choices, as ComfyUI's: TAESD pairs from ``models/vae_approx/`` and ``pixel_space``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffusion.taesd import write_taesd_decoder, write_taesd_encoder
from graph.executor import Executor, RunResult
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.object_info import node_info
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def registry_at(base: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(base), precision="fp32"))


def choices(registry: NodeRegistry) -> list[str]:
    return node_info(registry["VAELoader"])["input"]["required"]["vae_name"][0]


def test_taesd_is_offered_only_with_both_files(tmp_path: Path) -> None:
    approx = tmp_path / "models" / "vae_approx"
    registry = registry_at(tmp_path)
    assert choices(registry) == ["pixel_space"]
    write_taesd_decoder(approx / "taesd_decoder.safetensors")
    write_taesd_decoder(approx / "taesdxl_decoder.pth")
    assert choices(registry) == ["pixel_space"]  # a decoder alone is only a previewer
    write_taesd_encoder(approx / "taesd_encoder.safetensors")
    assert choices(registry) == ["taesd", "pixel_space"]


def run(registry: NodeRegistry, prompt: dict[str, Any]) -> RunResult:
    checked = validate_prompt(prompt, registry)
    assert checked.ok, (checked.error, checked.node_errors)
    return Executor(registry, cache="none").run(checked.prompt, "p", checked.outputs)


def saved(base: Path, result: RunResult, node: str = "9") -> list[np.ndarray]:
    return [np.asarray(Image.open(base / "output" / i["subfolder"] / i["filename"]))
            for i in result.outputs[node]["images"]]


def test_taesd_vae_decodes_and_encodes_at_8x(tmp_path: Path) -> None:
    approx = tmp_path / "models" / "vae_approx"
    write_taesd_decoder(approx / "taesd_decoder.safetensors", seed=1)
    write_taesd_encoder(approx / "taesd_encoder.safetensors", seed=2)
    registry = registry_at(tmp_path)
    result = run(registry, {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 40, "height": 24, "batch_size": 2}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "VAEEncode", "inputs": {"pixels": ["3", 0], "vae": ["1", 0]}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "t"}},
    })
    assert result.status == "success", result.error
    assert [image.shape for image in saved(tmp_path, result)] == [(24, 40, 3)] * 2


def test_pixel_space_vae_is_the_identity(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "noise.png")
    registry = registry_at(tmp_path)
    result = run(registry, {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "noise.png"}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "p"}},
    })
    assert result.status == "success", result.error
    (image,) = saved(tmp_path, result)
    assert np.abs(image.astype(int) - pixels).max() <= 1


def test_taesd_is_refused_at_validation_when_not_installed(tmp_path: Path) -> None:
    checked = validate_prompt({"1": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}},
                               "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
                              registry_at(tmp_path))
    assert not checked.ok and "taesd" in str(checked.node_errors)


def test_listing_the_choices_does_not_import_torch(tmp_path: Path) -> None:
    """/object_info stays cheap: VAELoader's names are spelled out in nodes.previews, and match diffusion's."""
    import subprocess
    import sys

    from diffusion.taesd import TINY_VAES
    from nodes.previews import TAESD_NAMES

    assert set(TAESD_NAMES) == set(TINY_VAES) and all(TINY_VAES[n][0] == n for n in TAESD_NAMES)
    code = ("import sys; from nodes.folders import Folders; from nodes.previews import vae_loader_names; "
            f"print(vae_loader_names(Folders({str(tmp_path)!r}))); assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "['pixel_space']"
