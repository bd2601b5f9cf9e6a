"""The default worker: the graph executor in this process.

The dispatcher calls :meth:`LocalWorker.run` from its single worker thread, so one
prompt runs at a time and the executor's caches live as long as the server.
"""

from __future__ import annotations

import threading
from typing import Any

from graph.schema import Registry
from server.workers.base import EventSink, QueueItem, RunOutcome


class LocalWorker:
    """Runs prompts with ``graph.executor.Executor`` in the calling thread.

    ``free_models`` is called by :meth:`free` with ``unload_models=True`` (the node
    layer passes the model manager's unload function; None = nothing to unload).
    """

    def __init__(self, registry: Registry, cache: str = "classic", free_models: Any = None) -> None:
        from graph.executor import Executor  # imported here: the server starts without it in tests

        self.executor = Executor(registry, cache=cache)
        #: The registry's services wait_for_preload (the runtime's imports must not race the first prompt's).
        self._wait_for_preload = getattr(getattr(registry, "services", None), "wait_for_preload", None)
        self._free_models = free_models
        self._lock = threading.Lock()
        self._running: str | None = None
        self.prompts_run = 0

    def run(self, item: QueueItem, sink: EventSink) -> RunOutcome:
        """Execute ``item``'s prompt; sensitive keys are given back to the executor only."""
        with self._lock:
            self._running = item.prompt_id
        if self._wait_for_preload is not None:
            self._wait_for_preload()
        try:
            result = self.executor.run(
                item.prompt,
                item.prompt_id,
                outputs=list(item.outputs),
                extra_data={**item.extra_data, **item.sensitive},
                sink=sink,
            )
        finally:
            with self._lock:
                self._running = None
            self.prompts_run += 1
        return result

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt (if it is ``prompt_id``, when given)."""
        self.executor.interrupt(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> None:
        """``/free``: unload models and/or drop every cached result."""
        if (unload_models or free_memory) and callable(self._free_models):
            self._free_models()
        if free_memory:
            self.executor.clear_cache()

    def status(self) -> dict[str, Any]:
        """Kind, the running prompt and how many prompts this worker ran."""
        with self._lock:
            running = self._running
        return {"kind": "local", "running": running, "prompts_run": self.prompts_run}

    def close(self) -> None:
        """Nothing to release: the executor dies with the process."""
