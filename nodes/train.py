"""LoRA training nodes: datasets from folders, TrainLoraNode, loading and saving the trained LoRA, the loss graph.

Training runs on whatever device the model is on (the CPU here) through ``diffusion.train.lora``;
the trained LoRA (LORA_MODEL) is applied as weight patches, never by changing the model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import torch

from .api import (
    Clip,
    Conditioning,
    Context,
    ExtraPngInfo,
    HiddenPrompt,
    Image,
    Input,
    Latent,
    Model,
    OneOf,
    Range,
    Result,
    ServiceChoices,
    Services,
    Socket,
    node,
)
from .save_paths import model_file

LoraModel = Socket("LORA_MODEL")
LossMap = Socket("LOSS_MAP")
RESIZE_METHODS = ("None", "Stretch", "Crop", "Pad")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_NONE = "[None]"


class TrainedOutputs(NamedTuple):
    """TrainLoraNode's outputs, named as ComfyUI names them."""

    model_with_lora: Model
    lora: LoraModel
    loss: LossMap
    steps: int


def _dataset_folders(services: Services) -> list[str]:
    root = services.folders.input_dir
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _existing_loras(services: Services) -> list[str]:
    return [_NONE, *services.folders.filename_list("loras")]


def _dataset_images(ctx: Context, folder: str) -> list[Path]:
    root = ctx.folders.input_dir.resolve()
    path = (root / folder).resolve()
    if root not in path.parents or not path.is_dir():
        raise ValueError(f"no dataset folder {folder!r} in the input folder")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"the dataset folder {folder!r} holds no images")
    return images


def _load_set(paths: list[Path], resize_method: str, width: int = -1, height: int = -1) -> torch.Tensor:
    from diffusion.images import load_image
    from diffusion.resize import fit_image

    images = [load_image(p)[0][:1] for p in paths]
    size = (height if height > 0 else images[0].shape[1], width if width > 0 else images[0].shape[2])
    if resize_method != "None":
        images = [fit_image(im, size, resize_method.lower()) for im in images]
    elif any(tuple(im.shape[1:3]) != tuple(images[0].shape[1:3]) for im in images):
        raise ValueError("the images differ in size: pick a resize_method")
    return torch.cat(images)


@node(category="loaders", display_name="Load Image Dataset from Folder")
def LoadImageSetFromFolderNode(
    folder: Annotated[str, OneOf(ServiceChoices(_dataset_folders))],
    resize_method: Annotated[str, OneOf(RESIZE_METHODS), Input(optional=True)] = "None",
    *,
    ctx: Context,
) -> Image:
    """Loads every image of a folder in the input folder as one batch (a training set)."""
    return _load_set(_dataset_images(ctx, folder), resize_method or "None")


@node(category="loaders", display_name="Load Image and Text Dataset from Folder")
def LoadImageTextSetFromFolderNode(
    folder: Annotated[str, OneOf(ServiceChoices(_dataset_folders))],
    clip: Clip,
    resize_method: Annotated[str, OneOf(RESIZE_METHODS), Input(optional=True)] = "None",
    width: Annotated[int, Range(-1, 10000, step=1), Input(optional=True)] = -1,
    height: Annotated[int, Range(-1, 10000, step=1), Input(optional=True)] = -1,
    *,
    ctx: Context,
) -> tuple[Image, Conditioning]:
    """Loads a folder's images with their captions (``name.txt`` beside ``name.png``), each caption encoded."""
    paths = _dataset_images(ctx, folder)
    images = _load_set(paths, resize_method or "None", width, height)
    conditioning = []
    for path in paths:
        caption = path.with_suffix(".txt")
        text = caption.read_text(encoding="utf-8").strip() if caption.is_file() else ""
        cond, pooled = clip.encode(text)
        conditioning.append([cond, {"pooled_output": pooled}])
    return images, conditioning


@node(category="training", display_name="Train LoRA")
def TrainLoraNode(
    model: Model,
    latents: Latent,
    positive: Conditioning,
    batch_size: Annotated[int, Range(1, 10000, step=1)] = 1,
    grad_accumulation_steps: Annotated[int, Range(1, 1024, step=1)] = 1,
    steps: Annotated[int, Range(1, 100000)] = 16,
    learning_rate: Annotated[float, Range(1e-07, 1.0, step=1e-06)] = 0.0005,
    rank: Annotated[int, Range(1, 128)] = 8,
    optimizer: Annotated[str, OneOf(("AdamW", "Adam", "SGD", "RMSprop"))] = "AdamW",
    loss_function: Annotated[str, OneOf(("MSE", "L1", "Huber", "SmoothL1"))] = "MSE",
    seed: Annotated[int, Range(0, 0xFFFF_FFFF_FFFF_FFFF)] = 0,
    training_dtype: Annotated[str, OneOf(("bf16", "fp32"))] = "bf16",
    lora_dtype: Annotated[str, OneOf(("bf16", "fp32"))] = "bf16",
    algorithm: Annotated[str, OneOf(("LoRA", "LoHa", "LoKr", "OFT"))] = "LoRA",
    gradient_checkpointing: bool = True,
    existing_lora: Annotated[str, OneOf(ServiceChoices(_existing_loras))] = _NONE,
    *,
    ctx: Context,
) -> TrainedOutputs:
    """Trains a LoRA on the latents with the conditioning; returns the patched model, the LoRA and its losses."""
    from diffusion.train.lora import train_lora

    existing = None if existing_lora in (None, _NONE) else _read_lora(ctx, existing_lora, model)
    run = train_lora(
        model, latents["samples"], positive, steps=steps, batch_size=batch_size,
        grad_accumulation_steps=grad_accumulation_steps, learning_rate=learning_rate, rank=rank,
        optimizer=optimizer, loss_function=loss_function, seed=seed % (2**63), training_dtype=training_dtype,
        lora_dtype=lora_dtype, algorithm=algorithm, gradient_checkpointing=gradient_checkpointing,
        existing=existing, callback=lambda step, total, _loss: ctx.progress(step + 1, total),
    )
    patched = model.with_patches(run.lora.adapters())
    return TrainedOutputs(patched, run.lora, {"loss": run.losses}, steps)


def _read_lora(ctx: Context, name: str, model: Any) -> Any:
    from diffusion.train.lora import read_trained_lora

    path = ctx.folders.full_path("loras", name)
    if path is None:
        raise FileNotFoundError(f"LoRA not found: {name}")
    return read_trained_lora(path, model)


@node(category="loaders", display_name="Load LoRA Model")
def LoraModelLoader(model: Model, lora: LoraModel,
                    strength_model: Annotated[float, Range(-100.0, 100.0, step=0.01)] = 1.0) -> Model:
    """Applies a LoRA trained in this graph (Train LoRA's output) to a model."""
    return model.with_patches(lora.adapters(), strength_model)


@node(category="loaders", display_name="Save LoRA Weights", output_node=True)
def SaveLoRANode(
    lora: LoraModel,
    prefix: str = "loras/ComfyUI_trained_lora",
    steps: Annotated[int, Input(optional=True, force_input=True)] | None = None,
    *,
    ctx: Context,
) -> None:
    """Saves a trained LoRA to the output folder (kohya layout; LyCORIS for LoHa, LoKr, OFT), loadable by Load LoRA."""
    from diffusion.train.lora import write_trained_lora

    if steps is not None:
        prefix = f"{prefix}_{steps}_steps"
    write_trained_lora(model_file(ctx.folders.output_dir, prefix), lora)


@node(category="training", display_name="Plot Loss Graph", output_node=True)
def LossGraphNode(
    loss: Annotated[LossMap, Input(default={})],
    filename_prefix: str = "loss_graph",
    prompt: HiddenPrompt = None,
    extra_pnginfo: ExtraPngInfo = None,
    *,
    ctx: Context,
) -> Result:
    """Draws the training loss per step as a picture and shows it."""
    from .image import _save_images

    image = _loss_plot([float(v) for v in (loss or {}).get("loss", [])])
    return _save_images(image, ctx.folders.temp_dir, filename_prefix, "temp", 1, prompt, extra_pnginfo)


def _loss_plot(losses: list[float], width: int = 800, height: int = 480) -> torch.Tensor:
    """A plain line plot of ``losses`` (IMAGE [1, H, W, 3]), drawn with PIL."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw

    picture = PILImage.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    margin = 40
    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    finite = [v for v in losses if math.isfinite(v)]
    if len(finite) >= 2:
        low, high = min(finite), max(finite)
        span = (high - low) or 1.0
        points = [(margin + i * (width - 2 * margin) / (len(losses) - 1),
                   height - margin - ((v if math.isfinite(v) else high) - low) / span * (height - 2 * margin))
                  for i, v in enumerate(losses)]
        draw.line(points, fill=(200, 30, 30), width=2)
        draw.text((margin, 10), f"loss {finite[0]:.4g} -> {finite[-1]:.4g} over {len(losses)} steps", fill="black")
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]


