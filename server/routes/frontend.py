"""Routes the official frontend calls beyond the classic API: ``/v2/userdata`` and the log buffer.

- ``/v2/userdata?path=<dir>``: one level of the user's folder, each entry
  ``{"name", "path", "type": "file"|"directory", "size", "modified"}`` (size for files;
  ``modified`` in seconds), folders first; 404 for a path that does not exist.
- ``/experiment/models/preview/{folder}/{index}/{file}``: a model's preview image
  (``name.png``, ``name.preview.webp``... next to it) as WebP, for the model browser.
- ``/templates/{file}``: the official workflow templates (``index.json``, each template
  and its thumbnails) from the ``comfyui-workflow-templates`` package when installed,
  else our own example workflows (the demo-model txt2img graph).
- :class:`LogBuffer`: a logging handler keeping the last records, read by
  ``/internal/logs`` (one string) and ``/internal/logs/raw`` (entries) so the frontend's
  log panel has content. :func:`log_buffer` installs it on the root logger once.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from server.app import json_error, state_of
from server.files import RefusedPathError, resolve_inside

routes = web.RouteTableDef()


class LogBuffer(logging.Handler):
    """The last ``capacity`` log records as ``(time, message)``, thread-safe."""

    def __init__(self, capacity: int = 300) -> None:
        super().__init__(logging.INFO)
        self.entries: collections.deque[tuple[str, str]] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Keep one formatted record."""
        try:
            stamp = datetime.fromtimestamp(record.created, UTC).isoformat()
            self.entries.append((stamp, self.format(record) + "\n"))
        except Exception:
            self.handleError(record)

    def text(self) -> str:
        """Every kept message, in order, as one string."""
        return "".join(m for _, m in list(self.entries))

    def raw(self) -> list[dict[str, str]]:
        """Every kept record as ``{"t": time, "m": message}``."""
        return [{"t": t, "m": m} for t, m in list(self.entries)]


_buffer: LogBuffer | None = None
_lock = threading.Lock()


def log_buffer() -> LogBuffer:
    """The process's log buffer, attached to the root logger on first use."""
    global _buffer
    with _lock:
        if _buffer is None:
            _buffer = LogBuffer()
            logging.getLogger().addHandler(_buffer)  # it sees what the loggers' levels let through
        return _buffer


@routes.get("/v2/userdata")
async def list_userdata(request: web.Request) -> web.Response:
    """One level of the user's folder at ``?path=`` (default: its top)."""
    from server.users import request_user

    root = Path(state_of(request).config.user_dir) / request_user(request)
    root.mkdir(parents=True, exist_ok=True)
    base = Path(os.path.realpath(root))
    sub = request.query.get("path", "").strip("/")
    try:
        folder = resolve_inside(base, *[p for p in sub.split("/") if p]) if sub else base
    except RefusedPathError as exc:
        raise json_error(exc.status, str(exc)) from None
    if not folder.is_dir():
        raise json_error(404, f"no such folder: {sub}")
    entries: list[dict[str, Any]] = []
    for entry in sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower())):
        stat = entry.stat()
        info: dict[str, Any] = {"name": entry.name, "path": entry.relative_to(base).as_posix(),
                                "type": "directory" if entry.is_dir() else "file", "modified": stat.st_mtime}
        if entry.is_file():
            info["size"] = stat.st_size
        entries.append(info)
    return web.json_response(entries)


#: Image files next to a model that are its preview, in the order they are looked for.
PREVIEW_SUFFIXES = (".webp", ".png", ".jpg", ".jpeg", ".gif", ".preview.webp", ".preview.png", ".preview.jpg",
                    ".preview.jpeg")


def model_preview(model: Path) -> Path | None:
    """The preview image saved next to ``model`` (``name.png``, ``name.preview.png``...), or None."""
    for suffix in PREVIEW_SUFFIXES:
        candidate = model.with_name(model.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


@routes.get("/experiment/models/preview/{folder}/{path_index}/{filename:.+}")
async def model_preview_image(request: web.Request) -> web.Response:
    """The preview image of a model file, as WebP (the model browser's thumbnails); 404 when it has none."""
    import asyncio
    import io

    folders = state_of(request).folders
    key = request.match_info["folder"]
    if folders is None or key not in list(folders.keys()):
        raise json_error(404, "unknown model folder")
    try:
        directory = folders.paths(key)[int(request.match_info["path_index"])]
        model = resolve_inside(Path(directory), *request.match_info["filename"].split("/"))
    except (ValueError, IndexError):
        raise json_error(404, "no such model") from None
    except RefusedPathError as exc:
        raise json_error(exc.status, str(exc)) from None
    preview = model_preview(model) if model.is_file() else None
    if preview is None:
        raise json_error(404, "no preview")

    def as_webp() -> bytes:
        from PIL import Image

        with Image.open(preview) as image:
            out = io.BytesIO()
            image.convert("RGBA" if "A" in image.getbands() else "RGB").save(out, "WEBP")
            return out.getvalue()

    try:
        body = await asyncio.get_running_loop().run_in_executor(None, as_webp)
    except OSError as exc:
        raise json_error(404, f"preview unreadable: {exc}") from None
    return web.Response(body=body, content_type="image/webp")


_template_assets: dict[str, str] | None = None


def template_assets() -> dict[str, str]:
    """File name -> path of every asset of the ``comfyui-workflow-templates`` package (empty if not installed).

    Read once: ``index.json``, each template's ``.json`` and its thumbnails, as the
    package's ``iter_assets()`` lists them.
    """
    global _template_assets
    if _template_assets is None:
        try:
            from comfyui_workflow_templates_core import iter_assets
        except ImportError:
            try:
                from comfyui_workflow_templates import iter_assets  # type: ignore[no-redef]
            except ImportError:
                return {}
        found: dict[str, str] = {}
        try:
            for name, path in iter_assets():
                found.setdefault(name, path)
        except Exception as exc:  # a half-installed bundle: serve what there is
            logging.getLogger(__name__).warning("workflow templates incomplete: %s", exc)
        _template_assets = found
    return _template_assets


#: Our example workflows (``workflows/``), offered as templates when the package is not installed.
WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"
#: Template name -> (UI workflow file, title, description).
OWN_TEMPLATES = {
    "noodlebox_txt2img": ("txt2img.ui.json", "Text to image (demo model)",
                          "Draws the prompt with the demo checkpoint that comes with noodlebox."),
}


def own_templates_index() -> list[dict[str, Any]]:
    """A templates ``index.json`` of :data:`OWN_TEMPLATES` (those whose file exists)."""
    templates = [{"name": name, "title": title, "description": text, "mediaType": "image", "mediaSubtype": "webp"}
                 for name, (file, title, text) in OWN_TEMPLATES.items() if (WORKFLOWS_DIR / file).is_file()]
    return [{"moduleName": "default", "title": "Getting Started", "type": "image", "isEssential": True,
             "templates": templates}]


@routes.get("/templates/{filename}")
async def workflow_template_file(request: web.Request) -> web.StreamResponse:
    """A file of the official workflow templates (``index.json``, a template, a thumbnail).

    From the ``comfyui-workflow-templates`` package when installed, else our own
    example workflows (:data:`OWN_TEMPLATES`, thumbnails in ``workflows/thumbnails/``), so the
    templates browser is never empty.
    """
    filename = request.match_info["filename"]
    assets = template_assets()
    if assets:
        path = assets.get(filename)
        if path is None or not Path(path).is_file():
            raise json_error(404, "no such template file")
        return web.FileResponse(path)
    if filename == "index.json":
        return web.json_response(own_templates_index())
    if filename.endswith("-1.webp") and filename.removesuffix("-1.webp") in OWN_TEMPLATES:  # the card's image
        thumbnail = WORKFLOWS_DIR / "thumbnails" / (filename.removesuffix("-1.webp") + ".webp")
        if thumbnail.is_file():
            return web.FileResponse(thumbnail)
    own = OWN_TEMPLATES.get(filename.removesuffix(".json")) if filename.endswith(".json") else None
    if own is None or not (WORKFLOWS_DIR / own[0]).is_file():
        raise json_error(404, "no such template file")
    return web.FileResponse(WORKFLOWS_DIR / own[0])
