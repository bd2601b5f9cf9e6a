"""ComfyUI's ``comfy_execution.graph``: ``ExecutionBlocker``."""

from __future__ import annotations

from graph.schema import ExecutionBlocker

from .. import missing

__all__ = ["ExecutionBlocker"]
__getattr__ = missing("comfy_execution.graph")
