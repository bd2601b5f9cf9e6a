"""Fixtures for the worker-pool tests: one real Ray instance and one 2-actor pool per module.

Ray starts with 2 logical CPUs, no dashboard and a 100 MB object store (the machine is
small and shared); it is shut down at the end of the module. Apps built here borrow the
module's pool (their ``close`` does not stop it), each with its own database, so tests
share the actors' start-up cost but not their queues.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from workers_kit import (
    WORKER_NODES,
    Borrowed,
    ClientFactory,
    make_pool,
)

from server.app import create_app
from server.config import ServerConfig

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """A local Ray instance for this module's tests."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def pool_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server folders the module's pool writes into."""
    return tmp_path_factory.mktemp("pool")


@pytest.fixture(scope="module")
def pool(ray_instance: Any, pool_base: Path) -> Iterator[Any]:
    """Two Ray actors, shared by the module's tests."""
    import tempfile

    created = make_pool(pool_base, 2)
    yield created
    created.close()
    # the actors' private folders go with the pool, killed actors' included
    assert not (Path(tempfile.gettempdir()) / f"noodlebox-pool-{created.settings['pool_id']}").exists()


@pytest.fixture
def make_client(aiohttp_client: Any) -> ClientFactory:
    """``await make_client(base, worker=None)``: a test client on ``base`` (a fresh database each time)."""

    async def build(base: Path, worker: Any = None) -> TestClient:
        config = ServerConfig(base_dir=base, custom_nodes_dirs=(WORKER_NODES,),
                              db_path=base / "user" / f"{uuid.uuid4().hex}.db",
                              worker=Borrowed(worker) if worker is not None else None)
        app: web.Application = create_app(config)
        return await aiohttp_client(app)

    return build
