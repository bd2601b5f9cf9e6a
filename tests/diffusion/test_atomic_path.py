"""diffusion.files.atomic_path: the target is whole or untouched, never half-written, and nothing is left over."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffusion.files import atomic_path


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert tmp.name.startswith(".model.safetensors.") and tmp.suffix == ".part"
        assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_a_finished_write_replaces_the_file_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    assert target.stat().st_mode & 0o044 == 0o044  # not mkstemp's 0600 (umask 022)
