"""ComfyUI's ``comfy.comfy_types.node_typing``: ``IO`` (socket type names) and the node base classes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ... import missing

__getattr__ = missing("comfy.comfy_types.node_typing")


class IO(StrEnum):
    """Socket type names; ``IO.ANY`` ("*") matches every type, as in ComfyUI."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"
    ANY = "*"

    def __ne__(self, value: object) -> bool:
        if self == "*" or value == "*":
            return False
        if not isinstance(value, str):
            return True
        return not ({t.strip() for t in self.value.split(",")} & {t.strip() for t in value.split(",")})

    def __eq__(self, value: object) -> bool:
        return str.__eq__(self, value)

    __hash__ = str.__hash__


InputTypeDict = dict[str, Any]


class ComfyNodeABC:
    """Base class V1 nodes may declare (it only documents the class attributes ComfyUI reads)."""

    DESCRIPTION: str = ""
    CATEGORY: str = ""
    EXPERIMENTAL: bool = False
    DEPRECATED: bool = False
