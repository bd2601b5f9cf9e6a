"""ComfyUI's ``comfy.k_diffusion`` package: ``sampling`` helpers."""

from __future__ import annotations

from ... import missing

__getattr__ = missing("comfy.k_diffusion")
