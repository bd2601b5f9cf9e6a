"""``noodlebox make-model``: seeded random adapters and helper models in their real key layouts.

``make-model --kind lora --base CHECKPOINT --rank 4 --seed 0 OUT`` writes a LoRA (or a
ControlNet, an upscaler, ...) whose keys and shapes are those real files have, for the
checkpoint named by ``--base`` where the kind depends on one. Same seed, same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from server.cli import UserError

# Spelled out here so that `noodlebox --help` does not import torch;
# tests/cli/test_make_model_cli.py checks them against nodes.model_tools.MODEL_KINDS.
KINDS: tuple[str, ...] = ("diffusion_model", "clip_l", "clip_g", "t5xxl", "vae16",
                          "controlnet", "diff-controlnet", "t2i-adapter", "control-lora", "clip-vision", "style",
                          "upscale")
KINDS += ("lora", "locon", "loha", "lokr", "diffusers-lora")
KINDS += ("taesd",)
KINDS += ("gligen",)
KINDS += ("hypernetwork",)
KINDS += ("sd3-controlnet",)
KINDS += ("union",)
KINDS += ("photomaker",)
SIZES = ("tiny", "small")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``make-model`` subcommand."""
    make = sub.add_parser("make-model", help="write a seeded random LoRA, ControlNet, upscaler, ... in its real layout")
    make.add_argument("--kind", choices=KINDS, required=True)
    make.add_argument("--base", type=Path, help="the checkpoint the model is made for (LoRAs, ControlNets)")
    make.add_argument("--rank", type=int, default=4, help="rank of low-rank adapters")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--arch", help="architecture variant, where a kind has several")
    make.add_argument("--size", choices=SIZES, default="tiny")
    make.add_argument("out", type=Path, help="output .safetensors (or .pth) file")
    make.set_defaults(func=_make)


def _make(args: argparse.Namespace) -> int:
    from nodes import model_tools

    if args.seed < 0 or args.rank < 1:
        raise UserError("--seed must be 0 or more and --rank 1 or more")
    if args.base is not None and not args.base.is_file():
        raise UserError(f"{args.base}: no such checkpoint")
    try:
        path = model_tools.make_model(args.kind, args.out, base=args.base, rank=args.rank, seed=args.seed,
                                      arch=args.arch, size=args.size)
    except (ValueError, model_tools.CheckpointError) as exc:
        raise UserError(f"{args.out}: {exc}") from None
    except OSError as exc:
        raise UserError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    print(path)
    return 0
