"""Tiny random-weight checkpoints for end-to-end tests, made once per test session.

Each checkpoint is generated once (``diffusion.synthetic``, a fraction of a second) into
a session folder and hard-linked (or copied) into a test's model folder, so every test
gets its own folder without paying for the generation again.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"

_made: dict[str, Path] = {}
_session_dir: Path | None = None


def _session() -> Path:
    global _session_dir
    if _session_dir is None:
        _session_dir = Path(tempfile.mkdtemp(prefix="noodlebox-test-models-"))
        atexit.register(shutil.rmtree, _session_dir, True)
    return _session_dir


def _generated(arch: str) -> Path:
    """The session's tiny checkpoint of ``arch`` (``sd15`` is the embedded default's exact bytes)."""
    if arch not in _made:
        path = _session() / f"tiny-{arch}.safetensors"
        if arch == "sd15":
            from nodes.default_model import write_default_checkpoint

            write_default_checkpoint(path)
        else:
            from diffusion.synthetic import write_checkpoint

            write_checkpoint(path, arch, "tiny", 0)
        _made[arch] = path
    return _made[arch]


def place_checkpoint(folder: Path, name: str, arch: str = "sd15") -> Path:
    """Put a tiny ``arch`` checkpoint at ``folder/name``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    source = _generated(arch)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target
