"""The embedded default checkpoint: what the example workflows load on a machine with no models.

A fresh clone has no model files, yet ``make serve``, ``noodlebox run workflows/txt2img.json``
and the tests must produce an image. The repository ships a small *trained* SD1.x-layout
model (``models/demo/``, made by ``scripts/train_demo_model.py``: 64x64 pictures of
coloured shapes, prompts such as "a red circle on a blue background"). When the checkpoint
folder holds no checkpoint at all, :func:`ensure_default_checkpoint` places a copy of it
there as :data:`DEFAULT_CHECKPOINT`.

It is the one place the default is named: the workflows under ``workflows/`` reference
:data:`DEFAULT_CHECKPOINT` at :data:`DEMO_RESOLUTION` with a prompt the model knows. A folder
that already has any checkpoint is left alone (a user's real models are never joined by
the demo one).

``python -m nodes.default_model [BASE_DIR]`` does the same for ``BASE_DIR/models/checkpoints``
(the Makefile's ``models`` target).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from diffusion.files import atomic_path

from .folders import Folders

#: File name of the default checkpoint, as the example workflows reference it.
DEFAULT_CHECKPOINT = "noodlebox-demo-shapes.safetensors"
#: The committed, trained file that is copied into place.
DEMO_CHECKPOINT_PATH = Path(__file__).resolve().parent.parent / "models" / "demo" / DEFAULT_CHECKPOINT
#: The demo model's native resolution (pixels, square) and the settings its tests and workflows use.
DEMO_RESOLUTION = 64
DEMO_CFG = 5.0
DEMO_PROMPT = "a red circle on a blue background"


def default_checkpoint_path(folders: Folders) -> Path:
    """Where the default checkpoint lives (or would be written): the first checkpoint folder."""
    return folders.paths("checkpoints")[0] / DEFAULT_CHECKPOINT


def ensure_default_checkpoint(folders: Folders) -> str:
    """Make sure the example workflows have a checkpoint to load; returns the name they should use.

    - No checkpoint in any checkpoint folder: copy the demo model there as
      :data:`DEFAULT_CHECKPOINT` in the first folder, return its name.
    - The default is there (any folder): return its name.
    - Other checkpoints only: write nothing, return the first of them (sorted).

    The file is written under a temporary name and renamed, so a concurrent reader
    (another test, a running server listing the folder) never sees half a file.
    """
    existing = folders.filename_list("checkpoints")
    if DEFAULT_CHECKPOINT in existing:
        return DEFAULT_CHECKPOINT
    if existing:
        return existing[0]
    write_default_checkpoint(default_checkpoint_path(folders))
    return DEFAULT_CHECKPOINT


def write_default_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Copy the demo checkpoint's bytes to ``path`` atomically (same bytes every time)."""
    if not DEMO_CHECKPOINT_PATH.is_file():
        raise FileNotFoundError(
            f"the demo model {DEMO_CHECKPOINT_PATH} is missing; restore it from git or run scripts/train_demo_model.py")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a hidden ``.part`` name: the checkpoint list never offers half a file
        shutil.copyfile(DEMO_CHECKPOINT_PATH, tmp)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nodes.default_model [BASE_DIR]``: ensure the default under ``BASE_DIR`` (default: here)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: python -m nodes.default_model [BASE_DIR]", file=sys.stderr)
        return 2
    folders = Folders(args[0] if args else Path.cwd())
    before = set(folders.filename_list("checkpoints"))
    name = ensure_default_checkpoint(folders)
    if name in before:
        print(f"checkpoint present: {name}")
    else:
        print(f"wrote {default_checkpoint_path(folders)} (the demo model: try \"{DEMO_PROMPT}\" at 64x64)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
