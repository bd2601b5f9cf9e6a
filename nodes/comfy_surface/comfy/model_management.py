"""ComfyUI's ``comfy.model_management``: devices, dtypes and memory, as noodlebox runs models.

Noodlebox keeps loaded models in its own cache (``diffusion.memory``); the ``load_*``
calls are accepted and do nothing more, the ``unload``/``soft_empty_cache`` calls free
the accelerator's cache.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import missing, runtime

__getattr__ = missing("comfy.model_management")

OOM_EXCEPTION = torch.cuda.OutOfMemoryError


class InterruptProcessingException(Exception):
    """Raised when the user interrupted the run."""


def get_torch_device() -> torch.device:
    """The device models run on."""
    from diffusion.memory import pick_device

    return pick_device()


def intermediate_device() -> torch.device:
    """Where node outputs (images, latents) live between nodes: the CPU."""
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    """Where an unused UNet rests: the CPU."""
    return torch.device("cpu")


vae_offload_device = text_encoder_offload_device = unet_offload_device
vae_device = text_encoder_device = get_torch_device


def get_torch_device_name(device: Any = None) -> str:
    """A readable name of ``device``."""
    device = device or get_torch_device()
    if getattr(device, "type", "") == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(device)


def get_autocast_device(device: Any) -> str:
    """The device type string autocast wants."""
    return getattr(device, "type", "cuda")


def _system_memory(pages: str) -> int:
    import os

    return int(os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE"))


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> Any:
    """Free memory of ``dev`` in bytes (system memory for the CPU)."""
    dev = dev or get_torch_device()
    if getattr(dev, "type", "cpu") == "cuda":
        free = torch.cuda.mem_get_info(dev)[0]
    else:
        free = _system_memory("SC_AVPHYS_PAGES")
    return (free, free) if torch_free_too else free


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> Any:
    """Total memory of ``dev`` in bytes."""
    dev = dev or get_torch_device()
    if getattr(dev, "type", "cpu") == "cuda":
        total = torch.cuda.mem_get_info(dev)[1]
    else:
        total = _system_memory("SC_PHYS_PAGES")
    return (total, total) if torch_total_too else total


def soft_empty_cache(force: bool = False) -> None:
    """Free the accelerator's cached memory."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def unload_all_models() -> None:
    """Free cached accelerator memory (noodlebox's model cache is managed by the server)."""
    soft_empty_cache()


def load_model_gpu(model: Any) -> None:
    """Accepted: noodlebox moves models when it runs them."""


def load_models_gpu(models: Any, memory_required: int = 0, **kwargs: Any) -> None:
    """Accepted: noodlebox moves models when it runs them."""


def unet_dtype(device: Any = None, model_params: int = 0, supported_dtypes: Any = None, **kwargs: Any) -> torch.dtype:
    """The UNet dtype for ``device``."""
    return torch.float16 if getattr(device or get_torch_device(), "type", "cpu") == "cuda" else torch.float32


def vae_dtype(device: Any = None, allowed_dtypes: Any = None) -> torch.dtype:
    """The VAE dtype (float32: noodlebox decodes in full precision)."""
    return torch.float32


def text_encoder_dtype(device: Any = None) -> torch.dtype:
    """The text encoder dtype."""
    return unet_dtype(device)


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    """Whether half precision is used on ``device``."""
    return getattr(device or get_torch_device(), "type", "cpu") == "cuda"


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    """Whether bfloat16 is used on ``device`` (noodlebox picks fp16 on CUDA)."""
    return False


def is_device_mps(device: Any) -> bool:
    """Whether ``device`` is Apple's MPS."""
    return getattr(device, "type", "") == "mps"


def is_intel_xpu() -> bool:
    """Whether an Intel XPU is used (never, here)."""
    return False


def is_directml_enabled() -> bool:
    """Whether DirectML is used (never, here)."""
    return False


def cast_to(weight: torch.Tensor, dtype: Any = None, device: Any = None, non_blocking: bool = False,
            copy: bool = False, stream: Any = None) -> torch.Tensor:
    """``weight`` on ``device`` in ``dtype``."""
    return weight.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy)


def processing_interrupted() -> bool:
    """Whether the running prompt was interrupted."""
    try:
        runtime.exec_ctx().check_interrupted()
    except Exception:
        return True
    return False


def throw_exception_if_processing_interrupted() -> None:
    """Raise the executor's interruption if the running prompt was interrupted."""
    runtime.exec_ctx().check_interrupted()
