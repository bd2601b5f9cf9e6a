"""What a pool of remote workers needs besides Ray: placement, file transfer, status rows.

Nothing here imports Ray, so it is tested without a cluster and the server imports it
freely.

- **Placement** (:class:`Placement`): an idle worker is chosen for a prompt, preferring
  the one whose earlier prompts loaded the same models (:func:`affinity_keys`: the
  literal inputs of loader nodes), then the one idle the longest.
- **Files** (:class:`OutputWriter`): a worker saves images into its own private folders
  and ships each new file's bytes back with the ``executed`` event that names it. The
  server writes them at the same relative path in its own ``output``/``temp`` folder; if
  that name is taken (two workers both count from ``ComfyUI_00001_``), the file gets
  the next free counter, exactly as a local SaveImage would have named it, and every
  ui dict that names the file is rewritten (:func:`rewrite_ui`). The rename map lives as
  long as the worker, so a cached output node that replays an old ``executed`` event
  still points at the server's copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

#: File kinds a worker may ship back, and the ui ``type`` that names them.
SHIPPED_KINDS = ("output", "temp")
#: ComfyUI's save naming: ``<prefix>_<5 digits>_.<ext>``.
_COUNTED = re.compile(r"^(?P<prefix>.*)_(?P<counter>\d{5,})_(?P<ext>\.[^.]*)$")
#: At most this many affinity keys are remembered per worker (oldest dropped).
MAX_AFFINITY_KEYS = 2048


class WorkerLostError(RuntimeError):
    """A prompt's worker died and the one retry died too (the history shows this message)."""


# -- placement ---------------------------------------------------------------------


def affinity_keys(prompt: dict[str, Any]) -> set[str]:
    """Keys naming what a prompt loads and computes, to send it where that is cached.

    ``L:`` keys are loader nodes (class name contains ``Loader``, or a literal ``*_name``
    input such as ``ckpt_name``): a shared one means the same model file. ``N:`` keys are
    each node's signature (class, literal inputs and, through links, everything
    upstream): a shared one means the executor there may hold that node's result.
    :class:`Placement` weighs ``L:`` keys far above ``N:`` keys.
    """
    keys: set[str] = set()
    for node in prompt.values():
        if not isinstance(node, dict):
            continue
        class_type = str(node.get("class_type", ""))
        literals = {k: v for k, v in _inputs(node).items() if not isinstance(v, list)}
        names_model = any(k.endswith("_name") and isinstance(v, str) for k, v in literals.items())
        if "Loader" in class_type or names_model:
            keys.add("L:" + _digest([class_type, literals]))
    keys.update("N:" + sig for sig in _signatures(prompt).values())
    return keys


def _inputs(node: Any) -> dict[str, Any]:
    inputs = node.get("inputs") if isinstance(node, dict) else None
    return inputs if isinstance(inputs, dict) else {}


def _signatures(prompt: dict[str, Any]) -> dict[str, str]:
    """Each node's digest over its class, literals and its sources' digests (no recursion)."""
    done: dict[str, str] = {}
    for root in prompt:
        stack, on_stack = [root], {root}
        while stack:
            node_id = stack[-1]
            if node_id in done:
                on_stack.discard(stack.pop())
                continue
            links = {k: v for k, v in _inputs(prompt.get(node_id)).items()
                     if isinstance(v, list) and len(v) == 2 and str(v[0]) in prompt}
            waiting = [str(v[0]) for v in links.values() if str(v[0]) not in done and str(v[0]) not in on_stack]
            if waiting:
                stack.extend(waiting)
                on_stack.update(waiting)
                continue
            on_stack.discard(stack.pop())
            node = prompt.get(node_id)
            inputs = {k: ([done.get(str(v[0]), "cycle"), v[1]] if k in links else v) for k, v in _inputs(node).items()}
            class_type = node.get("class_type") if isinstance(node, dict) else None
            done[node_id] = _digest([class_type, inputs])
    return done


def _digest(value: Any) -> str:
    """A short stable hash of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def affinity_score(wanted: set[str], held: Iterable[str]) -> int:
    """How well a worker holding ``held`` fits a prompt with keys ``wanted`` (a model counts 1000 nodes)."""
    common = wanted.intersection(held)
    return sum(1000 if key.startswith("L:") else 1 for key in common)


class Placement:
    """Which workers are idle, what each has loaded, and who runs which prompt.

    Thread-safe: the dispatcher's threads acquire and release workers concurrently.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._idle: dict[str, float] = {}  # name -> when it became idle
        self._keys: dict[str, list[str]] = {}
        self.running: dict[str, str] = {}  # prompt id -> worker name
        self.closed = False

    def add(self, name: str) -> None:
        """A new (or replaced) worker, idle and with nothing loaded."""
        with self._cond:
            self._idle[name] = time.monotonic()
            self._keys[name] = []
            self._cond.notify_all()

    def remove(self, name: str) -> None:
        """Forget a worker (it died); its prompt assignments are dropped."""
        with self._cond:
            self._idle.pop(name, None)
            self._keys.pop(name, None)
            for pid in [p for p, w in self.running.items() if w == name]:
                del self.running[pid]

    def acquire(self, prompt_id: str, keys: set[str], exclude: Iterable[str] = (),
                timeout: float | None = None) -> str | None:
        """Take the best idle worker for a prompt with affinity ``keys``; None on timeout or close.

        Best = the highest :func:`affinity_score`, then idle the longest (spreads work evenly).
        """
        excluded = set(exclude)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self.closed:
                candidates = [n for n in self._idle if n not in excluded]
                if candidates:
                    name = max(candidates, key=lambda n: (affinity_score(keys, self._keys[n]), -self._idle[n]))
                    del self._idle[name]
                    self.running[prompt_id] = name
                    return name
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 1.0)
            return None

    def close(self) -> None:
        """Stop placing: every waiting and later :meth:`acquire` returns None."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def release(self, name: str, prompt_id: str, keys: set[str] | None = None) -> None:
        """``name`` finished ``prompt_id``; remember what it loaded (unless it failed)."""
        with self._cond:
            if self.running.get(prompt_id) == name:
                del self.running[prompt_id]
            if name not in self._keys:  # removed meanwhile (died)
                return
            if keys:
                known = [k for k in self._keys[name] if k not in keys] + sorted(keys)
                self._keys[name] = known[-MAX_AFFINITY_KEYS:]
            self._idle[name] = time.monotonic()
            self._cond.notify_all()

    def forget_loaded(self) -> None:
        """After ``/free``: no worker holds a model any more."""
        with self._cond:
            for name in self._keys:
                self._keys[name] = []

    def loaded(self, name: str) -> list[str]:
        """The affinity keys remembered for ``name``."""
        with self._cond:
            return list(self._keys.get(name, []))

    def is_idle(self, name: str) -> bool:
        """True if ``name`` is waiting for a prompt."""
        with self._cond:
            return name in self._idle


# -- files -------------------------------------------------------------------------


def collect_new_files(roots: dict[str, Path], shipped: set[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """Files under each ``roots[kind]`` not in ``shipped``: ``{(kind, posix relpath): bytes}``.

    Each returned file is added to ``shipped`` and truncated to zero bytes: the name
    stays (so the worker's save counter keeps counting up, and its names stay unique)
    while the disk space goes back.
    """
    found: dict[tuple[str, str], bytes] = {}
    for kind, root in roots.items():
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath, name)
                key = (kind, path.relative_to(root).as_posix())
                if key in shipped or path.is_symlink():
                    continue
                found[key] = path.read_bytes()
                shipped.add(key)
                path.write_bytes(b"")
    return found


def _split(relpath: str) -> tuple[str, str]:
    """(subfolder, filename) of a posix relative path, as ui dicts spell them."""
    pure = PurePosixPath(relpath)
    parent = pure.parent.as_posix()
    return ("" if parent == "." else parent), pure.name


class OutputWriter:
    """Writes files shipped by workers into the server's folders, renaming on collision.

    ``renames`` maps ``(worker, kind, subfolder, worker's filename)`` to the server's
    filename; it is used to rewrite ui dicts (:func:`rewrite_ui`).
    """

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = {k: Path(v).resolve() for k, v in folders.items()}
        self._lock = threading.Lock()
        self.renames: dict[tuple[str, str, str, str], str] = {}

    def write(self, worker: str, files: dict[tuple[str, str], bytes]) -> None:
        """Write ``files`` (``{(kind, relpath): bytes}``) shipped by ``worker``."""
        for (kind, relpath), data in sorted(files.items()):
            root = self.folders.get(kind)
            if root is None:
                continue
            subfolder, filename = _split(relpath)
            folder = (root / subfolder).resolve()
            if folder != root and root not in folder.parents:  # a worker never names files outside
                continue
            folder.mkdir(parents=True, exist_ok=True)
            with self._lock:
                final = self._create(folder, filename, data)
                self.renames[(worker, kind, subfolder, filename)] = final

    @staticmethod
    def _create(folder: Path, filename: str, data: bytes) -> str:
        """Write ``data`` under a free name (``filename`` if free); return the name used."""
        name = filename
        while True:
            try:
                with open(folder / name, "xb") as fh:
                    fh.write(data)
                return name
            except FileExistsError:
                name = _next_name(folder, filename)

    def forget(self, worker: str) -> None:
        """Drop ``worker``'s renames (it was replaced, or its caches were cleared)."""
        with self._lock:
            for key in [k for k in self.renames if k[0] == worker]:
                del self.renames[key]

    def rewrite(self, worker: str, value: Any) -> Any:
        """``value`` (a ui dict, outputs, event data) with ``worker``'s file names mapped."""
        with self._lock:
            renames = {k[1:]: v for k, v in self.renames.items() if k[0] == worker}
        return rewrite_ui(value, renames) if renames else value


def _next_name(folder: Path, filename: str) -> str:
    """A free name for ``filename`` in ``folder``: the next save counter, or a numeric suffix."""
    match = _COUNTED.match(filename)
    if match is None:
        stem, ext = os.path.splitext(filename)
        n = 1
        while (folder / f"{stem}_{n}{ext}").exists():
            n += 1
        return f"{stem}_{n}{ext}"
    prefix, width = match["prefix"], len(match["counter"])
    pattern = re.compile(re.escape(prefix) + r"_(\d+)_")
    highest = 0
    for entry in os.listdir(folder):
        found = pattern.match(entry)
        if found:
            highest = max(highest, int(found.group(1)))
    return f"{prefix}_{highest + 1:0{width}}_{match['ext']}"


def rewrite_ui(value: Any, renames: dict[tuple[str, str, str], str]) -> Any:
    """A copy of ``value`` where every ``{"filename", "subfolder", "type"}`` dict is renamed.

    ``renames`` maps ``(type, subfolder, old filename)`` to the new filename.
    """
    if isinstance(value, dict):
        out = {k: rewrite_ui(v, renames) for k, v in value.items()}
        filename, subfolder, kind = out.get("filename"), out.get("subfolder", ""), out.get("type")
        if isinstance(filename, str) and isinstance(kind, str):
            new = renames.get((kind, str(subfolder or ""), filename))
            if new is not None:
                out["filename"] = new
        return out
    if isinstance(value, list):
        return [rewrite_ui(v, renames) for v in value]
    if isinstance(value, tuple):
        return tuple(rewrite_ui(v, renames) for v in value)
    return value


def input_files(prompt: dict[str, Any], input_dir: Path, limit_bytes: int = 256 * 1024 * 1024) -> dict[str, bytes]:
    """Files of ``input_dir`` that the prompt names (LoadImage & co.): ``{relpath: bytes}``.

    Any literal string input that names a file inside the input folder counts (with or
    without ComfyUI's `` [input]`` annotation); at most ``limit_bytes`` in all.
    """
    root = Path(input_dir).resolve()
    found: dict[str, bytes] = {}
    total = 0
    for node in prompt.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for value in inputs.values():
            if not isinstance(value, str) or not value or "\x00" in value or len(value) > 1024:
                continue
            name = value[: -len(" [input]")] if value.endswith(" [input]") else value
            try:
                path = (root / name).resolve()
            except (OSError, ValueError):
                continue
            if root not in path.parents or not path.is_file() or name in found:
                continue
            size = path.stat().st_size
            if total + size > limit_bytes:
                continue
            found[path.relative_to(root).as_posix()] = path.read_bytes()
            total += size
    return found


# -- status ------------------------------------------------------------------------


def worker_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per worker (``name``, ``kind``, ``running``...) from any worker's ``status()``.

    A pool reports ``{"workers": [...]}``; a single worker (the local one) is one row.
    """
    rows = status.get("workers")
    if isinstance(rows, list):
        return [dict(r) for r in rows if isinstance(r, dict)]
    row = {k: v for k, v in status.items() if k != "workers"}
    row.setdefault("name", str(status.get("kind", "worker")))
    return [row]


def running_on(status: dict[str, Any]) -> dict[str, str]:
    """``{prompt id: worker name}`` for every running prompt of a worker's ``status()``."""
    return {str(r["running"]): str(r.get("name")) for r in worker_rows(status) if r.get("running")}
