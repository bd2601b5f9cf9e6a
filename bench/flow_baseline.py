"""SD3.5 and Flux for ``bench/txt2img.py --arch sd35|flux``: the prompt, and diffusers' pipeline as the baseline.

The baseline is ``StableDiffusion3Pipeline`` / ``FluxPipeline`` built from the modules noodlebox loaded
from the same file (transformer, VAE), fed the text embeddings noodlebox's encoders made
(so the two runs sample from the same conditioning: the encode is timed on noodlebox's side
only), the same sigmas (KSampler's ``simple`` schedule on the model's shifted flow sigmas,
handed to ``FlowMatchEulerDiscreteScheduler`` with its own shifting off) and the same starting
noise (ComfyUI's seeded noise; a flow model starts at ``sigma_max * noise``, sigma_max = 1).
Flux runs at cfg 1 (one transformer call per step, as ComfyUI's flux_schnell template), SD3.5
at cfg 4.5 with an empty negative.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

#: Per arch: the sampler settings of ComfyUI's templates, narrowed to euler/simple for the baseline.
SETTINGS: dict[str, dict[str, Any]] = {
    "sd35": {"cfg": 4.5, "sampler": "euler", "scheduler": "simple"},
    "flux": {"cfg": 1.0, "sampler": "euler", "scheduler": "simple"},
}
#: ``make-checkpoint`` arch names of the checkpoints the bench writes when no ``--ckpt`` is given.
CHECKPOINT_ARCH = {"sd35": "sd35", "flux": "flux-schnell"}


def flow_prompt(arch: str, ckpt_name: str, size: int, steps: int, seed: int, positive: str, negative: str,
                batch: int = 1) -> dict[str, Any]:
    """The txt2img graph of ComfyUI's SD3.5 / Flux templates, with the node ids of ``txt2img_prompt``."""
    settings = SETTINGS[arch]
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative if arch == "sd35" else "", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": settings["cfg"], "sampler_name": settings["sampler"],
            "scheduler": settings["scheduler"], "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bench", "images": ["8", 0]}},
    }


def diffusers_flow_part(arch: str, ckpt: Path, work: Path, size: int, steps: int, seed: int, positive: str,
                        negative: str, batch: int = 1) -> dict[str, Any]:
    """The same txt2img through diffusers' pipeline for the family, on the modules loaded from ``ckpt``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline

    from diffusion.families.loader import load_transformer_checkpoint
    from diffusion.sampling import ksampler_sigmas, prepare_noise

    settings = SETTINGS[arch]
    start = time.perf_counter()
    loaded = load_transformer_checkpoint(ckpt, precision="fp32")
    model, clip, vae = loaded.model, loaded.clip, loaded.vae
    assert model is not None and clip is not None and vae is not None
    # shift 1 and no dynamic shifting: the sigmas below are already the model's shifted ones
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    if arch == "sd35":
        pipe: Any = StableDiffusion3Pipeline(
            transformer=model.model, scheduler=scheduler, vae=vae.model, text_encoder=None, tokenizer=None,
            text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    else:
        pipe = FluxPipeline(transformer=model.model, scheduler=scheduler, vae=vae.model, text_encoder=None,
                            tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - start

    sigmas = ksampler_sigmas(model.schedule, settings["scheduler"], settings["sampler"], steps, 1.0)
    channels, down = model.latent_channels, size // 8
    noise = prepare_noise(torch.zeros(batch, channels, down, down), seed)
    latents = noise * float(sigmas[0])  # a flow model's start: sigma_max * noise + (1 - sigma_max) * 0

    def run() -> tuple[Any, Any, float, list[float], float]:
        t0 = time.perf_counter()
        with torch.no_grad():
            cond, pooled = clip.encode(positive)
            uncond, uncond_pooled = clip.encode(negative if arch == "sd35" else "")
        encode_s = time.perf_counter() - t0
        cond, pooled, uncond, uncond_pooled = (t.repeat(batch, *[1] * (t.dim() - 1))
                                               for t in (cond, pooled, uncond, uncond_pooled))
        marks = [time.perf_counter()]

        def on_step(_pipe: Any, _step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            marks.append(time.perf_counter())
            return kwargs

        common = {"sigmas": sigmas[:-1].tolist(), "height": size, "width": size, "output_type": "latent",
                  "callback_on_step_end": on_step, "num_inference_steps": steps}
        if arch == "sd35":
            out = pipe(prompt_embeds=cond, pooled_prompt_embeds=pooled, negative_prompt_embeds=uncond,
                       negative_pooled_prompt_embeds=uncond_pooled, guidance_scale=settings["cfg"],
                       latents=latents, **common).images
        else:
            packed = pipe._pack_latents(latents, batch, channels, down, down)
            out = pipe(prompt_embeds=cond, pooled_prompt_embeds=pooled, guidance_scale=3.5, latents=packed,
                       **common).images
            out = pipe._unpack_latents(out, size, size, pipe.vae_scale_factor)
        t0 = time.perf_counter()
        with torch.no_grad():
            vae_space = out / vae.model.config.scaling_factor + (vae.model.config.shift_factor or 0.0)
            image = vae.model.decode(vae_space, return_dict=False)[0]
        decode_s = time.perf_counter() - t0
        return vae_space, image, encode_s, [b - a for a, b in itertools.pairwise(marks)], decode_s

    vae_space, image, encode_s, steps_s, decode_s = run()
    _, _, _, steps2, decode2 = run()  # a second run of the same shape: the steady figures
    sample_s = sum(steps_s)
    torch.save(vae_space, work / "diffusers-latent.pt")
    torch.save(((image + 1) / 2).clamp(0, 1), work / "diffusers-image.pt")
    return {
        "load_s": load_s,
        "encode_s": encode_s,
        "sample_s": sample_s,
        "step_s": steps_s,
        "decode_s": decode_s,
        "total_s": encode_s + sample_s + decode_s + load_s,
        "second_run": {"step_s": steps2, "decode_s": decode2},
        "latent_scale": float(vae.model.config.scaling_factor),
    }
