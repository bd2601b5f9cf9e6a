"""LoRA cost: peak memory and time with 0, 1 and 5 LoRAs, and the time to re-patch after a strength change.

Each case runs in its own process (peak RSS only grows): load an SD1.5 checkpoint as
``CheckpointLoaderSimple`` does (originals re-read from the file, ``diffusion.original_sources``),
add N seeded files of ``--kind`` at rank ``--rank`` (``locon``: UNet attention, ResNet
convolutions and text encoder; ``lora``: kohya's attention-only layers), apply them
(``UNetModel.use()`` and one text encoding) and run one UNet call. Then the last LoRA's
strength changes three times and each re-patch is timed on its own (the median is reported).

Prints one JSON line per case: ``loras``, ``kind``, ``threads``, ``peak_rss_mb``, ``rss_ratio``
(to the 0-LoRA case), ``apply_s`` (first patch of all LoRAs), ``strength_change_s`` (UNet
patching time of a strength change), ``patched_keys`` and ``patched_mparams`` (millions of
weights the LoRAs touch).
Targets (issue 12): 5 LoRAs <= 1.15x the RSS of none; a strength change <= 0.2 s on the
full-size UNet. Usage::

    python bench/lora.py --size small            # the issue's RSS figures
    python bench/lora.py --size full --cases 1 5 --kind lora   # strength change, full UNet (~6 GB RAM)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _files(size: str, loras: int, rank: int, folder: Path, kind: str) -> tuple[Path, list[Path]]:
    """The checkpoint and LoRA files of a case, written once (in the parent, so no case pays for writing)."""
    import torch

    from diffusion.lora.synthetic import write_lora
    from diffusion.synthetic import write_checkpoint

    ckpt = folder / f"sd15-{size}.safetensors"
    if not ckpt.exists():
        write_checkpoint(ckpt, "sd15", size, 0, torch.float16)
    files = []
    for i in range(loras):
        path = folder / f"{kind}-{size}-{rank}-{i}.safetensors"
        if not path.exists():
            write_lora(path, base=ckpt, rank=rank, seed=i, kind=kind)
        files.append(path)
    return ckpt, files


def _case(size: str, loras: int, rank: int, folder: Path, kind: str, threads: int) -> dict[str, float | int | str]:
    import statistics

    import torch

    torch.set_num_threads(threads)
    from diffusion.checkpoint import load_checkpoint
    from diffusion.lora.load import lora_patches, read_lora
    from diffusion.original_sources import attach_file_sources

    ckpt, files = _files(size, loras, rank, folder, kind)
    loaded = load_checkpoint(ckpt, precision="fp32", device=torch.device("cpu"))
    attach_file_sources(loaded)
    model, clip = loaded.unet, loaded.clip
    chain = [model]
    start = time.perf_counter()
    for path in files:
        placed = lora_patches(read_lora(path), model, clip)
        model, clip = model.with_patches(placed.unet, 0.7), clip.with_patches(placed.clip, 0.7)
        chain.append(model)
    with model.use():
        pass
    apply_s = time.perf_counter() - start
    clip.encode("a red square")
    with torch.no_grad(), model.use() as unet:
        unet(torch.zeros(1, 4, 8, 8), torch.tensor([500]), encoder_hidden_states=torch.zeros(1, 77, model.context_dim))
    changes = [0.0]
    if files:  # the same last LoRA (same parsed adapters, as a cached LoraLoader gives) at other strengths
        placed = lora_patches(read_lora(files[-1]), chain[-2], None)
        changes = []
        for strength in (0.3, 0.5, 0.7):
            changed = chain[-2].with_patches(placed.unet, strength)
            start = time.perf_counter()
            with changed.use():
                pass
            changes.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = dict(model.model.named_parameters())
    touched = sum(params[k].numel() for k in model.weight_patches) / 1e6
    return {"loras": loras, "kind": kind, "threads": threads, "peak_rss_mb": round(peak, 1),
            "apply_s": round(apply_s, 3), "strength_change_s": round(statistics.median(changes), 3),
            "patched_keys": len(model.weight_patches), "patched_mparams": round(touched, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the cases, each in a child process, and print their JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "small", "full"), default="small")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--cases", type=int, nargs="+", default=[0, 1, 5])
    parser.add_argument("--kind", choices=("locon", "lora"), default="locon")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each case (default 1)")
    parser.add_argument("--folder", type=Path, help="where the checkpoint and LoRA files are kept (default: temp)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_case(args.size, args.cases[0], args.rank, args.folder, args.kind, args.threads)))
        return 0
    folder = args.folder or Path(tempfile.mkdtemp(prefix="noodlebox-bench-lora-"))
    _files(args.size, max(args.cases), args.rank, folder, args.kind)
    base_rss = None
    for count in args.cases:
        out = subprocess.run([sys.executable, __file__, "--child", "--size", args.size, "--rank", str(args.rank),
                              "--cases", str(count), "--folder", str(folder), "--kind", args.kind,
                              "--threads", str(args.threads)], check=True, capture_output=True,
                             text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        base_rss = row["peak_rss_mb"] if count == 0 else base_rss
        if base_rss:
            row["rss_ratio"] = round(row["peak_rss_mb"] / base_rss, 3)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
