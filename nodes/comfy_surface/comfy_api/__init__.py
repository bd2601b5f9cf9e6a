"""ComfyUI's ``comfy_api`` package: the V3 node schema lives in ``comfy_api.latest``."""

from __future__ import annotations

from .. import missing

__getattr__ = missing("comfy_api")
