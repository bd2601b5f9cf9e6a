"""Seeded random SD3 ControlNets for an SD3/SD3.5 file (``noodlebox make-model --kind sd3-controlnet --base F``).

The ControlNet has the base transformer's width, text widths, patch size and positional
grid, and half its blocks (at least one), in the diffusers layout that
:mod:`diffusion.control.sd3` reads. Its hint embedding and output projections are random
too (diffusers starts them at zero), so it changes the model's output; so is the positional grid,
as in the synthetic transformers. Same seed, same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights

from diffusion.checkpoint import CheckpointError, TensorFile
from diffusion.families import sd3
from diffusion.files import atomic_path
from diffusion.synthetic import ORIGIN, _random_tensor, save_safetensors


def controlnet_config(base_shapes: dict[str, tuple[int, ...]], name: str = "base") -> dict[str, Any]:
    """``SD3ControlNetModel`` kwargs for a ControlNet that fits the SD3 transformer with these tensor shapes."""
    prefix = sd3.PREFIX if sd3.PREFIX + sd3.MARKER in base_shapes else ""
    if prefix + sd3.MARKER not in base_shapes:
        raise CheckpointError(f"{name}: not an SD3/SD3.5 model (no {sd3.MARKER})")
    base = sd3.config_from_shapes(base_shapes, prefix)
    return {
        "sample_size": base["sample_size"], "patch_size": base["patch_size"], "in_channels": base["in_channels"],
        "num_layers": max(1, base["num_layers"] // 2), "attention_head_dim": base["attention_head_dim"],
        "num_attention_heads": base["num_attention_heads"], "joint_attention_dim": base["joint_attention_dim"],
        "caption_projection_dim": base["caption_projection_dim"],
        "pooled_projection_dim": base["pooled_projection_dim"], "out_channels": base["in_channels"],
        "pos_embed_max_size": base["pos_embed_max_size"], "qk_norm": base["qk_norm"],
    }


def make_sd3_controlnet(base: Path, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (float16, diffusers layout) and metadata of a random SD3 ControlNet for ``base``."""
    from diffusers import SD3ControlNetModel

    with TensorFile(base) as file:
        config = controlnet_config({k: tuple(v) for k, v in file.shapes.items()}, file.path.name)
    with init_empty_weights():
        model = SD3ControlNetModel(**config)
    tensors = {key: _random_tensor(f"sd3-controlnet.{key}", tuple(tensor.shape), seed).half().contiguous()
               for key, tensor in sorted(model.state_dict().items())}
    meta = {"noodlebox.origin": ORIGIN, "noodlebox.kind": "sd3-controlnet", "noodlebox.seed": str(seed),
            "noodlebox.base_arch": "sd3"}
    return tensors, meta


def write_sd3_controlnet(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0,
                         arch: str | None = None, size: str = "tiny") -> Path:
    """``make-model --kind sd3-controlnet --base F``: a random SD3 ControlNet for the SD3/SD3.5 file ``F``."""
    if base is None:
        raise ValueError("--base is required for an sd3-controlnet: the SD3/SD3.5 checkpoint or diffusion model")
    tensors, meta = make_sd3_controlnet(base, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_safetensors(tensors, tmp, meta)
    return out
