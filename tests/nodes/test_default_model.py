"""The embedded default checkpoint: placed only into an empty checkpoint folder, atomically, always the same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nodes.default_model import (
    DEFAULT_CHECKPOINT,
    default_checkpoint_path,
    ensure_default_checkpoint,
    main,
)
from nodes.folders import Folders


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_empty_folder_gets_the_default(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    assert ensure_default_checkpoint(folders) == DEFAULT_CHECKPOINT
    path = tmp_path / "models" / "checkpoints" / DEFAULT_CHECKPOINT
    assert path.is_file() and path == default_checkpoint_path(folders)
    assert folders.filename_list("checkpoints") == [DEFAULT_CHECKPOINT]  # no temporary file left behind
    from nodes.model_tools import describe_checkpoint

    info = describe_checkpoint(path)
    assert info["arch"] == "sd1"


def test_it_is_written_once_and_the_same_bytes_everywhere(tmp_path: Path) -> None:
    first, second = Folders(tmp_path / "a"), Folders(tmp_path / "b")
    ensure_default_checkpoint(first)
    path = default_checkpoint_path(first)
    before = path.stat().st_mtime_ns
    assert ensure_default_checkpoint(first) == DEFAULT_CHECKPOINT
    assert path.stat().st_mtime_ns == before  # present: not rewritten
    ensure_default_checkpoint(second)
    assert digest(path) == digest(default_checkpoint_path(second))


def test_real_models_are_never_joined_by_a_random_one(tmp_path: Path) -> None:
    checkpoints = tmp_path / "models" / "checkpoints"
    (checkpoints / "sd15").mkdir(parents=True)
    (checkpoints / "sd15" / "real.safetensors").write_bytes(b"x")
    (checkpoints / "another.ckpt").write_bytes(b"x")
    assert ensure_default_checkpoint(Folders(tmp_path)) == "another.ckpt"
    assert not (checkpoints / DEFAULT_CHECKPOINT).exists()


def test_the_default_in_an_extra_folder_counts(tmp_path: Path) -> None:
    elsewhere = tmp_path / "shared"
    elsewhere.mkdir()
    (elsewhere / DEFAULT_CHECKPOINT).write_bytes(b"stand-in")
    folders = Folders(tmp_path / "base")
    folders.add_path("checkpoints", elsewhere)
    assert ensure_default_checkpoint(folders) == DEFAULT_CHECKPOINT
    assert not default_checkpoint_path(folders).exists()


def test_module_entry_point(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main([str(tmp_path)]) == 0
    assert f"checkpoint present: {DEFAULT_CHECKPOINT}" in capsys.readouterr().out
    assert main(["--help"]) == 2

