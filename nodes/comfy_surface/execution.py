"""ComfyUI's ``execution`` module: the names packs import from it."""

from __future__ import annotations

from graph.schema import ExecutionBlocker

from . import missing

__all__ = ["ExecutionBlocker"]
__getattr__ = missing("execution")
