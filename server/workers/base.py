"""What the queue dispatcher asks of a worker, and the item it hands over.

A worker runs one queued prompt at a time and reports its events to a sink. The queue
item carries everything needed to run the prompt (prompt, id, extra data, outputs,
sensitive keys), so a worker in another process (the Ray worker of issue 8) needs
nothing from the server's memory; it returns the outputs in its result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

#: ``sink(event_type, data)``: receives every executor event, in order.
EventSink = Callable[[str, dict[str, Any]], None]


@dataclass
class QueueItem:
    """One accepted prompt, as ComfyUI's queue tuple plus the hidden sensitive dict.

    ``number`` is the priority (lower runs first); ``seq`` breaks ties in acceptance
    order (ComfyUI compares whole tuples, so equal numbers fall back to the prompt id;
    acceptance order is the fairer, documented choice here).
    """

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    sensitive: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    def as_tuple(self) -> list[Any]:
        """The 5-element array of ``/queue`` and history ``prompt`` (sensitive keys left out)."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        """The websocket sid that gets this prompt's events, if any."""
        cid = self.extra_data.get("client_id")
        return cid if isinstance(cid, str) and cid else None


class RunOutcome(Protocol):
    """What a worker returns: the fields of ``graph.executor.RunResult`` the server reads."""

    status: str
    outputs: dict[str, Any]
    meta: dict[str, Any]
    messages: list[Any]


class Worker(Protocol):
    """A runner of prompts, driven by :class:`server.queue.Dispatcher`.

    ``run`` blocks until the prompt is finished (the dispatcher calls it from its own
    worker thread); ``interrupt``, ``free`` and ``status`` are called from the event
    loop while ``run`` may be in progress, so they must be thread-safe and quick.

    Optional: a worker with an attribute ``slots`` > 1 (a pool, such as
    ``server.workers.ray_worker.RayPool``) gets up to that many ``run`` calls at once,
    from different threads; without it the dispatcher runs one prompt at a time.
    """

    def run(self, item: QueueItem, sink: EventSink) -> RunOutcome:
        """Run ``item``'s prompt, sending its events to ``sink``; return the outcome."""
        ...

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt (only if it is ``prompt_id``, when given)."""
        ...

    def free(self, unload_models: bool, free_memory: bool) -> None:
        """Drop loaded models and/or cached results (called between prompts)."""
        ...

    def status(self) -> dict[str, Any]:
        """A small JSON-able description of the worker (kind, busy, device...)."""
        ...

    def close(self) -> None:
        """Release what the worker holds; called once at shutdown."""
        ...
