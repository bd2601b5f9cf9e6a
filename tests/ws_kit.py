"""Websocket helpers shared by the server and worker tests (``from tests.ws_kit import ...``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType


async def collect_until_done(ws: Any, prompt_id: str, timeout: float) -> list[Any]:
    """Messages of a websocket (JSON dicts, or bytes for binary frames) until ``executing`` node null."""
    messages: list[Any] = []

    async def read() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                messages.append(msg.data)
                continue
            if msg.type != WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            messages.append(data)
            if data["type"] == "executing" and data["data"].get("node") is None \
                    and data["data"].get("prompt_id") == prompt_id:
                return

    await asyncio.wait_for(read(), timeout)
    return messages
