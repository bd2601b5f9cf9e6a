"""Safe access to the input, output, temp and user folders.

Every path that comes from a request goes through :func:`resolve_inside`: NUL bytes,
absolute paths and ``..`` components are refused outright (after URL decoding, which
aiohttp has already done), and the fully resolved path, symlinks followed, must stay
inside the resolved folder. A symlink inside a folder that points out of it is
refused like a ``..``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from nodes.folders import sha256_of

#: Content types ``/view`` never sends as such: they would run in the browser.
UNSAFE_CONTENT_TYPES = frozenset(
    {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css",
     "application/javascript", "application/x-javascript", "image/svg+xml", "text/xml", "application/xml"}
)

mimetypes.add_type("image/webp", ".webp")


class RefusedPathError(Exception):
    """A user path that may not be used; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_component(name: str, what: str = "path") -> None:
    """Refuse NUL bytes, absolute paths and ``..`` parts in a user-supplied path (400)."""
    if "\x00" in name:
        raise RefusedPathError(f"{what} contains a NUL byte")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or os.path.isabs(name):
        raise RefusedPathError(f"{what} must be relative")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise RefusedPathError(f"{what} may not contain '..'")


def resolve_inside(base: Path, *parts: str, status: int = 403) -> Path:
    """``base/parts...`` resolved (symlinks followed); refused unless it stays in ``base``.

    Malformed parts are refused with 400; a path that resolves outside ``base`` with
    ``status`` (403 by default, as ComfyUI's subfolder check).
    """
    for part in parts:
        check_component(part)
    root = Path(os.path.realpath(base))
    target = Path(os.path.realpath(os.path.join(root, *[p for p in parts if p])))
    if target != root and root not in target.parents:
        raise RefusedPathError("path is outside its folder", status)
    return target


def content_type_for(name: str) -> str:
    """The Content-Type to serve ``name`` with: guessed, but never one a browser executes."""
    guessed, _ = mimetypes.guess_type(name)
    if guessed is None or guessed in UNSAFE_CONTENT_TYPES:
        return "application/octet-stream"
    return guessed


def unique_upload_path(folder: Path, filename: str, data: bytes, overwrite: bool) -> tuple[Path, bool]:
    """Where an upload goes and whether it must be written.

    Without ``overwrite``: an existing file with the same bytes is reused (not
    written again); a different one makes ``"<stem> (<i>)<ext>"``, i = 1, 2, ...
    """
    target = folder / filename
    if overwrite or not target.exists():
        return target, True
    wanted = hashlib.sha256(data).hexdigest()
    stem, ext = os.path.splitext(filename)
    i = 0
    while target.exists():
        if target.is_file() and sha256_of(target) == wanted:
            return target, False
        i += 1
        target = folder / f"{stem} ({i}){ext}"
    return target, True


def list_top_level(folder: Path) -> list[str]:
    """Non-hidden files directly in ``folder``, newest first (``/internal/files``)."""
    if not folder.is_dir():
        return []
    entries = [e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    return [e.name for e in entries]


def walk_files(folder: Path, recurse: bool) -> Iterable[Path]:
    """Files under ``folder`` (recursively if asked), as paths relative to it, sorted."""
    found = [p for p in (folder.rglob("*") if recurse else folder.iterdir()) if p.is_file()]
    return sorted(p.relative_to(folder) for p in found)
