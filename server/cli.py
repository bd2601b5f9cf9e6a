"""The ``noodlebox`` command line.

Each subcommand lives in its own module under ``server/commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking
the parsed arguments and returning an exit code. Errors the user can fix are raised as
:class:`UserError` and printed as one line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "server.commands.serve",
    "server.commands.run",
    "server.commands.validate",
    "server.commands.convert",
    "server.commands.checkpoint",
    "server.commands.make_model",
)


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand that is installed."""
    parser = argparse.ArgumentParser(prog="noodlebox", description="A node-graph workflow engine for Stable Diffusion.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"noodlebox: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("noodlebox: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    # Re-import so that commands raise the same UserError class this block catches.
    from server.cli import main as _main

    sys.exit(_main())
