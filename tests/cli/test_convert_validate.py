"""``noodlebox convert`` and ``noodlebox validate`` with the real node registry and validation."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from server.cli import main

# A small editor workflow using only primitive nodes, so it needs no model files.
UI: dict[str, Any] = {
    "last_node_id": 4,
    "last_link_id": 2,
    "nodes": [
        {
            "id": 1,
            "type": "PrimitiveString",
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "STRING", "type": "STRING", "links": [1]}],
            "properties": {},
            "widgets_values": ["tea"],
        },
        {
            "id": 2,
            "type": "StringConcatenate",
            "mode": 0,
            "title": "Join",
            "inputs": [{"name": "string_a", "type": "STRING", "link": 1, "widget": {"name": "string_a"}}],
            "outputs": [{"name": "STRING", "type": "STRING", "links": [2]}],
            "properties": {},
            "widgets_values": ["stale", "cake", " and "],
        },
        {
            "id": 3,
            "type": "PreviewAny",
            "mode": 0,
            "inputs": [{"name": "source", "type": "*", "link": 2}],
            "outputs": [],
            "properties": {},
        },
        {"id": 4, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": ["hi"]},
    ],
    "links": [[1, 1, 0, 2, 0, "STRING"], [2, 2, 0, 3, 0, "STRING"]],
    "groups": [],
    "version": 0.4,
}
API = {
    "1": {"inputs": {"value": "tea"}, "class_type": "PrimitiveString", "_meta": {"title": "String"}},
    "2": {
        "inputs": {"string_a": ["1", 0], "string_b": "cake", "delimiter": " and "},
        "class_type": "StringConcatenate",
        "_meta": {"title": "Join"},
    },
    "3": {"inputs": {"source": ["2", 0]}, "class_type": "PreviewAny", "_meta": {"title": "Preview Any"}},
}


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_ui_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "convert", str(write(tmp_path / "wf.json", UI)))
    assert (code, err) == (0, "")
    assert json.loads(out) == API


def test_convert_prints_an_api_prompt_as_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "convert", str(write(tmp_path / "api.json", API)), "--indent", "0")
    assert code == 0
    assert json.loads(out) == API
    assert out.count("\n") == 1


def test_convert_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.json"
    code, out, _ = run(capsys, "convert", str(write(tmp_path / "wf.json", UI)), "-o", str(target))
    assert (code, out) == (0, "")
    assert json.loads(target.read_text()) == API


def test_convert_unknown_node_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = json.loads(json.dumps(UI))
    bad["nodes"][1]["type"] = "NoSuchNode"
    code, out, err = run(capsys, "convert", str(write(tmp_path / "wf.json", bad)))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "node 2 has unknown type 'NoSuchNode'" in err


@pytest.mark.parametrize("command", ["convert", "validate"])
def test_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, _, err = run(capsys, command, str(tmp_path / "nope.json"))
    assert code == 2 and "no such file" in err and err.count("\n") == 1
    (tmp_path / "broken.json").write_text('{"nodes": [}')
    code, _, err = run(capsys, command, str(tmp_path / "broken.json"))
    assert code == 2 and "malformed JSON" in err and "line 1 column 12" in err


def test_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "validate", str(write(tmp_path / "wf.json", UI))) == (0, "ok\n", "")
    assert run(capsys, "validate", str(write(tmp_path / "api.json", API))) == (0, "ok\n", "")


def test_validate_reports_comfyui_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = json.loads(json.dumps(API))
    del broken["3"]["inputs"]["source"]
    code, out, _ = run(capsys, "validate", str(write(tmp_path / "api.json", broken)))
    assert code == 2
    body = json.loads(out)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert [e["type"] for e in body["node_errors"]["3"]["errors"]] == ["required_input_missing"]
    assert body["node_errors"]["3"]["class_type"] == "PreviewAny"


def test_validate_png_uses_its_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = PngInfo()
    info.add_text("prompt", json.dumps(API))
    info.add_text("workflow", json.dumps(UI))
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG", pnginfo=info)
    (tmp_path / "img.png").write_bytes(buffer.getvalue())
    assert run(capsys, "validate", str(tmp_path / "img.png")) == (0, "ok\n", "")
    code, out, _ = run(capsys, "convert", str(tmp_path / "img.png"))
    assert code == 0 and json.loads(out) == API
