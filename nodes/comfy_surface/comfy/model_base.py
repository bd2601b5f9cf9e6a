"""ComfyUI's ``comfy.model_base``: ``ModelType``, the prediction kinds."""

from __future__ import annotations

from enum import Enum

from .. import missing

__getattr__ = missing("comfy.model_base")


class ModelType(Enum):
    """What a model predicts (ComfyUI's numbering)."""

    EPS = 1
    V_PREDICTION = 2
    V_PREDICTION_EDM = 3
    STABLE_CASCADE = 4
    EDM = 5
    FLOW = 6
    V_PREDICTION_CONTINUOUS = 7
    FLUX = 8
