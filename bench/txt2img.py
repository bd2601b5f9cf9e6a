"""txt2img on a random checkpoint (SD1.5 full size by default): noodlebox (fp32 and auto) against diffusers.

One run, three measurements, each in its own subprocess (so each peak RSS is its own):

- ``fp32`` and ``auto``: the txt2img prompt (256x256, 4 steps euler/normal, batch 1, cfg 8)
  through the real registry and :class:`graph.executor.Executor`, timed from the executor's
  events: checkpoint load, text encodes, each sampler step, VAE decode, total. Then the
  same prompt with only the seed changed: which nodes ran, and how long it took.
- ``diffusers``: a ``StableDiffusionPipeline`` built from the same loaded modules (UNet,
  CLIP-L, VAE) with an ``EulerDiscreteScheduler`` given the same sigmas (``sigmas=``) and
  the same starting noise (ComfyUI's seeded noise, scaled the way ComfyUI scales it).

The parent prints one JSON object: every part's figures, the time ratios against the
baseline, the largest absolute difference between noodlebox's fp32 latent and the
baseline's (they should agree to 1e-4 for euler), and the PSNR of the ``auto`` image
against the ``fp32`` one (what the fast path costs). Usage::

    python bench/txt2img.py                 # makes ~/.cache/noodlebox/bench/<checkpoint> once (2 GB)
    python bench/txt2img.py --ckpt FILE     # any SD1.5 single-file checkpoint
    python bench/txt2img.py --arch sd35     # SD3.5 / Flux schnell (`small` random sizes by default):
    python bench/txt2img.py --arch flux     #   SD3Pipeline / FluxPipeline as the baseline (bench/flow_baseline.py)
    python bench/txt2img.py --arch sdxl --batch 4 --compile on --baseline-precision fp16   # bench/gpu.sh's runs

``--compile on`` compiles noodlebox's UNet and VAE decoder (``noodlebox serve --compile``) and,
for a fair baseline, diffusers' UNet and decoder the same way; the first run pays the
compile, the second run (another seed, same shape) shows the steady figures.

Not part of ``make test``: it takes minutes on two cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # flow_baseline

from flow_baseline import SETTINGS as SAMPLING  # noqa: E402  (needs the path above)

CACHE = Path.home() / ".cache" / "noodlebox" / "bench"
FULL_NAME = "noodlebox-random-full-sd15.safetensors"
ARCHS = ("sd15", "sdxl", "sd35", "flux")
#: The random checkpoint size each arch is measured at when no ``--ckpt`` is given.
DEFAULT_SIZE = {"sd15": "full", "sdxl": "full", "sd35": "small", "flux": "small"}
POSITIVE = "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"
NEGATIVE = "text, watermark"
PARTS = ("fp32", "auto", "diffusers")


def txt2img_prompt(ckpt_name: str, size: int, steps: int, seed: int, arch: str = "sd15",
                   batch: int = 1) -> dict[str, Any]:
    """ComfyUI's default graph at ``size`` pixels, ``steps`` euler/normal steps (SD3.5/Flux: their templates')."""
    if arch in ("sd35", "flux"):
        from flow_baseline import flow_prompt

        return flow_prompt(arch, ckpt_name, size, steps, seed, POSITIVE, NEGATIVE, batch)
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bench", "images": ["8", 0]}},
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    ``VmHWM`` of ``/proc/self/status`` where there is one: it starts afresh at exec, whereas
    ``ru_maxrss`` carries the parent's peak over into a child (here: the checkpoint generation).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_checkpoint(path: Path | None, arch: str = "sd15", model_size: str | None = None) -> Path:
    """The checkpoint to use: ``path``, or a random one of ``arch`` (generated into the cache once)."""
    if path is not None:
        return path
    from flow_baseline import CHECKPOINT_ARCH

    model_size = model_size or DEFAULT_SIZE[arch]
    name = CHECKPOINT_ARCH.get(arch, arch)
    target = CACHE / (FULL_NAME if (arch, model_size) == ("sd15", "full") else
                      f"noodlebox-random-{model_size}-{name}.safetensors")
    if not target.exists():
        from diffusion.files import atomic_path
        from diffusion.synthetic import write_checkpoint

        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"writing {target} (once)...", file=sys.stderr)
        with atomic_path(target) as tmp:
            write_checkpoint(tmp, name, model_size, 0)
    return target


# -- noodlebox --------------------------------------------------------------------------------


class Timeline:
    """Executor events with their times; node durations and sampler steps from them."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        """The executor's sink."""
        self.events.append((time.perf_counter(), event, data))

    def node_seconds(self) -> dict[str, float]:
        """Node id -> seconds from its ``executing`` event to its ``finished`` state."""
        started: dict[str, float] = {}
        took: dict[str, float] = {}
        for t, event, data in self.events:
            if event == "executing" and data.get("node") is not None:
                started[data["node"]] = t
            elif event == "progress_state":
                for node_id, state in data["nodes"].items():
                    if state["state"] == "finished" and node_id in started:
                        took[node_id] = t - started[node_id]
        return took

    def step_seconds(self, node_id: str) -> list[float]:
        """Seconds per sampler step of ``node_id`` (the first counted from the node's start)."""
        last = next(t for t, e, d in self.events if e == "executing" and d.get("node") == node_id)
        steps = []
        for t, event, data in self.events:
            if event == "progress" and data.get("node") == node_id:
                steps.append(t - last)
                last = t
        return steps


def capture_output(registry: Any, class_type: str, store: list[Any]) -> None:
    """Replace ``class_type``'s schema by one that also keeps its first output value in ``store``."""
    schema = registry[class_type]
    run = schema.behaviour.execute

    def execute(instance: Any, ctx: Any, inputs: dict[str, Any]) -> Any:
        out = run(instance, ctx, inputs)
        values = out.get("result") if isinstance(out, dict) else out
        store.append(values[0] if isinstance(values, tuple | list) else values)
        return out

    registry.add(dataclasses.replace(schema, behaviour=dataclasses.replace(schema.behaviour, execute=execute)))


def noodlebox_part(precision: str, ckpt: Path, work: Path, size: int, steps: int, seed: int, arch: str = "sd15",
                   batch: int = 1, compile_mode: str = "off") -> dict[str, Any]:
    """Run the prompt twice (the second time with another seed) at ``precision``."""
    import torch

    import diffusion.checkpoint  # noqa: F401  (imported before the clock starts, as the baseline does)
    from graph.executor import Executor
    from graph.validate import validate_prompt
    from nodes.api import Services
    from nodes.folders import Folders
    from nodes.registry import build_registry

    base = work / f"base-{precision}"
    (base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    link = base / "models" / "checkpoints" / ckpt.name
    if not link.exists():
        link.symlink_to(ckpt.resolve())
    registry = build_registry(Services(folders=Folders(base), precision=precision, compile=compile_mode))
    latents: list[Any] = []
    capture_output(registry, "KSampler", latents)
    executor = Executor(registry)

    def run(run_seed: int) -> tuple[Any, Timeline, float]:
        checked = validate_prompt(txt2img_prompt(ckpt.name, size, steps, run_seed, arch, batch), registry)
        if not checked.ok:
            raise SystemExit(json.dumps(checked.response_body()))
        timeline = Timeline()
        start = time.perf_counter()
        result = executor.run(checked.prompt, f"bench-{run_seed}", outputs=checked.outputs, sink=timeline)
        took = time.perf_counter() - start
        if result.status != "success":
            raise SystemExit(json.dumps(result.error, default=str)[:2000])
        return result, timeline, took

    first, timeline, total = run(seed)
    nodes = timeline.node_seconds()
    image = first.outputs["9"]["images"][0]
    torch.save(latents[0]["samples"], work / f"{precision}-latent.pt")
    png = base / "output" / image["subfolder"] / image["filename"]
    second, timeline2, total2 = run(seed + 1)
    return {
        "precision": precision,
        "load_s": nodes.get("4"),
        "encode_s": nodes.get("6", 0.0) + nodes.get("7", 0.0),
        "sample_s": nodes.get("3"),
        "step_s": timeline.step_seconds("3"),
        "decode_s": nodes.get("8"),
        "save_s": nodes.get("9"),
        "total_s": total,
        "image": str(png),
        "seed_change": {
            "executed": second.executed,
            "cached": next((d["nodes"] for _, e, d in timeline2.events if e == "execution_cached"), []),
            "total_s": total2,
            "step_s": timeline2.step_seconds("3"),
            "decode_s": timeline2.node_seconds().get("8"),
        },
        "peak_rss_mb": peak_rss_mb(),
    }


# -- the diffusers baseline ------------------------------------------------------------------


def diffusers_part(ckpt: Path, work: Path, size: int, steps: int, seed: int, arch: str = "sd15", batch: int = 1,
                   compile_mode: str = "off", precision: str = "fp32") -> dict[str, Any]:
    """The same txt2img through diffusers' pipeline for ``arch``, built from our loaded modules."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from diffusion.checkpoint import load_checkpoint
    from diffusion.memory import pick_device
    from diffusion.sampling import DiscreteSchedule, ksampler_sigmas, prepare_noise
    from diffusion.tokenizer import clip_tokenizer

    if arch in ("sd35", "flux"):
        from flow_baseline import diffusers_flow_part

        result = diffusers_flow_part(arch, ckpt, work, size, steps, seed, POSITIVE, NEGATIVE, batch)
        return {**result, "peak_rss_mb": peak_rss_mb()}
    device = pick_device()

    class IntegerTimesteps(EulerDiscreteScheduler):
        """Euler on the given sigmas, feeding the UNet the nearest integer timestep, as ComfyUI does
        (diffusers interpolates a fractional one; the UNet's answer differs by ~1e-4)."""

        def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None,
                          timesteps: list[int] | None = None, sigmas: list[float] | None = None) -> None:
            super().set_timesteps(num_inference_steps, device, timesteps=timesteps, sigmas=sigmas)
            self.timesteps = self.timesteps.round()

    start = time.perf_counter()
    loaded = load_checkpoint(ckpt, precision=precision, device=device)
    assert loaded.unet is not None and loaded.clip is not None and loaded.vae is not None
    # SD1.5's own scheduler config (SDXL's is the same); the sigmas below replace its spacing.
    scheduler = IntegerTimesteps(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                 beta_schedule="scaled_linear", prediction_type="epsilon", steps_offset=1)
    if loaded.arch == "sdxl":
        pipe: Any = StableDiffusionXLPipeline(
            vae=loaded.vae.model, text_encoder=loaded.clip.clip_l, text_encoder_2=loaded.clip.clip_g,
            tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=loaded.unet.model, scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=loaded.vae.model, text_encoder=loaded.clip.clip_l,
                                       tokenizer=clip_tokenizer(), unet=loaded.unet.model, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if compile_mode == "on":  # what noodlebox --compile compiles: the UNet and the VAE decoder
        pipe.unet = torch.compile(pipe.unet, dynamic=False)
        pipe.vae.decoder = torch.compile(pipe.vae.decoder, dynamic=False)
    load_s = time.perf_counter() - start

    sigmas = ksampler_sigmas(DiscreteSchedule(prediction="eps"), "normal", "euler", steps, 1.0)
    noise = prepare_noise(torch.zeros(batch, 4, size // 8, size // 8), seed)
    probe = IntegerTimesteps.from_config(scheduler.config)
    probe.set_timesteps(sigmas=sigmas.tolist())
    # ComfyUI starts a full denoise at noise * sqrt(1 + sigma_max^2); the pipeline multiplies by init_noise_sigma.
    start_latents = noise * math.sqrt(1.0 + float(sigmas[0]) ** 2) / float(probe.init_noise_sigma)

    start_latents = start_latents.to(device, loaded.unet.dtype)

    def run() -> tuple[Any, float, list[float], float, float]:
        t0 = time.perf_counter()
        with torch.no_grad():
            embeds = pipe.encode_prompt(POSITIVE, device=device, num_images_per_prompt=batch,
                                        do_classifier_free_guidance=True, negative_prompt=NEGATIVE)
        encode_s = time.perf_counter() - t0
        named = dict(zip(("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                          "negative_pooled_prompt_embeds"), embeds, strict=False))
        marks = [time.perf_counter()]

        def on_step(_pipe: Any, _step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            marks.append(time.perf_counter())
            return kwargs

        latents = pipe(**named, guidance_scale=8.0, sigmas=sigmas.tolist(), height=size, width=size,
                       latents=start_latents, output_type="latent", callback_on_step_end=on_step).images
        t0 = time.perf_counter()
        with torch.no_grad():
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
            if device.type == "cuda":
                torch.cuda.synchronize()
        return latents, encode_s, [b - a for a, b in itertools.pairwise(marks)], time.perf_counter() - t0, image

    latents, encode_s, steps_s, decode_s, image = run()
    # a second run of the same shape: the steady figures (with --compile, after the compile)
    _latents2, _encode2, steps2, decode2, _image2 = run()
    sample_s = sum(steps_s)
    torch.save((latents / pipe.vae.config.scaling_factor).float().cpu(), work / "diffusers-latent.pt")
    torch.save(((image.float().cpu() + 1) / 2).clamp(0, 1), work / "diffusers-image.pt")
    return {
        "load_s": load_s,
        "encode_s": encode_s,
        "sample_s": sample_s,
        "step_s": steps_s,
        "decode_s": decode_s,
        "total_s": encode_s + sample_s + decode_s + load_s,
        "second_run": {"step_s": steps2, "decode_s": decode2},
        "latent_scale": float(pipe.vae.config.scaling_factor),
        "peak_rss_mb": peak_rss_mb(),
    }


# -- the parent ---------------------------------------------------------------------------------


def psnr(a: Any, b: Any) -> float:
    """PSNR in dB of two uint8 images."""
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def steady_step(steps: list[float]) -> float:
    """The median step time of a second run (its first step also holds the sampler's set-up)."""
    import statistics

    return statistics.median(steps[1:] or steps)


def compare(results: dict[str, dict[str, Any]], work: Path, arch: str = "sd15") -> dict[str, Any]:
    """Ratios against the baseline, latent differences and the auto-vs-fp32 PSNR."""
    import numpy as np
    import torch
    from PIL import Image

    out: dict[str, Any] = {}
    base = results.get("diffusers")
    for part in ("fp32", "auto"):
        if part in results and base:
            ours = results[part]
            out[f"{part}_vs_diffusers_total_ratio"] = ours["total_s"] / base["total_s"]
            out[f"{part}_vs_diffusers_sample_ratio"] = ours["sample_s"] / base["sample_s"]
            out[f"{part}_vs_diffusers_peak_rss_ratio"] = ours["peak_rss_mb"] / base["peak_rss_mb"]
            out[f"{part}_vs_diffusers_load_ratio"] = ours["load_s"] / base["load_s"]
            out[f"{part}_vs_diffusers_first_step_ratio"] = ours["step_s"][0] / base["step_s"][0]
            steady = steady_step(ours["seed_change"]["step_s"]), steady_step(base["second_run"]["step_s"])
            out[f"{part}_vs_diffusers_steady_step_ratio"] = steady[0] / steady[1]
            decode = ours["seed_change"].get("decode_s") or ours["decode_s"], base["second_run"]["decode_s"]
            out[f"{part}_vs_diffusers_decode_ratio"] = decode[0] / decode[1]
    latents = {p: torch.load(work / f"{p}-latent.pt") for p in PARTS if (work / f"{p}-latent.pt").exists()}
    if arch == "sdxl":  # the pipeline encodes with its own rules (pad token, size embeddings): timing only
        latents.pop("diffusers", None)
        out["latents_compared"] = "no: the SDXL pipeline's text conditioning differs from ComfyUI's"
    if "fp32" in latents and "diffusers" in latents:
        diff = (latents["fp32"].float() - latents["diffusers"].float()).abs().max().item()
        scale = float(results["diffusers"].get("latent_scale", 0.18215))
        # LATENT outputs are unscaled (VAE space); the sampler and diffusers' pipeline work on latent * scale.
        out["fp32_vs_diffusers_latent_max_abs_diff"] = diff
        out["fp32_vs_diffusers_model_space_max_abs_diff"] = diff * scale
        out["fp32_vs_diffusers_latent_max_rel_diff"] = diff / latents["diffusers"].float().abs().max().item()
        out["model_space_latents_match_1e-4"] = diff * scale <= 1e-4
    if "fp32" in latents and "auto" in latents:
        out["auto_vs_fp32_latent_max_abs_diff"] = (latents["auto"].float() - latents["fp32"].float()).abs().max().item()
    if "fp32" in results and "auto" in results:
        images = [np.asarray(Image.open(results[p]["image"]).convert("RGB")) for p in ("fp32", "auto")]
        out["auto_vs_fp32_psnr_db"] = psnr(images[0], images[1])
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments; run the parts (each in a subprocess) or, with ``--part``, one of them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, default=None,
                        help="a checkpoint of --arch (default: a random one, written to ~/.cache/noodlebox/bench)")
    parser.add_argument("--arch", choices=ARCHS, default="sd15", help="model family (default sd15)")
    parser.add_argument("--model-size", choices=("tiny", "small", "full"), default=None,
                        help="size of the random checkpoint (default: full for sd15/sdxl, small for sd35/flux)")
    parser.add_argument("--batch", type=int, default=1, help="images per run")
    parser.add_argument("--compile", choices=("off", "on"), default="off",
                        help="torch.compile the UNet and VAE decoder, on both sides")
    parser.add_argument("--baseline-precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                        help="the diffusers baseline's dtype (fp16 on a GPU)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which of {', '.join(PARTS)} to run")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per part (default: torch's choice, one per core); on a machine "
                             "where other work holds a core, 1 thread avoids stalls at every parallel barrier")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # the subprocess's own part
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.part is not None:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if args.part == "diffusers":
            result = diffusers_part(args.ckpt, args.work, args.size, args.steps, args.seed, args.arch, args.batch,
                                    args.compile, args.baseline_precision)
        else:
            result = noodlebox_part(args.part, args.ckpt, args.work, args.size, args.steps, args.seed, args.arch,
                                    args.batch, args.compile)
        print(json.dumps(result))
        return 0

    ckpt = ensure_checkpoint(args.ckpt, args.arch, args.model_size)
    parts = [p for p in args.parts.split(",") if p]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="noodlebox-bench-") as tmp:
        work = Path(tmp)
        results: dict[str, dict[str, Any]] = {}
        for part in parts:
            cmd = [sys.executable, __file__, "--part", part, "--ckpt", str(ckpt), "--work", str(work),
                   "--size", str(args.size), "--steps", str(args.steps), "--seed", str(args.seed),
                   "--arch", args.arch, "--batch", str(args.batch), "--compile", args.compile,
                   "--baseline-precision", args.baseline_precision,
                   *(["--threads", str(args.threads)] if args.threads else [])]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
            if done.returncode != 0:
                results[part] = {"error": (done.stderr or done.stdout).strip()[-2000:]}
                continue
            results[part] = json.loads(done.stdout.strip().splitlines()[-1])
        ok = {p: r for p, r in results.items() if "error" not in r}
        report = {
            "checkpoint": str(ckpt),
            "settings": {"arch": args.arch, "size": args.size, "steps": args.steps, "batch": args.batch,
                         "compile": args.compile, "baseline_precision": args.baseline_precision,
                         **(SAMPLING.get(args.arch) or {"sampler": "euler", "scheduler": "normal", "cfg": 8.0}),
                         "seed": args.seed, "threads": args.threads or _threads(),
                         # other work on the machine skews the times: say how busy it was
                         "load_average_before_after": [load_before, os.getloadavg()[0]]},
            **results,
            "comparison": compare(ok, work, args.arch),
        }
    print(json.dumps(report, indent=2))
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
