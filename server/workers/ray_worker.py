"""The Ray worker pool: one actor per GPU (or N CPU actors), each a whole noodlebox executor.

Each actor (:class:`~server.workers.ray_actor.WorkerRuntime`, run by Ray in its own process, possibly on another
host) builds its own node registry, executor and model cache from the server's settings,
in a private folder for its input/output/temp files; models are read from the same
paths as on the server (README: "Multi-machine clusters"). :class:`RayPool` implements
the :class:`server.workers.base.Worker` protocol for the dispatcher, with ``slots`` =
the number of actors, so the dispatcher runs that many prompts at once.

Streaming: ``start`` launches the prompt in a thread inside the actor and returns; the
pool then long-polls ``poll`` (a threaded actor answers ``poll``, ``interrupt`` and
``free`` while a prompt runs). Each event comes back in order; a preview's PIL image
travels as lossless PNG bytes and is rebuilt into the ``(format, image, max_size)``
tuple the dispatcher encodes, so clients get the same frames as from the local worker.
Files the prompt saved travel with the ``executed`` event that names them
(:mod:`server.workers.pool`), so a client that fetches ``/view`` on that event finds it.

Faults: if the actor dies mid-prompt (killed, out of memory, host lost) Ray raises an
actor error on the next poll; the pool starts a replacement in the background and runs
the prompt again on the next free actor. A second death fails the prompt with
:class:`~server.workers.pool.WorkerLostError`, which the dispatcher turns into an
``execution_error`` in the history. Ray itself is imported only when a pool is built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.workers.base import EventSink, QueueItem
from server.workers.pool import OutputWriter, Placement, WorkerLostError, affinity_keys, input_files
from server.workers.ray_actor import DONE, WorkerRuntime, unpack_preview

log = logging.getLogger(__name__)

#: Settings a worker needs from the server's config (all picklable).
SETTING_KEYS = ("models_dir", "extra_model_paths", "custom_nodes_dirs", "precision", "cache")


# -- the server side ----------------------------------------------------------------


@dataclass
class PoolOutcome:
    """A prompt's outcome from a pool worker (``RunOutcome`` plus the worker's name)."""

    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    messages: list[Any] = field(default_factory=list)
    worker: str = ""


@dataclass
class _Slot:
    """One actor of the pool (a replacement keeps the name, counts a restart)."""

    name: str
    handle: Any
    info: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    prompts_run: int = 0
    alive: bool = False


class RayPool:
    """The :class:`~server.workers.base.Worker` that runs prompts on a pool of Ray actors.

    ``address``: None starts a local Ray instance (unless this process already called
    ``ray.init``), ``"auto"`` joins the cluster started by ``ray start`` on this host,
    ``HOST:PORT`` joins that one. ``size``: the number of actors (default: one per GPU
    of the cluster, or 1). ``folders``: the server's ``input``/``output``/``temp``
    folders. ``settings``: the config values of :data:`SETTING_KEYS`.
    """

    def __init__(self, folders: dict[str, Path], settings: dict[str, Any], size: int | None = None,
                 address: str | None = None, cpus_per_worker: float = 1.0, poll_s: float = 0.25,
                 ready_timeout_s: float = 180.0) -> None:
        import ray

        self._ray = ray
        self._started_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = max(os.cpu_count() or 1, int((size or 1) * cpus_per_worker + 0.999))
            else:
                _check_reachable(address)
                kwargs["address"] = address
            ray.init(**kwargs)
            self._started_ray = True
        self.address = address or "local"
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.use_gpu = gpus > 0
        count = size or max(gpus, 1)
        self.settings = {k: _plain(v) for k, v in settings.items() if k in SETTING_KEYS}
        self.settings["pool_id"] = f"{os.getpid()}-{id(self):x}"
        self.input_dir = Path(folders["input"])
        self.writer = OutputWriter({k: Path(v) for k, v in folders.items() if k in ("output", "temp")})
        self.placement = Placement()
        self.poll_s = poll_s
        self.ready_timeout_s = ready_timeout_s
        self.cpus_per_worker = 0.0 if self.use_gpu else cpus_per_worker
        self._actor_class = ray.remote(WorkerRuntime)
        self._lock = threading.Lock()
        self._closed = False
        self._interrupts: set[str] = set()  # prompts asked to stop (re-sent once they start)
        self.slots_list = [_Slot(f"ray-{i}", self._new_actor(f"ray-{i}")) for i in range(count)]
        try:
            infos = ray.get([s.handle.info.remote() for s in self.slots_list], timeout=ready_timeout_s)
        except BaseException:  # an actor that cannot start (or no room for it): undo everything
            self.close()
            raise
        for slot, info in zip(self.slots_list, infos, strict=True):
            slot.info, slot.alive = info, True
            self.placement.add(slot.name)

    @property
    def slots(self) -> int:
        """How many prompts the pool runs at once (the dispatcher reads it)."""
        return len(self.slots_list)

    def _new_actor(self, name: str) -> Any:
        options: dict[str, Any] = {"num_cpus": self.cpus_per_worker, "max_concurrency": 8,
                                   "max_restarts": 0}
        if self.use_gpu:
            options["num_gpus"] = 1
        return self._actor_class.options(**options).remote(name, self.settings)

    def _slot(self, name: str) -> _Slot:
        return next(s for s in self.slots_list if s.name == name)

    # -- running --------------------------------------------------------------------

    def run(self, item: QueueItem, sink: EventSink) -> PoolOutcome:
        """Run ``item`` on the best idle actor; retried once elsewhere if that actor dies."""
        keys = affinity_keys(item.prompt)
        payload = {
            "prompt": item.prompt,
            "prompt_id": item.prompt_id,
            "outputs": list(item.outputs),
            "extra_data": {**item.extra_data, **item.sensitive},
            "inputs": input_files(item.prompt, self.input_dir),
        }
        lost: list[str] = []
        while True:
            name = self.placement.acquire(item.prompt_id, keys)  # waits (a replacement comes)
            if name is None:
                raise WorkerLostError("the Ray worker pool was shut down before this prompt could run")
            try:
                outcome = self._run_on(name, payload, sink)
            except self._ray.exceptions.RayActorError as exc:
                lost.append(f"{name}: {_short(exc)}")
                self._replace(name)
                if len(lost) >= 2:
                    raise WorkerLostError(
                        "the Ray worker running this prompt died and the retry's worker died too ("
                        + "; ".join(lost) + ")"
                    ) from None
                log.warning("worker %s died running %s; retrying on another worker", name, item.prompt_id)
                continue
            except BaseException:
                self._interrupts.discard(item.prompt_id)
                self.placement.release(name, item.prompt_id)
                raise
            self._slot(name).prompts_run += 1
            self._interrupts.discard(item.prompt_id)
            self.placement.release(name, item.prompt_id, keys if outcome.status == "success" else None)
            return outcome

    def _run_on(self, name: str, payload: dict[str, Any], sink: EventSink) -> PoolOutcome:
        """Stream one prompt's events from actor ``name`` into ``sink``; return its outcome."""
        ray = self._ray
        handle = self._slot(name).handle
        ray.get(handle.start.remote(payload))
        if payload["prompt_id"] in self._interrupts:  # /interrupt came while it was being placed
            handle.interrupt.remote(payload["prompt_id"])
        while True:
            for event, data, files in ray.get(handle.poll.remote(self.poll_s)):
                if files:
                    self.writer.write(name, files)
                if event == DONE:
                    if data.get("crash"):
                        raise RuntimeError(f"worker {name} failed: {data['crash']}")
                    return PoolOutcome(
                        status=data["status"],
                        outputs=self.writer.rewrite(name, data["outputs"]),
                        meta=data["meta"],
                        messages=self.writer.rewrite(name, data["messages"]),
                        worker=name,
                    )
                if event == "preview":
                    data = unpack_preview(data)
                elif event == "executed":
                    data = self.writer.rewrite(name, data)
                sink(event, data)

    def _replace(self, name: str) -> None:
        """Forget a dead actor and start its replacement in the background."""
        self.placement.remove(name)
        self.writer.forget(name)
        slot = self._slot(name)
        with self._lock:
            slot.alive = False
            slot.restarts += 1
            if self._closed:
                return
            with contextlib.suppress(Exception):
                self._ray.kill(slot.handle, no_restart=True)
            slot.handle = self._new_actor(name)
        threading.Thread(target=self._await_ready, args=(slot, slot.handle), daemon=True,
                         name=f"noodlebox-{name}-restart").start()

    def _await_ready(self, slot: _Slot, handle: Any) -> None:
        """Wait for a replacement actor to build its registry, then offer it for work."""
        try:
            info = self._ray.get(handle.info.remote(), timeout=self.ready_timeout_s)
        except Exception as exc:
            log.error("replacement worker %s did not start: %s", slot.name, _short(exc))
            return
        with self._lock:
            if slot.handle is not handle or self._closed:
                return
            slot.info, slot.alive = info, True
        self.placement.add(slot.name)
        log.warning("worker %s replaced (restart %d)", slot.name, slot.restarts)

    # -- control ----------------------------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt ``prompt_id`` on the actor running it (every running prompt when None)."""
        running = dict(self.placement.running)
        targets = [(pid, n) for pid, n in running.items() if prompt_id is None or pid == prompt_id]
        self._interrupts.update(pid for pid, _ in targets)
        for _, name in targets:
            with contextlib.suppress(Exception):
                self._slot(name).handle.interrupt.remote(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> None:
        """``/free`` on every actor; each does it after its running prompt. Does not wait."""
        if free_memory:
            for slot in self.slots_list:
                self.writer.forget(slot.name)  # cached ui dicts go with the cache
        self.placement.forget_loaded()
        for slot in self.slots_list:
            with contextlib.suppress(Exception):
                slot.handle.free.remote(unload_models, free_memory)

    def status(self) -> dict[str, Any]:
        """The pool and one row per actor: name, host, device, running prompt, restarts."""
        running = {n: pid for pid, n in dict(self.placement.running).items()}
        rows = []
        for slot in self.slots_list:
            rows.append({
                "name": slot.name,
                "kind": "ray",
                "alive": slot.alive,
                "running": running.get(slot.name),
                "prompts_run": slot.prompts_run,
                "restarts": slot.restarts,
                "host": slot.info.get("host"),
                "pid": slot.info.get("pid"),
                "device": slot.info.get("device"),
                "loaded": len(self.placement.loaded(slot.name)),
            })
        return {"kind": "ray", "address": self.address, "running": None, "workers": rows}

    def actor_pid(self, name: str) -> int:
        """The process id of actor ``name`` (tests kill it to play a crash)."""
        return int(self._ray.get(self._slot(name).handle.info.remote())["pid"])

    def close(self) -> None:
        """Stop every actor, and Ray itself if this pool started it."""
        with self._lock:
            self._closed = True
        self.placement.close()
        with contextlib.suppress(Exception):
            self._ray.get([s.handle.cleanup.remote() for s in self.slots_list if s.alive], timeout=10)
        for slot in self.slots_list:
            with contextlib.suppress(Exception):
                self._ray.kill(slot.handle, no_restart=True)
        # this host's share of the scratch folders, whether or not its actors got to it
        shutil.rmtree(Path(tempfile.gettempdir()) / f"noodlebox-pool-{self.settings['pool_id']}", ignore_errors=True)
        if self._started_ray:
            with contextlib.suppress(Exception):
                self._ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Raise ConnectionError if nothing answers at a ``HOST:PORT`` address (``ray.init`` would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # "auto" and ray://... are Ray's to resolve
    host = host.removeprefix("ray://").strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address} ({exc.strerror or exc})") from None


def _plain(value: Any) -> Any:
    """Paths as strings (a worker on another host gets the same text)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _short(exc: BaseException) -> str:
    """The first line of an exception, for the history message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def pool_from_config(config: Any, workers: int | None, address: str | None, **options: Any) -> RayPool:
    """A :class:`RayPool` for a :class:`server.config.ServerConfig` (``options``: more RayPool arguments)."""
    settings = {k: getattr(config, k) for k in SETTING_KEYS}
    folders = {"input": config.input_dir, "output": config.output_dir, "temp": config.temp_dir}
    started = time.monotonic()
    pool = RayPool(folders, settings, size=workers, address=address, **options)
    log.info("ray pool of %d workers ready in %.1fs", pool.slots, time.monotonic() - started)
    return pool
