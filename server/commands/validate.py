"""``noodlebox validate FILE``: check a workflow as ``POST /prompt`` would.

Prints ``ok`` (exit 0), or ComfyUI's error JSON ``{"error": ..., "node_errors": ...}`` on
standard output (exit 2), the same body a 400 from ``/prompt`` carries.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from graph.validate import validate_prompt
from server.commands.convert import add_custom_nodes_option, load_prompt, real_registry


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``validate`` subcommand."""
    p = sub.add_parser(
        "validate",
        help="check a workflow (UI or API JSON, or PNG) against the installed nodes",
        description="Validate a workflow as POST /prompt does. Prints 'ok' (exit 0) or ComfyUI's error JSON "
        '{"error": ..., "node_errors": ...} (exit 2).',
    )
    p.add_argument("file", type=Path, help="workflow file: UI JSON, API JSON or PNG")
    add_custom_nodes_option(p)
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    registry = real_registry(args.custom_nodes)
    result = validate_prompt(load_prompt(args.file, registry), registry)
    if result.ok:
        print("ok")
        if result.node_errors:
            # Queued by ComfyUI too (some outputs are valid); say what will not run.
            print(json.dumps({"node_errors": result.node_errors}), file=sys.stderr)
        return 0
    print(json.dumps({"error": result.error, "node_errors": result.node_errors}, ensure_ascii=False))
    return 2
