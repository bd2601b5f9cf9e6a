"""SaveImage file naming, as ComfyUI names files (PROTOCOL.md 7.2)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from nodes.save_paths import SavePathError, save_target, substitute_prefix


def test_first_file_and_counter_past_existing(tmp_path: Path) -> None:
    target = save_target(tmp_path, "ComfyUI", 64, 64)
    assert (target.counter, target.subfolder, target.name()) == (1, "", "ComfyUI_00001_.png")
    (tmp_path / "ComfyUI_00007_.png").write_bytes(b"")
    (tmp_path / "ComfyUIx_00042_.png").write_bytes(b"")  # another prefix: ignored
    target = save_target(tmp_path, "ComfyUI", 64, 64)
    assert target.name() == "ComfyUI_00008_.png"
    assert target.name(1) == "ComfyUI_00009_.png"


def test_subfolder_in_prefix(tmp_path: Path) -> None:
    target = save_target(tmp_path, "foo/bar", 64, 64)
    assert target.subfolder == "foo"
    assert target.folder == (tmp_path / "foo").resolve()
    assert target.name() == "bar_00001_.png"


@pytest.mark.parametrize("prefix", ["../evil", "/etc/passwd", "a/../../b", "x\x00y"])
def test_prefix_cannot_escape(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(SavePathError):
        save_target(tmp_path / "out", prefix, 64, 64)


def test_substitutions() -> None:
    now = dt.datetime(2026, 3, 4, 5, 6, 7)
    assert substitute_prefix("img_%width%x%height%", 512, 768, now) == "img_512x768"
    assert substitute_prefix("%date:yyyy-MM-dd%/%date:hhmmss%", 1, 1, now) == "2026-03-04/050607"
    assert substitute_prefix("%year%%month%%day%", 1, 1, now) == "20260304"
    assert substitute_prefix("%KSampler.seed%", 1, 1, now) == "%KSampler.seed%"
