"""Loader nodes: a checkpoint's MODEL, CLIP and VAE, or a separate VAE file.

Loaded models are kept in the registry's model cache (``services.models``), keyed by the
file's identity and the precision, so a second prompt with the same checkpoint does not
read it again and ``/free`` drops them. Precision comes from ``services.precision``
(``auto``: bf16 on CPUs with native bf16, fp16 on CUDA, else fp32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from .api import Clip, Context, Model, OneOf, Output, ServiceChoices, Tooltip, Vae, files_in, node
from .previews import tiny_vae_paths, vae_loader_names


def _model_file(ctx: Context, folder: str, name: str, what: str) -> Path:
    """The full path of ``name`` in the registry's ``folder`` models, or a one-line error."""
    path = ctx.folders.full_path(folder, name)
    if path is None:
        raise FileNotFoundError(f"{what} not found: {name} (looked in the {folder!r} model folders)")
    return path


def with_compile(ctx: Context, unet: Any = None, vae: Any = None) -> str | None:
    """Mark freshly loaded models to run through torch.compile when ``--compile`` says so.

    Sets the UNet's ``torch_compile_backend`` option (as TorchCompileModel does) and the VAE's
    ``compile_backend`` (its decoder); returns the backend (None: eager), which belongs in the
    model cache key.
    """
    backend = ctx.services.compile_backend()
    if backend is None:
        return None
    from diffusion.models import UNetModel

    if isinstance(unet, UNetModel):  # SD3/Flux transformers run eagerly for now
        unet.options["torch_compile_backend"] = backend
    if vae is not None and hasattr(vae.model, "post_quant_conv"):  # an AutoencoderKL (not TAESD)
        vae.compile_backend = backend
    return backend


@node(category="loaders", display_name="Load Checkpoint")
def CheckpointLoaderSimple(
    ckpt_name: Annotated[str, OneOf(files_in("checkpoints")), Tooltip("The name of the checkpoint (model) to load.")],
    *,
    ctx: Context,
) -> tuple[
    Annotated[Model, Output(tooltip="The model used for denoising latents.")],
    Annotated[Clip, Output(tooltip="The CLIP model used for encoding text prompts.")],
    Annotated[Vae, Output(tooltip="The VAE model used for encoding and decoding images to and from latent space.")],
]:
    """Loads a diffusion model checkpoint, diffusion models are used to denoise latents."""
    loaded = cached_checkpoint(ctx, _model_file(ctx, "checkpoints", ckpt_name, "Checkpoint"))
    return loaded.unet, loaded.clip, loaded.vae


def cached_checkpoint(ctx: Context, path: Any) -> Any:
    """The ``LoadedCheckpoint`` of a checkpoint file, from the model cache (loaded once for every loader node)."""
    from diffusion.checkpoint import load_checkpoint
    from diffusion.memory import pick_device

    precision = ctx.services.precision

    def load() -> Any:
        from diffusion.original_sources import attach_file_sources

        loaded = load_checkpoint(path, precision=precision, device=pick_device())
        attach_file_sources(loaded)  # LoRAs re-read originals from the file instead of copying them
        with_compile(ctx, loaded.unet, loaded.vae)
        return loaded

    return ctx.services.model_cache().get(path, ("checkpoint", precision, ctx.services.compile), load)


@node(category="loaders", display_name="Load VAE", description="")
def VAELoader(vae_name: Annotated[str, OneOf(ServiceChoices(lambda services: vae_loader_names(services.folders)))],
              *, ctx: Context) -> Vae:
    """Loads a separate VAE file (LDM layout) to use instead of a checkpoint's own, a TAESD pair
    from ``vae_approx`` (``taesd``, ``taesdxl``, ...) or ``pixel_space``."""
    from diffusion.checkpoint import load_vae
    from diffusion.memory import pick_device

    if vae_name == "pixel_space":
        from diffusion.taesd import pixel_space_vae

        return pixel_space_vae(pick_device())
    tiny = tiny_vae_paths(ctx, vae_name)
    if tiny is not None:
        from diffusion.taesd import tiny_vae_model

        return ctx.services.model_cache().get(tiny[1], ("taesd-vae", vae_name),
                                              lambda: tiny_vae_model(vae_name, tiny[0], tiny[1], pick_device()))
    path = _model_file(ctx, "vae", vae_name, "VAE")
    precision = ctx.services.precision

    def load() -> Any:
        vae = load_vae(path, precision=precision, device=pick_device())
        with_compile(ctx, vae=vae)
        return vae

    return ctx.services.model_cache().get(path, ("vae", precision, ctx.services.compile), load)
