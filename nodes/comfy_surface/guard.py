"""Guards around importing a pack: a time limit, no writes outside allowed folders, captured stdout.

- :func:`deadline`: a trace function that raises :class:`ImportTimeout` (a BaseException,
  so ``except Exception`` in the pack cannot swallow it) once the limit has passed. Lines
  are checked only in the pack's own files; other code is checked at each call. A pack
  blocked inside C code (a long ``time.sleep``) is not stopped.
- :func:`no_writes_outside`: an audit hook (installed once, active only in the thread and
  while the guard is on) that refuses, with PermissionError, opening a file for writing,
  creating, removing or renaming anything outside the allowed roots, and records each
  refusal. Python's own bytecode cache files are let through.
- :func:`captured_stdout`: what a pack prints goes to the log, not to our commands' output.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("nodes.compat")


class ImportTimeout(BaseException):
    """A pack took longer than its time limit to import."""


@contextlib.contextmanager
def deadline(seconds: float, root: Path) -> Iterator[None]:
    """Raise :class:`ImportTimeout` in the running code once ``seconds`` have passed."""
    end = time.monotonic() + seconds
    prefix = str(root.resolve())
    message = f"import took longer than {seconds:g} s (a loop at import?)"

    def local(frame: Any, event: str, arg: Any) -> Any:
        if time.monotonic() > end:
            raise ImportTimeout(message)
        return local

    def on_call(frame: Any, event: str, arg: Any) -> Any:
        if time.monotonic() > end:
            raise ImportTimeout(message)
        return local if frame.f_code.co_filename.startswith(prefix) else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.mkdir", "os.remove", "os.rmdir", "os.rename", "shutil.rmtree", "os.truncate"}
_active = threading.local()
_hook_installed = False
_hook_lock = threading.Lock()


def _writes(event: str, args: tuple[Any, ...]) -> list[Any]:
    """The paths ``event`` would change (empty when it only reads)."""
    if event == "open" and len(args) >= 3:
        path, mode, flags = args[0], args[1], args[2]
        if isinstance(mode, str):
            return [path] if any(c in mode for c in "wax+") else []
        return [path] if isinstance(flags, int) and flags & _WRITE_FLAGS else []
    if event in _PATH_EVENTS:
        return list(args[:2]) if event == "os.rename" else list(args[:1])
    return []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    guard = getattr(_active, "guard", None)
    if guard is None or (event != "open" and event not in _PATH_EVENTS):
        return
    roots, refused = guard
    for path in _writes(event, args):
        if not isinstance(path, str | bytes | os.PathLike):
            continue
        name = os.fsdecode(path)
        if ("__pycache__" in name and name.endswith((".pyc", ".pyc.tmp"))) or ".pyc." in name:
            continue
        resolved = os.path.realpath(os.path.abspath(name))
        if any(resolved == root or resolved.startswith(root + os.sep) for root in roots):
            continue
        refused.append(resolved)
        raise PermissionError(f"custom node packs may not write outside their folder at import: {resolved}")


@contextlib.contextmanager
def no_writes_outside(roots: Sequence[Path], refused: list[str]) -> Iterator[None]:
    """Refuse (and list in ``refused``) writes outside ``roots`` made by this thread meanwhile."""
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:
            sys.addaudithook(_audit)
            _hook_installed = True
    previous = getattr(_active, "guard", None)
    _active.guard = ([os.path.realpath(str(r)) for r in roots], refused)
    try:
        yield
    finally:
        _active.guard = previous


_capture = threading.local()


class _ThreadStdout(io.TextIOBase):
    """``sys.stdout`` that sends a thread's writes to its capture buffer while it has one.

    ``contextlib.redirect_stdout`` swaps the one process-wide ``sys.stdout``: while a pack
    imported in one thread, every other thread's prints went into that pack's buffer too
    (the server's "serving on" line among them, which a parent process waits for).
    """

    def __init__(self, real: Any) -> None:
        self.real = real

    def _target(self) -> Any:
        return getattr(_capture, "buffer", None) or self.real

    def write(self, text: str) -> int:
        """Write to this thread's capture buffer, or to the real stream."""
        return self._target().write(text)

    def flush(self) -> None:
        """Flush this thread's target."""
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@contextlib.contextmanager
def captured_stdout(pack: str) -> Iterator[io.StringIO]:
    """Send what this thread prints meanwhile to the log (``custom_nodes.<pack>`` at INFO), not to stdout.

    Other threads keep printing to the real standard output.
    """
    if not isinstance(sys.stdout, _ThreadStdout):
        sys.stdout = _ThreadStdout(sys.stdout)
    buffer = io.StringIO()
    previous = getattr(_capture, "buffer", None)
    _capture.buffer = buffer
    try:
        yield buffer
    finally:
        _capture.buffer = previous
        text = buffer.getvalue().rstrip()
        if text:
            logging.getLogger(f"custom_nodes.{pack}").info("%s", text)
