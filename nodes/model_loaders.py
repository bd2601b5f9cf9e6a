"""Loaders for models kept in parts: a checkpoint with a config, a UNet alone, text encoders alone, diffusers folders.

Like ``CheckpointLoaderSimple`` they keep what they load in the registry's model cache
(keyed by the file and the options that change the result), so a second prompt reads nothing.
The loading itself is in ``diffusion.model_files``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from .api import Clip, Context, Input, Model, OneOf, Output, ServiceChoices, Services, Tooltip, Vae, files_in, node
from .loaders import _model_file

log = logging.getLogger(__name__)

#: The config files ComfyUI ships in ``models/configs`` (offered even when that folder is empty).
SHIPPED_CONFIGS = (
    "anything_v3.yaml", "v1-inference.yaml", "v1-inference_clip_skip_2.yaml", "v1-inference_clip_skip_2_fp16.yaml",
    "v1-inference_fp16.yaml", "v1-inpainting-inference.yaml", "v2-inference-v.yaml", "v2-inference-v_fp32.yaml",
    "v2-inference.yaml", "v2-inference_fp32.yaml", "v2-inpainting-inference.yaml",
)
WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image")
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image")
Device = Annotated[str | None, OneOf(("default", "cpu")), Input(optional=True, advanced=True)]


def _configs(services: Services) -> list[str]:
    return sorted({*SHIPPED_CONFIGS, *services.folders.filename_list("configs")})


def _device(choice: str | None) -> Any:
    import torch

    from diffusion.memory import pick_device

    return torch.device("cpu") if choice == "cpu" else pick_device()


@node(category="advanced/loaders", display_name="Load Checkpoint With Config (DEPRECATED)")
def CheckpointLoader(
    config_name: Annotated[str, OneOf(ServiceChoices(_configs)),
                           Tooltip("The original model config; only its v-prediction choice is used.")],
    ckpt_name: Annotated[str, OneOf(files_in("checkpoints"))],
    *,
    ctx: Context,
) -> tuple[Model, Clip, Vae]:
    """Loads a checkpoint as CheckpointLoaderSimple does; a ``v2-inference-v`` config forces v-prediction."""
    from diffusion.checkpoint import load_checkpoint

    path = _model_file(ctx, "checkpoints", ckpt_name, "Checkpoint")
    precision = ctx.services.precision
    prediction = "v" if config_name.startswith("v2-inference-v") else None

    def load() -> Any:
        from diffusion.original_sources import attach_file_sources

        loaded = load_checkpoint(path, precision=precision, device=_device(None), prediction=prediction)
        attach_file_sources(loaded)
        return loaded

    loaded = ctx.services.model_cache().get(path, ("checkpoint", precision, prediction), load)
    return loaded.unet, loaded.clip, loaded.vae


@node(category="advanced/loaders", display_name="Load Diffusion Model")
def UNETLoader(
    unet_name: Annotated[str, OneOf(files_in("diffusion_models"))],
    weight_dtype: Annotated[str, OneOf(WEIGHT_DTYPES)],
    *,
    ctx: Context,
) -> Model:
    """Loads a diffusion model (UNet) file on its own, e.g. to pair it with separate text encoders and a VAE."""
    from diffusion.model_files import load_unet_file

    path = _model_file(ctx, "diffusion_models", unet_name, "Diffusion model")
    precision = ctx.services.precision
    if weight_dtype != "default":
        log.info("%s: %s storage is not used here; loading at the %s precision", unet_name, weight_dtype, precision)

    def load() -> Any:
        return load_unet_file(path, precision=precision, device=_device(None))

    return ctx.services.model_cache().get(path, ("unet", precision), load)


def _clip(ctx: Context, names: list[str], clip_type: str, device: str | None) -> Any:
    from diffusion.model_files import CLIP_TYPES as SUPPORTED
    from diffusion.model_files import load_text_encoders

    if clip_type not in SUPPORTED:
        raise ValueError(f"CLIP type {clip_type!r} is not supported yet (supported: {', '.join(SUPPORTED)})")
    paths = [_model_file(ctx, "text_encoders", name, "Text encoder") for name in names]
    precision = ctx.services.precision

    def load() -> Any:
        return load_text_encoders(paths, clip_type, precision=precision, device=_device(device))

    others = tuple(str(p) for p in paths[1:])
    return ctx.services.model_cache().get(paths[0], ("clip", clip_type, others, precision, device or "default"), load)


@node(category="advanced/loaders", display_name="Load CLIP")
def CLIPLoader(
    clip_name: Annotated[str, OneOf(files_in("text_encoders"))],
    type: Annotated[str, OneOf(CLIP_TYPES)],
    device: Device = None,
    *,
    ctx: Context,
) -> Clip:
    """Loads one text-encoder file as a CLIP (``stable_diffusion``: SD1's CLIP-L, SD2's ViT-H, or a bigG alone)."""
    return _clip(ctx, [clip_name], type, device)


@node(category="advanced/loaders", display_name="DualCLIPLoader")
def DualCLIPLoader(
    clip_name1: Annotated[str, OneOf(files_in("text_encoders"))],
    clip_name2: Annotated[str, OneOf(files_in("text_encoders"))],
    type: Annotated[str, OneOf(DUAL_CLIP_TYPES)],
    device: Device = None,
    *,
    ctx: Context,
) -> Clip:
    """Loads two text-encoder files as one CLIP (``sdxl``: CLIP-L and bigG, in either order)."""
    return _clip(ctx, [clip_name1, clip_name2], type, device)


@node(category="advanced/loaders/deprecated", display_name="DiffusersLoader")
def DiffusersLoader(
    model_path: Annotated[str, OneOf(files_in("diffusers"))],
    *,
    ctx: Context,
) -> tuple[
    Annotated[Model, Output(tooltip="The UNet of the folder.")],
    Annotated[Clip, Output(tooltip="Its text encoder(s).")],
    Annotated[Vae, Output(tooltip="Its VAE.")],
]:
    """Loads an SD1/SD2/SDXL model saved as a diffusers folder (``model_index.json``, ``unet/``, ``vae/`` ...)."""
    from diffusion.model_files import load_diffusers_folder

    path = _model_file(ctx, "diffusers", model_path, "Diffusers folder")
    precision = ctx.services.precision

    def load() -> Any:
        return load_diffusers_folder(path, precision=precision, device=_device(None))

    return ctx.services.model_cache().get(path, ("diffusers", precision), load)
