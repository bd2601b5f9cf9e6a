"""Fixtures for the server tests: a fresh app per test on its own folders and database.

The registry is the real one (``nodes.registry``: the pure built-in nodes plus the
test custom node pack in ``tests/data/custom_nodes``), with one hand-written node
added, ``TestPreview``, which reports a step with a preview image, so the websocket's
binary frames can be tested before the image nodes exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from server_kit import make_registry

from server.app import create_app
from server.config import ServerConfig


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., ServerConfig]:
    """Build a ServerConfig on ``tmp_path`` (keyword arguments override fields)."""

    def build(**overrides: Any) -> ServerConfig:
        overrides.setdefault("registry", make_registry(tmp_path))
        return ServerConfig(base_dir=tmp_path, **overrides)

    return build


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(aiohttp_client: Any, make_config: Callable[..., ServerConfig]) -> ClientFactory:
    """``await make_client(**config_overrides)`` -> a test client of a fresh app."""

    async def build(**overrides: Any) -> TestClient:
        app: web.Application = create_app(make_config(**overrides))
        return await aiohttp_client(app)

    return build


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    """A test client of a default app."""
    return await make_client()


