"""ComfyUI's ``comfy.comfy_types``: the IO type names and node typing helpers."""

from __future__ import annotations

from .. import missing
from .node_typing import IO, ComfyNodeABC, InputTypeDict

__all__ = ["IO", "ComfyNodeABC", "InputTypeDict"]
_missing = missing("comfy.comfy_types")


def __getattr__(name: str) -> object:
    return _missing(name)
