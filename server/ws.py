"""The websocket hub: ``/ws?clientId=`` (and ``/api/ws``), PROTOCOL section 3.

Every connected socket has its own outgoing asyncio queue and one sender task, so a
slow client never holds up the others and each socket sees messages in the order they
were sent. Events produced in the worker thread enter the event loop through one FIFO
drained by a ``loop.call_soon_threadsafe`` callback (callbacks run in submission
order); together with the per-socket queues this keeps the executor's order on the
wire.

Text frames are ``{"type": event, "data": {...}}`` serialised once per message, not
once per socket. Binary preview frames are built per socket kind: type 4 (with JSON
metadata) for sockets that announced ``supports_preview_metadata: true`` in their
first message, type 1 (``[u32 1][u32 format][image]``) for the rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

#: Binary event types (PROTOCOL 3.4).
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
#: Image format codes inside a type-1 frame.
IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}
#: A socket with this many unsent messages is not reading: it is closed (clients reconnect)
#: rather than letting its backlog grow without bound.
MAX_BACKLOG = 100_000


@dataclass
class Preview:
    """An encoded preview image and what type-4 frames say about it."""

    image_format: str  # "JPEG" or "PNG"
    data: bytes
    metadata: dict[str, Any]

    def frame(self, with_metadata: bool) -> bytes:
        """The binary frame for a socket that did (or did not) negotiate metadata."""
        if with_metadata:
            meta = json.dumps(self.metadata).encode()
            return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + self.data
        return struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS[self.image_format]) + self.data


@dataclass
class Client:
    """One connected websocket."""

    sid: str
    ws: web.WebSocketResponse
    outbox: asyncio.Queue[str | bytes | None] = field(default_factory=asyncio.Queue)
    flags: dict[str, Any] = field(default_factory=dict)
    sent: int = 0

    @property
    def wants_metadata(self) -> bool:
        """True if the client asked for type-4 preview frames (must be exactly ``true``)."""
        return self.flags.get("supports_preview_metadata") is True


class Hub:
    """Connected sockets by sid, and the one way to send them events."""

    def __init__(self, server_flags: dict[str, Any]) -> None:
        self.server_flags = server_flags
        self.clients: dict[str, Client] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: collections.deque[tuple[str | None, Any, str | None]] = collections.deque()
        self._drain_scheduled = False
        #: Called on connect with the new sid; returns extra messages to send first.
        self.on_connect_messages: Any = None
        #: Messages handed to sockets since start (for the load benchmark and tests).
        self.messages_sent = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the event loop that owns the sockets (called at app startup)."""
        self._loop = loop

    # -- sending (event loop thread) ------------------------------------------------

    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        """Queue a JSON event for ``sid`` (dropped if not connected), or for all when None."""
        if sid is not None and sid not in self.clients:
            return
        text = json.dumps({"type": event, "data": data}, default=str)  # odd ui values become text
        targets = list(self.clients.values()) if sid is None else [self.clients[sid]]
        for client in targets:
            self._put(client, text)

    def send_preview(self, preview: Preview, sid: str | None = None) -> None:
        """Queue a binary preview frame for ``sid`` or, when None, for every socket."""
        if sid is not None and sid not in self.clients:
            return
        targets = list(self.clients.values()) if sid is None else [self.clients[sid]]
        frames: dict[bool, bytes] = {}
        for client in targets:
            kind = client.wants_metadata
            if kind not in frames:
                frames[kind] = preview.frame(kind)
            self._put(client, frames[kind])

    def _put(self, client: Client, message: str | bytes) -> None:
        if client.outbox.qsize() >= MAX_BACKLOG:
            self._drop(client)
            return
        client.outbox.put_nowait(message)
        self.messages_sent += 1

    def _drop(self, client: Client) -> None:
        """Disconnect a socket that stopped reading."""
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        client.outbox.put_nowait(None)
        asyncio.get_running_loop().create_task(client.ws.close())

    # -- sending (any thread) -------------------------------------------------------
    #
    # Events from other threads go into one FIFO; a single drain callback, scheduled
    # with call_soon_threadsafe only when none is pending, sends everything queued.
    # Order is the FIFO's, and a burst of events (a 5,000-node prompt) wakes the loop
    # a few times instead of once per event. The drain clears the flag *before* it
    # empties the FIFO, so an event appended meanwhile either is taken by this drain
    # or schedules the next one: nothing is left behind.

    def send_threadsafe(self, event: str, data: Any, sid: str | None = None) -> None:
        """:meth:`send` from another thread, keeping the caller's order."""
        self._enqueue((event, data, sid))

    def send_preview_threadsafe(self, preview: Preview, sid: str | None = None) -> None:
        """:meth:`send_preview` from another thread, keeping the caller's order."""
        self._enqueue((None, preview, sid))

    def _enqueue(self, entry: tuple[str | None, Any, str | None]) -> None:
        assert self._loop is not None, "hub not bound to a loop"
        self._pending.append(entry)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        pending = self._pending
        while pending:
            event, data, sid = pending.popleft()
            if event is None:
                self.send_preview(data, sid)
            else:
                self.send(event, data, sid)

    # -- connections ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """The ``/ws`` handler: register, greet, read the client's first message, send."""
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        old = self.clients.pop(sid, None)
        if old is not None:  # the same sid reconnecting replaces the old socket
            old.outbox.put_nowait(None)
        client = Client(sid=sid, ws=ws)
        self.clients[sid] = client
        first = self.on_connect_messages(sid) if self.on_connect_messages else []
        for event, data in first:
            client.outbox.put_nowait(json.dumps({"type": event, "data": data}))
        sender = asyncio.create_task(self._pump(client))
        try:
            first_message = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and first_message:
                    first_message = False
                    self._first_message(client, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            client.outbox.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        return ws

    def _first_message(self, client: Client, text: str) -> None:
        """Feature-flag negotiation: only the first text message is understood."""
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            data = message.get("data")
            client.flags = data if isinstance(data, dict) else {}
            client.outbox.put_nowait(json.dumps({"type": "feature_flags", "data": self.server_flags}))

    async def _pump(self, client: Client) -> None:
        """Send one socket's queued messages in order until told to stop."""
        while True:
            message = await client.outbox.get()
            if message is None or client.ws.closed:
                return
            try:
                if isinstance(message, bytes):
                    await client.ws.send_bytes(message)
                else:
                    await client.ws.send_str(message)
                client.sent += 1
            except (ConnectionError, RuntimeError):
                return

    async def close(self) -> None:
        """Close every socket (server shutdown)."""
        for client in list(self.clients.values()):
            with contextlib.suppress(Exception):
                await client.ws.close()
        self.clients.clear()
