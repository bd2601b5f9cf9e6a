"""The actor side of the Ray pool: one worker with its own registry, executor and model cache.

:class:`WorkerRuntime` is a plain class (no Ray import) that Ray runs as an actor, in its
own process and possibly on another host; tests also run it in-process. It builds the
node registry from the server's settings (models read from the same paths as on the
server; input/output/temp files in a private folder), runs one prompt at a time in a
thread, and queues the executor's events for the pool to fetch with :meth:`poll`:
previews with their PIL image as lossless PNG bytes, ``executed`` events with the bytes
of the files saved since the last one (:func:`server.workers.pool.collect_new_files`).
"""

from __future__ import annotations

import io
import os
import queue
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from server.workers.pool import collect_new_files

#: The event that ends a prompt's stream (never sent to clients).
DONE = "__done__"
#: Marks a preview whose image travels as PNG bytes.
PNG_PREVIEW = "__png__"
#: How long ``start`` waits for a ``/free`` (or a finishing prompt) to let go of the worker.
START_WAIT_S = 120.0


class WorkerRuntime:
    """One worker: registry, executor and model cache in a private folder. Ray runs it as an actor.

    It is a plain class (no Ray import), so its logic is tested in-process too.
    """

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        from graph.executor import Executor
        from server.app import _build_folders, _build_registry
        from server.config import ServerConfig

        self.name = name
        # one folder per pool and host holds its actors' folders: a killed actor's is removed
        # with it when the pool closes
        scratch = Path(tempfile.gettempdir()) / f"noodlebox-pool-{settings.get('pool_id', 'solo')}"
        scratch.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
        config = ServerConfig(
            base_dir=self.root,
            models_dir=settings.get("models_dir"),
            extra_model_paths=tuple(settings.get("extra_model_paths") or ()),
            custom_nodes_dirs=tuple(settings.get("custom_nodes_dirs") or ()),
            precision=settings.get("precision", "auto"),
            cache=settings.get("cache", "classic"),
        )
        config.ensure_dirs()
        self.config = config
        self.registry = _build_registry(config, _build_folders(config))
        self.executor = Executor(self.registry, cache=config.cache)
        self._events: queue.Queue[tuple[str, Any, dict[tuple[str, str], bytes]]] = queue.Queue()
        self._shipped: set[tuple[str, str]] = set()
        self._run_lock = threading.Lock()
        self._running: str | None = None
        self._stop_asked = False
        self.prompts_run = 0

    def info(self) -> dict[str, Any]:
        """Where this worker runs: pid, host, device (answered once it is ready)."""
        device = "cpu"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if visible and visible != "-1":
            device = f"cuda (CUDA_VISIBLE_DEVICES={visible})"
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": device, "folder": str(self.root)}

    def _roots(self) -> dict[str, Path]:
        return {"output": Path(self.config.output_dir), "temp": Path(self.config.temp_dir)}  # type: ignore[arg-type]

    def start(self, payload: dict[str, Any]) -> bool:
        """Begin running one prompt in a thread; events queue up for :meth:`poll`."""
        # a /free in progress holds the lock for a moment: wait for it (the pool never
        # sends a second prompt to a busy worker, so a long wait means something is stuck)
        if not self._run_lock.acquire(timeout=START_WAIT_S):
            raise RuntimeError(f"worker {self.name} is still busy (running {self._running})")
        try:
            input_root = Path(self.config.input_dir).resolve()  # type: ignore[arg-type]
            for relpath, data in payload.get("inputs", {}).items():
                target = (input_root / relpath).resolve()
                if input_root in target.parents:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
            self._events = queue.Queue()
            self._running = payload["prompt_id"]
            self._stop_asked = False
            thread = threading.Thread(target=self._run, args=(payload, self._events), name=f"noodlebox-{self.name}",
                                      daemon=True)
            thread.start()
        except BaseException:
            self._running = None
            self._run_lock.release()
            raise
        return True

    def _run(self, payload: dict[str, Any], events: queue.Queue[Any]) -> None:
        """The prompt thread: run, then queue the result (and any file not shipped yet).

        The worker is marked free *before* the result is queued: the pool may send the
        next prompt as soon as it reads the result.
        """
        try:
            result = self.executor.run(payload["prompt"], payload["prompt_id"], outputs=payload["outputs"],
                                       extra_data=payload["extra_data"], sink=self._sink)
            done = {"status": result.status, "outputs": result.outputs, "meta": result.meta,
                    "messages": [list(m) for m in result.messages]}
        except BaseException as exc:  # the executor never raises; this is a last guard
            done = {"status": "error", "outputs": {}, "meta": {}, "messages": [], "crash": repr(exc)}
        finally:
            self.prompts_run += 1
        files = collect_new_files(self._roots(), self._shipped)
        self._running = None
        self._run_lock.release()
        events.put((DONE, done, files))

    def _sink(self, event: str, data: dict[str, Any]) -> None:
        """Queue one executor event, made picklable; ``executed`` carries the new files."""
        if self._stop_asked:  # asked before the executor had started: pass it on now
            self.executor.interrupt(None)
        files: dict[tuple[str, str], bytes] = {}
        if event == "preview":
            data = pack_preview(data)
        elif event == "executed":
            files = collect_new_files(self._roots(), self._shipped)
        self._events.put((event, data, files))

    def poll(self, timeout: float = 0.25) -> list[tuple[str, Any, dict[tuple[str, str], bytes]]]:
        """The queued events (waits up to ``timeout`` s for the first; at most 256 at once)."""
        batch = []
        try:
            batch.append(self._events.get(timeout=timeout))
            while len(batch) < 256 and batch[-1][0] != DONE:
                batch.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return batch

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt (only if it is ``prompt_id``, when given).

        The request is remembered for the prompt even when its executor has not started
        yet (the executor forgets interrupts that come before its run).
        """
        if self._running is not None and prompt_id in (None, self._running):
            self._stop_asked = True
        self.executor.interrupt(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> None:
        """``/free`` on this worker, after its running prompt (waits for it)."""
        with self._run_lock:
            free_models = getattr(getattr(self.registry, "services", None), "free_models", None)
            if (free_memory or unload_models) and callable(free_models):
                free_models()  # as the local worker: /free with either flag unloads models
            if free_memory:
                self.executor.clear_cache()
            import gc

            gc.collect()
            torch = __import__("sys").modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

    def status(self) -> dict[str, Any]:
        """The running prompt and how many prompts this worker ran."""
        return {"running": self._running, "prompts_run": self.prompts_run}

    def cleanup(self) -> None:
        """At pool shutdown: remove this pool's folder on this host (dead actors' folders too)."""
        import shutil

        shutil.rmtree(self.root.parent, ignore_errors=True)


def pack_preview(data: dict[str, Any]) -> dict[str, Any]:
    """A preview event with its PIL image as PNG bytes (lossless: the server re-encodes it)."""
    try:
        image_format, image, max_size = data["preview"]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
    except Exception:  # not a (format, image, size) preview: the dispatcher drops it anyway
        return {k: v for k, v in data.items() if k != "preview"}
    return {**data, "preview": (PNG_PREVIEW, image_format, buffer.getvalue(), max_size)}


def unpack_preview(data: dict[str, Any]) -> dict[str, Any]:
    """The ``(format, PIL image, max_size)`` preview the dispatcher expects."""
    packed = data.get("preview")
    if not (isinstance(packed, tuple) and len(packed) == 4 and packed[0] == PNG_PREVIEW):
        return data
    from PIL import Image

    _, image_format, png, max_size = packed
    image = Image.open(io.BytesIO(png))
    image.load()
    return {**data, "preview": (image_format, image, max_size)}
