"""Mask editing and alpha compositing nodes on tiny tensors with known answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.mask_edit import (
    CropMask,
    FeatherMask,
    GrowMask,
    ImageColorToMask,
    JoinImageWithAlpha,
    MaskComposite,
    PorterDuffImageComposite,
    SplitImageWithAlpha,
    ThresholdMask,
)
from nodes.registry import build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dot(size: int = 5) -> torch.Tensor:
    """A ``[1, size, size]`` mask with only its centre pixel set."""
    mask = torch.zeros(1, size, size)
    mask[0, size // 2, size // 2] = 1.0
    return mask


def test_grow_a_one_pixel_mask() -> None:
    cross = GrowMask(dot(), 1, True)[0]
    assert cross.sum() == 5 and cross[1, 2] == cross[2, 1] == 1 and cross[1, 1] == 0  # tapered: corners cut
    square = GrowMask(dot(), 1, False)[0]
    assert square.sum() == 9 and square[1:4, 1:4].min() == 1
    diamond = GrowMask(dot(7), 2, True)[0]
    assert diamond.sum() == 13 and diamond[1, 3] == 1 and diamond[2, 2] == 1 and diamond[1, 2] == 0
    assert GrowMask(dot(), -1, True).sum() == 0
    assert torch.equal(GrowMask(square[None], -1, False), dot())
    assert torch.equal(GrowMask(dot(), 0, True), dot())


def test_grow_keeps_grey_levels_and_edges() -> None:
    mask = torch.zeros(1, 3, 4)
    mask[0, 0, 0] = 0.4
    grown = GrowMask(mask, 1, True)[0]
    assert grown[0, 1] == pytest.approx(0.4) and grown[1, 0] == pytest.approx(0.4) and grown[1, 1] == 0
    full = torch.ones(1, 3, 3)
    assert torch.equal(GrowMask(full, -1, True), full)  # the border is not eaten from outside


def test_feather_a_one_pixel_mask() -> None:
    assert FeatherMask(dot(), 3, 0, 0, 0)[0, 2, 2] == pytest.approx(1.0)  # column 2 of a 3-wide fade: 3/3
    assert FeatherMask(dot(), 4, 0, 0, 0)[0, 2, 2] == pytest.approx(0.75)
    assert FeatherMask(dot(), 0, 5, 0, 0)[0, 2, 2] == pytest.approx(0.6)
    assert torch.equal(FeatherMask(dot(), 0, 0, 0, 0), dot())


def test_feather_sides_follow_comfyui_indexing() -> None:
    row = torch.ones(1, 1, 4)
    assert FeatherMask(row, 2, 0, 0, 0)[0, 0].tolist() == [0.5, 1.0, 1.0, 1.0]
    # Right (and bottom) count from index -0, which is column 0: ComfyUI's fade lands there first.
    assert FeatherMask(row, 0, 0, 2, 0)[0, 0].tolist() == [0.5, 1.0, 1.0, 1.0]
    assert FeatherMask(row, 0, 0, 3, 0)[0, 0].tolist() == pytest.approx([1 / 3, 1.0, 1.0, 2 / 3])
    column = torch.ones(1, 4, 1)
    assert FeatherMask(column, 0, 0, 0, 4)[0, :, 0].tolist() == pytest.approx([0.25, 1.0, 0.75, 0.5])
    assert FeatherMask(row, 99, 0, 0, 0)[0, 0].tolist() == [0.25, 0.5, 0.75, 1.0]  # cut to the width


def test_crop_threshold_and_colour_to_mask() -> None:
    mask = torch.arange(12.0).view(1, 3, 4) / 11
    assert torch.equal(CropMask(mask, 1, 1, 2, 5), mask[:, 1:, 1:3])
    with pytest.raises(ValueError, match="outside the 4x3 mask"):
        CropMask(mask, 0, 3, 1, 1)
    assert ThresholdMask(mask, 0.5)[0].sum() == 6
    image = torch.zeros(1, 2, 2, 3)
    image[0, 0, 1] = torch.tensor([1.0, 128 / 255, 0.0])
    assert ImageColorToMask(image, 0xFF8000)[0].tolist() == [[0.0, 1.0], [0.0, 0.0]]
    assert ImageColorToMask(image, 0)[0].sum() == 3


@pytest.mark.parametrize(("operation", "expected"), [
    ("multiply", 0.3), ("add", 1.0), ("subtract", 0.1), ("and", 0.0), ("or", 1.0), ("xor", 1.0),  # 0.5 rounds to 0
])
def test_mask_composite_operations_at_an_overlapping_pixel(operation: str, expected: float) -> None:
    destination, source = torch.full((1, 4, 4), 0.6), torch.full((1, 2, 2), 0.5)
    out = MaskComposite(destination, source, 3, 3, operation)[0]
    assert out[3, 3] == pytest.approx(expected)  # the one source pixel inside the destination
    assert out[0, 0] == pytest.approx(0.6) and out[2, 3] == pytest.approx(0.6)


def test_mask_composite_past_the_edges_leaves_the_destination() -> None:
    destination = torch.full((1, 4, 4), 0.25)
    assert torch.equal(MaskComposite(destination, torch.ones(1, 2, 2), 4, 0, "add"), destination)


def test_join_and_split_alpha() -> None:
    image = torch.full((2, 2, 2, 3), 0.5)
    mask = torch.tensor([[[0.0, 1.0], [0.25, 0.5]]])
    joined = JoinImageWithAlpha(image, mask)
    assert joined.shape == (1, 2, 2, 4) and joined[0, :, :, 3].tolist() == [[1.0, 0.0], [0.75, 0.5]]
    rgb, back = SplitImageWithAlpha(joined)
    assert torch.equal(rgb, image[:1]) and torch.allclose(back, mask)
    _, none = SplitImageWithAlpha(image)
    assert none.shape == (2, 2, 2) and none.max() == 0


# Source 0.8 fully opaque (mask 0) over destination 0.4 at half alpha (mask 0.5): (colour, mask) out.
PORTER_DUFF = {
    "ADD": (1.0, 0.0), "CLEAR": (0.0, 1.0), "DARKEN": (0.6, 0.0), "DST": (0.4, 0.5), "DST_ATOP": (0.6, 0.0),
    "DST_IN": (0.4, 0.5), "DST_OUT": (0.0, 1.0), "DST_OVER": (0.6, 0.0), "LIGHTEN": (1.0, 0.0),
    "MULTIPLY": (0.32, 0.5), "OVERLAY": (0.32, 0.0), "SCREEN": (0.84, 0.0), "SRC": (0.8, 0.0),
    "SRC_ATOP": (0.8, 0.5), "SRC_IN": (0.8, 0.5), "SRC_OUT": (0.8, 0.5), "SRC_OVER": (0.8, 0.0), "XOR": (0.8, 0.5),
}


@pytest.mark.parametrize("mode", sorted(PORTER_DUFF))
def test_porter_duff_modes_at_chosen_pixels(mode: str) -> None:
    source, destination = torch.full((1, 2, 2, 3), 0.8), torch.full((1, 2, 2, 3), 0.4)
    image, mask = PorterDuffImageComposite(source, torch.zeros(1, 2, 2), destination, torch.full((1, 2, 2), 0.5), mode)
    colour, alpha_mask = PORTER_DUFF[mode]
    assert image[0, 1, 1].tolist() == pytest.approx([colour] * 3, abs=1e-6)
    assert mask[0, 1, 1].item() == pytest.approx(alpha_mask, abs=1e-6)


def test_porter_duff_resizes_the_source_and_its_mask() -> None:
    image, mask = PorterDuffImageComposite(torch.ones(1, 2, 2, 3), torch.zeros(1, 1, 1), torch.zeros(1, 4, 4, 3),
                                           torch.ones(1, 4, 4), "SRC_OVER")
    assert image.shape == (1, 4, 4, 3) and image.min() == pytest.approx(1.0) and mask.max() == pytest.approx(0.0)


def test_mask_preview_saves_a_grey_temp_image(tmp_path: Path) -> None:
    registry = build_registry(Services(folders=Folders(tmp_path)))
    prompt = {"1": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 4, "height": 2}},
              "2": {"class_type": "MaskPreview", "inputs": {"mask": ["1", 0]}}}
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    result = Executor(registry).run(checked.prompt, "p", checked.outputs)
    assert result.status == "success", result.error
    (entry,) = result.outputs["2"]["images"]
    assert entry["type"] == "temp" and (Folders(tmp_path).temp_dir / entry["filename"]).is_file()


def test_mismatched_inputs_give_a_reason() -> None:
    with pytest.raises(ValueError, match="batch of 2 masks with a batch of 3"):
        MaskComposite(torch.zeros(3, 4, 4), torch.ones(2, 2, 2), 0, 0, "add")
    with pytest.raises(ValueError, match="same channels"):
        PorterDuffImageComposite(torch.ones(1, 2, 2, 4), torch.zeros(1, 2, 2), torch.ones(1, 2, 2, 3),
                                 torch.zeros(1, 2, 2), "SRC")
