"""Tiny random-weight checkpoints for end-to-end tests, made once per test session.

Each checkpoint is generated once (``diffusion.synthetic``, a fraction of a second) into
a session folder and hard-linked (or copied) into a test's model folder, so every test
gets its own folder without paying for the generation again.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from server.cli import main

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


def make_as_makefile(base: Path, variable: str, arch: str) -> Path:
    """Run the Makefile's ``make-checkpoint --arch ARCH`` recipe for ``$(VARIABLE)`` into ``base``."""
    text = (REPO / "Makefile").read_text()
    name = re.search(rf"^{variable} := models/checkpoints/(\S+)$", text, re.M)
    recipe = re.search(rf"^\t\$\(BIN\)/noodlebox (make-checkpoint --arch {re.escape(arch)} .*) \$@$", text, re.M)
    assert name and recipe
    out = base / "models" / "checkpoints" / name.group(1)
    assert main([*recipe.group(1).split(), str(out)]) == 0
    return out


def run_workflow(base: Path, capsys: Any, workflow: str, *overrides: str) -> tuple[Any, list[str]]:
    """``noodlebox run workflows/WORKFLOW --json --set ...`` in this process: the last image's RGB pixels (int)
    and the executed node ids; the run must succeed."""
    args = ["run", str(WORKFLOWS / workflow), "--base-dir", str(base), "--json"]
    for item in overrides:
        args += ["--set", item]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])["data"]
    assert result["status"] == "success"
    with Image.open(result["images"][-1]) as image:
        return np.asarray(image.convert("RGB")).astype(int), result["executed"]
