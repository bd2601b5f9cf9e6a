"""``noodlebox convert FILE``: print the API prompt of a UI workflow (an API prompt is printed as is)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graph.files import WorkflowFileError, load_workflow_file
from graph.schema import Registry
from graph.workflow import WorkflowError, to_prompt
from server.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``convert`` subcommand."""
    p = sub.add_parser(
        "convert",
        help="print the API prompt of a UI workflow (JSON or PNG)",
        description="Convert an editor workflow (UI JSON, or a PNG with an embedded workflow) into the API "
        "prompt the editor would queue. An API prompt is printed unchanged. {a|b} dynamic prompts are not "
        "expanded.",
    )
    p.add_argument("file", type=Path, help="workflow file: UI JSON, API JSON or PNG")
    p.add_argument("-o", "--output", type=Path, help="write the prompt here instead of standard output")
    p.add_argument("--indent", type=int, default=2, help="JSON indentation (default 2; 0 for one line)")
    add_custom_nodes_option(p)
    p.set_defaults(func=_convert)


def add_custom_nodes_option(parser: argparse.ArgumentParser) -> None:
    """``--custom-nodes DIR`` (repeatable), shared with ``validate``."""
    parser.add_argument(
        "--custom-nodes",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also load ComfyUI-style custom nodes from DIR (repeatable)",
    )


def real_registry(custom_nodes_dirs: Sequence[Path] = ()) -> Registry:
    """The registry of built-in (and the given custom) nodes, without model services."""
    from nodes.registry import build_registry  # server -> nodes; imported late to keep --help fast

    return build_registry(None, custom_nodes_dirs)


def load_workflow(path: Path, registry: Registry) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(prompt, workflow)`` of a workflow file: its UI workflow converted if it has one, else its API prompt.

    A ComfyUI PNG carries both; the workflow is used (and returned, for a saved PNG's chunk), as the
    editor does when the PNG is dropped on it. Errors become :class:`UserError` (one line).
    """
    try:
        loaded = load_workflow_file(path)
        if loaded.workflow is not None:
            return to_prompt(loaded.workflow, registry), loaded.workflow
    except WorkflowFileError as exc:
        raise UserError(str(exc)) from None
    except WorkflowError as exc:
        raise UserError(f"{path}: {exc}") from None
    assert loaded.prompt is not None  # load_workflow_file never returns neither
    return loaded.prompt, None


def load_prompt(path: Path, registry: Registry) -> dict[str, Any]:
    """The API prompt of a workflow file (see :func:`load_workflow`)."""
    return load_workflow(path, registry)[0]


def _convert(args: argparse.Namespace) -> int:
    prompt = load_prompt(args.file, real_registry(args.custom_nodes))
    text = json.dumps(prompt, indent=args.indent or None, ensure_ascii=False)
    if args.output is None:
        sys.stdout.write(text + "\n")
        return 0
    try:
        args.output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{args.output}: cannot write: {exc.strerror}") from None
    return 0
