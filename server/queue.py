"""The prompt queue and the dispatcher that feeds it to a worker, one prompt at a time.

Priority (PROTOCOL 1.3): lower ``number`` runs first; ties run in acceptance order.
``GET /queue`` lists pending items in heap order, as ComfyUI does.

Durability: the queue is mirrored in :class:`server.store.Store`; an item is committed
before ``POST /prompt`` answers, and moves to the history in the same transaction
that writes its entry. On start, :meth:`PromptQueue.recover` reloads what is left:

- pending prompts run, in their old order;
- a prompt that was *running* when the process died is **re-queued once**, at the
  front (its priority is unchanged); if it was already re-queued once and the process
  died again while running it, it is **failed** instead: it gets a history entry with
  ``status_str: "error"`` and an ``execution_error`` message whose
  ``exception_type`` is ``ServerRestart``. So a prompt that crashes the server cannot
  crash it forever, and no accepted prompt is silently dropped.
- a prompt interrupted by a graceful shutdown (SIGTERM/SIGINT) is put back to pending
  without counting the attempt, and runs again after the next start.

Pause and resume (an extension of ComfyUI's API): ``POST /queue {"pause": true}`` stops
the dispatcher from taking new prompts (the running prompt finishes; nothing pending
is lost, more can be queued), ``{"resume": true}`` starts it again. The state is kept
in memory: a restarted server is not paused.

Events (PROTOCOL 3.2): the dispatcher addresses executor events to the prompt's
``client_id`` and, when the prompt has none, drops or broadcasts each event as
ComfyUI does; the history entry is written before the final ``executing`` with
``node: null`` is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from server.store import Store
from server.workers.base import EventSink, QueueItem, RunOutcome, Worker
from server.ws import Hub, Preview

log = logging.getLogger(__name__)

#: Events sent to the prompt's client only, and not at all without a client_id.
CLIENT_ONLY = frozenset(
    {"execution_start", "execution_cached", "executing", "executed", "execution_success", "execution_error"}
)
#: Events sent to the prompt's client, or broadcast when it has no client_id.
CLIENT_OR_ALL = frozenset({"progress", "progress_state", "execution_interrupted"})

#: A restarted prompt gets at most this many run attempts.
MAX_ATTEMPTS = 2
#: How long a graceful stop waits for the interrupted prompt to end.
STOP_GRACE_S = 20.0


def now_ms() -> int:
    """Milliseconds since the epoch, as ComfyUI's timestamps."""
    return int(time.time() * 1000)


class PromptQueue:
    """Pending prompts in priority order, the running one, and the priority counter.

    Only the event loop thread touches it.
    """

    def __init__(self, store: Store, on_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.on_change = on_change
        self._heap: list[tuple[float, int, str]] = []
        self._items: dict[str, QueueItem] = {}
        #: Running prompts by id, oldest first (one with the local worker, up to a pool's size).
        self.active: dict[str, QueueItem] = {}
        self.paused = False
        self._wake = asyncio.Event()
        self._counter = 0
        self._seq = 0

    # -- start ---------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Reload unfinished prompts from the store; return one note per recovered prompt."""
        notes: list[str] = []
        self._seq = self.store.max_seq()
        self._counter = int(max(self.store.max_number(), -1.0)) + 1
        for item, state, attempts in self.store.load_queue():
            if state == "running":
                if attempts >= MAX_ATTEMPTS:
                    self.store.finish(item, failed_entry(item, "the server stopped twice while running this prompt"))
                    notes.append(f"{item.prompt_id}: failed (interrupted by a restart {attempts} times)")
                    continue
                self.store.requeue(item.prompt_id)
                notes.append(f"{item.prompt_id}: re-queued after a restart")
            self._push(item)
        return notes

    @property
    def running(self) -> QueueItem | None:
        """The oldest running prompt (the only one with a single worker), or None."""
        return next(iter(self.active.values()), None)

    def running_items(self) -> list[QueueItem]:
        """Every running prompt, oldest first."""
        return list(self.active.values())

    # -- priority ------------------------------------------------------------------

    def next_number(self, front: bool) -> int:
        """The priority of a prompt posted without ``number`` (counts every such POST)."""
        number = -self._counter if front else self._counter
        self._counter += 1
        return number

    # -- contents ------------------------------------------------------------------

    def put(self, item: QueueItem) -> None:
        """Commit ``item`` and queue it."""
        self._seq += 1
        item.seq = self._seq
        self.store.add_pending(item)
        self._push(item)
        self.on_change()

    def _push(self, item: QueueItem) -> None:
        self._items[item.prompt_id] = item
        heapq.heappush(self._heap, (item.number, item.seq, item.prompt_id))
        self._wake.set()

    def contains(self, prompt_id: str) -> bool:
        """True if ``prompt_id`` is pending or running."""
        return prompt_id in self._items or prompt_id in self.active

    def pending(self) -> list[QueueItem]:
        """Pending items in heap order (not sorted, as ComfyUI's ``/queue``)."""
        return [self._items[pid] for _, seq, pid in self._heap if self._live(pid, seq)]

    def _live(self, prompt_id: str, seq: int) -> bool:
        item = self._items.get(prompt_id)
        return item is not None and item.seq == seq

    @property
    def remaining(self) -> int:
        """Pending plus running, ComfyUI's ``queue_remaining``."""
        return len(self._items) + len(self.active)

    def delete(self, prompt_ids: list[str]) -> None:
        """Remove pending prompts by id (unknown or running ids are ignored)."""
        found = [pid for pid in prompt_ids if pid in self._items]
        if not found:
            return
        self.store.delete_pending(found)
        for pid in found:
            del self._items[pid]
        self.on_change()

    def clear(self) -> None:
        """Remove every pending prompt."""
        self.delete(list(self._items))

    def set_paused(self, paused: bool) -> None:
        """Pause or resume taking new prompts."""
        self.paused = paused
        self._wake.set()

    # -- dispatcher side -----------------------------------------------------------

    async def get(self) -> QueueItem:
        """Wait for the next prompt (not while paused), mark it running and return it."""
        while True:
            while self._heap and not self._live(self._heap[0][2], self._heap[0][1]):
                heapq.heappop(self._heap)  # drop entries of deleted prompts
            if self._heap and not self.paused:
                _, _, pid = heapq.heappop(self._heap)
                item = self._items.pop(pid)
                self.store.mark_running(pid)
                self.active[pid] = item
                self.on_change()
                return item
            self._wake.clear()
            await self._wake.wait()

    def finish(self, item: QueueItem, entry: dict[str, Any]) -> None:
        """Write ``item``'s history entry and forget it."""
        self.store.finish(item, entry)
        self.active.pop(item.prompt_id, None)
        self.on_change()

    def put_back(self, item: QueueItem) -> None:
        """Return the running item to pending without counting its attempt (graceful stop)."""
        self.store.requeue(item.prompt_id, refund=True)
        self.active.pop(item.prompt_id, None)
        self._push(item)


def history_entry(item: QueueItem, outcome: RunOutcome) -> dict[str, Any]:
    """ComfyUI's history entry (PROTOCOL 5.7) of a finished prompt."""
    success = outcome.status == "success"
    return {
        "prompt": item.as_tuple(),
        "outputs": dict(outcome.outputs),
        "status": {
            "status_str": "success" if success else "error",
            "completed": success,
            "messages": [list(m) for m in outcome.messages],
        },
        "meta": dict(outcome.meta),
    }


def failed_entry(item: QueueItem, reason: str, exception_type: str = "ServerRestart") -> dict[str, Any]:
    """A history entry for a prompt that could not run to the end for ``reason``."""
    error = {
        "prompt_id": item.prompt_id,
        "node_id": None,
        "node_type": None,
        "executed": [],
        "exception_message": reason,
        "exception_type": exception_type,
        "traceback": [],
        "current_inputs": {},
        "current_outputs": [],
        "timestamp": now_ms(),
    }
    return {
        "prompt": item.as_tuple(),
        "outputs": {},
        "status": {"status_str": "error", "completed": False, "messages": [["execution_error", error]]},
        "meta": {},
    }


class _Outcome:
    """A RunOutcome made by the dispatcher when the worker itself failed."""

    def __init__(self, messages: list[Any]) -> None:
        self.status = "error"
        self.outputs: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.messages = messages


class Dispatcher:
    """Takes prompts off the queue and runs them on the worker.

    A worker runs one prompt at a time unless it declares ``slots`` > 1 (a pool of
    workers, ``server.workers.ray_worker``): then up to ``slots`` prompts run at once,
    each in its own thread, and the pool places each on one of its workers. With one
    slot the loop is the single-worker one: ``/free`` waits for the running prompt.
    """

    def __init__(self, queue: PromptQueue, worker: Worker, hub: Hub, preview_size: int = 512) -> None:
        self.queue = queue
        self.worker = worker
        self.hub = hub
        self.preview_size = preview_size
        #: How many prompts run at once (the worker's ``slots``; 1 for the local worker).
        self.slots = max(int(getattr(worker, "slots", 1) or 1), 1)
        self._thread = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="noodlebox-worker")
        self._task: asyncio.Task[None] | None = None
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._free: tuple[bool, bool] | None = None
        #: The node the running prompt is executing now (for the reconnect hint).
        self.current_node: str | None = None
        self.prompts_done = 0

    def start(self) -> None:
        """Start the dispatch loop on the running event loop."""
        loop = self._loop() if self.slots == 1 else self._pool_loop()
        self._task = asyncio.get_running_loop().create_task(loop)

    async def stop(self) -> None:
        """Interrupt the running prompts (they are re-queued), stop the loop, free the threads."""
        self._stopping = True
        if self.queue.running is not None:
            self.worker.interrupt(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runs:  # pool: let the interrupted prompts end and go back to the queue
            await asyncio.wait(list(self._runs.values()), timeout=STOP_GRACE_S)
        self._thread.shutdown(wait=False, cancel_futures=True)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Ask for ``/free``: done now if idle, else after the running prompt.

        A pool gets it at once: each of its workers frees after its own running prompt.
        """
        if self.queue.running is None or self.slots > 1:
            self.worker.free(unload_models, free_memory)
        else:
            old = self._free or (False, False)
            self._free = (old[0] or unload_models, old[1] or free_memory)

    def interrupt(self, prompt_id: str | None) -> None:
        """Interrupt the running prompt (only if it is ``prompt_id``, when given; a pool: all when not)."""
        running = self.queue.running
        if running is None or (prompt_id is not None and prompt_id not in self.queue.active):
            return
        self.worker.interrupt(prompt_id)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self.queue.get()
            run = loop.run_in_executor(self._thread, self._run_in_thread, item, self._sink_for(item))
            try:
                outcome = await asyncio.shield(run)
            except asyncio.CancelledError:
                # graceful stop: let the interrupted run end, keep the prompt for next time;
                # a node that ignores the interrupt is left behind (the prompt stays
                # "running" on disk and is re-queued by the next start's recovery)
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(run, STOP_GRACE_S)
                    self.queue.put_back(item)
                raise
            self.current_node = None
            if self._stopping and outcome.status == "interrupted":
                self.queue.put_back(item)
                return
            self._complete(item, outcome)
            if self._free is not None:
                unload, free_mem = self._free
                self._free = None
                await loop.run_in_executor(self._thread, self.worker.free, unload, free_mem)

    async def _pool_loop(self) -> None:
        """Keep up to ``slots`` prompts running, each as its own task."""
        free_slots = asyncio.Semaphore(self.slots)
        loop = asyncio.get_running_loop()
        while True:
            await free_slots.acquire()
            try:
                item = await self.queue.get()
            except asyncio.CancelledError:
                free_slots.release()
                raise
            self._runs[item.prompt_id] = loop.create_task(self._pool_run(item, free_slots))

    async def _pool_run(self, item: QueueItem, free_slots: asyncio.Semaphore) -> None:
        """Run one prompt on the pool and record it (the slot is given back in any case)."""
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self._thread, self._run_in_thread, item, self._sink_for(item))
            if self._stopping and outcome.status == "interrupted":
                self.queue.put_back(item)
                return
            self._complete(item, outcome)
        finally:
            self._runs.pop(item.prompt_id, None)
            free_slots.release()

    def _complete(self, item: QueueItem, outcome: RunOutcome) -> None:
        """Write the history entry, then send the completion signal."""
        try:
            self.queue.finish(item, history_entry(item, outcome))
        except Exception as exc:  # never let one prompt stop the queue
            log.exception("could not store the history of %s", item.prompt_id)
            self.queue.finish(item, failed_entry(item, f"could not store the result: {exc}", "HistoryError"))
        self.prompts_done += 1
        # history is on disk now: only then the completion signal (PROTOCOL 3.3)
        if item.client_id is not None:
            self.hub.send("executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id)

    def _run_in_thread(self, item: QueueItem, sink: EventSink) -> RunOutcome:
        """Run on the worker; a failure of the worker itself becomes an error outcome."""
        try:
            return self.worker.run(item, sink)
        except Exception as exc:
            log.exception("worker failed on prompt %s", item.prompt_id)
            data = {
                "prompt_id": item.prompt_id,
                "node_id": None,
                "node_type": None,
                "executed": [],
                "exception_message": str(exc),
                "exception_type": type(exc).__name__,
                "traceback": [],
                "current_inputs": {},
                "current_outputs": [],
                "timestamp": now_ms(),
            }
            sink("execution_error", data)
            return _Outcome([["execution_error", data]])

    def _sink_for(self, item: QueueItem) -> EventSink:
        """The event sink for one prompt (called in the worker thread)."""
        client_id = item.client_id
        hub = self.hub

        def sink(event: str, data: dict[str, Any]) -> None:
            """Address one executor event (PROTOCOL 3.2) and hand it to the hub."""
            if event == "executing":
                self.current_node = data.get("node")
            if event == "preview":
                preview = self._encode_preview(data)
                if preview is not None:
                    hub.send_preview_threadsafe(preview, client_id)
                return
            if event in CLIENT_ONLY:
                blocked = event == "execution_error" and data.get("exception_type") == "ExecutionBlocked"
                if client_id is None and not blocked:
                    return
                hub.send_threadsafe(event, data, client_id)
            elif event in CLIENT_OR_ALL:
                hub.send_threadsafe(event, data, client_id)
            else:  # events custom nodes invent: to the client, else to all
                hub.send_threadsafe(event, data, client_id)

        return sink

    def _encode_preview(self, data: dict[str, Any]) -> Preview | None:
        """JPEG/PNG-encode an executor preview ``(format, PIL image, max_size)``."""
        try:
            image_format, image, max_size = data["preview"]
        except (KeyError, TypeError, ValueError):
            return None
        from PIL import ImageOps  # the server imports PIL only when previews flow

        size = max_size or self.preview_size
        if size:
            image = ImageOps.contain(image, (size, size))
        fmt = "PNG" if str(image_format).upper() == "PNG" else "JPEG"
        buffer = io.BytesIO()
        if fmt == "JPEG":
            image.convert("RGB").save(buffer, format="JPEG", quality=95)
        else:
            image.save(buffer, format="PNG", compress_level=1)
        node_id = data.get("node_id")
        metadata = {
            "node_id": node_id,
            "prompt_id": data.get("prompt_id"),
            "display_node_id": data.get("display_node_id", node_id),
            "parent_node_id": data.get("parent_node_id"),
            "real_node_id": data.get("real_node_id", node_id),
            "image_type": "image/png" if fmt == "PNG" else "image/jpeg",
        }
        return Preview(fmt, buffer.getvalue(), metadata)
