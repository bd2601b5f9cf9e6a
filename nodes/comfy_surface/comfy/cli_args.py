"""ComfyUI's ``comfy.cli_args``: ``args`` with ComfyUI's option names, at the values noodlebox runs with."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from .. import missing

__getattr__ = missing("comfy.cli_args")


class LatentPreviewMethod:
    """ComfyUI's preview method names."""

    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class _Args(SimpleNamespace):
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"noodlebox does not provide ComfyUI's comfy.cli_args.args.{name}")


args = _Args(
    base_directory=None, output_directory=None, input_directory=None, temp_directory=None, user_directory=None,
    disable_metadata=False, preview_method=LatentPreviewMethod.Latent2RGB, preview_size=512, fast=set(),
    cpu=False, listen="127.0.0.1", port=8188, multi_user=False, verbose="INFO", disable_all_custom_nodes=False,
    lowvram=False, highvram=False, normalvram=False, novram=False, gpu_only=False, force_fp16=False,
    force_fp32=False, fp16_vae=False, bf16_vae=False, fp32_vae=False, dont_upcast_attention=False,
    use_split_cross_attention=False, use_pytorch_cross_attention=True, disable_xformers=True,
    deterministic=False, cuda_device=None, enable_cors_header=None, front_end_version="comfyanonymous/ComfyUI@latest",
)
