"""``noodlebox run``: overrides, JSON events, exit codes, PNG input, progress display and Ctrl-C.

Runs are in-process (``server.cli.main``) on the default checkpoint (the demo model) at 64x64
with two steps; the Ctrl-C test starts a real process and sends it SIGINT.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from server.cli import UserError, main
from server.commands.run import Progress, parse_override, run_interruptibly

ROOT = Path(__file__).resolve().parents[2]
TXT2IMG = ROOT / "workflows" / "txt2img.json"
SMALL = ["--set", "5.width=64", "--set", "5.height=64", "--set", "3.steps=2"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    """``noodlebox run ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(["run", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return code, out, err


def events(out: str) -> list[dict[str, Any]]:
    """The JSON lines of ``--json`` output."""
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize(("text", "expected"), [
    ("3.seed=5", ("3", "seed", 5)),
    ("3.cfg=7.5", ("3", "cfg", 7.5)),
    ("6.text=a red fox", ("6", "text", "a red fox")),  # not JSON: taken as a string
    ('6.text="42"', ("6", "text", "42")),  # JSON string: stays a string
    ("9.filename_prefix=out/x=1", ("9", "filename_prefix", "out/x=1")),  # only the first '=' splits
    ("3.denoise=", ("3", "denoise", "")),
    ("5:2.width=64", ("5:2", "width", 64)),  # subgraph node ids keep their colon
])
def test_parse_override(text: str, expected: tuple[str, str, Any]) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["seed=5", "3.seed", ".seed=1", "3.=1", "=1"])
def test_parse_override_refuses_malformed(text: str) -> None:
    with pytest.raises(UserError, match=r"NODE\.INPUT=VALUE"):
        parse_override(text)


def test_set_and_json_events(tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, TXT2IMG, "--base-dir", tmp_path, "--json", *SMALL,
                             "--set", "3.seed=5", "--set", "6.text=a red fox")
    assert code == 0, err
    lines = events(out)
    kinds = [e["type"] for e in lines]
    assert kinds[:3] == ["runtime", "execution_start", "execution_cached"]
    runtime = lines[0]["data"]  # what auto picked here, and why
    assert runtime["precision"]["setting"] == "auto" and runtime["precision"]["picked"] in ("fp32", "bf16")
    assert runtime["precision"]["why"].startswith("auto: ") and runtime["compile"]["enabled"] is False
    assert kinds[-2:] == ["execution_success", "result"]
    assert kinds.count("executing") == 7 and kinds.count("executed") == 1
    steps = [e["data"]["value"] for e in lines if e["type"] == "progress"]
    assert steps == [1, 2]
    result = lines[-1]["data"]
    assert result["status"] == "success"
    (image,) = result["images"]
    with Image.open(image) as png:
        prompt = json.loads(png.text["prompt"])
    assert prompt["3"]["inputs"]["seed"] == 5
    assert prompt["6"]["inputs"]["text"] == "a red fox"


def test_plain_output_is_the_image_paths_and_progress_goes_to_stderr(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "elsewhere"
    code, out, err = run_cli(capsys, TXT2IMG, "--base-dir", tmp_path, "--output", out_dir, *SMALL)
    assert code == 0, err
    assert out == f"{out_dir / 'ComfyUI_00001_.png'}\n"
    assert "running #3 KSampler" in err
    assert "#3 KSampler: step 2/2" in err
    assert err.rstrip().splitlines()[-1].startswith("finished in ")


def test_models_folder_is_searched_first(tmp_path: Path, capsys) -> None:
    """``--models DIR``: the checkpoint comes from there; nothing is written under BASE/models."""
    from nodes.default_model import DEFAULT_CHECKPOINT, write_default_checkpoint

    shared = tmp_path / "shared-models"
    write_default_checkpoint(shared / "checkpoints" / DEFAULT_CHECKPOINT)
    code, out, err = run_cli(capsys, TXT2IMG, "--base-dir", tmp_path / "base", "--models", shared, *SMALL)
    assert code == 0, err
    assert Path(out.strip()).is_file()
    assert not (tmp_path / "base" / "models").exists()


def test_a_saved_png_runs_again_to_the_same_pixels(tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, TXT2IMG, "--base-dir", tmp_path, *SMALL)
    assert code == 0, err
    first = Path(out.strip())
    code, out, err = run_cli(capsys, first, "--base-dir", tmp_path)
    assert code == 0, err
    second = Path(out.strip())
    assert second.name == "ComfyUI_00002_.png"
    with Image.open(first) as a, Image.open(second) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert a.text["prompt"] == b.text["prompt"]


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no such file"),
    ("{not json", "malformed JSON"),
    ('{"hello": "world"}', "not a workflow"),
])
def test_bad_file_is_exit_2_with_one_line(tmp_path: Path, capsys, content: str | None, reason: str) -> None:
    path = tmp_path / "wf.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run_cli(capsys, path, "--base-dir", tmp_path)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("noodlebox: error: ") and reason in err


@pytest.mark.parametrize(("override", "reason"), [
    ("99.seed=1", "no node '99'"),
    ("3.sed=1", "has no input 'sed'"),
    ("3seed=1", "NODE.INPUT=VALUE"),
])
def test_bad_override_is_exit_2_with_one_line(tmp_path: Path, capsys, override: str, reason: str) -> None:
    code, out, err = run_cli(capsys, TXT2IMG, "--base-dir", tmp_path, "--set", override)
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and reason in err


def test_validation_errors_are_comfyui_json_and_exit_2(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, TXT2IMG, "--base-dir", tmp_path, "--set", "3.steps=0",
                             "--set", "4.ckpt_name=missing.safetensors")
    assert code == 2
    body = json.loads(out)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert [e["type"] for e in body["node_errors"]["3"]["errors"]] == ["value_smaller_than_min"]
    assert [e["type"] for e in body["node_errors"]["4"]["errors"]] == ["value_not_in_list"]
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").iterdir())


def test_bad_cache_policy_is_exit_2(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, TXT2IMG, "--base-dir", tmp_path, "--cache", "sometimes")
    assert code == 2 and "cache policy" in err


def test_a_failing_node_is_exit_1_with_one_line(tmp_path: Path, capsys) -> None:
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      garbage")
    code, out, err = run_cli(capsys, TXT2IMG, "--base-dir", tmp_path, *SMALL,
                             "--set", "4.ckpt_name=broken.safetensors")
    assert (code, out) == (1, "")
    last = err.strip().splitlines()[-1]
    assert last.startswith("noodlebox: error: node 4 (CheckpointLoaderSimple) failed: ")
    assert "broken.safetensors" in last


def test_progress_bars_on_a_terminal() -> None:
    """On a tty: a bar of nodes and one of the running node's steps (tqdm, to the given stream)."""
    stream = io.StringIO()
    progress = Progress({"4": {"class_type": "CheckpointLoaderSimple"}, "3": {"class_type": "KSampler"}},
                        stream, bars=True)
    progress("execution_cached", {"nodes": ["4"]})
    progress("executing", {"node": "3"})
    for step in (1, 2, 3):
        progress("progress", {"node": "3", "value": step, "max": 3})
    assert progress.steps_bar is not None and progress.steps_bar.n == 3
    progress("progress_state", {"nodes": {"3": {"state": "finished"}}})
    assert progress.steps_bar is None  # closed when the node finished
    assert progress.nodes_bar.n == 2
    progress.close()
    text = stream.getvalue()
    assert "#3 KSampler" in text and "step" in text and "2/2" in text


def test_run_interruptibly_hands_back_results_and_errors() -> None:
    assert run_interruptibly(lambda: 42, lambda: None) == (42, False)

    def boom() -> None:
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        run_interruptibly(boom, lambda: None)


@pytest.mark.slow
def test_ctrl_c_stops_at_the_next_step_and_writes_nothing(tmp_path: Path) -> None:
    """SIGINT to a real ``noodlebox run``: exit 130 at the next sampler step, no image, no temp file."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run", str(TXT2IMG), "--base-dir", str(tmp_path),
         "--set", "5.width=64", "--set", "5.height=64", "--set", "3.steps=10000"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # plain progress lines: stderr is not a terminal here
        seen.append(line)
        if "step 2/10000" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    try:
        out, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(seen) + rest
    assert out == ""
    assert "noodlebox: interrupted at node 3 (KSampler)" in rest
    output = tmp_path / "output"
    assert not output.exists() or list(output.iterdir()) == []
