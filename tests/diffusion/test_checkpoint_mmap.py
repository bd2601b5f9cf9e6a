"""The memory-mapped reader: tensors are views of a private map (no copy) and writing to them never
reaches the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import TensorFile, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tensors_are_views_of_the_file(tiny_sd15_path: Path) -> None:
    with TensorFile(tiny_sd15_path) as file:
        key = next(k for k, d in file.dtypes.items() if d == "F32")
        first, again = file.get(key), file.get(key)
        assert first.data_ptr() == again.data_ptr()  # the same mapped bytes, not two reads
        assert first.dtype == torch.float32 and tuple(first.shape) == file.shapes[key]


def test_in_place_changes_to_a_loaded_model_never_reach_the_file(tmp_path: Path, tiny_sd15_path: Path) -> None:
    path = tmp_path / "copy.safetensors"
    path.write_bytes(tiny_sd15_path.read_bytes())
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_checkpoint(path, precision="fp32")
    reference = load_checkpoint(path, precision="fp32")
    assert loaded.unet is not None and reference.unet is not None
    weight = loaded.unet.model.conv_in.weight
    with torch.no_grad():
        weight.add_(1.0)  # what an in-place LoRA patch does
    assert not torch.equal(weight, reference.unet.model.conv_in.weight)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_cast_tensor_is_read_in_pieces_into_its_own_storage(tiny_sd15_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("diffusion.checkpoint._SCRATCH_BYTES", 96)  # many pieces, the last one short
    with TensorFile(tiny_sd15_path) as file:
        key = max((k for k, d in file.dtypes.items() if d == "F32"), key=lambda k: torch.Size(file.shapes[k]).numel())
        view = file.get(key)
        assert view.numel() * 4 > 96 * 3 and (view.numel() * 2) % 96 != 0
        cast = file.get(key, torch.bfloat16)
        assert cast.dtype == torch.bfloat16 and tuple(cast.shape) == file.shapes[key]
        assert torch.equal(cast, view.to(torch.bfloat16))
