"""Input signatures and output-cache policies (PROTOCOL.md section 5.3).

A node's signature stands for everything its outputs depend on: its class, its constant
inputs, its ``IS_CHANGED`` fingerprint, its node id only when the class is
``NOT_IDEMPOTENT`` or takes a hidden ``UNIQUE_ID``, and for each link the *signature* of
the source node and the slot. Signatures are computed in topological order and each is a
fixed-size digest of its own parts plus its sources' digests, so the cost is linear in the
prompt (ComfyUI lists every ancestor in every key, which is quadratic on a chain). Like
ComfyUI's keys they do not depend on node ids, so identical subgraphs share entries.

A value that has no stable form (an arbitrary object, a NaN, a fingerprint that raised)
makes the signature unique, so the node and everything after it re-run.

Policies (``make_cache``): ``classic`` keeps only entries the current prompt uses,
``lru:N`` keeps at most N entries across prompts (oldest prompt generation first out),
``ram:GB`` keeps entries while their estimated size stays under GB gibibytes, ``none``
keeps nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graph.listmap import map_calls
from graph.prompt import is_link
from graph.schema import NodeSchema

_unique = itertools.count()
_SCALARS = (str, int, bool, type(None))
#: Exact types whose repr is stable and needs no walk (NaN floats are not among them).
_FAST_SCALARS = frozenset({str, int, bool, type(None)})


class _UnstableError(Exception):
    """A value that must never compare equal to anything (ComfyUI's NaN placeholder)."""


def _canonical(value: Any) -> Any:
    """A repr-stable form of a JSON-like value; raises :class:`_UnstableError` for anything else."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise _UnstableError
        return value
    if isinstance(value, list | tuple):
        return ("L", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("D", tuple(sorted((repr(k), _canonical(v)) for k, v in value.items())))
    raise _UnstableError


def fingerprint(node_id: str, node: Mapping[str, Any], schema: NodeSchema, prompt: Mapping[str, Any]) -> Any:
    """The node's ``IS_CHANGED`` results (list-mapped over constant inputs, links as None), or False."""
    fn = schema.behaviour.fingerprint
    if fn is None:
        return False
    inputs = node.get("inputs") or {}
    declared = {spec.name: spec for spec in schema.input_specs()}
    data: dict[str, list[Any]] = {}
    for name, value in inputs.items():
        if is_link(value):
            data[name] = [None]
        elif name in declared:
            data[name] = [value]
    for spec in declared.values():
        if spec.section == "hidden":
            data[spec.name] = [{"PROMPT": prompt, "DYNPROMPT": prompt, "UNIQUE_ID": node_id}.get(spec.type)]
    return map_calls(fn, data, schema.input_is_list)


def uses_node_id(schema: NodeSchema) -> bool:
    """Whether a node's id is part of its signature (NOT_IDEMPOTENT, or a hidden UNIQUE_ID input)."""
    return schema.not_idempotent or any(s.section == "hidden" and s.type == "UNIQUE_ID" for s in schema.input_specs())


def node_signature(node_id: str, node: Mapping[str, Any], schema: NodeSchema, prompt: Mapping[str, Any],
                   signatures: Mapping[str, str], uses_id: bool | None = None) -> str:
    """The signature of one node, given its sources' signatures (a source without one is unique)."""
    try:
        changed = _canonical(fingerprint(node_id, node, schema, prompt)) if schema.behaviour.fingerprint else False
    except Exception:
        return f"unique:{next(_unique)}"  # IS_CHANGED raised or returned NaN: always changed
    if uses_id is None:
        uses_id = uses_node_id(schema)
    parts: list[Any] = [schema.name, changed, node_id if uses_id else None]
    inputs = node.get("inputs") or {}
    try:
        for name in sorted(inputs):
            value = inputs[name]
            kind = type(value)
            if kind in _FAST_SCALARS:
                parts.append((name, value))
            elif is_link(value):
                source = signatures.get(value[0])
                if source is None:
                    return f"unique:{next(_unique)}"
                parts.append((name, source, int(value[1])))
            else:
                parts.append((name, _canonical(value)))
    except _UnstableError:
        return f"unique:{next(_unique)}"
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def compute_signatures(prompt: Mapping[str, Any], schemas: Mapping[str, NodeSchema | None],
                       order: Iterable[str], signatures: dict[str, str] | None = None) -> dict[str, str]:
    """Signatures of the nodes in ``order`` (topological), each built on its sources' ones.

    Given ``signatures`` (of nodes computed before), the new ones are added to it.
    """
    signatures = {} if signatures is None else signatures
    uses_id: dict[str, bool] = {}  # per class, for this prompt (dynamic inputs are read once)
    for node_id in order:
        schema = schemas.get(node_id)
        if schema is None:
            signatures[node_id] = f"unique:{next(_unique)}"
            continue
        flag = uses_id.get(schema.name)
        if flag is None:
            flag = uses_id[schema.name] = uses_node_id(schema)
        signatures[node_id] = node_signature(node_id, prompt[node_id], schema, prompt, signatures, flag)
    return signatures


@dataclass
class CacheEntry:
    """A node's cached result: per-slot output lists and its merged ``ui`` dict (or None)."""

    outputs: list[list[Any]]
    ui: dict[str, Any] | None = None


def estimate_size(value: Any) -> int:
    """Rough bytes held by a value: arrays/tensors by their buffer (duck-typed), containers walked.

    graph/ must not import torch, so tensors are recognised by ``element_size()`` and
    ``nelement()``, arrays by ``nbytes``; everything else counts ``sys.getsizeof``.
    """
    total = 0
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if hasattr(item, "element_size") and hasattr(item, "nelement"):
            try:
                total += int(item.element_size()) * int(item.nelement())
                continue
            except Exception:
                pass
        nbytes = getattr(item, "nbytes", None)
        if isinstance(nbytes, int):
            total += nbytes
            continue
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif isinstance(item, CacheEntry):
            stack.extend((item.outputs, item.ui))
    return total


class OutputCache:
    """Base policy: a dict of signature -> :class:`CacheEntry`; subclasses decide what to forget."""

    def __init__(self) -> None:
        self.entries: dict[str, CacheEntry] = {}

    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key``, or None."""
        return self.entries.get(key)

    def put(self, key: str, entry: CacheEntry) -> None:
        """Store a node's result."""
        self.entries[key] = entry

    def begin_prompt(self, keys: set[str]) -> None:
        """Called with the signatures of a new prompt before it runs."""

    #: Which node instances survive a prompt: ``prompt`` (those it uses), ``all`` or ``none``.
    instances: str = "all"

    def clear(self) -> None:
        """Forget everything."""
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)


class ClassicCache(OutputCache):
    """ComfyUI's default: only entries the current prompt uses survive it."""

    instances = "prompt"

    def begin_prompt(self, keys: set[str]) -> None:
        """Drop every entry the new prompt does not use."""
        self.entries = {k: v for k, v in self.entries.items() if k in keys}


class LruCache(OutputCache):
    """Keeps up to ``size`` entries across prompts; the least recently used prompt's go first."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.generation = 0
        self.used: dict[str, int] = {}

    def get(self, key: str) -> CacheEntry | None:
        """The entry, marked as used by this prompt."""
        entry = self.entries.get(key)
        if entry is not None:
            self.used[key] = self.generation
        return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        """Store, marked as used by this prompt."""
        self.entries[key] = entry
        self.used[key] = self.generation

    def begin_prompt(self, keys: set[str]) -> None:
        """Start a generation; mark the new prompt's keys used; evict the oldest beyond ``size``."""
        self.generation += 1
        for key in keys:
            if key in self.entries:
                self.used[key] = self.generation
        if len(self.entries) > self.size:
            for key in sorted(self.entries, key=self.used.__getitem__)[: len(self.entries) - self.size]:
                del self.entries[key]
                del self.used[key]

    def clear(self) -> None:
        """Forget everything."""
        super().clear()
        self.used.clear()


class RamCache(LruCache):
    """Keeps entries while their estimated total size stays under a budget in GiB.

    Eviction order follows ComfyUI's RAM-pressure cache: highest ``1.3 ** age × size`` first.
    """

    def __init__(self, gigabytes: float) -> None:
        super().__init__(size=sys.maxsize)
        self.budget = int(gigabytes * 1024**3)
        self.sizes: dict[str, int] = {}
        self.total = 0

    def put(self, key: str, entry: CacheEntry) -> None:
        """Store, then evict until the estimated total fits the budget."""
        super().put(key, entry)
        size = estimate_size(entry)
        self.total += size - self.sizes.get(key, 0)
        self.sizes[key] = size
        if self.total <= self.budget:
            return
        score = {k: 1.3 ** (self.generation - self.used[k]) * (self.sizes[k] + 0.1) for k in self.entries}
        for victim in sorted(score, key=score.__getitem__, reverse=True):
            if self.total <= self.budget:
                break
            self.total -= self.sizes.pop(victim)
            del self.entries[victim]
            del self.used[victim]

    def clear(self) -> None:
        """Forget everything."""
        super().clear()
        self.sizes.clear()
        self.total = 0


class NullCache(OutputCache):
    """Caches nothing: every prompt runs every needed node."""

    instances = "none"

    def put(self, key: str, entry: CacheEntry) -> None:
        """Forget it at once."""


def make_cache(spec: str) -> OutputCache:
    """A policy from its name: ``classic``, ``lru:N``, ``ram:GB`` or ``none``; ValueError otherwise."""
    kind, _, arg = spec.partition(":")
    try:
        if kind == "classic" and not arg:
            return ClassicCache()
        if kind == "none" and not arg:
            return NullCache()
        if kind == "lru" and int(arg) > 0:
            return LruCache(int(arg))
        if kind == "ram" and float(arg or "4") > 0:
            return RamCache(float(arg or "4"))
    except ValueError:
        pass
    raise ValueError(f"unknown cache policy {spec!r}: use classic, lru:N, ram:GB or none")
