"""ComfyUI's ``server`` module, as packs see it (``from server import PromptServer`` inside a pack).

``PromptServer.instance`` exists from the start (packs use it at import):

- ``routes`` is an aiohttp ``RouteTableDef``; routes a pack adds with it at import are
  served by noodlebox's server (``server.app`` adds them, at their path and under ``/api``).
- ``send_sync(event, data, sid=None)`` and ``async send(...)`` go to the websocket clients
  of the running server (to ``sid`` only when given); with no server they are kept in
  :data:`nodes.comfy_surface.runtime.sent`.
- ``client_id`` and ``last_node_id`` are those of the prompt and node being run.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import missing, runtime

__all__ = ["BinaryEventTypes", "PromptServer"]


class BinaryEventTypes:
    """ComfyUI's binary websocket message types."""

    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class PromptServer:
    """The part of ComfyUI's ``PromptServer`` that packs use."""

    instance: PromptServer

    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        self.supports = ["custom_nodes_from_web"]

    def reset_routes(self) -> None:
        """Drop the routes of earlier pack loads (packs are imported afresh for every registry)."""
        self.routes = web.RouteTableDef()

    @property
    def client_id(self) -> str | None:
        """The ``client_id`` of the prompt being run (None outside a run)."""
        extra = getattr(runtime.exec_ctx(), "extra_data", None) or {}
        return extra.get("client_id")

    @property
    def last_node_id(self) -> str | None:
        """The id of the node being run (None outside a run)."""
        state = runtime.current()
        return None if state is None else state.exec_ctx.node_id

    @property
    def last_prompt_id(self) -> str | None:
        """The id of the prompt being run (None outside a run)."""
        state = runtime.current()
        return None if state is None else state.exec_ctx.prompt_id

    def send_sync(self, event: str | int, data: Any, sid: str | None = None) -> None:
        """Send a websocket event now (thread-safe)."""
        runtime.send(event, data, sid)  # type: ignore[arg-type]

    async def send(self, event: str | int, data: Any, sid: str | None = None) -> None:
        """Send a websocket event (the coroutine form)."""
        runtime.send(event, data, sid)  # type: ignore[arg-type]

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        """Send a JSON websocket event."""
        runtime.send(event, data, sid)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"noodlebox does not provide ComfyUI's server.PromptServer.instance.{name}")


PromptServer.instance = PromptServer()

__getattr__ = missing("server")
