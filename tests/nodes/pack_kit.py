"""Helpers for the custom-node-pack tests: a registry over the test packs, and running prompts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from graph.executor import Executor, RunResult
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

DATA = Path(__file__).resolve().parents[1] / "data"
PACKS = DATA / "packs"
BAD_PACKS = DATA / "bad_packs"


def pack_registry(base: Path, dirs: list[Path], checkpoint: Path | None = None) -> NodeRegistry:
    """A registry over ``base`` with the packs of ``dirs``; ``checkpoint`` becomes checkpoints/tiny.safetensors."""
    folders = Folders(base)
    if checkpoint is not None:
        target = Path(folders.paths("checkpoints")[0]) / "tiny.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(checkpoint, target)
        except OSError:
            shutil.copyfile(checkpoint, target)
    return build_registry(Services(folders=folders, precision="fp32"), custom_nodes_dirs=dirs)


def run_prompt(registry: NodeRegistry, prompt: dict[str, Any],
               extra_data: dict[str, Any] | None = None) -> tuple[RunResult, list[tuple[str, dict]]]:
    """Validate and run ``prompt``; returns the result and the events sent."""
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    events: list[tuple[str, dict]] = []
    result = Executor(registry).run(checked.prompt, "p1", checked.outputs, extra_data=extra_data,
                                    sink=lambda e, d: events.append((e, d)))
    return result, events


class QuietContext:
    """An executor context for calling node behaviours directly."""

    node_id = "7"
    prompt_id = "p"
    extra_data: dict[str, Any] = {}

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []

    def progress(self, value: int, total: int, preview: object = None) -> None:
        self.steps.append((value, total))

    def check_interrupted(self) -> None:
        pass


def call(registry: NodeRegistry, name: str, ctx: Any = None, **inputs: Any) -> Any:
    """Run node ``name`` once with ``inputs``; returns its output tuple (or result dict)."""
    behaviour = registry[name].behaviour
    instance = behaviour.new_instance()
    return behaviour.execute(instance, ctx or QuietContext(), inputs)
