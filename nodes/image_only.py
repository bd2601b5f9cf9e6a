"""Image-conditioned checkpoints: loading and saving MODEL + CLIP_VISION + VAE files, and Stable Zero123's
conditioning (novel views of an object at a given elevation and azimuth).

ImageOnlyCheckpointLoader reads a single-file checkpoint whose image encoder sits under
``cond_stage_model.model.visual.`` (Stable Zero123); ImageOnlyCheckpointSave writes the same
layout back. The StableZero123 nodes build ComfyUI's conditioning for such a model: the
image's CLIP embedding with a camera vector per view, the image's latent beside the noisy one,
a zeroed negative, and an empty latent at the asked size (``diffusion.zero123``).
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import (
    ClipVision,
    Conditioning,
    Context,
    ExtraPngInfo,
    HiddenPrompt,
    Image,
    Latent,
    Model,
    OneOf,
    Output,
    Range,
    Tooltip,
    Vae,
    files_in,
    node,
)
from .latent import MAX_RESOLUTION
from .loaders import _model_file
from .model_save import _metadata, _target
from .vae import _vae

_ANGLE = Range(-180.0, 180.0, step=0.1, round=False)
_SIZE = Range(16, MAX_RESOLUTION, step=8)


@node(category="loaders/video_models", display_name="Image Only Checkpoint Loader (img2vid model)",
      python_module="comfy_extras.nodes_video_model")
def ImageOnlyCheckpointLoader(
    ckpt_name: Annotated[str, OneOf(files_in("checkpoints")), Tooltip("A checkpoint with an image encoder "
                                                                      "(Stable Zero123).")],
    *,
    ctx: Context,
) -> tuple[Annotated[Model, Output("MODEL")], Annotated[ClipVision, Output("CLIP_VISION")],
           Annotated[Vae, Output("VAE")]]:
    """Loads a checkpoint conditioned on images instead of text: its model, image encoder and VAE."""
    from diffusion.memory import pick_device
    from diffusion.zero123 import load_image_only

    path = _model_file(ctx, "checkpoints", ckpt_name, "Checkpoint")
    precision = ctx.services.precision

    def load() -> Any:
        return load_image_only(path, precision=precision, device=pick_device())

    return ctx.services.model_cache().get(path, ("image_only_checkpoint", precision), load)


@node(category="advanced/model_merging", output_node=True, python_module="comfy_extras.nodes_video_model")
def ImageOnlyCheckpointSave(model: Model, clip_vision: ClipVision, vae: Vae,
                            filename_prefix: str = "checkpoints/ComfyUI", prompt: HiddenPrompt = None,
                            extra_pnginfo: ExtraPngInfo = None, *, ctx: Context) -> None:
    """Saves the model (with its patches), image encoder and VAE as one checkpoint that the image-only
    loader reads back."""
    from diffusion.zero123 import save_image_only

    save_image_only(_target(ctx, filename_prefix), model, clip_vision, _vae(vae), _metadata(prompt, extra_pnginfo))


def _encode(name: str, clip_vision: Any, init_image: Any, vae: Any, width: int, height: int) -> tuple[Any, Any]:
    """The init image's CLIP embeds and its (unscaled) latent at ``width`` x ``height``."""
    from diffusion import vae as vae_ops
    from diffusion.control.clip_vision import encode_image
    from diffusion.resize import upscale

    if getattr(init_image, "ndim", 0) != 4:
        raise ValueError(f"{name}: init_image must be an IMAGE batch [B, H, W, C]")
    embeds = encode_image(clip_vision, init_image, crop=True).image_embeds
    pixels = upscale(init_image.movedim(-1, 1).float(), width, height, "bilinear", "center").movedim(1, -1)
    return embeds, vae_ops.encode(_vae(vae), pixels[..., :3])


_Outputs = tuple[Annotated[Conditioning, Output("positive")], Annotated[Conditioning, Output("negative")],
                 Annotated[Latent, Output("latent")]]


@node(category="conditioning/3d_models", python_module="comfy_extras.nodes_stable3d")
def StableZero123_Conditioning(
    clip_vision: ClipVision,
    init_image: Annotated[Image, Tooltip("The object to show from another angle.")],
    vae: Vae,
    width: Annotated[int, _SIZE] = 256,
    height: Annotated[int, _SIZE] = 256,
    batch_size: Annotated[int, Range(1, 4096)] = 1,
    elevation: Annotated[float, _ANGLE, Tooltip("Camera elevation in degrees.")] = 0.0,
    azimuth: Annotated[float, _ANGLE, Tooltip("Camera azimuth in degrees.")] = 0.0,
) -> _Outputs:
    """Conditions a Stable Zero123 model on an image and a camera angle; the latent starts empty."""
    import torch

    from diffusion.zero123 import conditioning

    embeds, latent = _encode("StableZero123_Conditioning", clip_vision, init_image, vae, width, height)
    positive, negative = conditioning(embeds, latent, [(elevation, azimuth)], batched=False)
    return positive, negative, {"samples": torch.zeros([batch_size, 4, height // 8, width // 8])}


@node(category="conditioning/3d_models", python_module="comfy_extras.nodes_stable3d")
def StableZero123_Conditioning_Batched(
    clip_vision: ClipVision,
    init_image: Annotated[Image, Tooltip("The object to show from other angles.")],
    vae: Vae,
    width: Annotated[int, _SIZE] = 256,
    height: Annotated[int, _SIZE] = 256,
    batch_size: Annotated[int, Range(1, 4096)] = 1,
    elevation: Annotated[float, _ANGLE, Tooltip("The first view's camera elevation in degrees.")] = 0.0,
    azimuth: Annotated[float, _ANGLE, Tooltip("The first view's camera azimuth in degrees.")] = 0.0,
    elevation_batch_increment: Annotated[float, _ANGLE, Tooltip("Added to the elevation for each next view.")] = 0.0,
    azimuth_batch_increment: Annotated[float, _ANGLE, Tooltip("Added to the azimuth for each next view.")] = 0.0,
) -> _Outputs:
    """Conditions a Stable Zero123 model on an image with one camera angle per batch entry (a turn-around)."""
    import torch

    from diffusion.zero123 import conditioning, view_angles

    embeds, latent = _encode("StableZero123_Conditioning_Batched", clip_vision, init_image, vae, width, height)
    views = view_angles(elevation, azimuth, batch_size, elevation_batch_increment, azimuth_batch_increment)
    positive, negative = conditioning(embeds, latent, views, batched=True)
    samples = torch.zeros([batch_size, 4, height // 8, width // 8])
    return positive, negative, {"samples": samples, "batch_index": [0] * batch_size}
