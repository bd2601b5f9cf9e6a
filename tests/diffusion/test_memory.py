"""The model cache: a second prompt does not reload, a changed file does, /free empties it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.memory import FileKey, ModelCache, pick_device
from diffusion.synthetic import write_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("mem") / "sd15.safetensors", "sd15", "tiny", 1)


def _load(path: Path, precision: str = "fp32"):
    return lambda: load_checkpoint(path, precision=precision)


def test_second_request_is_served_from_cache(ckpt: Path) -> None:
    cache = ModelCache()
    first = cache.get(ckpt, "fp32", _load(ckpt))
    second = cache.get(str(ckpt), "fp32", _load(ckpt))
    assert second is first
    assert cache.loads == 1


def test_other_options_load_separately(ckpt: Path) -> None:
    cache = ModelCache()
    fp32 = cache.get(ckpt, "fp32", _load(ckpt, "fp32"))
    bf16 = cache.get(ckpt, "bf16", _load(ckpt, "bf16"))
    assert fp32 is not bf16 and cache.loads == 2 and len(cache) == 2
    assert bf16.unet.model.dtype == torch.bfloat16


def test_changed_file_is_reloaded_and_the_old_entry_dropped(ckpt: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(ckpt.read_bytes())
    cache = ModelCache()
    old = cache.get(copy, "fp32", _load(copy))
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    new = cache.get(copy, "fp32", _load(copy))
    assert new is not old and cache.loads == 2 and len(cache) == 1


def test_unload_and_resident_report(ckpt: Path) -> None:
    cache = ModelCache()
    cache.get(ckpt, "fp32", _load(ckpt))
    [entry] = cache.resident()
    assert entry["path"] == str(ckpt.resolve())
    # fp32 weights of the tiny model: a few MB, matching the file (also fp16) times two.
    assert entry["bytes"] > ckpt.stat().st_size
    assert cache.unload(ckpt) == 1
    assert cache.resident() == [] and len(cache) == 0
    assert cache.unload() == 0


def test_file_key_tracks_identity(ckpt: Path) -> None:
    key = FileKey.of(ckpt)
    assert key.size == ckpt.stat().st_size and key.path == str(ckpt.resolve())
    with pytest.raises(FileNotFoundError):
        FileKey.of(ckpt.with_name("gone.safetensors"))


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            pick_device("cuda")
