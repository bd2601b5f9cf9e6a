"""ComfyUI's ``comfy.model_patcher``: ``ModelPatcher``, the MODEL values packs receive (see ``values``)."""

from __future__ import annotations

from .. import missing
from ..values import ModelPatcher

__all__ = ["ModelPatcher"]
__getattr__ = missing("comfy.model_patcher")
