"""``noodlebox serve``: placeholder until the server lands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser("serve", help="serve the editor and the ComfyUI-compatible API")
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8188)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    print("noodlebox serve: not yet (the server is being built)")
    return 0
