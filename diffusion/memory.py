"""Where models run and which stay loaded.

One :class:`ModelCache` per worker keeps loaded checkpoints keyed by the file's identity
(resolved path, modification time, size) and the load options, so a second prompt using
the same checkpoint does not read it again, and an edited or replaced file is reloaded.
``/free`` maps to :meth:`ModelCache.unload`.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from diffusion.models import module_bytes

T = TypeVar("T")


def pick_device(preferred: str | None = None) -> torch.device:
    """The device to run on: ``preferred`` if given (``cuda``, ``cuda:1``, ``mps``, ``cpu``), else the best there is."""
    if preferred:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA was asked for but is not available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("MPS was asked for but is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class FileKey:
    """A file's identity: a changed mtime or size means a different model."""

    path: str
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileKey:
        """The key of the file at ``path`` now (raises ``FileNotFoundError`` if it is gone)."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        return cls(str(resolved), stat.st_mtime_ns, stat.st_size)


def _resident_bytes(obj: Any) -> int:
    """Bytes held by a cached object: a module, a model wrapper (``.model``) or a checkpoint (``.modules()``)."""
    if isinstance(obj, torch.nn.Module):
        return module_bytes(obj)
    if isinstance(getattr(obj, "model", None), torch.nn.Module):
        return module_bytes(obj.model)
    if hasattr(obj, "modules"):
        return sum(module_bytes(m) for m in obj.modules())
    return 0


class ModelCache:
    """Loaded models by (file, options).

    Thread-safe; loads run one at a time under the cache's lock, so two prompts asking for
    the same file at once load it once (and two big loads never overlap in memory).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[FileKey, Hashable], Any] = {}
        self.loads = 0  # how many times a loader actually ran (tests and /system_stats read it)

    def get(self, path: str | os.PathLike[str], options: Hashable, loader: Callable[[], T]) -> T:
        """The cached model for ``path`` with ``options``, calling ``loader()`` on a miss.

        A loader that raises leaves nothing cached. Entries for an older version of the
        same file with the same options are dropped when the new one loads.
        """
        key = (FileKey.of(path), options)
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            value = loader()
            self.loads += 1
            stale = [k for k in self._entries if k[0].path == key[0].path and k[1] == options]
            for old in stale:
                del self._entries[old]
            self._entries[key] = value
            return value

    def unload(self, path: str | os.PathLike[str] | None = None) -> int:
        """Drop every cached model (or those loaded from ``path``); returns how many were dropped."""
        with self._lock:
            if path is None:
                dropped = list(self._entries)
            else:
                resolved = str(Path(path).resolve())
                dropped = [k for k in self._entries if k[0].path == resolved]
            for key in dropped:
                del self._entries[key]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return len(dropped)

    def resident(self) -> list[dict[str, Any]]:
        """What is loaded: file, options and bytes held, per entry."""
        with self._lock:
            entries = list(self._entries.items())
        return [
            {"path": key.path, "options": repr(options), "bytes": _resident_bytes(value)}
            for (key, options), value in entries
        ]

    def __len__(self) -> int:
        return len(self._entries)
