"""Image editing nodes on tiny tensors with known answers; file-writing ones through the executor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.image_edit import (
    Canny,
    GetImageSize,
    ImageAddNoise,
    ImageBatch,
    ImageBlend,
    ImageBlur,
    ImageCompositeMasked,
    ImageCrop,
    ImageFlip,
    ImageFromBatch,
    ImagePadForOutpaint,
    ImageQuantize,
    ImageRGBToYUV,
    ImageRotate,
    ImageScaleToMaxDimension,
    ImageScaleToTotalPixels,
    ImageSharpen,
    ImageStitch,
    ImageYUVToRGB,
    Morphology,
    RebatchImages,
    RepeatImageBatch,
    ResizeAndPadImage,
)
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def grey(*values: float) -> torch.Tensor:
    """A 1 x 1 x N RGB image whose pixels are the given grey levels."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, -1, 1).expand(1, 1, len(values), 3).clone()


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return Folders(tmp_path)


@pytest.fixture
def registry(folders: Folders) -> NodeRegistry:
    return build_registry(Services(folders=folders))


def run(registry: NodeRegistry, prompt: dict, extra_data: dict | None = None) -> dict:
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    result = Executor(registry).run(checked.prompt, "p", checked.outputs, extra_data=extra_data)
    assert result.status == "success", result.error
    return result.outputs


def run_error(registry: NodeRegistry, prompt: dict) -> str:
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    result = Executor(registry).run(checked.prompt, "p", checked.outputs)
    assert result.status == "error"
    return str(result.error)


# -- blending and filters -------------------------------------------------------------------

BLENDS = {  # image1 (0.2, 0.7) under image2 (0.6, 0.3), factor 1
    "normal": (0.6, 0.3),
    "multiply": (0.12, 0.21),
    "screen": (0.68, 0.79),
    "overlay": (0.24, 0.58),
    "soft_light": (0.2496, 0.616),
    "difference": (0.0, 0.4),  # signed, then clamped
}


@pytest.mark.parametrize("mode", sorted(BLENDS))
def test_blend_modes_at_chosen_pixels(mode: str) -> None:
    out = ImageBlend(grey(0.2, 0.7), grey(0.6, 0.3), 1.0, mode)
    assert out[0, 0, :, 0].tolist() == pytest.approx(BLENDS[mode], abs=1e-6)


def test_blend_factor_mixes_and_a_smaller_image2_is_resized() -> None:
    assert ImageBlend(grey(0.2), grey(0.6), 0.5, "normal")[0, 0, 0, 0] == pytest.approx(0.4)
    big = torch.full((1, 8, 8, 3), 0.2)
    out = ImageBlend(big, torch.full((1, 2, 2, 3), 0.6), 0.25, "multiply")
    assert out.shape == big.shape and out.mean() == pytest.approx(0.75 * 0.2 + 0.25 * 0.12, abs=1e-5)


def test_blur_keeps_flat_images_and_spreads_a_dot() -> None:
    flat = torch.full((1, 6, 6, 3), 0.3)
    assert torch.allclose(ImageBlur(flat, 2, 1.0), flat, atol=1e-6)
    dot = torch.zeros(1, 7, 7, 3)
    dot[0, 3, 3] = 1.0
    out = ImageBlur(dot, 1, 1.0)
    assert out.sum() == pytest.approx(3.0, abs=1e-5)  # energy kept per channel
    assert out[0, 3, 3, 0] < 1.0 and out[0, 2, 3, 0] > 0 and out[0, 0, 0, 0] == 0


def test_sharpen_raises_contrast_at_an_edge_and_keeps_flat_areas() -> None:
    edge = torch.zeros(1, 6, 6, 3)
    edge[:, :, 3:] = 0.6
    edge[:, :, :3] = 0.4
    out = ImageSharpen(edge, 1, 1.0, 0.5)
    assert out[0, 2, 2, 0] < 0.4 and out[0, 2, 3, 0] > 0.6  # each side pushed away from the other
    assert out[0, 2, 0, 0] == pytest.approx(0.4, abs=1e-5)


def test_quantize_to_two_colours() -> None:
    ramp = torch.linspace(0, 1, 16).view(1, 1, 16, 1).expand(1, 16, 16, 3).contiguous()
    for dither in ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"):
        out = ImageQuantize(ramp, 2, dither)
        colours = torch.unique(out.reshape(-1, 3), dim=0)
        assert len(colours) == 2, dither
        assert out[0, :, :4].mean() < out[0, :, -4:].mean(), dither  # dark stays left, light right
    plain = ImageQuantize(ramp, 2, "none")[0, 0, :, 0]
    assert (plain[:8] == plain[0]).all() and (plain[8:] == plain[-1]).all()  # a hard split in the middle
    ordered = ImageQuantize(ramp, 2, "bayer-4")[0, :, 7, 0]
    assert len(torch.unique(ordered)) == 2  # the middle column is a pattern of both


def test_morphology_operations_on_a_dot() -> None:
    image = torch.zeros(1, 7, 7, 3)
    image[0, 3, 3] = 1.0
    dilated = Morphology(image, "dilate", 3)[0, :, :, 0]
    assert dilated.sum() == 9 and dilated[2:5, 2:5].min() == 1
    assert Morphology(image, "erode", 3).sum() == 0
    assert Morphology(image, "open", 3).sum() == 0
    assert torch.equal(Morphology(image, "close", 3), image)
    assert torch.equal(Morphology(image, "top_hat", 3), image)
    assert Morphology(image, "bottom_hat", 3).sum() == 0
    assert torch.equal(Morphology(image, "gradient", 3), Morphology(image, "dilate", 3))
    ones = torch.ones(1, 4, 4, 3)
    assert torch.equal(Morphology(ones, "erode", 3), ones)  # pixels outside the image never win
    even = torch.zeros(1, 6, 6, 3)
    even[0, 2, 2] = 1.0
    grown = Morphology(even, "dilate", 4)[0, :, :, 0]  # a reflected 4x4 window: rows and columns 0..3
    assert grown.sum() == 16 and grown[:4, :4].min() == 1
    eaten = Morphology(1 - even, "erode", 4)[0, :, :, 0]  # the unreflected one: rows and columns 1..4
    assert eaten.sum() == 20 and eaten[1:5, 1:5].max() == 0


SQUARE_EDGES = """
................
................
................
.......##.......
....###..###....
....#......#....
....#......#....
...#.......#....
...#.......#....
....#......#....
....#......#....
....########....
................
................
................
................
"""  # mirror-image magnitudes tie and the tie rule (the right or lower neighbour loses) places each side's line;
# kornia's own output here depends on the CPU's float ties (an AVX2 and an AVX-512 machine draw different wobbles)


def test_canny_on_a_square() -> None:
    image = torch.zeros(1, 16, 16, 3)
    image[:, 4:12, 4:12] = 1.0
    edges = Canny(image, 0.4, 0.8)
    assert edges.shape == image.shape and torch.equal(edges[..., 0], edges[..., 2])
    drawn = "\n".join("".join("#" if v else "." for v in row) for row in edges[0, :, :, 0].tolist())
    assert drawn == SQUARE_EDGES.strip()
    assert Canny(image, 2.9, 2.95).sum() == 0  # a blurred unit step peaks near 2.6


def test_canny_keeps_the_left_pixel_of_a_tied_step() -> None:
    image = torch.zeros(1, 8, 8, 3)
    image[:, :, 4:] = 1.0
    edges = Canny(image, 0.4, 0.8)[0, :, :, 0]
    assert edges[:, 3].min() == 1 and edges.sum() == 8


def test_yuv_round_trip() -> None:
    image = torch.rand(2, 3, 4, 3, generator=torch.Generator().manual_seed(0))
    y, u, v = ImageRGBToYUV(image)
    assert y.shape == image.shape and torch.equal(y[..., 0], y[..., 2])
    assert y[0, 0, 0, 0] == pytest.approx(float(image[0, 0, 0] @ torch.tensor([0.299, 0.587, 0.114])), abs=1e-6)
    assert torch.allclose(ImageYUVToRGB(y, u, v), image, atol=1e-5)  # an exact inverse
    full = torch.ones(1, 1, 1, 3)
    r, g, b = ImageYUVToRGB(full, full, full)[0, 0, 0].tolist()
    assert r == b == 1.0  # 1.70 and 1.89 before the clamp
    assert g == pytest.approx(1 - (0.299 * 0.5 / 0.713 + 0.114 * 0.5 / 0.564) / 0.587, abs=1e-6)


# -- batches, sizes, transforms ----------------------------------------------------------------


def test_batches_and_sizes() -> None:
    a, b = torch.zeros(2, 4, 6, 3), torch.ones(1, 8, 12, 3)
    assert tuple(GetImageSize(a)) == (6, 4, 2)
    both = ImageBatch(a, b)
    assert both.shape == (3, 4, 6, 3) and both[2].min() == 1
    assert ImageBatch(a, torch.ones(1, 4, 6, 4)).shape == (3, 4, 6, 4)  # alpha added to the RGB ones
    frames = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 2, 2, 3)
    assert ImageFromBatch(frames, 3, 4)[:, 0, 0, 0].tolist() == [3.0, 4.0]
    assert ImageFromBatch(frames, 99, 1)[:, 0, 0, 0].tolist() == [4.0]
    assert RepeatImageBatch(frames[:2], 3)[:, 0, 0, 0].tolist() == [0.0, 1.0] * 3
    regrouped = RebatchImages([frames[:2], frames[2:]], [2])
    assert [r[:, 0, 0, 0].tolist() for r in regrouped] == [[0.0, 1.0], [2.0, 3.0], [4.0]]


def test_noise_is_seeded_and_clamped() -> None:
    image = torch.full((1, 4, 4, 3), 0.5)
    one, two = ImageAddNoise(image, 7, 0.5), ImageAddNoise(image, 7, 0.5)
    assert torch.equal(one, two) and not torch.equal(one, ImageAddNoise(image, 8, 0.5))
    assert one.min() >= 0 and one.max() <= 1 and not torch.equal(one, image)


def test_crop_flip_rotate() -> None:
    image = torch.arange(12.0).view(1, 3, 4, 1).expand(1, 3, 4, 3)
    assert ImageCrop(image, 2, 2, 1, 1)[0, :, :, 0].tolist() == [[5.0, 6.0], [9.0, 10.0]]
    assert ImageCrop(image, 10, 10, 3, 2).shape == (1, 1, 1, 3)  # cut at the edges
    with pytest.raises(ValueError, match="outside the 4x3 image"):
        ImageCrop(image, 2, 2, 4, 0)
    assert ImageFlip(image, "x-axis: vertically")[0, 0, 0, 0] == 8.0
    assert ImageFlip(image, "y-axis: horizontally")[0, 0, 0, 0] == 3.0
    quarter = ImageRotate(image, "90 degrees")
    assert quarter.shape == (1, 4, 3, 3) and quarter[0, 0, :, 0].tolist() == [8.0, 4.0, 0.0]  # clockwise
    assert torch.equal(ImageRotate(image, "none"), image)
    assert torch.equal(ImageRotate(ImageRotate(image, "180 degrees"), "180 degrees"), image)


def test_stitch_directions_spacing_and_padding() -> None:
    a, b = torch.zeros(1, 4, 4, 3), torch.ones(1, 2, 2, 3)
    right = ImageStitch(a, "right", True, 0, "white", b)
    assert right.shape == (1, 4, 8, 3) and right[0, :, 4:].min() > 0.9
    up = ImageStitch(a, "up", False, 2, "red", b)
    assert up.shape == (1, 8, 4, 3)
    assert up[0, 0, :, 0].tolist() == [0.0, 1.0, 1.0, 0.0]  # b centred, padded with black
    assert up[0, 2, 0].tolist() == [1.0, 0.0, 0.0]  # the red spacer between
    assert torch.equal(ImageStitch(a, "left", True, 0, "white", None), a)


def test_resize_and_pad_and_scaling_to_a_size() -> None:
    image = torch.full((1, 4, 8, 3), 0.5)
    padded = ResizeAndPadImage(image, 8, 8, "black", "nearest-exact")
    assert padded.shape == (1, 8, 8, 3)
    assert padded[0, :2].max() == 0 and padded[0, 6:].max() == 0 and padded[0, 2:6].min() == 0.5
    assert ImageScaleToMaxDimension(image, "area", 4).shape == (1, 2, 4, 3)
    assert ImageScaleToTotalPixels(torch.zeros(1, 64, 256, 3), "bilinear", 0.01).shape == (1, 51, 205, 3)


# -- compositing and outpainting ---------------------------------------------------------------


def test_composite_at_an_offset_that_crosses_the_edge() -> None:
    destination, source = torch.zeros(1, 4, 4, 3), torch.ones(1, 3, 3, 3)
    out = ImageCompositeMasked(destination, source, 2, 3, False, None)[0, :, :, 0]
    expected = torch.zeros(4, 4)
    expected[3, 2:] = 1.0  # only the source's top-left 1 x 2 corner lands inside
    assert torch.equal(out, expected)
    half = torch.full((1, 3, 3), 0.5)
    assert ImageCompositeMasked(destination, source, 0, 0, False, half)[0, 1, 1, 0] == pytest.approx(0.5)
    stretched = ImageCompositeMasked(destination, source[:, :1, :1], 0, 0, True, None)
    assert stretched.min() == 1.0
    assert destination.max() == 0  # the input is not modified


def test_pad_for_outpaint_mask_has_comfyuis_feathered_border() -> None:
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    padded, mask = ImagePadForOutpaint(image, 8, 0, 0, 0, 4)
    assert padded.shape == (1, 16, 24, 3) and mask.shape == (1, 16, 24)
    assert torch.equal(padded[:, :, 8:], image) and (padded[:, :, :8] == 0.5).all()
    assert (mask[0, :, :8] == 1).all()
    # Inside: ((feathering - d) / feathering) ** 2 with d the distance to the padded (left) side only.
    assert mask[0, 5, 8:14].tolist() == [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    assert (mask[0, :, 12:] == 0).all()
    _, all_sides = ImagePadForOutpaint(image, 8, 8, 8, 8, 4)
    inner = all_sides[0, 8:24, 8:24]
    assert inner[0, 8] == 1.0 and inner[15, 8] == pytest.approx(0.5625)  # bottom counts from height - i
    assert inner[1, 1] == pytest.approx(0.5625) and inner[8, 8] == 0
    _, no_fade = ImagePadForOutpaint(image, 8, 0, 0, 0, 8)  # 2 * feathering not below the size: no fade
    assert (no_fade[0, :, 8:] == 0).all()


# -- through the executor: files --------------------------------------------------------------


def _png(path: Path, rgba: tuple[int, int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.full((4, 6, 4), rgba, dtype=np.uint8), "RGBA").save(path)


def test_load_image_output_and_webcam_capture(registry: NodeRegistry, folders: Folders) -> None:
    _png(folders.output_dir / "done.png", (255, 0, 0, 255))
    _png(folders.input_dir / "webcam" / "shot.png", (0, 255, 0, 255))
    prompt = {
        "1": {"class_type": "LoadImageOutput", "inputs": {"image": "done.png [output]"}},
        "2": {"class_type": "LoadImageOutput", "inputs": {"image": "done.png"}},
        "3": {"class_type": "WebcamCapture", "inputs": {"image": "webcam/shot.png", "width": 0, "height": 0,
                                                         "capture_on_queue": True}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "5": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["3", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "both"}},
    }
    run(registry, prompt)
    with PILImage.open(folders.output_dir / "both_00003_.png") as png:
        assert png.getpixel((0, 0)) == (0, 255, 0)
    bad = {"1": {"class_type": "LoadImageOutput", "inputs": {"image": "missing.png"}},
           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}
    checked = validate_prompt(bad, registry)
    assert not checked.ok and "Invalid image file: missing.png" in json.dumps(checked.node_errors)


def test_save_animated_png_and_webp(registry: NodeRegistry, folders: Folders) -> None:
    prompt = {
        **{f"c{i}": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": c}}
           for i, c in enumerate((0xFF0000, 0x00FF00, 0x0000FF))},
        "b": {"class_type": "ImageBatch", "inputs": {"image1": ["c0", 0], "image2": ["c1", 0]}},
        "1": {"class_type": "ImageBatch", "inputs": {"image1": ["b", 0], "image2": ["c2", 0]}},
        "2": {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["1", 0], "filename_prefix": "anim/clip",
                                                          "fps": 10.0, "compress_level": 4}},
        "3": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["1", 0], "filename_prefix": "anim/clip",
                                                           "fps": 5.0, "lossless": True, "quality": 80,
                                                           "method": "fastest"}},
    }
    outputs = run(registry, prompt, {"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert outputs["2"] == {"images": [{"filename": "clip_00001_.png", "subfolder": "anim", "type": "output"}],
                            "animated": [True]}
    webp_name = outputs["3"]["images"][0]["filename"]
    assert webp_name.endswith("_.webp") and outputs["3"]["animated"] == [True]
    with PILImage.open(folders.output_dir / "anim" / "clip_00001_.png") as png:
        assert png.n_frames == 3 and png.info["duration"] == 100
        assert png.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    raw = (folders.output_dir / "anim" / "clip_00001_.png").read_bytes()
    assert b"comfprompt\x00" in raw and b"comfworkflow\x00" in raw
    with PILImage.open(folders.output_dir / "anim" / webp_name) as webp:
        assert webp.n_frames == 3 and webp.size == (8, 4)
        exif = webp.getexif()
        assert exif[0x0110].startswith("prompt:") and exif[0x010F] == 'workflow:{"nodes": []}'
    assert not list((folders.output_dir / "anim").glob(".*.part"))


def test_bad_inputs_stop_the_node_with_a_reason(registry: NodeRegistry) -> None:
    base = {"1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}}}
    crop = {**base, "2": {"class_type": "ImageCrop", "inputs": {"image": ["1", 0], "width": 2, "height": 2,
                                                                "x": 9, "y": 0}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    assert "outside the 4x4 image" in run_error(registry, crop)


def test_mismatched_images_give_a_reason() -> None:
    with pytest.raises(ValueError, match="cannot blend a 4-channel image into a 3-channel one"):
        ImageBlend(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 4), 0.5, "normal")
    with pytest.raises(ValueError, match="different sizes"):
        RebatchImages([torch.zeros(1, 2, 2, 3), torch.zeros(1, 4, 4, 3)], [2])
    with pytest.raises(ValueError, match="same size"):
        ImageYUVToRGB(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 3), torch.zeros(1, 3, 2, 3))
    with pytest.raises(ValueError, match="too small for a radius of 3"):
        ImageBlur(torch.zeros(1, 2, 2, 3), 3, 1.0)
