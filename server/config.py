"""Server settings as one frozen value, built by the CLI or by tests.

Everything the app needs to know about its environment is here, so that
:func:`server.app.create_app` takes a single argument and a test can build a fresh,
isolated server (its own folders and database) in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Worker kinds of ``--workers``.
WORKER_KINDS = ("local", "ray")
#: Cache policies the executor understands (``lru:N`` and ``ram:GB`` carry a number).
CACHE_KINDS = ("classic", "lru", "ram", "none")


def check_cache_policy(value: str) -> str:
    """Return ``value`` if it is a cache policy the executor accepts, else raise ValueError."""
    kind, _, arg = value.partition(":")
    if kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache policy {value!r} (classic, lru:N, ram:GB or none)")
    if kind in ("classic", "none"):
        if arg:
            raise ValueError(f"cache policy {kind!r} takes no argument")
        return value
    try:
        number = float(arg) if kind == "ram" else int(arg)
    except ValueError:
        raise ValueError(f"cache policy {value!r} needs a number after ':'") from None
    if number <= 0:
        raise ValueError(f"cache policy {value!r} needs a positive number")
    return value


@dataclass(frozen=True)
class ServerConfig:
    """How one server instance is set up.

    Folders default to ComfyUI's layout under ``base_dir``: ``models/``, ``input/``,
    ``output/``, ``temp/`` and ``user/``. The SQLite database holding the queue and the
    history lives in the user folder (``user/noodlebox.db``), outside every per-user
    subfolder, so no ``/userdata`` path can reach it.

    ``registry`` and ``worker`` let tests (and the Ray integration) hand in a ready
    node registry or worker; by default the app builds the real ones.
    """

    base_dir: Path = field(default_factory=Path.cwd)
    listen: str = "127.0.0.1"
    port: int = 8188
    models_dir: Path | None = None
    input_dir: Path | None = None
    output_dir: Path | None = None
    temp_dir: Path | None = None
    user_dir: Path | None = None
    db_path: Path | None = None
    cache: str = "classic"
    auth_token: str | None = None
    cors_origin: str | None = None
    max_upload_mb: float = 100.0
    precision: str = "auto"
    #: ``--compile``: off, on or auto (torch.compile of UNets and VAE decoders where it wins).
    compile: str = "off"
    #: Import the model runtime in the background at start (``serve`` does): the first prompt is faster.
    preload_runtime: bool = False
    preview_size: int = 512
    custom_nodes_dirs: tuple[Path, ...] = ()
    #: ComfyUI's ``--multi-user``: users by the ``Comfy-User`` header, each with its own folder.
    multi_user: bool = False
    extra_model_paths: tuple[Path, ...] = ()
    #: Ready-made node registry (tests); None builds the real one from ``nodes.registry``.
    registry: Any = None
    #: Ready-made worker implementing ``server.workers.base.Worker``; None = local thread.
    worker: Any = None
    #: ``local`` (the in-process worker) or ``ray`` (a pool of Ray actors, issue 8).
    workers: str = "local"
    #: With ``workers="ray"``: None starts Ray here, ``auto`` or ``HOST:PORT`` joins a cluster.
    ray_address: str | None = None
    #: With ``workers="ray"``: how many actors (None: one per GPU of the cluster, or 1).
    ray_workers: int | None = None

    def __post_init__(self) -> None:
        base = Path(self.base_dir).resolve()
        object.__setattr__(self, "base_dir", base)
        defaults = {
            "models_dir": base / "models",
            "input_dir": base / "input",
            "output_dir": base / "output",
            "temp_dir": base / "temp",
            "user_dir": base / "user",
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            object.__setattr__(self, name, Path(value).resolve() if value is not None else default)
        if self.db_path is None:
            object.__setattr__(self, "db_path", self.user_dir / "noodlebox.db")  # type: ignore[operator]
        object.__setattr__(self, "custom_nodes_dirs", tuple(Path(p) for p in self.custom_nodes_dirs))
        object.__setattr__(self, "extra_model_paths", tuple(Path(p) for p in self.extra_model_paths))
        check_cache_policy(self.cache)
        if self.workers not in WORKER_KINDS:
            raise ValueError(f"unknown worker kind {self.workers!r} (local or ray)")
        if self.ray_workers is not None and self.ray_workers < 1:
            raise ValueError("the number of Ray workers must be at least 1")

    @property
    def max_upload_bytes(self) -> int:
        """The request body limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    def folder_for(self, kind: str) -> Path:
        """The folder of a file type: ``input``, ``output`` or ``temp`` (KeyError otherwise)."""
        folders: dict[str, Path] = {
            "input": self.input_dir,  # type: ignore[dict-item]
            "output": self.output_dir,  # type: ignore[dict-item]
            "temp": self.temp_dir,  # type: ignore[dict-item]
        }
        return folders[kind]

    def ensure_dirs(self, extra: Sequence[Path] = ()) -> None:
        """Create the working folders (and ``extra``) if they are missing."""
        for path in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir, *extra):
            Path(path).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
