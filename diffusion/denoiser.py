"""The UNet wrapped as a ``denoiser(x, sigma) -> denoised`` with CFG, as ComfyUI's sampling function does it.

:class:`Denoiser` takes a :class:`~diffusion.models.UNetModel`, the positive and negative
CONDITIONING lists and the cfg scale, and implements the contract of
:mod:`diffusion.sampling.sample`:

- each conditioning entry becomes one UNet input (``x`` cropped to the entry's ``area``,
  weighted by ``strength``, its ``mask`` and a feathered edge), and the entries of one
  side are combined by a weighted average per pixel (ComfyUI's ``calc_cond_batch``);
- entries whose inputs can be stacked run in one UNet call: cross-attention conds of
  different token lengths are repeated to their least common multiple when that is at
  most 4 times the shorter one (repeating tokens does not change attention), else they
  run separately;
- at cfg 1 the negative side is never computed (:func:`~diffusion.sampling.skips_uncond`);
- the UNet sees ``x / sqrt(sigma^2 + 1)`` at the integer timestep nearest to sigma, in the
  model's dtype; its eps or v output becomes the denoised latent in float32;
- SDXL gets its ADM vector through diffusers' ``added_cond_kwargs`` (pooled text embedding
  plus size/crop/target sizes, or the refiner's size/crop/aesthetic score), inpainting
  models (9 input channels) get the mask and the masked latent concatenated to their input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from diffusion import unclip, x4_upscaler
from diffusion.control.inject import adapter_hooks, call_residuals, check_chain, controlnet_kwargs, spread_to_uncond
from diffusion.control.models import Control
from diffusion.gligen import gligen_hooks
from diffusion.hooks import HookGroup, model_patches, percent_of
from diffusion.models import UNetModel
from diffusion.patching import patched_weights
from diffusion.resize import upscale
from diffusion.sampling.cfg import guide, has_cfg_hooks, skips_uncond
from diffusion.unet_patches.attention import attention_patches
from diffusion.unet_patches.blocks import block_patches
from diffusion.unet_patches.compute import compiled, compute_precision
from diffusion.unet_patches.dit_blocks import dit_block_patches

#: Latent values of a pixel-space "zero" (mid grey) image, model space: what an SD inpainting
#: model sees as the masked image when no mask and no image are given (ComfyUI's values).
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)
#: Input channels of an InstructPix2Pix UNet (noisy latent + source-image latent).
IP2P_CHANNELS = 8
#: Width, in latent pixels, of the linear fade at the inner edges of an area conditioning.
AREA_FEATHER = 8
#: Largest token-length ratio for which two cross-attention conds are batched by repetition.
MAX_TOKEN_REPEAT = 4


def resize_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """``tensor`` with ``batch`` entries: picked evenly from a bigger batch, repeated from a smaller one."""
    have = tensor.shape[0]
    if have == batch:
        return tensor
    if batch <= 1:
        return tensor[:batch]
    if batch < have:
        scale = (have - 1) / (batch - 1)
        index = [min(round(i * scale), have - 1) for i in range(batch)]
    else:
        scale = have / batch
        index = [min(math.floor((i + 0.5) * scale), have - 1) for i in range(batch)]
    return tensor[index]


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Cut or cycle ``tensor`` along dim 0 to ``batch`` entries (how conds follow the latent's batch)."""
    if tensor.shape[0] > batch:
        return tensor[:batch]
    if tensor.shape[0] < batch:
        reps = math.ceil(batch / tensor.shape[0])
        return tensor.repeat([reps] + [1] * (tensor.ndim - 1))[:batch]
    return tensor


@dataclass
class _Entry:
    """One conditioning entry, prepared for a given latent: what the UNet gets for it."""

    context: torch.Tensor                 # cross-attention cond [1 or B, tokens, dim]
    area: tuple[int, int, int, int] | None = None  # (h, w, y, x) in latent pixels
    strength: float = 1.0
    mask: torch.Tensor | None = None      # [1 or B, H, W] at latent size
    sigma_start: float | None = None      # the entry applies while sigma <= sigma_start
    sigma_end: float | None = None        # ... and sigma >= sigma_end
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # text_embeds, time_ids (SDXL)
    concat: torch.Tensor | None = None    # inpainting channels [B, 5, H, W] (model space)
    control: Control | None = None        # ControlNet / T2I-Adapter chain (diffusion.control)
    gligen: Any = None                    # GLIGENTextBoxApply's ("position", model, boxes)
    hooks: HookGroup | None = None        # weight hooks of this entry (diffusion.hooks)
    default: bool = False                 # a default entry: used only where no other entry applies


@dataclass
class _Job:
    """One entry's UNet input for one call: the cropped latent, its weight, its conds."""

    side: int
    x: torch.Tensor
    mult: torch.Tensor
    area: tuple[int, int, int, int] | None
    context: torch.Tensor
    extra: dict[str, torch.Tensor]
    concat: torch.Tensor | None
    control: Control | None = None
    gligen: Any = None
    hooks: HookGroup | None = None


class Denoiser:
    """``denoiser(x, sigma) -> denoised`` for one sampling run (see the module docstring).

    ``latent_shape`` is the noise's shape ([B, C, H, W]); ``latent_image`` (model space)
    and ``denoise_mask`` (prepared to the latent's shape) feed an inpainting model's extra
    channels. ``extra`` are more conditioning lists (sides 2, 3...) that guiders other than CFG
    combine through :meth:`predict` (they get no area twins). ``calls`` counts UNet forward
    passes (tests and benchmarks read it).
    """

    def __init__(
        self,
        unet: UNetModel,
        positive: Sequence[Sequence[Any]],
        negative: Sequence[Sequence[Any]],
        cfg: float,
        latent_shape: Sequence[int],
        latent_image: torch.Tensor | None = None,
        denoise_mask: torch.Tensor | None = None,
        disable_cfg1_optimization: bool = False,
        extra: Sequence[Sequence[Sequence[Any]]] = (),
        seed: int = 0,
    ) -> None:
        self.unet = unet
        self.seed = int(seed)  # the sampling seed: the x4 upscaler's image noise is drawn from it
        self.cfg = float(cfg)
        self.shape = tuple(latent_shape)
        self.disable_cfg1_optimization = disable_cfg1_optimization
        self.skip_negative = skips_uncond(self.cfg, disable_cfg1_optimization)
        self.calls = 0
        #: Gradients through the UNet call (LoRA training); sampling leaves it off.
        self.grad = False
        self.positive, self.negative = positive, negative
        pos = [self._prepare(entry, "positive", latent_image, denoise_mask) for entry in positive]
        neg = [self._prepare(entry, "negative", latent_image, denoise_mask)
               for entry in spread_to_uncond(positive, negative)]  # ControlNetApply's controls steer both sides
        # An area on one side gets a twin of the other side's best-fitting entry with that area,
        # so both sides are averaged over the same regions (ComfyUI does this before sampling).
        pos_twins = [t for e in neg if (t := _twin_for_area(pos, e)) is not None]
        neg_twins = [t for e in pos if (t := _twin_for_area(neg, e)) is not None]
        more = [[self._prepare(entry, "negative", latent_image, denoise_mask) for entry in conds] for conds in extra]
        self.sides: tuple[list[_Entry], ...] = (pos + pos_twins, neg + neg_twins, *more)

    # -- preparation ------------------------------------------------------------------------------

    def _prepare(self, entry: Sequence[Any], prompt_type: str, latent_image: torch.Tensor | None,
                 denoise_mask: torch.Tensor | None) -> _Entry:
        """Turn ``[cond, options]`` into an :class:`_Entry` for this latent."""
        cond, options = entry[0], dict(entry[1] if len(entry) > 1 else {})
        projection = getattr(self.unet, "context_projection", None)  # SD3/Flux MODELs have none
        if projection is not None and cond.shape[-1] != self.unet.context_dim:  # Stable Zero123's cc_projection
            with torch.no_grad():
                cond = projection(cond.to(projection.weight.device, projection.weight.dtype)).float()  # type: ignore[arg-type]
        _, _, height, width = self.shape
        schedule = self.unet.schedule
        prepared = _Entry(context=cond, strength=float(options.get("strength", 1.0)))
        if "start_percent" in options:
            prepared.sigma_start = schedule.percent_to_sigma(float(options["start_percent"]))
        if "end_percent" in options:
            prepared.sigma_end = schedule.percent_to_sigma(float(options["end_percent"]))
        area = options.get("area")
        if area is not None and area[0] == "percentage":
            h, w, y, x = area[1:5]
            area = (max(1, round(h * height)), max(1, round(w * width)), round(y * height), round(x * width))
        if options.get("mask") is not None:
            mask = options["mask"].float()
            if mask.ndim == 2:
                mask = mask.unsqueeze(0)
            if tuple(mask.shape[1:]) != (height, width):
                mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear",
                                                       align_corners=False).squeeze(1)
            if options.get("set_area_to_bounds", False):
                area = _mask_bounds(mask)
            prepared.mask = mask * float(options.get("mask_strength", 1.0))
        prepared.area = tuple(int(v) for v in area[:4]) if area is not None else None  # type: ignore[assignment]
        if self.unet.variant == "unclip":
            prepared.extra = {"class_labels": unclip.unclip_input(options, self.unet.adm_channels, self.seed)}  # type: ignore[arg-type]
        elif self.unet.adm_channels is not None:
            prepared.extra = self._adm(options, prompt_type)
        if self.unet.inpaint:
            prepared.concat = self._inpaint_channels(options, latent_image, denoise_mask)
        if self.unet.variant == "x4_upscaler":
            image, level = x4_upscaler.unet_inputs(options, self.shape, self.seed)
            prepared.concat = resize_to_batch(image, self.shape[0])
            prepared.extra = {"class_labels": torch.tensor([level])}
        elif self.unet.in_channels == IP2P_CHANNELS:
            prepared.concat = self._ip2p_channels(options)
        prepared.gligen = options.get("gligen")
        if options.get("control") is not None:
            prepared.control = check_chain(options["control"], self.unet)
        prepared.hooks = options.get("hooks")
        prepared.default = bool(options.get("default", False))
        return prepared

    def _adm(self, options: Mapping[str, Any], prompt_type: str) -> dict[str, torch.Tensor]:
        """SDXL's ``text_embeds`` (pooled output) and ``time_ids`` (sizes, or the refiner's aesthetic score)."""
        _, _, height_l, width_l = self.shape
        width = options.get("width") or width_l * 8
        height = options.get("height") or height_l * 8
        crop_w, crop_h = options.get("crop_w", 0), options.get("crop_h", 0)
        if self.unet.arch == "sdxl_refiner":
            default_score = 2.5 if prompt_type == "negative" else 6.0
            ids = [height, width, crop_h, crop_w, options.get("aesthetic_score", default_score)]
        else:
            ids = [height, width, crop_h, crop_w, options.get("target_height", height),
                   options.get("target_width", width)]
        embed_width = self.unet.adm_channels - len(ids) * 256  # type: ignore[operator]
        pooled = unclip.revision_pooled(options, embed_width, self.seed)  # "revision": an image's embedding
        if pooled is None:
            pooled = options.get("pooled_output")
        if pooled is None:
            pooled = torch.zeros((1, embed_width))
        pooled = pooled.float().reshape(pooled.shape[0], -1)
        time_ids = torch.tensor([ids], dtype=torch.float32).repeat(pooled.shape[0], 1)
        return {"text_embeds": pooled, "time_ids": time_ids}

    def _inpaint_channels(self, options: Mapping[str, Any], latent_image: torch.Tensor | None,
                          denoise_mask: torch.Tensor | None) -> torch.Tensor:
        """Mask (1 channel) and masked-image latent (4) for an inpainting UNet, model space."""
        batch, _, height, width = self.shape
        mask = options.get("concat_mask", denoise_mask)
        image = options.get("concat_latent_image")  # InpaintModelConditioning's, unscaled
        image = image * self.unet.latent_scale if image is not None else latent_image
        if mask is None or image is None:
            # No mask: the whole image is regenerated from a grey "blank" masked image.
            ones = torch.ones((batch, 4, height, width))
            blank = ones * torch.tensor(BLANK_INPAINT_LATENT).reshape(1, 4, 1, 1)
            return torch.cat([ones[:, :1], blank], dim=1)
        if tuple(image.shape[-2:]) != (height, width):
            image = torch.nn.functional.interpolate(image.float(), size=(height, width), mode="bilinear")
        image = resize_to_batch(image.float(), batch)
        if mask.ndim == 4:
            mask = mask[:, :1]
        mask = mask.reshape((-1, 1, *mask.shape[-2:])).float()
        if tuple(mask.shape[-2:]) != (height, width):
            mask = torch.nn.functional.interpolate(mask, size=(height, width), mode="bilinear")
        mask = resize_to_batch(mask.round(), batch)
        return torch.cat([mask.to(image.device), image], dim=1)

    def _ip2p_channels(self, options: Mapping[str, Any]) -> torch.Tensor:
        """An InstructPix2Pix model's source-image latent (model space), zeros when none is set."""
        batch, _, height, width = self.shape
        image = options.get("concat_latent_image")  # InstructPixToPixConditioning's, unscaled
        if image is None:
            return torch.zeros((batch, 4, height, width))
        image = image.float()
        if tuple(image.shape[-2:]) != (height, width):
            image = upscale(image, width, height, "bilinear", "center")
        scale = 1.0 if self.unet.variant == "zero123" else self.unet.latent_scale  # Zero123 takes it unscaled
        return resize_to_batch(image, batch) * scale

    # -- the call -----------------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor,
                 model_options: Mapping[str, Any] | None = None) -> torch.Tensor:
        """The CFG-combined denoised prediction of ``x`` at ``sigma`` ([B]), float32 on ``x``'s device.

        ``model_options`` (the run's, by default the MODEL's ``options``) may hold CFG hooks
        and ``disable_cfg1_optimization``, applied as :func:`diffusion.sampling.cfg.guide` does.
        """
        options = self.options(model_options)
        skip = skips_uncond(self.cfg, self.disable_cfg1_optimization
                            or bool(options.get("disable_cfg1_optimization", False)))
        cond, uncond = self._calc_cond_batch(x, sigma, [0, None if skip else 1], options)
        if skip and not has_cfg_hooks(options):
            return cond
        return guide(x, sigma, cond, None if skip else uncond, self.cfg, options, self.positive, self.negative,
                     self.unet)

    def _calc_cond_batch(self, x: torch.Tensor, sigma: torch.Tensor, sides: Sequence[int | None],
                         options: Mapping[str, Any]) -> list[torch.Tensor]:
        """:meth:`predict`, or the ``sampler_calc_cond_batch_function`` of ``options`` in its place.

        The function gets ``{"conds", "input", "sigma", "model", "model_options", "calc_cond_batch"}``;
        ``calc_cond_batch(conds, x, sigma, model_options)`` predicts this run's lists (None: zeros).
        """
        function = options.get("sampler_calc_cond_batch_function")
        if function is None:
            return self.predict(x, sigma, sides, options)
        lists = (self.positive, self.negative)

        def calc_cond_batch(conds: Sequence[Any], x_in: torch.Tensor, sigma_in: torch.Tensor,
                            model_options: Mapping[str, Any]) -> list[torch.Tensor]:
            found = [None if c is None else 0 if c is lists[0] else 1 if c is lists[1] else -1 for c in conds]
            if -1 in found:
                raise ValueError("calc_cond_batch takes this run's positive or negative conditioning, or None")
            return self.predict(x_in, sigma_in, found, model_options)

        conds = [None if side is None else lists[side] for side in sides]
        return list(function({"conds": conds, "input": x, "sigma": sigma, "model": self.unet,
                              "model_options": options, "calc_cond_batch": calc_cond_batch}))

    def options(self, model_options: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """The options of one call: those passed by the sampler, else the MODEL's."""
        return self.unet.options if model_options is None else model_options

    @staticmethod
    def _active(entries: Sequence[_Entry], sigma: torch.Tensor) -> list[_Entry]:
        """The entries that apply at ``sigma``: default entries only when no other entry does."""
        s = float(sigma[0])

        def in_range(e: _Entry) -> bool:
            return (e.sigma_start is None or s <= e.sigma_start) and (e.sigma_end is None or s >= e.sigma_end)

        regular = [e for e in entries if not e.default]
        if any(in_range(e) for e in regular):
            return regular
        return [e for e in entries if e.default] or regular

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, sides: Sequence[int | None],
                options: Mapping[str, Any] | None = None) -> list[torch.Tensor]:
        """The denoised prediction of each conditioning side in ``sides`` (ComfyUI's ``calc_cond_batch``).

        Side 0 is the positive list, 1 the negative, 2.. the ``extra`` lists; None (a skipped
        side) gives zeros. Entries of all sides share UNet calls where their inputs stack.
        """
        sigma = sigma.to(x.device).float()
        jobs = [job for slot, side in enumerate(sides) if side is not None
                for e in self._active(self.sides[side], sigma) if (job := self._job(slot, e, x, sigma)) is not None]
        totals = [torch.zeros_like(x) for _ in sides]
        counts = [torch.full_like(x, 1e-37) for _ in sides]
        while jobs:
            batch = _next_batch(jobs)
            outputs = self._run(batch, sigma, options)
            for job, out in zip(batch, outputs, strict=True):
                total, count = totals[job.side], counts[job.side]
                if job.area is not None:
                    h, w, y, x0 = job.area
                    total = total[:, :, y:y + h, x0:x0 + w]
                    count = count[:, :, y:y + h, x0:x0 + w]
                total += out * job.mult
                count += job.mult
        return [total / count for total, count in zip(totals, counts, strict=True)]

    def _job(self, side: int, entry: _Entry, x: torch.Tensor, sigma: torch.Tensor) -> _Job | None:
        """The UNet input for one entry, or None when its sigma range excludes this step."""
        s = float(sigma[0])
        if entry.sigma_start is not None and s > entry.sigma_start:
            return None
        if entry.sigma_end is not None and s < entry.sigma_end:
            return None
        batch, channels, height, width = x.shape
        area = entry.area
        x_in = x
        if area is not None:
            h, w, y, x0 = area
            area = (min(height - y, h), min(width - x0, w), y, x0)
            x_in = x[:, :, y:y + area[0], x0:x0 + area[1]]
        if entry.mask is not None:
            mask = entry.mask.to(x.device)[:batch]
            if area is not None:
                mask = mask[:, area[2]:area[2] + area[0], area[3]:area[3] + area[1]]
            mult = mask.unsqueeze(1).repeat(batch // mask.shape[0], channels, 1, 1) * entry.strength
        else:
            mult = torch.ones_like(x_in) * entry.strength
            if area is not None:
                _feather(mult, area, (height, width))
        concat = entry.concat
        if concat is not None:
            concat = concat.to(x.device)
            if area is not None:
                concat = concat[:, :, area[2]:area[2] + area[0], area[3]:area[3] + area[1]]
            concat = repeat_to_batch(concat, batch)
        context = repeat_to_batch(entry.context.to(x.device), batch)
        extra = {k: repeat_to_batch(v.to(x.device), batch) for k, v in entry.extra.items()}
        return _Job(side, x_in, mult, area, context, extra, concat, entry.control, entry.gligen, entry.hooks)

    def _run(self, batch: list[_Job], sigma: torch.Tensor,
             options: Mapping[str, Any] | None = None) -> list[torch.Tensor]:
        """One UNet call for a batch of compatible jobs; each job's denoised prediction.

        A ``model_function_wrapper`` in ``options`` gets ComfyUI's ``(apply_model, {"input",
        "timestep", "c", "cond_or_uncond"})`` and returns the batch's denoised prediction.
        """
        options = options or {}
        x = torch.cat([job.x for job in batch])
        sigmas = torch.cat([sigma] * len(batch))
        cond_or_uncond = [job.side for job in batch]
        transformer_options = dict(options.get("transformer_options", {}))
        transformer_options.update(cond_or_uncond=cond_or_uncond, sigmas=sigmas)
        c: dict[str, Any] = {"c_crossattn": _cat_contexts([job.context for job in batch]),
                             "transformer_options": transformer_options}
        if batch[0].concat is not None:
            c["c_concat"] = torch.cat([job.concat for job in batch])  # type: ignore[misc]
        if batch[0].extra:
            c["added_cond_kwargs"] = {k: torch.cat([job.extra[k] for job in batch]) for k in batch[0].extra}
        if batch[0].control is not None:
            c["control"] = batch[0].control
        if batch[0].gligen is not None:
            c["gligen"] = batch[0].gligen
        if batch[0].hooks is not None:
            c["hooks"] = batch[0].hooks
        self.calls += 1
        wrapper = options.get("model_function_wrapper")
        if wrapper is not None:
            denoised = wrapper(self.apply_model, {"input": x, "timestep": sigmas, "c": c,
                                                  "cond_or_uncond": cond_or_uncond})
        else:
            denoised = self.apply_model(x, sigmas, **c)
        return list(denoised.chunk(len(batch)))

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, c_crossattn: torch.Tensor,
                    c_concat: torch.Tensor | None = None, added_cond_kwargs: Mapping[str, torch.Tensor] | None = None,
                    transformer_options: Mapping[str, Any] | None = None, control: Control | None = None,
                    gligen: Any = None, hooks: HookGroup | None = None, **_: Any) -> torch.Tensor:
        """The denoised prediction of noisy ``x`` at ``sigma`` ([B]) from one UNet call (ComfyUI's ``apply_model``)."""
        unet = self.unet
        schedule = unet.schedule
        model_in = schedule.scale_input(x, sigma)
        residuals = None
        if control is not None:  # a ControlNet sees the latent without the inpainting channels
            jobs = len((transformer_options or {}).get("cond_or_uncond", [0]))
            residuals = call_residuals(control, model_in, schedule.timestep(sigma.cpu()).float(), sigma, c_crossattn,
                                       added_cond_kwargs, jobs, schedule.percent_to_sigma)
        if c_concat is not None:
            model_in = torch.cat([model_in, c_concat.to(model_in.device)], dim=1)
        timesteps = schedule.timestep(sigma.cpu()).float().to(unet.device)
        kwargs: dict[str, Any] = {}
        added = dict(added_cond_kwargs or {})
        if "class_labels" in added:  # the x4 upscaler's noise level, unCLIP's image embedding
            labels = added.pop("class_labels").to(unet.device)
            kwargs["class_labels"] = labels.to(unet.dtype) if labels.is_floating_point() else labels
        if added:
            # float32 on purpose: diffusers concatenates them with its float32 size embeddings first.
            kwargs["added_cond_kwargs"] = {k: v.to(unet.device) for k, v in added.items()}
        if residuals is not None:
            kwargs.update(controlnet_kwargs(residuals, unet.dtype, unet.device))
        with torch.set_grad_enabled(self.grad), self._weights(hooks, sigma) as module, \
                adapter_hooks(module, residuals), block_patches(module, transformer_options), \
                dit_block_patches(module, transformer_options), \
                gligen_hooks(module, gligen, x.shape), attention_patches(module, transformer_options), \
                compute_precision(unet.options.get("compute_dtype"), unet.dtype, unet.device):
            run = compiled(module, unet.options.get("torch_compile_backend"))
            out = run(model_in.to(unet.device, unet.dtype), timesteps,
                         encoder_hidden_states=c_crossattn.to(unet.device, unet.dtype),
                         return_dict=False, **kwargs)[0]
        out = out.float().to(x.device)
        return schedule.calculate_denoised(sigma, out, x)

    def _weights(self, hooks: HookGroup | None, sigma: torch.Tensor) -> AbstractContextManager[torch.nn.Module]:
        """The UNet with the MODEL's weight patches, plus an entry's hook patches at this step's keyframe strength."""
        if hooks is None or not hooks.hooks:
            return self.unet.use()
        percent = percent_of(float(sigma[0]), self.unet.schedule.percent_to_sigma)
        return patched_weights(self.unet.model, model_patches(hooks, self.unet, self.unet.weight_patches, percent))


def _feather(mult: torch.Tensor, area: tuple[int, int, int, int], size: tuple[int, int]) -> None:
    """Fade ``mult`` linearly over 8 latent pixels at area edges that lie inside the image."""
    h, w, y, x = area
    for dim, (length, offset, full) in enumerate(((h, y, size[0]), (w, x, size[1]))):
        axis = dim + 2
        for t in range(min(AREA_FEATHER, length)):
            factor = (t + 1) / AREA_FEATHER
            if offset != 0:
                mult.narrow(axis, t, 1).mul_(factor)
            if length + offset < full:
                mult.narrow(axis, length - 1 - t, 1).mul_(factor)


def _mask_bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """The (h, w, y, x) box around a mask's non-zero pixels, at least 8x8; 8x8 at 0,0 for an empty mask."""
    bounds = mask.abs().max(dim=0).values
    rows = torch.nonzero(bounds.amax(dim=1) > 0).flatten()
    cols = torch.nonzero(bounds.amax(dim=0) > 0).flatten()
    if rows.numel() == 0 or cols.numel() == 0:
        return (8, 8, 0, 0)
    y, x = int(rows[0]), int(cols[0])
    return (max(8, int(rows[-1]) - y + 1), max(8, int(cols[-1]) - x + 1), y, x)


def _twin_for_area(entries: list[_Entry], other: _Entry) -> _Entry | None:
    """A copy of ``other``'s area settings with the conds of the entry of ``entries`` that best covers its area.

    None when ``other`` has no area, or ``entries`` already has one with exactly that area.
    """
    if other.area is None:
        return None
    oh, ow, oy, ox = other.area
    best: _Entry | None = None
    for entry in entries:
        if entry.area is None:
            if best is None:
                best = entry
            continue
        h, w, y, x = entry.area
        inside = oy >= y and ox >= x and y + h >= oy + oh and x + w >= ox + ow
        if inside and (best is None or best.area is None or best.area[0] * best.area[1] > h * w):
            best = entry
    if best is None or best.area == other.area:
        return None
    return _Entry(context=best.context, area=other.area, strength=other.strength, mask=other.mask,
                  sigma_start=other.sigma_start, sigma_end=other.sigma_end, extra=best.extra, concat=other.concat)


def _can_stack(a: _Job, b: _Job) -> bool:
    """True when two jobs can share one UNet call."""
    if a.x.shape != b.x.shape or a.extra.keys() != b.extra.keys() or a.control is not b.control \
            or a.gligen is not b.gligen \
            or a.hooks is not b.hooks:
        return False
    if any(a.extra[k].shape != b.extra[k].shape for k in a.extra):
        return False
    if (a.concat is None) != (b.concat is None) or (a.concat is not None and a.concat.shape != b.concat.shape):  # type: ignore[union-attr]
        return False
    ta, tb = a.context.shape, b.context.shape
    if ta == tb:
        return True
    if ta[0] != tb[0] or ta[2] != tb[2]:
        return False
    return math.lcm(ta[1], tb[1]) // min(ta[1], tb[1]) <= MAX_TOKEN_REPEAT


def _next_batch(jobs: list[_Job]) -> list[_Job]:
    """Remove and return the jobs that run together with the first one (last first, as ComfyUI orders them)."""
    first = jobs[0]
    picked = [i for i, job in enumerate(jobs) if _can_stack(job, first)]
    return [jobs.pop(i) for i in reversed(picked)]


def _cat_contexts(contexts: list[torch.Tensor]) -> torch.Tensor:
    """Stack cross-attention conds, repeating shorter token sequences up to the common multiple."""
    length = 1
    for c in contexts:
        length = math.lcm(length, c.shape[1])
    return torch.cat([c.repeat(1, length // c.shape[1], 1) if c.shape[1] < length else c for c in contexts])
