"""Reading workflows from files: API JSON, UI JSON, PNGs with text chunks, and clear one-line errors."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from graph.files import LoadedWorkflow, WorkflowFileError, load_workflow_file, png_text_chunks

CORPUS = Path(__file__).parents[1] / "data" / "workflows"
UI = json.loads((CORPUS / "default_txt2img.ui.json").read_text())
API = json.loads((CORPUS / "default_txt2img.api.json").read_text())


def _png(info: PngInfo | None) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _error(path: Path) -> str:
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_file(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_reads_api_and_ui_json(tmp_path: Path) -> None:
    (tmp_path / "api.json").write_text(json.dumps(API))
    (tmp_path / "ui.json").write_text(json.dumps(UI))
    assert load_workflow_file(tmp_path / "api.json") == LoadedWorkflow(API, None, "api-json")
    assert load_workflow_file(tmp_path / "ui.json") == LoadedWorkflow(None, UI, "ui-json")


def test_reads_a_post_prompt_body(tmp_path: Path) -> None:
    body = {"client_id": "x", "prompt": API, "extra_data": {"extra_pnginfo": {"workflow": UI}}}
    (tmp_path / "body.json").write_text(json.dumps(body))
    assert load_workflow_file(tmp_path / "body.json") == LoadedWorkflow(API, UI, "api-json")


def test_reads_comfyui_style_png(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("prompt", json.dumps(API))  # ComfyUI's order: prompt, then workflow, as tEXt
    info.add_text("workflow", json.dumps(UI))
    (tmp_path / "out.png").write_bytes(_png(info))
    assert load_workflow_file(tmp_path / "out.png") == LoadedWorkflow(API, UI, "png")


def test_reads_compressed_and_international_chunks(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("prompt", json.dumps(API), zip=True)  # zTXt
    info.add_itxt("workflow", json.dumps(UI, ensure_ascii=False), zip=True)  # compressed iTXt
    data = _png(info)
    assert b"zTXt" in data and b"iTXt" in data
    chunks = png_text_chunks(data)
    assert json.loads(chunks["prompt"]) == API
    assert json.loads(chunks["workflow"]) == UI


def test_only_a_prompt_chunk(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("prompt", json.dumps(API))
    (tmp_path / "api_only.png").write_bytes(_png(info))
    assert load_workflow_file(tmp_path / "api_only.png") == LoadedWorkflow(API, None, "png")


def test_errors_are_one_line_and_say_why(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{\n  "nodes": [,]\n}')
    assert "malformed JSON: Expecting value at line 2 column 13" in _error(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "not a workflow" in _error(tmp_path / "list.json")
    (tmp_path / "plain.png").write_bytes(_png(None))
    assert "PNG has no embedded workflow" in _error(tmp_path / "plain.png")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01")
    assert "not a PNG or JSON file" in _error(tmp_path / "photo.jpg")
    (tmp_path / "notes.txt").write_text("hello there")
    assert "not a PNG or JSON file" in _error(tmp_path / "notes.txt")
    assert "is a directory" in _error(tmp_path)


def test_broken_json_inside_png(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("workflow", "{oops")
    (tmp_path / "broken.png").write_bytes(_png(info))
    assert "'workflow' text is malformed JSON" in _error(tmp_path / "broken.png")


def test_truncated_png(tmp_path: Path) -> None:
    body = b"workflow\0" + json.dumps(UI).encode()
    chunk = struct.pack(">I4s", len(body), b"tEXt") + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    data = b"\x89PNG\r\n\x1a\n" + chunk
    (tmp_path / "cut.png").write_bytes(data[:-100])
    assert "truncated PNG" in _error(tmp_path / "cut.png")
    (tmp_path / "whole.png").write_bytes(data)  # no IEND, but the chunk is whole: still read
    assert load_workflow_file(tmp_path / "whole.png").workflow == UI
