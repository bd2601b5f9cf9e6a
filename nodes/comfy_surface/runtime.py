"""What the surface modules need to know at a given moment: the registry, the running node, the server.

- Core node classes of ``nodes`` and ``comfy_extras`` call the built-in nodes of the
  running pack node's registry, else of the *active registry*, the one whose packs were
  loaded last (:func:`activate`).
- While a pack node runs, :func:`running` holds its executor context and pack name, so
  ``comfy.utils.ProgressBar`` reports to the right node and ``PromptServer.instance``
  knows the prompt's ``client_id`` and ``last_node_id``.
- :data:`server_sink` is set by a running server (``server.app``) so that
  ``PromptServer.instance.send_sync`` reaches its websocket clients.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .values import unwrap, wrap


@dataclass
class RunState:
    """The pack node being run now."""

    exec_ctx: Any
    pack: str
    registry: Mapping[str, Any] | None = None


class _QuietContext:
    """The executor context of a call made outside any run (at import, in a test): progress goes nowhere."""

    node_id = ""
    prompt_id = ""
    extra_data: Mapping[str, Any] = {}

    def progress(self, value: int, total: int, preview: Any | None = None) -> None:
        """Nothing to report to."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


_registry: Mapping[str, Any] | None = None
_run: contextvars.ContextVar[RunState | None] = contextvars.ContextVar("noodlebox_pack_run", default=None)
#: ``send(event, data, sid)`` of the running server, or None (then sent events are only kept in ``sent``).
server_sink: Callable[[str, Any, str | None], None] | None = None
#: The last events sent while no server was attached (newest last; at most 100), for tests and the log.
sent: list[tuple[str, Any, str | None]] = []


def activate(registry: Mapping[str, Any]) -> None:
    """Make ``registry``'s built-in nodes the ones the core classes call."""
    global _registry
    _registry = registry


def builtin(name: str) -> Any:
    """The built-in node schema ``name`` of the running pack's registry, else of the active one.

    An AttributeError names it when absent.
    """
    state = _run.get()
    registry = state.registry if state is not None and state.registry is not None else _registry
    if registry is None or name not in registry:
        from . import NotProvidedError

        raise NotProvidedError(f"noodlebox has no node {name!r} for ComfyUI's class of that name")
    return registry[name]


def current() -> RunState | None:
    """The pack node being run, or None."""
    return _run.get()


def exec_ctx() -> Any:
    """The executor context of the running node, or a quiet one."""
    state = _run.get()
    return state.exec_ctx if state is not None else _QuietContext()


@contextmanager
def running(exec_ctx: Any, pack: str, registry: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Mark a pack node (of ``registry``) as running for the surface modules."""
    token = _run.set(RunState(exec_ctx, pack, registry))
    try:
        yield
    finally:
        _run.reset(token)


def send(event: str, data: Any, sid: str | None = None) -> None:
    """Send a websocket event for a pack (to the server if one is attached)."""
    if server_sink is not None:
        server_sink(event, data, sid)
        return
    sent.append((event, data, sid))
    del sent[:-100]


def call_builtin(name: str, values: Mapping[str, Any]) -> Any:
    """Run built-in node ``name`` with ``values`` (pack wrappers removed); its outputs wrapped for the pack."""
    schema = builtin(name)
    plain = {k: unwrap(v) for k, v in values.items()}
    result = schema.behaviour.execute(None, exec_ctx(), plain)
    if isinstance(result, tuple):
        return tuple(wrap(v) for v in result)
    if isinstance(result, dict) and "result" in result:
        return {**result, "result": tuple(wrap(v) for v in result["result"])}
    return result
