"""ComfyUI's ``comfy`` package, as packs see it; the submodules that exist here are the ones provided."""

from __future__ import annotations

from .. import missing

__getattr__ = missing("comfy")
