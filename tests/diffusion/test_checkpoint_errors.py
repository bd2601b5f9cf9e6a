"""Files that are not usable checkpoints: a clear one-line CheckpointError, nothing run, nothing cached."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion.checkpoint import (
    V_PRED_STD_KEY,
    CheckpointError,
    TensorFile,
    inspect_checkpoint,
    load_checkpoint,
    load_vae,
    resolve_prediction,
)
from diffusion.detect import CheckpointLayout
from diffusion.memory import ModelCache
from diffusion.synthetic import write_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("good") / "sd15.safetensors", "sd15", "tiny", 3, torch.float32)


class _RunsCode:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _truncated(good: Path, tmp: Path) -> Path:
    path = tmp / "cut.safetensors"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


def _json_renamed(good: Path, tmp: Path) -> Path:
    path = tmp / "workflow.safetensors"
    path.write_text(json.dumps({"nodes": [], "links": []}))
    return path


def _pickle_with_code(good: Path, tmp: Path) -> Path:
    path = tmp / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": _RunsCode(tmp / "pwned")}))
    return path


def _unknown_keys(good: Path, tmp: Path) -> Path:
    path = tmp / "resnet.safetensors"
    save_file({"fc.weight": torch.zeros(10, 4), "conv1.weight": torch.zeros(8, 3, 3, 3)}, str(path))
    return path


def _wrong_extension(good: Path, tmp: Path) -> Path:
    path = tmp / "model.onnx"
    path.write_bytes(good.read_bytes())
    return path


def _missing_tensor(good: Path, tmp: Path) -> Path:
    tensors = load_file(str(good))
    del tensors["model.diffusion_model.input_blocks.1.1.proj_out.weight"]
    path = tmp / "damaged.safetensors"
    save_file(tensors, str(path))
    return path


def _malformed_header(good: Path, tmp: Path) -> Path:
    header = json.dumps({"a": {"dtype": "F32", "data_offsets": [0, 4]}}).encode()  # no shape
    path = tmp / "odd.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    return path


def _wrong_shape(good: Path, tmp: Path) -> Path:
    tensors = load_file(str(good))
    tensors["model.diffusion_model.out.0.weight"] = torch.ones(31)  # the group norm before conv_out
    path = tmp / "reshaped.safetensors"
    save_file(tensors, str(path))
    return path


BAD_FILES = {
    "a malformed header": (_malformed_header, "unreadable header"),
    "a tensor of the wrong shape": (_wrong_shape, "do not fit"),
    "truncated safetensors": (_truncated, "truncated"),
    "a JSON file renamed": (_json_renamed, "not a safetensors file"),
    "a pickle with code": (_pickle_with_code, "refused"),
    "keys of an unknown model": (_unknown_keys, "no Stable Diffusion UNet"),
    "not a checkpoint extension": (_wrong_extension, "unsupported file type"),
    "a tensor missing": (_missing_tensor, "do not fit"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_gives_one_line_error_and_caches_nothing(case: str, good: Path, tmp_path: Path) -> None:
    make, expected = BAD_FILES[case]
    path = make(good, tmp_path)
    cache = ModelCache()
    with pytest.raises(CheckpointError) as info:
        cache.get(path, "fp32", lambda: load_checkpoint(path, precision="fp32"))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and message.startswith(path.name)
    error = info.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # no chained trace
    assert len(cache) == 0 and cache.loads == 0
    assert not (tmp_path / "pwned").exists()


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        inspect_checkpoint(tmp_path / "nothing.safetensors")


def test_pickle_checkpoint_with_plain_tensors_loads(good: Path, tmp_path: Path) -> None:
    """Old .ckpt files (a pickled {"state_dict": ...}) load through torch.load(weights_only=True)."""
    tensors = load_file(str(good))
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": tensors, "global_step": 1000}, path)
    from_pickle = load_checkpoint(path, precision="fp32", parts=("unet",))
    from_safetensors = load_checkpoint(good, precision="fp32", parts=("unet",))
    a, b = from_pickle.unet.model.state_dict(), from_safetensors.unet.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("prefix", ["", "first_stage_model."])
def test_separate_vae_file_loads(good: Path, tmp_path: Path, prefix: str) -> None:
    tensors = load_file(str(good))
    vae_keys = [k for k in tensors if k.startswith("first_stage_model.")]
    vae_only = {prefix + k.removeprefix("first_stage_model."): tensors[k] for k in vae_keys}
    path = tmp_path / "vae.safetensors"
    save_file(vae_only, str(path))
    vae = load_vae(path, precision="fp32")
    whole = load_checkpoint(good, precision="fp32", parts=("vae",)).vae
    latent = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(vae.model.decode(latent).sample, whole.model.decode(latent).sample)


def test_vae_loader_refuses_a_file_without_a_vae(tmp_path: Path) -> None:
    path = tmp_path / "unet.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="no VAE keys"):
        load_vae(path)


def test_sd2_v_models_are_told_by_comfyui_spread_rule(tmp_path: Path) -> None:
    """Without a marker, an SD2 model whose output_blocks.11 norm1 bias spreads (std > 0.09) is v."""
    layout = CheckpointLayout(arch="sd2", unet_config={"in_channels": 4}, vae_config=None, vae_prefix=None)
    for std, expected in ((0.15, "v"), (0.02, "eps")):
        path = tmp_path / f"sd2_{std}.safetensors"
        bias = torch.randn(320, generator=torch.Generator().manual_seed(0))
        save_file({V_PRED_STD_KEY: bias / bias.std(unbiased=False) * std}, str(path))
        with TensorFile(path) as file:
            assert resolve_prediction(layout, file) == expected
            assert resolve_prediction(layout, file, "eps") == "eps"  # the caller's choice wins


def test_v_pred_key_marks_v_prediction(tmp_path: Path) -> None:
    layout = CheckpointLayout(arch="sdxl", unet_config={"in_channels": 4}, vae_config=None, vae_prefix=None)
    path = tmp_path / "vpred.safetensors"
    save_file({"v_pred": torch.zeros(0)}, str(path))
    with TensorFile(path) as file:
        assert resolve_prediction(layout, file) == "v"
