"""``/view``, ``/upload/image``, ``/upload/mask`` and ``/view_metadata`` (PROTOCOL 1.4, 1.5).

Paths from requests are checked by :mod:`server.files`: malformed names (``..``,
absolute, NUL) answer 400, a subfolder leaving its folder 403. ``/view`` never serves
a content type a browser would run (HTML, JS, CSS, SVG).
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from nodes.folders import split_annotation
from server.app import json_error, state_of
from server.files import (
    RefusedPathError,
    check_component,
    content_type_for,
    resolve_inside,
    unique_upload_path,
)

routes = web.RouteTableDef()

_FILE_TYPES = ("input", "output", "temp")


def _folder(request: web.Request, kind: str) -> Path:
    if kind not in _FILE_TYPES:
        raise json_error(400, f"unknown type {kind!r} (input, output or temp)")
    return state_of(request).config.folder_for(kind)


def _refuse(exc: RefusedPathError) -> web.HTTPException:
    return json_error(exc.status, str(exc))


def _disposition(name: str) -> str:
    return f"filename=\"{quote(name)}\""


@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    """A file of input/output/temp, optionally re-encoded (``preview``) or split (``channel``)."""
    query = request.query
    if "filename" not in query:
        raise json_error(404, "filename is required")
    filename, annotated = split_annotation(query["filename"])
    if not filename:
        raise json_error(400, "filename is empty")
    try:
        check_component(filename, "filename")
        check_component(query.get("subfolder", ""), "subfolder")
    except RefusedPathError as exc:
        raise _refuse(exc) from None
    folder = _folder(request, annotated or query.get("type", "output"))
    try:
        base = resolve_inside(folder, query.get("subfolder", ""), status=403)
        path = resolve_inside(base, Path(filename).name, status=403)
    except RefusedPathError as exc:
        raise _refuse(exc) from None
    if not path.is_file():
        raise json_error(404, "file not found")
    name = path.name
    preview = query.get("preview")
    channel = query.get("channel", "")  # absent means rgba, but only an explicit 'a' forces webp
    if preview or channel in ("rgb", "a"):
        data, content_type = await asyncio.get_running_loop().run_in_executor(
            None, _reencode, path, preview, channel
        )
        return web.Response(body=data, content_type=content_type, headers={"Content-Disposition": _disposition(name)})
    return web.FileResponse(
        path, headers={"Content-Type": content_type_for(name), "Content-Disposition": _disposition(name)}
    )


def _reencode(path: Path, preview: str | None, channel: str) -> tuple[bytes, str]:
    """``/view``'s image transforms; raises a 400 if the file is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError):
        raise json_error(400, "the file is not an image") from None
    out = io.BytesIO()
    if preview:
        fields = preview.split(";")
        fmt = fields[0].lower() if fields[0].lower() in ("webp", "jpeg") else "webp"
        if "a" in channel:
            fmt = "webp"
        quality = int(fields[-1]) if fields[-1].isdigit() else 90
        if fmt == "jpeg" or channel == "rgb":
            image = image.convert("RGB")
        image.save(out, format=fmt.upper(), quality=quality)
        return out.getvalue(), f"image/{fmt}"
    if channel == "rgb":
        image.convert("RGB").save(out, format="PNG")
    else:  # "a": the alpha as an RGBA image with black colour
        alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
        rgba = Image.new("RGBA", image.size, (0, 0, 0, 0))
        rgba.putalpha(alpha)
        rgba.save(out, format="PNG")
    return out.getvalue(), "image/png"


async def _read_upload(request: web.Request) -> tuple[Any, dict[str, str]]:
    """The multipart form: the ``image`` file part and the text fields."""
    if not request.content_type.startswith("multipart/"):
        raise json_error(400, "expected a multipart/form-data body")
    try:
        form = await request.post()  # enforces client_max_size: 413 past --max-upload-size
    except ValueError as exc:
        raise json_error(400, f"malformed form: {exc}") from None
    image = form.get("image")
    if image is None or not hasattr(image, "file"):
        raise json_error(400, "the 'image' file part is missing")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return image, fields


def _upload_target(request: web.Request, image: Any, fields: dict[str, str]) -> tuple[Path, str, str, str]:
    """Checked (folder, subfolder, filename, type) of an upload."""
    filename = image.filename or ""
    if not filename:
        raise json_error(400, "the uploaded file has no name")
    kind = fields.get("type", "input") or "input"
    subfolder = fields.get("subfolder", "")
    try:
        check_component(filename, "filename")
        if Path(filename).name != filename:
            raise RefusedPathError("filename may not contain a folder")
        folder = resolve_inside(_folder(request, kind), subfolder, status=400)
    except RefusedPathError as exc:
        raise json_error(400, str(exc)) from None
    return folder, subfolder, filename, kind


def _store_upload(folder: Path, filename: str, data: bytes, overwrite: bool) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    target, write = unique_upload_path(folder, filename, data, overwrite)
    if write:
        target.write_bytes(data)
    return target.name


def _overwrite(fields: dict[str, str]) -> bool:
    return fields.get("overwrite", "").lower() in ("true", "1")


@routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    """Save an uploaded file; an identical existing file is reused, a different one renamed."""
    image, fields = await _read_upload(request)
    folder, subfolder, filename, kind = _upload_target(request, image, fields)
    data = image.file.read()
    name = await asyncio.get_running_loop().run_in_executor(
        None, _store_upload, folder, filename, data, _overwrite(fields)
    )
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


@routes.post("/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    """Save ``original_ref``'s image with the uploaded image's alpha as its alpha (PNG)."""
    image, fields = await _read_upload(request)
    folder, subfolder, filename, kind = _upload_target(request, image, fields)
    try:
        ref = json.loads(fields.get("original_ref", ""))
    except ValueError:
        raise json_error(400, "original_ref must be a JSON object") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str) or not ref["filename"]:
        raise json_error(400, "original_ref needs a filename")
    ref_name, annotated = split_annotation(ref["filename"])
    try:
        check_component(ref_name, "original_ref filename")
        source = resolve_inside(
            _folder(request, annotated or str(ref.get("type") or "output")), str(ref.get("subfolder") or ""), ref_name
        )
    except RefusedPathError as exc:
        raise json_error(exc.status, str(exc)) from None
    if not source.is_file():
        raise json_error(404, "original_ref file not found")
    data = image.file.read()
    name = await asyncio.get_running_loop().run_in_executor(
        None, _merge_mask, source, data, folder, filename, _overwrite(fields)
    )
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


def _merge_mask(source: Path, mask_bytes: bytes, folder: Path, filename: str, overwrite: bool) -> str:
    from PIL import Image, PngImagePlugin, UnidentifiedImageError

    try:
        original = Image.open(source)
        mask = Image.open(io.BytesIO(mask_bytes))
        original.load()
        mask.load()
    except (UnidentifiedImageError, OSError):
        raise json_error(400, "original and mask must be images") from None
    info = PngImagePlugin.PngInfo()
    for key, value in getattr(original, "text", {}).items():
        info.add_text(key, value)
    merged = original.convert("RGBA")
    alpha = mask.getchannel("A") if "A" in mask.getbands() else mask.convert("L")
    merged.putalpha(alpha.resize(merged.size))
    out = io.BytesIO()
    merged.save(out, format="PNG", pnginfo=info, compress_level=4)
    return _store_upload(folder, filename, out.getvalue(), overwrite)


@routes.get("/view_metadata/{folder_name}")
async def view_metadata(request: web.Request) -> web.Response:
    """A safetensors file's ``__metadata__``; 404 in every failure case (as ComfyUI)."""
    folders = state_of(request).folders
    filename = request.query.get("filename", "")
    folder_name = request.match_info["folder_name"]
    if folders is None or not filename.endswith(".safetensors") or folder_name not in folders:
        raise web.HTTPNotFound()
    try:
        path = folders.full_path(folder_name, filename)
    except ValueError:
        raise web.HTTPNotFound() from None
    if path is None:
        raise web.HTTPNotFound()
    metadata = await asyncio.get_running_loop().run_in_executor(None, _safetensors_metadata, Path(path))
    if metadata is None:
        raise web.HTTPNotFound()
    return web.json_response(metadata)


def _safetensors_metadata(path: Path) -> dict[str, Any] | None:
    """The ``__metadata__`` of a safetensors header (read up to 1 MiB), or None."""
    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > 1 << 20:
                return None
            header = json.loads(fh.read(size))
    except (OSError, ValueError, struct.error):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None
