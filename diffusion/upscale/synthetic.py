"""Seeded random upscale models in their real key layouts (``noodlebox make-model --kind upscale``).

``esrgan`` is the original ESRGAN layout (``model.0``, ``model.1.sub...``), ``esrgan-new``
BasicSR's (``conv_first``, ``body...``, wrapped in ``params_ema`` in a ``.pth`` as
Real-ESRGAN releases are), ``compact`` Real-ESRGAN's SRVGGNetCompact. All are 4x.
``tiny`` models run in milliseconds on a 64x64 image; ``small`` ones have the released
models' shapes (RRDBNet nf 64, 23 blocks; compact nf 64, 32 convs).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from diffusion.files import atomic_path

from . import compact, rrdb

UPSCALE_ARCHS = ("esrgan", "esrgan-new", "compact")
UPSCALE_SIZES = ("tiny", "small")
_RRDB = {"tiny": rrdb.RRDBConfig(features=8, growth=4, blocks=1), "small": rrdb.RRDBConfig()}
_COMPACT = {"tiny": compact.CompactConfig(features=8, convs=2), "small": compact.CompactConfig()}


def random_state(arch: str = "esrgan", size: str = "tiny", seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of a seeded random 4x model of ``arch`` (same tensors for the same seed)."""
    if arch not in UPSCALE_ARCHS:
        raise ValueError(f"unknown upscale arch {arch!r}; expected one of {', '.join(UPSCALE_ARCHS)}")
    if size not in UPSCALE_SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(UPSCALE_SIZES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module: torch.nn.Module
        if arch == "compact":
            module = compact.SRVGGNetCompact(_COMPACT[size])
        else:
            module = rrdb.RRDBNet(_RRDB[size])
            # Small residual branches, as ESRGAN's own initialisation: the output stays near a smooth image.
            with torch.no_grad():
                for name, param in module.named_parameters():
                    if ".sub." in name and name.endswith("weight"):
                        param.mul_(0.1)
                module.model[-1].bias.fill_(0.5)  # mid grey plus a pattern, not a clamped black image
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    if arch == "esrgan-new":
        state = rrdb.to_new_layout(state, _RRDB[size])
    return state


def write_upscale_model(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0,
                        arch: str | None = None, size: str = "tiny", **_: Any) -> Path:
    """Write a random upscaler to ``out`` (``.safetensors``, else a weights-only ``.pth``), atomically.

    ``base`` and ``rank`` are part of make-model's writer signature and unused here.
    """
    arch = arch or "esrgan"
    state = random_state(arch, size, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from safetensors.torch import save as save_bytes

        data = save_bytes(state)
    else:
        buffer = io.BytesIO()  # saved from memory: the archive's inner name must not be the temp file's
        torch.save({"params_ema": state} if arch == "esrgan-new" else state, buffer)
        data = buffer.getvalue()
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return out
