"""MODEL, CLIP and VAE values as packs know them: ComfyUI's method names over noodlebox's values.

Noodlebox's values are ``diffusion.models.UNetModel``, ``diffusion.text.ClipTextEncoder``
and ``diffusion.models.VAEModel``. A pack node gets them wrapped (:func:`wrap`) in
:class:`ModelPatcher`, :class:`CLIP` and :class:`VAE`, which offer the methods packs call
(``clone``, ``model_options``, ``set_model_*``, ``tokenize``/``encode_from_tokens``,
``decode``/``encode``), and what it returns is unwrapped (:func:`unwrap`) before our own
nodes see it. CONDITIONING (``[[cond, {...}], ...]``), LATENT (``{"samples": ...}``),
IMAGE (``[B, H, W, C]``) and MASK are the same objects in both worlds and pass unchanged.
An attribute these wrappers do not have raises an AttributeError naming ComfyUI's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import NotProvidedError

_DOWNSCALE = 8


class _Wrapper:
    """Base of the wrappers: ``value`` is noodlebox's object; unknown names raise naming ComfyUI's class."""

    comfy_name = "value"

    def __init__(self, value: Any) -> None:
        self.value = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotProvidedError(f"noodlebox does not provide ComfyUI's {self.comfy_name}.{name}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {type(self.value).__name__}>"


class ModelPatcher(_Wrapper):
    """ComfyUI's ``comfy.model_patcher.ModelPatcher`` over a noodlebox MODEL (``UNetModel``).

    ``clone()`` is cheap (base module shared); the ``set_model_*`` methods change
    ``model_options`` of this value only, so clone first, as ComfyUI's nodes do.
    """

    comfy_name = "comfy.model_patcher.ModelPatcher"

    @property
    def model_options(self) -> dict[str, Any]:
        """ComfyUI's ``model_options`` dict (the MODEL's ``options``, same object)."""
        return self.value.options

    @model_options.setter
    def model_options(self, options: dict[str, Any]) -> None:
        self.value.options = options

    @property
    def load_device(self) -> Any:
        """The device the model runs on."""
        return self.value.device

    @property
    def offload_device(self) -> Any:
        """Where the model rests between runs (noodlebox keeps it on its device)."""
        return self.value.device

    def model_dtype(self) -> Any:
        """The model's weight dtype."""
        return self.value.dtype

    def clone(self) -> ModelPatcher:
        """A new value sharing the base weights, with its own patches and options."""
        return ModelPatcher(self.value.clone())

    def is_clone(self, other: Any) -> bool:
        """Whether ``other`` shares this value's base module."""
        other = unwrap(other)
        return getattr(other, "model", None) is self.value.model

    def _patching(self) -> Any:
        from diffusion import patching

        return patching

    def set_model_sampler_cfg_function(self, function: Callable[..., Any],
                                       disable_cfg1_optimization: bool = False) -> None:
        """Replace the CFG combination: ``function(args) -> x - denoised``."""
        self._patching().set_model_option(self.model_options, "sampler_cfg_function", function)
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_post_cfg_function(self, function: Callable[..., Any],
                                            disable_cfg1_optimization: bool = False) -> None:
        """Add a function run on the denoised result after CFG."""
        self._patching().append_model_option(self.model_options, "sampler_post_cfg_function", function)
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_pre_cfg_function(self, function: Callable[..., Any],
                                           disable_cfg1_optimization: bool = False) -> None:
        """Add a function run on the predictions before CFG."""
        self._patching().append_model_option(self.model_options, "sampler_pre_cfg_function", function)
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_unet_function_wrapper(self, function: Callable[..., Any]) -> None:
        """Wrap every UNet call: ``function(apply_model, {"input", "timestep", "c", "cond_or_uncond"})``."""
        self._patching().set_model_option(self.model_options, "model_function_wrapper", function)

    def set_model_denoise_mask_function(self, function: Callable[..., Any]) -> None:
        """Set the function that computes the inpainting denoise mask."""
        self._patching().set_model_option(self.model_options, "denoise_mask_function", function)

    def set_model_patch(self, patch: Any, name: str) -> None:
        """Append a patch to ``transformer_options["patches"][name]``."""
        self._patching().add_model_patch(self.model_options, name, patch)

    def set_model_patch_replace(self, patch: Any, name: str, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        """Replace one attention call of one block."""
        self._patching().set_model_patch_replace(self.model_options, patch, name, block_name, number,
                                                 transformer_index)

    def set_model_attn1_patch(self, patch: Any) -> None:
        """Append a self-attention patch."""
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch: Any) -> None:
        """Append a cross-attention patch."""
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_output_patch(self, patch: Any) -> None:
        """Append a self-attention output patch."""
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn2_output_patch(self, patch: Any) -> None:
        """Append a cross-attention output patch."""
        self.set_model_patch(patch, "attn2_output_patch")

    def set_model_input_block_patch(self, patch: Any) -> None:
        """Append an input-block patch."""
        self.set_model_patch(patch, "input_block_patch")

    def set_model_output_block_patch(self, patch: Any) -> None:
        """Append an output-block patch."""
        self.set_model_patch(patch, "output_block_patch")

    def set_model_attn1_replace(self, patch: Any, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        """Replace one self-attention call."""
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch: Any, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        """Replace one cross-attention call."""
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)


class CLIP(_Wrapper):
    """ComfyUI's ``comfy.sd.CLIP`` over a noodlebox ``ClipTextEncoder``."""

    comfy_name = "comfy.sd.CLIP"

    def clone(self) -> CLIP:
        """A new value sharing the text encoder weights."""
        return CLIP(self.value.clone())

    def clip_layer(self, layer_idx: int) -> None:
        """Stop at an earlier layer (clip skip), on this value."""
        self.value = self.value.with_clip_skip(layer_idx)

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, list[Any]]:
        """Weighted token chunks per stream (``{"l": ...}`` or ``{"l": ..., "g": ...}``)."""
        if return_word_ids:
            raise NotProvidedError("noodlebox does not provide ComfyUI's CLIP.tokenize(return_word_ids=True)")
        return self.value.tokenize(text)

    def encode_from_tokens(self, tokens: Any, return_pooled: bool | str = False, return_dict: bool = False) -> Any:
        """The conditioning tensor; with ``return_pooled`` also the pooled output; or a dict of both."""
        cond, pooled = self.value.encode_tokens(tokens)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens: Any, unprojected: bool = False,
                                     add_dict: dict[str, Any] | None = None) -> list[list[Any]]:
        """A CONDITIONING list ``[[cond, {"pooled_output": pooled, ...}]]``."""
        cond, pooled = self.value.encode_tokens(tokens)
        return [[cond, {"pooled_output": pooled, **(add_dict or {})}]]

    def encode(self, text: str) -> Any:
        """The conditioning tensor of ``text``."""
        return self.encode_from_tokens(self.tokenize(text))


class VAE(_Wrapper):
    """ComfyUI's ``comfy.sd.VAE`` over a noodlebox ``VAEModel``: ComfyUI's tensor layouts."""

    comfy_name = "comfy.sd.VAE"
    downscale_ratio = _DOWNSCALE
    upscale_ratio = _DOWNSCALE
    latent_channels = 4

    def decode(self, samples: Any) -> Any:
        """Latent ``[B, 4, h, w]`` -> image ``[B, 8h, 8w, 3]`` in 0..1."""
        from diffusion import vae

        return vae.decode(self.value, samples)

    def encode(self, pixels: Any) -> Any:
        """Image ``[B, H, W, C]`` in 0..1 -> latent ``[B, 4, H/8, W/8]``."""
        from diffusion import vae

        return vae.encode(self.value, pixels)

    def decode_tiled(self, samples: Any, tile_x: int = 64, tile_y: int = 64, overlap: int = 16, **kwargs: Any) -> Any:
        """Decode in tiles of ``tile_x`` latent pixels (square tiles only)."""
        from diffusion import vae

        return vae.decode_tiled(self.value, samples, tile=tile_x, overlap=overlap)

    def encode_tiled(self, pixels: Any, tile_x: int = 512, tile_y: int = 512, overlap: int = 64, **kwargs: Any) -> Any:
        """Encode in tiles of ``tile_x`` pixels (square tiles only)."""
        from diffusion import vae

        return vae.encode_tiled(self.value, pixels, tile=tile_x, overlap=overlap)


_WRAPPERS: dict[str, type[_Wrapper]] = {"UNetModel": ModelPatcher, "ClipTextEncoder": CLIP, "VAEModel": VAE}


def wrap(value: Any) -> Any:
    """``value`` as a pack sees it: MODEL/CLIP/VAE wrapped, everything else unchanged."""
    cls = _WRAPPERS.get(type(value).__name__)
    if cls is None or not type(value).__module__.startswith("diffusion."):
        return value
    return cls(value)


def unwrap(value: Any) -> Any:
    """``value`` as noodlebox's nodes see it (the inverse of :func:`wrap`), also inside lists and tuples."""
    if isinstance(value, _Wrapper):
        return value.value
    if isinstance(value, tuple) and any(isinstance(v, _Wrapper) for v in value):
        return tuple(unwrap(v) for v in value)
    if isinstance(value, list) and any(isinstance(v, _Wrapper) for v in value):
        return [unwrap(v) for v in value]
    return value
