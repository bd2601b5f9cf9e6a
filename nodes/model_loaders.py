"""Loaders for models kept in parts: a checkpoint with a config, a UNet alone, text encoders alone, diffusers folders.

Like ``CheckpointLoaderSimple`` they keep what they load in the registry's model cache
(keyed by the file and the options that change the result), so a second prompt reads nothing.
The loading itself is in ``diffusion.model_files`` (SD1/SD2/SDXL) and
``diffusion.families.loader`` (SD3/SD3.5 and Flux, told apart by their tensor shapes). Before a
transformer-family load, the memory it needs is compared with what is available; when only
dropping the model cache's other models would make room, they are dropped first.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from .api import Clip, Context, Input, Model, OneOf, Output, ServiceChoices, Services, Tooltip, Vae, files_in, node
from .loaders import _model_file, with_compile

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
        with_compile(ctx, loaded.unet, loaded.vae)
        return loaded

    loaded = ctx.services.model_cache().get(path, ("checkpoint", precision, prediction, ctx.services.compile), load)
    return loaded.unet, loaded.clip, loaded.vae


def _is_transformer_file(path: Any) -> bool:
    from diffusion.checkpoint import TensorFile
    from diffusion.families.loader import detect_transformer

    with TensorFile(path) as file:
        return detect_transformer(file.shapes) is not None


def _make_room(ctx: Context, paths: list[Any], needed: int) -> dict[str, int]:
    """The memory figures for a transformer-family load: ``available`` (now) and ``freeable``.

    ``freeable`` is what the model cache holds for other files; when ``needed`` fits only with
    it, those models are dropped before the load (they are only truly freed when nothing else
    holds them: the loader's later peak then shows it). Nothing is dropped when one of
    ``paths`` is loaded already (a likely cache hit).
    """
    from pathlib import Path

    from diffusion.families.memory_check import available_bytes

    cache = ctx.services.model_cache()
    mine = {str(Path(p).resolve()) for p in paths}
    entries = cache.resident()
    free = available_bytes()
    others = [e for e in entries if e["path"] not in mine]
    freeable = sum(e["bytes"] for e in others)
    if free < needed <= free + freeable and not any(e["path"] in mine for e in entries):
        log.info("dropping %d cached models to make room for %d bytes", len(others), needed)
        for path in {e["path"] for e in others}:
            cache.unload(path)
    return {"available": free, "freeable": freeable}


@node(category="advanced/loaders", display_name="Load Diffusion Model")
def UNETLoader(
    unet_name: Annotated[str, OneOf(files_in("diffusion_models"))],
    weight_dtype: Annotated[str, OneOf(WEIGHT_DTYPES)],
    *,
    ctx: Context,
) -> Model:
    """Loads a diffusion model file on its own (an SD UNet, or an SD3/Flux transformer), to pair with separate
    text encoders and a VAE. For SD3/Flux an fp8 ``weight_dtype`` stores the weights in fp8 and upcasts each
    layer for compute (about a quarter of the fp32 memory)."""
    path = _model_file(ctx, "diffusion_models", unet_name, "Diffusion model")
    precision = ctx.services.precision
    if _is_transformer_file(path):
        from diffusion.families.loader import file_bytes, load_diffusion_model

        device = _device(None)
        needed = file_bytes(path, precision=precision, device=device, weight_dtype=weight_dtype, parts=("model",))
        room = _make_room(ctx, [path], needed or 0)

        def load_transformer() -> Any:
            return load_diffusion_model(path, precision=precision, device=device, weight_dtype=weight_dtype, **room)

        return ctx.services.model_cache().get(path, ("transformer", precision, weight_dtype), load_transformer)

    from diffusion.model_files import load_unet_file

    if weight_dtype != "default":
        log.info("%s: %s storage is not used for SD UNets; loading at the %s precision", unet_name, weight_dtype,
                 precision)

    def load() -> Any:
        unet = load_unet_file(path, precision=precision, device=_device(None))
        with_compile(ctx, unet)
        return unet

    return ctx.services.model_cache().get(path, ("unet", precision, ctx.services.compile), load)


#: CLIP types read by ``diffusion.families.loader`` (the rest by ``diffusion.model_files``).
TRANSFORMER_CLIP_TYPES = ("sd3", "flux")


def _refuse_t5(paths: list[Any], clip_type: str) -> None:
    """A one-line error when a T5 file is given to a CLIP type that has no T5 slot."""
    from diffusion.checkpoint import TensorFile
    from diffusion.families.loader import text_encoder_kind

    for path in paths:
        with TensorFile(path) as file:
            if text_encoder_kind(file.shapes) == "t5xxl":
                raise ValueError(f"{file.path.name}: a T5-XXL text encoder, but CLIP type {clip_type!r} takes CLIP "
                                 "files only (T5 goes with type sd3 or flux)")


def _clip(ctx: Context, names: list[str], clip_type: str, device: str | None) -> Any:
    from diffusion.model_files import CLIP_TYPES as SUPPORTED

    if clip_type not in (*SUPPORTED, *TRANSFORMER_CLIP_TYPES):
        raise ValueError(f"CLIP type {clip_type!r} is not supported yet (supported: "
                         f"{', '.join((*SUPPORTED, *TRANSFORMER_CLIP_TYPES))})")
    paths = [_model_file(ctx, "text_encoders", name, "Text encoder") for name in names]
    precision = ctx.services.precision
    if clip_type in TRANSFORMER_CLIP_TYPES:
        from diffusion.families.loader import file_bytes, load_text_encoders, sd3_slots

        slots = sd3_slots(paths)  # by their weights, in any order; a second file of one kind is refused
        needed = sum(file_bytes(p, precision=precision, device=_device(device)) or 0 for p in paths)
        room = _make_room(ctx, paths, needed)

        def load() -> Any:
            return load_text_encoders(slots, clip_type, precision=precision, device=_device(device),  # type: ignore[arg-type]
                                      **room)
    else:
        from diffusion.model_files import load_text_encoders as load_sd_text_encoders

        _refuse_t5(paths, clip_type)

        def load() -> Any:
            return load_sd_text_encoders(paths, clip_type, precision=precision, device=_device(device))

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
    """Loads one text-encoder file as a CLIP (``stable_diffusion``: SD1's CLIP-L, SD2's ViT-H, or a bigG alone;
    ``sd3``: one of SD3's CLIP-L, CLIP-G or T5-XXL, the others left out)."""
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
    """Loads two text-encoder files as one CLIP, in either order (``sdxl``: CLIP-L and bigG; ``sd3``: two of
    CLIP-L, CLIP-G and T5-XXL; ``flux``: CLIP-L and T5-XXL)."""
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
