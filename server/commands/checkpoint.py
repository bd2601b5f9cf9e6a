"""``noodlebox make-checkpoint`` and ``noodlebox inspect-checkpoint``.

``make-checkpoint --arch sd15 --size tiny --seed 0 OUT`` writes a seeded random-weight
checkpoint in the original single-file layout (same seed, same bytes).
``inspect-checkpoint FILE`` prints JSON: ``arch``, ``prediction``, ``unet``, ``vae``,
``text_encoders``, ``dtype``, ``size_bytes``; a file that is not a checkpoint exits 2
with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.cli import UserError

# The choices are spelled out here so that `noodlebox --help` does not import torch;
# tests/cli/test_checkpoint_cli.py checks them against nodes.model_tools.
ARCHS = ("sd15", "sd15-inpaint", "sd15-ip2p", "sd2", "sd2-v", "sdxl", "sdxl-refiner", "sd35", "flux-dev",
         "flux-schnell", "sd-x4-upscaler", "zero123", "sd2-unclip")
SIZES = ("tiny", "small", "full")
STORAGE_DTYPES = ("fp32", "fp16", "bf16")
ORIGIN = "noodlebox synthetic random weights"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``make-checkpoint`` and ``inspect-checkpoint`` subcommands."""
    make = sub.add_parser(
        "make-checkpoint",
        help="write a random-weight test checkpoint in the original single-file layout",
        description=f"Write a seeded random-weight checkpoint ({ORIGIN}).",
    )
    make.add_argument("--arch", choices=ARCHS, default="sd15")
    make.add_argument("--size", choices=SIZES, default="tiny",
                      help="tiny: tests; small: 320-channel UNet, real text encoders and VAE; full: real shapes")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--dtype", choices=STORAGE_DTYPES, default="fp16")
    make.add_argument("out", type=Path, help="output .safetensors file")
    make.set_defaults(func=_make)

    inspect = sub.add_parser("inspect-checkpoint", help="describe a checkpoint as JSON (no weights loaded)")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--prediction", choices=("auto", "eps", "v"), default="auto",
                         help="override the detected prediction type")
    inspect.set_defaults(func=_inspect)


def _make(args: argparse.Namespace) -> int:
    from nodes import model_tools

    if args.out.suffix.lower() != ".safetensors":
        raise UserError(f"{args.out}: the output file must end in .safetensors")
    if args.seed < 0:
        raise UserError("--seed must be 0 or more")
    try:
        path = model_tools.make_checkpoint(args.out, args.arch, args.size, args.seed, args.dtype)
    except ValueError as exc:  # e.g. a size that is not made for that arch
        raise UserError(f"{args.out}: {exc}") from None
    except OSError as exc:
        raise UserError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    print(path)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from nodes import model_tools

    try:
        info = model_tools.describe_checkpoint(args.file, args.prediction)
    except model_tools.CheckpointError as exc:
        raise UserError(str(exc)) from None
    json.dump(info, sys.stdout, indent=2)
    print()
    return 0
