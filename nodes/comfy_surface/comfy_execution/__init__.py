"""ComfyUI's ``comfy_execution`` package."""

from __future__ import annotations

from .. import missing

__getattr__ = missing("comfy_execution")
