"""``noodlebox make-checkpoint`` and ``noodlebox inspect-checkpoint``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import main

# A header promising 4000 bytes of data, followed by only 100.
CUT_HEADER = b'{"a":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}'


def test_make_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "inpaint.safetensors"
    assert main(["make-checkpoint", "--arch", "sd15-inpaint", "--size", "tiny", "--seed", "4", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["inspect-checkpoint", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "sd1" and info["inpaint"] is True and info["prediction"] == "eps"
    assert info["unet"]["in_channels"] == 9 and info["unet"]["params"] > 0
    assert info["vae"]["latent_channels"] == 4
    assert [e["name"] for e in info["text_encoders"]] == ["clip_l"]
    assert info["dtype"] == "fp16"
    assert info["size_bytes"] == out.stat().st_size


def test_inspect_v_model_and_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.safetensors"
    assert main(["make-checkpoint", "--arch", "sd2-v", "--dtype", "fp32", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect-checkpoint", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "sd2" and info["prediction"] == "v" and info["dtype"] == "fp32"
    assert main(["inspect-checkpoint", "--prediction", "eps", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] == "eps"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.safetensors", b'{"not": "a checkpoint"}'),
        ("cut.safetensors", len(CUT_HEADER).to_bytes(8, "little") + CUT_HEADER + b"\0" * 100),
        ("pickle.ckpt", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94."),
        ("model.gguf", b"GGUF"),
    ],
)
def test_bad_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["inspect-checkpoint", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"noodlebox: error: {name}:")
    assert "Traceback" not in captured.err


def test_make_checkpoint_refuses_other_extensions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-checkpoint", str(tmp_path / "x.ckpt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_cli_choices_match_the_runtime() -> None:
    """The CLI spells its choices out (to start without torch); they must agree with diffusion's."""
    from nodes import model_tools
    from server.commands import checkpoint

    assert checkpoint.ARCHS == model_tools.ARCHS
    assert checkpoint.SIZES == model_tools.SIZES
    assert checkpoint.STORAGE_DTYPES == model_tools.STORAGE_DTYPES
    assert checkpoint.ORIGIN == model_tools.ORIGIN
