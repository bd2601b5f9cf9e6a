"""CPU training loops for the demo model: VAE reconstruction, then text encoder + UNet on the epsilon loss.

Everything is seeded and ordered: data comes from :mod:`diffusion.train.shapes` by index,
batches from a ``torch.Generator``, noise and timesteps from another, so the same seed on
the same machine (and thread count) gives the same loss curve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from diffusion.sampling.schedule import DiscreteSchedule
from diffusion.tokenizer import EOS, PromptTokenizer
from diffusion.train import shapes
from diffusion.train.config import LATENT_SCALE

Log = Callable[[str], None]


@dataclass
class LossLog:
    """Mean loss per ``every`` steps, with the elapsed wall time at each point."""

    every: int
    points: list[dict[str, float]] = field(default_factory=list)
    _sum: float = 0.0
    _count: int = 0

    def add(self, step: int, loss: float, started: float, log: Log | None = None, name: str = "") -> None:
        """Accumulate one step's loss; every ``every`` steps record (and print) the mean."""
        self._sum += loss
        self._count += 1
        if step % self.every == 0:
            mean, seconds = round(self._sum / self._count, 6), round(time.time() - started, 1)
            point = {"step": step, "loss": mean, "seconds": seconds}
            self.points.append(point)
            self._sum, self._count = 0.0, 0
            if log:
                log(f"{name} step {step} loss {point['loss']:.5f} ({point['seconds']} s)")

    @property
    def last(self) -> float | None:
        """The mean loss of the latest steps: those since the last point, else the last point; None before any."""
        if self._count:
            return round(self._sum / self._count, 6)
        return self.points[-1]["loss"] if self.points else None


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` to float ``[N, 3, H, W]`` in [-1, 1] (the VAE's range)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _lr(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _reconstruction_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + MSE: L1 keeps flat colours exact, MSE pulls hard on the few pixels that are far off."""
    return (out - target).abs().mean() + (out - target).pow(2).mean()


def _optimise(optimiser: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: torch.Tensor) -> None:
    """One update: gradients of ``loss``, clipped to norm 1 over ``params``, applied."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimiser.step()


def train_vae(
    vae: AutoencoderKL, seed: int, steps: int, batch: int = 32, crop: int = 32, full_steps: int = 50,
    mixed_steps: int = 0, lr: float = 2e-3, kl_weight: float = 1e-6, log: Log | None = None, every: int = 25,
) -> LossLog:
    """Reconstruction training (L1 + MSE + a small KL term on the posterior), first on crops, then on whole images.

    The VAE is fully convolutional (its middle attention is frozen as the identity, see
    :func:`diffusion.train.config.build_vae`), and the images are flat colour with sharp
    edges, so ``crop``-pixel crops teach the same thing at a quarter of the cost; the next
    ``full_steps`` steps use the whole 64x64 image. The last ``mixed_steps`` train only the
    decoder, on latents spliced from two images (see :func:`_decoder_on_mixed_latents`).
    """
    params = [p for p in vae.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    losses, started = LossLog(every), time.time()
    vae.train()
    total = steps + full_steps
    for step in range(1, total + 1):
        images, _ = shapes.make_batch(seed + 1, (step - 1) * batch, batch)
        x = images_to_tensor(images)
        if step <= steps and crop < shapes.SIZE:
            top, left = (int(v) for v in torch.randint(0, shapes.SIZE - crop + 1, (2,), generator=generator))
            x = x[:, :, top : top + crop, left : left + crop]
        for group in optimiser.param_groups:
            group["lr"] = _lr(step - 1, total, lr, 20)
        posterior = vae.encode(x).latent_dist
        # Decoding the mean, not a sample: at initialisation the posterior's std is ~1, which
        # drowns the small mean and stalls learning for hundreds of steps. The latents are
        # rescaled afterwards anyway (normalise_latents), so only their information matters.
        out = vae.decode(posterior.mean).sample
        loss = _reconstruction_loss(out, x) + kl_weight * posterior.kl().mean()
        _optimise(optimiser, params, loss)
        losses.add(step, loss.item(), started, log, "vae")
    if mixed_steps:
        _decoder_on_mixed_latents(vae, seed, mixed_steps, total, batch, lr / 2, losses, started, log)
    vae.eval()
    return losses


def _decoder_on_mixed_latents(
    vae: AutoencoderKL, seed: int, steps: int, offset: int, batch: int, lr: float, losses: LossLog, started: float,
    log: Log | None,
) -> None:
    """Train the decoder alone to decode latents spliced from two images into the same splice of their pixels.

    Every training image has one background, so the decoder's GroupNorm layers (which
    normalise over the whole picture) learn statistics that hold only for such images:
    decoding a latent whose right half was inpainted with another background then shifts
    the colours of the untouched left half too (by ~40/255 before this stage, ~8 after
    1000 steps). Splicing latent cells of two encoded images, and the matching 8x8 pixel
    blocks, teaches it to decode each region as its own latents say. The encoder is
    frozen, so the latents the UNet learns from do not change.
    """
    trainable = [p for part in (vae.decoder, vae.post_quant_conv) for p in part.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed + 7)
    for step in range(1, steps + 1):
        images, _ = shapes.make_batch(seed + 4, (step - 1) * batch, batch)
        pixels = images_to_tensor(images)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mean
        # one tensor, so that the pasted rectangles cover the same cells in pixels and latents
        both = torch.cat([pixels, torch.nn.functional.interpolate(latents, scale_factor=8, mode="nearest")], dim=1)
        both = _paste_rectangles(both, 0.75, generator)
        x, z = both[:, :3], both[:, 3:, ::8, ::8]
        for group in optimiser.param_groups:
            group["lr"] = _lr(step - 1, steps, lr, 10)
        out = vae.decode(z).sample
        loss = _reconstruction_loss(out, x)
        _optimise(optimiser, trainable, loss)
        losses.add(offset + step, loss.item(), started, log, "vae decoder")


def _paste_rectangles(x: torch.Tensor, fraction: float, generator: torch.Generator, cell: int = 8) -> torch.Tensor:
    """Into ``fraction`` of the images paste a ``cell``-aligned rectangle of the next image in the batch."""
    out = x.clone()
    cells = x.shape[-1] // cell
    for i in range(len(x)):
        if float(torch.rand((), generator=generator)) >= fraction:
            continue
        y0, y1 = sorted(int(v) for v in torch.randperm(cells + 1, generator=generator)[:2])
        x0, x1 = sorted(int(v) for v in torch.randperm(cells + 1, generator=generator)[:2])
        rows, cols = slice(y0 * cell, y1 * cell), slice(x0 * cell, x1 * cell)
        out[i, :, rows, cols] = x[(i + 1) % len(x), :, rows, cols]
    return out


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Posterior means of ``uint8`` images, unscaled (``[N, 4, 8, 8]``)."""
    parts = [vae.encode(images_to_tensor(images[i : i + batch])).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(parts)


@torch.no_grad()
def normalise_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Fold a per-channel affine map into the VAE so that ``latent * 0.18215`` has zero mean and unit std.

    SD1's sampling assumes that spread (the scale factor is fixed per family, not per
    file), so the encoder's ``quant_conv`` is rescaled and the decoder's
    ``post_quant_conv`` undoes it: decoding is unchanged. Returns the latents rescaled
    the same way.
    """
    mean = latents.mean(dim=(0, 2, 3))
    std = latents.std(dim=(0, 2, 3))
    k = 1.0 / (LATENT_SCALE * std)  # new = (old - mean) * k
    channels = len(mean)
    quant = vae.quant_conv
    quant.weight[:channels] *= k[:, None, None, None]
    quant.bias[:channels] = (quant.bias[:channels] - mean) * k
    quant.bias[channels:] += 2 * torch.log(k)  # log-variance of the rescaled posterior
    post = vae.post_quant_conv
    # old = new / k + mean: fold the shift into the bias, the scale into the input weights.
    post.bias += (post.weight[:, :, 0, 0] * mean[None]).sum(dim=1)
    post.weight /= k[None, :, None, None]
    return (latents - mean[None, :, None, None]) * k[None, :, None, None]


class CaptionTokens:
    """Token ids of captions as inference makes them (CLIP BPE, BOS/EOS, padded with EOS to 77), cached."""

    def __init__(self) -> None:
        self._tokenizer = PromptTokenizer(EOS, "clip_l", None)
        self._cache: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        """``int64 [len(captions), 77]``."""
        rows = []
        for caption in captions:
            if caption not in self._cache:
                chunk = self._tokenizer.tokenize_with_weights(caption)[0]
                self._cache[caption] = [int(t) for t, _ in chunk]
            rows.append(self._cache[caption])
        return torch.tensor(rows, dtype=torch.int64)


def train_diffusion(
    unet: UNet2DConditionModel, text: CLIPTextModel, latents: torch.Tensor, captions: list[str], seed: int,
    steps: int, batch: int = 64, lr: float = 1e-3, caption_dropout: float = 0.1, snr_gamma: float = 0.0,
    log: Log | None = None, every: int = 25,
) -> LossLog:
    """Train text encoder and UNet jointly on SD1.x's epsilon loss.

    ``latents`` are already scaled (unit spread). Timesteps are uniform over the 1000 of
    the linear-beta schedule (0.00085..0.012); ``caption_dropout`` of the captions are
    replaced by the empty prompt so the model also learns the unconditional prediction
    that CFG subtracts. ``snr_gamma`` > 0 weights each sample by ``min(SNR, gamma) / SNR``
    (min-SNR weighting): the nearly clean timesteps, where only fine detail is left to
    learn, count less than the noisy ones that decide shape and colour.
    """
    alphas_cumprod = 1.0 / (1.0 + DiscreteSchedule().sigmas.double() ** 2)
    sqrt_a = alphas_cumprod.sqrt().float()
    sqrt_1ma = (1.0 - alphas_cumprod).sqrt().float()
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    weights = (snr.clamp(max=snr_gamma) / snr).float() if snr_gamma > 0 else torch.ones(len(snr))
    tokens = CaptionTokens()
    params = [*unet.parameters(), *text.parameters()]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    losses, started = LossLog(every), time.time()
    unet.train()
    text.train()
    order = torch.randperm(len(latents), generator=generator)
    cursor = 0
    for step in range(1, steps + 1):
        if cursor + batch > len(order):
            order, cursor = torch.randperm(len(latents), generator=generator), 0
        index = order[cursor : cursor + batch]
        cursor += batch
        drop = torch.rand(batch, generator=generator) < caption_dropout
        chosen = ["" if d else captions[i] for i, d in zip(index.tolist(), drop.tolist(), strict=True)]
        x0 = latents[index]
        t = torch.randint(0, len(alphas_cumprod), (batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        xt = sqrt_a[t, None, None, None] * x0 + sqrt_1ma[t, None, None, None] * noise
        for group in optimiser.param_groups:
            group["lr"] = _lr(step - 1, steps, lr, 50)
        context = text(tokens(chosen)).last_hidden_state
        predicted = unet(xt, t, encoder_hidden_states=context).sample
        loss = ((predicted - noise).pow(2).mean(dim=(1, 2, 3)) * weights[t]).mean()
        _optimise(optimiser, params, loss)
        losses.add(step, loss.item(), started, log, "unet")
    unet.eval()
    text.eval()
    return losses
