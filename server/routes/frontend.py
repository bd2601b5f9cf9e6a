"""Routes the official frontend calls beyond the classic API: ``/v2/userdata`` and the log buffer.

- ``/v2/userdata?path=<dir>``: one level of the user's folder, each entry
  ``{"name", "path", "type": "file"|"directory", "size", "modified"}`` (size for files;
  ``modified`` in seconds), folders first; 404 for a path that does not exist.
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
