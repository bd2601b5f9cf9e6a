"""Fixtures every test folder can use: one torch thread and a tiny random SD1.5 checkpoint.

torch is imported inside the fixtures, so that test runs which never ask for them
(``tests/graph``, ``tests/server``, ...) do not import it at collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

#: The seed of the weights of ``tiny_sd15_path``.
TINY_SD15_SEED = 4


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's tests on one torch thread, then put the setting back.

    Tiny models run 3-5x faster on one thread on a busy 2-core machine (measured: 0.12 s vs
    0.58 s per 3-step sample). Ask for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_sd15_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD1.5 checkpoint at fp32 (written once per session; treat it as read-only)."""
    import torch

    from diffusion.synthetic import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("tiny_sd15") / "sd15.safetensors", "sd15", "tiny",
                            TINY_SD15_SEED, torch.float32)
