"""CLIPVisionLoader and CLIPVisionEncode: layouts read by shape, ComfyUI's preprocessing, the output's fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import CheckpointError
from diffusion.control.clip_vision import CLIP_MEAN, CLIP_STD, load_clip_vision, preprocess
from diffusion.control.synthetic import write_clip_vision
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Ctx:
    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        """Nothing to report to."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_sd15_path: Path) -> Path:
    root = tmp_path_factory.mktemp("clip_vision")
    folder = root / "models" / "clip_vision"
    for arch in ("vit-l", "vit-h", "vit-g"):
        write_clip_vision(folder / f"{arch}.safetensors", arch=arch, seed=1)
    (folder / "checkpoint.safetensors").write_bytes(tiny_sd15_path.read_bytes())
    return root


@pytest.mark.parametrize("arch", ["vit-l", "vit-h", "vit-g"])
def test_each_layout_loads_by_shape_and_encodes(base: Path, arch: str) -> None:
    vision = load_clip_vision(base / "models" / "clip_vision" / f"{arch}.safetensors", precision="fp32")
    assert vision.image_size == 56 and vision.model.config.projection_dim == 32
    out = vision.model(pixel_values=torch.zeros(2, 3, 56, 56), output_hidden_states=True)
    projected = vision.model.visual_projection(vision.model.vision_model.post_layernorm(out.last_hidden_state[:, 0]))
    assert torch.allclose(out.image_embeds, projected, atol=1e-6)  # embeds = projection of the normed class token


def test_preprocess_matches_comfyui_rules() -> None:
    image = torch.rand(1, 56, 56, 3)
    same_size = preprocess(image, 56)
    expected = (torch.round(image.movedim(-1, 1) * 255) / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(same_size, expected, atol=1e-6)
    wide = torch.rand(2, 40, 80, 3)
    center, squashed = preprocess(wide, 56, crop=True), preprocess(wide, 56, crop=False)
    assert center.shape == squashed.shape == (2, 3, 56, 56) and not torch.allclose(center, squashed)


def test_nodes_load_once_and_encode(base: Path) -> None:
    registry = build_registry(Services(folders=Folders(base), precision="fp32"))
    (vision,) = registry["CLIPVisionLoader"].behaviour.execute(None, _Ctx(), {"clip_name": "vit-h.safetensors"})
    (again,) = registry["CLIPVisionLoader"].behaviour.execute(None, _Ctx(), {"clip_name": "vit-h.safetensors"})
    assert again is vision and registry.services.models.loads == 1
    (output,) = registry["CLIPVisionEncode"].behaviour.execute(
        None, _Ctx(), {"clip_vision": vision, "image": torch.rand(3, 64, 48, 3), "crop": "center"})
    assert output["image_embeds"].shape == (3, 32) and output.last_hidden_state.shape == (3, 17, 64)
    assert output.penultimate_hidden_states.shape == (3, 17, 64) and "image_embeds" in output
    with pytest.raises(CheckpointError, match="not a CLIP vision model"):
        registry["CLIPVisionLoader"].behaviour.execute(None, _Ctx(), {"clip_name": "checkpoint.safetensors"})


def test_style_model_appends_its_tokens(base: Path, tiny_sd15_path: Path) -> None:
    from diffusion.control.synthetic import write_style_model

    write_style_model(base / "models" / "style_models" / "style.safetensors", base=tiny_sd15_path, seed=2)
    registry = build_registry(Services(folders=Folders(base), precision="fp32"))
    (style,) = registry["StyleModelLoader"].behaviour.execute(None, _Ctx(), {"style_model_name": "style.safetensors"})
    (vision,) = registry["CLIPVisionLoader"].behaviour.execute(None, _Ctx(), {"clip_name": "vit-l.safetensors"})
    (encoded,) = registry["CLIPVisionEncode"].behaviour.execute(
        None, _Ctx(), {"clip_vision": vision, "image": torch.rand(1, 56, 56, 3), "crop": "none"})
    cond = [[torch.zeros(1, 77, 64), {"pooled_output": torch.zeros(1, 64)}]]

    def apply(strength: float, kind: str = "multiply") -> list:
        return registry["StyleModelApply"].behaviour.execute(None, _Ctx(), {
            "conditioning": cond, "style_model": style, "clip_vision_output": encoded, "strength": strength,
            "strength_type": kind})[0]

    one, two = apply(1.0), apply(2.0)
    assert one[0][0].shape == (1, 77 + 8, 64) and torch.equal(one[0][0][:, :77], cond[0][0])
    assert torch.allclose(two[0][0][:, 77:], 2 * one[0][0][:, 77:]) and one[0][0][:, 77:].abs().max() > 0
    assert torch.equal(apply(1.0, "attn_bias")[0][0], one[0][0])
    with pytest.raises(ValueError, match="attn_bias strength type is not supported"):
        apply(0.5, "attn_bias")
