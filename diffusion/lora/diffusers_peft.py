"""The diffusers and PEFT spellings of LoRA parts, and diffusers' older attention-processor stems.

PEFT stores ``<module>.lora_A.weight`` (down) and ``<module>.lora_B.weight`` (up), DoRA's
magnitude as ``<module>.lora_magnitude_vector``; diffusers' own files use
``<module>.lora.down.weight`` / ``.lora.up.weight`` or ``.lora_linear_layer.down.weight``,
and its first attention-processor LoRAs named the module ``attn1.processor.to_q_lora``
for ``attn1.to_q``. :data:`PARTS` maps these suffixes to the part names of
``diffusion.lora.load`` (the kohya ones: ``up``, ``down``, ``alpha``, ``dora_scale``).
"""

from __future__ import annotations

import re

PARTS: dict[str, str] = {
    ".lora_B.weight": "up",
    ".lora_A.weight": "down",
    ".lora_B.default.weight": "up",
    ".lora_A.default.weight": "down",
    ".lora.up.weight": "up",
    ".lora.down.weight": "down",
    ".lora_linear_layer.up.weight": "up",
    ".lora_linear_layer.down.weight": "down",
    ".lora_magnitude_vector": "dora_scale",
    ".lora_magnitude_vector.default": "dora_scale",
    ".lora_magnitude_vector.default.weight": "dora_scale",
    ".up.weight": "up",
    ".down.weight": "down",
}

_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora$")


def normalize_stem(stem: str) -> str:
    """A diffusers attention-processor stem as the module it patches (``...attn1.processor.to_out_lora`` ->
    ``...attn1.to_out.0``); other stems unchanged."""
    match = _PROCESSOR.search(stem)
    if match is None:
        return stem
    layer = "to_out.0" if match[1] == "to_out" else match[1]
    return f"{stem[:match.start()]}.{layer}"
