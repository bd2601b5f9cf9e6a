"""Read a workflow from a file: API prompt JSON, UI workflow JSON, or a PNG saved with metadata.

PNG text chunks are parsed here in pure Python (``zlib`` for compressed ones): ``graph/``
stays free of PIL. ComfyUI writes ``prompt`` and ``workflow`` as ``tEXt`` (PROTOCOL.md 7.1);
other tools use ``iTXt`` or ``zTXt``, so all three are read.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from graph.workflow_models import is_ui_workflow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_METADATA_KEYS = ("prompt", "workflow")

Source = Literal["api-json", "ui-json", "png"]


class WorkflowFileError(ValueError):
    """The file cannot be read as a workflow; the message is one line naming the file and the reason."""


@dataclass(frozen=True)
class LoadedWorkflow:
    """What a file held: an API ``prompt``, a UI ``workflow``, or both (a PNG from ComfyUI).

    ``source`` is the file's kind: ``png``, ``ui-json`` (a UI workflow), or ``api-json`` (an API
    prompt, or a ``POST /prompt`` body, which may carry the workflow too).
    """

    prompt: dict[str, Any] | None
    workflow: dict[str, Any] | None
    source: Source


def load_workflow_file(path: str | Path) -> LoadedWorkflow:
    """Read ``path`` as a PNG with metadata, a UI workflow or an API prompt.

    Raises :class:`WorkflowFileError` for a missing file, malformed JSON (with line and
    column), JSON that is not a workflow, a PNG without workflow metadata, or anything else.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WorkflowFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WorkflowFileError(f"{path}: is a directory, not a workflow file") from None
    except OSError as exc:
        raise WorkflowFileError(f"{path}: cannot read: {exc.strerror}") from None
    if data.startswith(PNG_SIGNATURE):
        return _from_png(path, data)
    return _from_json(path, data)


def classify(data: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Split parsed JSON into ``(prompt, workflow)``; both None if it is neither.

    Besides a bare prompt or workflow this accepts a ``POST /prompt`` body
    (``{"prompt": ..., "extra_data": {"extra_pnginfo": {"workflow": ...}}}``).
    """
    if is_ui_workflow(data):
        return None, data
    if _is_api_prompt(data):
        return data, None
    if isinstance(data, dict) and _is_api_prompt(data.get("prompt")):
        extra = data.get("extra_data")
        pnginfo = extra.get("extra_pnginfo") if isinstance(extra, dict) else None
        workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
        return data["prompt"], workflow if is_ui_workflow(workflow) else None
    return None, None


def _is_api_prompt(data: Any) -> bool:
    """A non-empty object whose values are all node objects with a ``class_type``."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(node, dict) and "class_type" in node for node in data.values())
    )


def _from_json(path: Path, data: bytes) -> LoadedWorkflow:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WorkflowFileError(f"{path}: not a PNG or JSON file") from None
    stripped = text.lstrip()
    if not stripped:
        raise WorkflowFileError(f"{path}: the file is empty")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        if stripped[0] not in "{[" and path.suffix.lower() != ".json":
            raise WorkflowFileError(f"{path}: not a PNG or JSON file") from None
        raise WorkflowFileError(f"{path}: malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    prompt, workflow = classify(parsed)
    if prompt is None and workflow is None:
        raise WorkflowFileError(
            f"{path}: not a workflow (expected a UI workflow with 'nodes' or an API prompt of nodes with 'class_type')"
        )
    return LoadedWorkflow(prompt, workflow, "ui-json" if is_ui_workflow(parsed) else "api-json")


def _from_png(path: Path, data: bytes) -> LoadedWorkflow:
    chunks = png_text_chunks(data, path)
    found: dict[str, Any] = {}
    for key in _METADATA_KEYS:
        if key not in chunks:
            continue
        try:
            found[key] = json.loads(chunks[key])
        except json.JSONDecodeError as exc:
            raise WorkflowFileError(
                f"{path}: the PNG's '{key}' text is malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    workflow = found.get("workflow") if is_ui_workflow(found.get("workflow")) else None
    prompt = found.get("prompt") if _is_api_prompt(found.get("prompt")) else None
    if prompt is None and workflow is None:
        raise WorkflowFileError(f"{path}: the PNG has no embedded workflow or prompt")
    return LoadedWorkflow(prompt, workflow, "png")


def png_text_chunks(data: bytes, path: str | Path = "<png>") -> dict[str, str]:
    """The text chunks (``tEXt``, ``zTXt``, ``iTXt``) of a PNG, keyword -> text; the first of a keyword wins."""
    if not data.startswith(PNG_SIGNATURE):
        raise WorkflowFileError(f"{path}: not a PNG file")
    texts: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            raise WorkflowFileError(f"{path}: truncated PNG (chunk {kind.decode('latin-1')!r} cut short)")
        pos += 12 + length  # length, type, body, CRC
        if kind == b"IEND":
            break
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            try:
                key, text = _decode_text_chunk(kind, body)
            except (ValueError, zlib.error):
                continue  # a broken chunk of some other tool must not hide ours
            texts.setdefault(key, text)
    return texts


def _decode_text_chunk(kind: bytes, body: bytes) -> tuple[str, str]:
    """``(keyword, text)`` of one text chunk (PNG spec 11.3.4); raises ValueError when malformed."""
    key_bytes, sep, rest = body.partition(b"\0")
    if not sep:
        raise ValueError("no keyword separator")
    key = key_bytes.decode("latin-1")
    if kind == b"tEXt":
        return key, _latin1_text(rest)
    if kind == b"zTXt":
        # rest = compression method byte (0 = zlib), then the compressed text.
        return key, _latin1_text(zlib.decompress(rest[1:]))
    compressed, _method = rest[0], rest[1]
    _language, _, rest = rest[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    return key, (zlib.decompress(text) if compressed else text).decode("utf-8")


def _latin1_text(raw: bytes) -> str:
    """tEXt/zTXt are Latin-1 by the spec, but some tools write UTF-8 there: accept both."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
