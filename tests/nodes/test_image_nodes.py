"""Image nodes through the validator and executor: file names, PNG chunks, ui dicts; pure ones called directly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.image import EmptyImage, ImageInvert, ImageScale, ImageScaleBy
from nodes.mask import ImageToMask, InvertMask, MaskToImage, SolidMask
from nodes.object_info import node_info
from nodes.registry import NodeRegistry, build_registry


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return Folders(tmp_path)


@pytest.fixture
def registry(folders: Folders) -> NodeRegistry:
    return build_registry(Services(folders=folders))


def run(registry: NodeRegistry, prompt: dict, extra_data: dict | None = None,
        executor: Executor | None = None) -> tuple[dict, list[str]]:
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    result = (executor or Executor(registry)).run(checked.prompt, "p", checked.outputs, extra_data=extra_data)
    assert result.status == "success", result.error
    return result.outputs, result.executed


def _write_rgba(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((4, 6, 4), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[..., 3] = 255
    pixels[0, 0, 3] = 0  # one transparent pixel: mask 1 there
    PILImage.fromarray(pixels, "RGBA").save(path)


def test_save_and_preview_image_specs(registry: NodeRegistry) -> None:
    save = node_info(registry["SaveImage"])
    assert save["input"]["required"]["filename_prefix"][1]["default"] == "ComfyUI"
    assert "tooltip" in save["input"]["required"]["filename_prefix"][1]
    assert save["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert save["output"] == [] and save["output_node"] is True and save["category"] == "image"
    assert save["description"] == "Saves the input images to your ComfyUI output directory."
    preview = node_info(registry["PreviewImage"])
    assert preview["input"] == {"required": {"images": ["IMAGE"]},
                                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}
    assert preview["output_node"] is True


def test_load_image_spec_lists_input_images(registry: NodeRegistry, folders: Folders) -> None:
    _write_rgba(folders.input_dir / "b.png")
    _write_rgba(folders.input_dir / "a.png")
    (folders.input_dir / "notes.txt").write_text("not an image")
    info = node_info(registry["LoadImage"])
    assert info["input"]["required"]["image"] == [["a.png", "b.png"], {"image_upload": True}]
    assert info["output"] == ["IMAGE", "MASK"] and info["output_name"] == ["IMAGE", "MASK"]


def test_image_scale_specs(registry: NodeRegistry) -> None:
    scale = node_info(registry["ImageScale"])
    assert scale["input"]["required"]["upscale_method"] == [["nearest-exact", "bilinear", "area", "bicubic",
                                                             "lanczos"]]
    assert scale["input"]["required"]["width"] == ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}]
    assert scale["category"] == "image/upscaling" and scale["display_name"] == "Upscale Image"
    empty = node_info(registry["EmptyImage"])["input"]["required"]
    assert empty["color"] == ["INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}]


def test_save_image_writes_pngs_with_prompt_and_workflow(registry: NodeRegistry, folders: Folders) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 2, "color": 0xFF8000}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "run/pic_%width%"}},
    }
    workflow = {"nodes": [], "links": []}
    outputs, _ = run(registry, prompt, {"extra_pnginfo": {"workflow": workflow}})
    assert outputs["2"] == {"images": [
        {"filename": "pic_8_00001_.png", "subfolder": "run", "type": "output"},
        {"filename": "pic_8_00002_.png", "subfolder": "run", "type": "output"},
    ]}
    with PILImage.open(folders.output_dir / "run" / "pic_8_00001_.png") as png:
        assert png.size == (8, 4) and png.getpixel((0, 0)) == (255, 128, 0)
        assert list(png.text) == ["prompt", "workflow"]
        assert json.loads(png.text["prompt"]) == prompt and json.loads(png.text["workflow"]) == workflow
    again, _ = run(registry, prompt)  # a fresh executor: nothing cached
    assert again["2"]["images"][0]["filename"] == "pic_8_00003_.png"  # the counter continues


def test_preview_image_goes_to_temp(registry: NodeRegistry, folders: Folders) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    outputs, _ = run(registry, prompt)
    (entry,) = outputs["2"]["images"]
    assert re.fullmatch(r"ComfyUI_temp_[abcdefghijklmnopqrstupvxyz]{5}_00001_\.png", entry["filename"])
    assert entry["type"] == "temp" and entry["subfolder"] == ""
    with PILImage.open(folders.temp_dir / entry["filename"]) as png:
        assert list(png.text) == ["prompt"]  # no extra_pnginfo sent: only the prompt chunk


def test_load_image_runs_and_reruns_when_the_file_changes(registry: NodeRegistry, folders: Folders) -> None:
    _write_rgba(folders.input_dir / "in.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}}}
    executor = Executor(registry)
    run(registry, prompt, executor=executor)
    with PILImage.open(folders.output_dir / "inv_00001_.png") as png:
        assert png.size == (6, 4) and png.getpixel((1, 1)) == (0, 255, 255)
    assert run(registry, prompt, executor=executor)[1] == []  # same file: all cached
    PILImage.new("RGB", (6, 4), (0, 0, 0)).save(folders.input_dir / "in.png")
    assert run(registry, prompt, executor=executor)[1] == ["1", "2", "3"]


def test_load_image_mask_and_annotated_names(registry: NodeRegistry, folders: Folders) -> None:
    _write_rgba(folders.output_dir / "sub" / "made.png")
    load = registry["LoadImage"]
    assert load.behaviour.validate is not None
    assert load.behaviour.validate({"image": "sub/made.png [output]"}) is True
    assert load.behaviour.validate({"image": "missing.png"}) == "Invalid image file: missing.png"
    assert load.behaviour.validate({"image": "../../etc/passwd"}) == "Invalid image file: ../../etc/passwd"
    # No executor context: LoadImage reports no progress.
    image, mask = load.behaviour.execute(None, None, {"image": "sub/made.png [output]"})
    assert image.shape == (1, 4, 6, 3) and mask.shape == (1, 4, 6)
    assert mask[0, 0, 0] == 1.0 and mask.sum() == 1.0


def test_missing_image_is_a_validation_error(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    checked = validate_prompt(prompt, registry)
    assert not checked.ok
    assert "Invalid image file: nope.png" in json.dumps(checked.node_errors)


def test_scale_invert_and_empty_image() -> None:
    image = torch.rand(2, 30, 40, 3)
    assert ImageScale(image, "bilinear", 80, 60, "disabled").shape == (2, 60, 80, 3)
    assert ImageScale(image, "nearest-exact", 20, 0, "disabled").shape == (2, 15, 20, 3)
    assert ImageScale(image, "area", 0, 0, "disabled") is image
    assert ImageScale(image, "lanczos", 30, 30, "center").shape == (2, 30, 30, 3)
    assert ImageScaleBy(image, "bicubic", 0.5).shape == (2, 15, 20, 3)
    torch.testing.assert_close(ImageInvert(image), 1.0 - image)
    empty = EmptyImage(width=3, height=2, batch_size=2, color=0x00FF80)
    assert empty.shape == (2, 2, 3, 3)
    torch.testing.assert_close(empty[1, 1, 2], torch.tensor([0.0, 1.0, 128 / 255]))



def test_mask_nodes_convert_to_and_from_images(registry: NodeRegistry) -> None:
    solid = SolidMask(value=0.25, width=5, height=3)
    assert solid.shape == (1, 3, 5) and torch.all(solid == 0.25)
    torch.testing.assert_close(InvertMask(solid), torch.full((1, 3, 5), 0.75))
    image = MaskToImage(solid)
    assert image.shape == (1, 3, 5, 3) and torch.all(image == 0.25)
    rgb = torch.rand(2, 3, 5, 3)
    torch.testing.assert_close(ImageToMask(rgb, "green"), rgb[..., 1])
    info = node_info(registry["ImageToMask"])
    assert info["input"]["required"]["channel"] == [["red", "green", "blue", "alpha"]]
    assert info["display_name"] == "Convert Image to Mask" and info["category"] == "mask"
    assert node_info(registry["SolidMask"])["input"]["required"]["value"] == [
        "FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]


def test_load_image_mask_channels(registry: NodeRegistry, folders: Folders) -> None:
    _write_rgba(folders.input_dir / "a.png")
    PILImage.new("RGB", (5, 3), (0, 51, 255)).save(folders.input_dir / "rgb.png")
    info = node_info(registry["LoadImageMask"])
    assert info["input"]["required"] == {"image": [["a.png", "rgb.png"], {"image_upload": True}],
                                         "channel": [["alpha", "red", "green", "blue"]]}
    assert info["output"] == ["MASK"] and info["category"] == "mask"
    load = registry["LoadImageMask"].behaviour
    alpha = load.execute(None, None, {"image": "a.png", "channel": "alpha"})[0]
    assert alpha.shape == (1, 4, 6) and alpha.sum() == 1.0 and alpha[0, 0, 0] == 1.0
    no_alpha = load.execute(None, None, {"image": "rgb.png", "channel": "alpha"})[0]
    assert no_alpha.shape == (1, 3, 5) and not no_alpha.any()
    green = load.execute(None, None, {"image": "rgb.png", "channel": "green"})[0]
    torch.testing.assert_close(green, torch.full((1, 3, 5), 0.2))
    assert load.validate is not None and load.validate({"image": "gone.png"}) == "Invalid image file: gone.png"
