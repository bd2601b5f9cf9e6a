"""Train noodlebox's demo model from scratch on the CPU and write it as an SD1.x single-file checkpoint.

    .venv/bin/python scripts/train_demo_model.py --seed 0 --out models/demo/noodlebox-demo-shapes.safetensors

Same seed, same step counts, same machine and thread count: same loss curve and same file.
A JSON training log (losses every N steps, wall time, seed, command) is written next to it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusion.train import config, loops, shapes
from diffusion.train.export import write_demo_checkpoint

DEFAULT_OUT = Path("models/demo/noodlebox-demo-shapes.safetensors")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (all have the defaults the committed file was made with)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed for data, initial weights, batches and noise")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint path (.safetensors)")
    parser.add_argument("--vae-steps", type=int, default=1000, help="VAE steps on 32-pixel crops")
    parser.add_argument("--vae-full-steps", type=int, default=100, help="VAE steps on whole images after the crops")
    parser.add_argument("--vae-mixed-steps", type=int, default=1000,
                        help="decoder-only steps on latents spliced from two images (keeps inpainting local)")
    parser.add_argument("--images", type=int, default=6144, help="dataset size for the diffusion stage")
    parser.add_argument("--unet-steps", type=int, default=3000, help="text encoder + UNet steps")
    parser.add_argument("--batch", type=int, default=48, help="diffusion batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the diffusion stage")
    parser.add_argument("--snr-gamma", type=float, default=5.0, help="min-SNR loss weighting (0: plain epsilon loss)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the loss curve depends on it)")
    parser.add_argument("--vae-batch", type=int, default=16, help="VAE batch size")
    parser.add_argument("--log-every", type=int, default=25, help="record the mean loss every N steps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train both stages, write the checkpoint and its ``.json`` training log; returns the exit code."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    torch.manual_seed(args.seed)
    vae = config.build_vae()
    vae_log = loops.train_vae(vae, args.seed, args.vae_steps, batch=args.vae_batch, full_steps=args.vae_full_steps,
                              mixed_steps=args.vae_mixed_steps, log=print, every=args.log_every)
    vae_seconds = time.time() - started

    images, samples = shapes.make_batch(args.seed + 2, 0, args.images)
    # model space, as the sampler sees latents: VAE latent times SD1's scale factor (unit spread after the fold)
    latents = loops.normalise_latents(vae, loops.encode_latents(vae, images)) * config.LATENT_SCALE
    captions = [s.caption for s in samples]

    torch.manual_seed(args.seed + 1)
    text, unet = config.build_text_encoder(), config.build_unet()
    unet_log = loops.train_diffusion(unet, text, latents, captions, args.seed + 3, args.unet_steps,
                                     batch=args.batch, lr=args.lr, snr_gamma=args.snr_gamma, log=print,
                                     every=args.log_every)
    wall = time.time() - started

    # no timings in the file: the same seed must give the same bytes (they are in the JSON log)
    metadata = {"noodlebox.seed": str(args.seed), "noodlebox.resolution": str(config.RESOLUTION)}
    path = write_demo_checkpoint(args.out, unet, vae, text, metadata)
    record = {
        "command": " ".join(["scripts/train_demo_model.py", *(argv if argv is not None else sys.argv[1:])]),
        "seed": args.seed,
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "wall_seconds": round(wall, 1),
        "vae_seconds": round(vae_seconds, 1),
        "parameters": {"unet": config.parameters(unet), "vae": config.parameters(vae),
                       "text_encoder": config.parameters(text)},
        "file_bytes": path.stat().st_size,
        "vae_losses": vae_log.points,
        "unet_losses": unet_log.points,
        "final_losses": {"vae": vae_log.last, "unet": unet_log.last},
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path} ({record['file_bytes'] / 1e6:.1f} MB) in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
