"""Render the README's sample sheet with the committed demo model, through the real nodes and executor.

    .venv/bin/python scripts/demo_sample_sheet.py --out docs/demo_sample.png

Each tile is one txt2img run (CheckpointLoaderSimple -> CLIPTextEncode -> KSampler euler/normal,
20 steps, CFG 5 -> VAEDecode) at the model's native 64x64, seed = tile index; the sheet
shows them scaled 2x with nearest-neighbour so pixels stay visible.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.default_model import DEFAULT_CHECKPOINT, DEMO_CFG, DEMO_RESOLUTION, ensure_default_checkpoint
from nodes.folders import Folders
from nodes.registry import build_registry

PROMPTS = (
    "a red circle on a blue background",
    "a yellow star on a black background",
    "a white square on a green background",
    "a purple triangle on a yellow background",
    "an orange ring on a blue background",
    "a small green star in the top left on a white background",
    "a large blue circle on an orange background",
    "a black triangle in the bottom right on a red background",
)


def render_sheet(out: Path, columns: int = 4, zoom: int = 2) -> Path:
    """Run every prompt of :data:`PROMPTS` and save the tiles as one PNG at ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folders = Folders(base)
        ensure_default_checkpoint(folders)  # the empty folder gets the demo model
        registry = build_registry(Services(folders=folders, precision="fp32"))
        executor = Executor(registry)
        tiles = []
        for seed, text in enumerate(PROMPTS):
            prompt = {
                "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEFAULT_CHECKPOINT}},
                "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
                "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
                "5": {"class_type": "EmptyLatentImage",
                      "inputs": {"width": DEMO_RESOLUTION, "height": DEMO_RESOLUTION, "batch_size": 1}},
                "3": {"class_type": "KSampler", "inputs": {
                    "model": ["4", 0], "seed": seed, "steps": 20, "cfg": DEMO_CFG, "sampler_name": "euler",
                    "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
                    "denoise": 1.0}},
                "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
                "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sheet", "images": ["8", 0]}},
            }
            checked = validate_prompt(prompt, registry)
            result = executor.run(checked.prompt, str(seed), checked.outputs)
            if result.status != "success":
                raise SystemExit(f"prompt {text!r} failed: {result.error}")
            info = result.outputs["9"]["images"][0]
            tiles.append(np.asarray(Image.open(base / "output" / info["subfolder"] / info["filename"]).convert("RGB")))
    gap = 4
    size = DEMO_RESOLUTION * zoom
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * (size + gap) - gap, rows * (size + gap) - gap), (255, 255, 255))
    for i, tile in enumerate(tiles):
        image = Image.fromarray(tile).resize((size, size), Image.Resampling.NEAREST)
        sheet.paste(image, ((i % columns) * (size + gap), (i // columns) * (size + gap)))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse ``--out`` and render the sheet."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/demo_sample.png"))
    args = parser.parse_args(argv)
    print(render_sheet(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
