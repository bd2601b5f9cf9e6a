"""Input signatures and the cache policies."""

from __future__ import annotations

import math
from typing import Any

import pytest
from toy_nodes import chain, make_registry

from graph.cache import (
    CacheEntry,
    ClassicCache,
    LruCache,
    NullCache,
    RamCache,
    compute_signatures,
    estimate_size,
    make_cache,
)
from graph.dag import kahn_order
from graph.executor import Executor

REGISTRY = make_registry()


def signatures(prompt: dict[str, Any]) -> dict[str, str]:
    schemas = {n: REGISTRY[v["class_type"]] for n, v in prompt.items()}
    return compute_signatures(prompt, schemas, kahn_order(prompt)[0])


def test_signature_follows_values_and_topology_not_ids() -> None:
    """Same subgraph, other ids: same signatures; a changed constant changes it and everything below."""
    base = signatures(chain(4))
    renamed = signatures({
        "a": {"class_type": "Int", "inputs": {"value": 0}},
        "b": {"class_type": "Add", "inputs": {"b": 1, "a": ["a", 0]}},  # input order does not matter
        "c": {"class_type": "Add", "inputs": {"a": ["b", 0], "b": 1}},
        "d": {"class_type": "Show", "inputs": {"value": ["c", 0]}},
    })
    assert list(renamed.values()) == list(base.values())
    changed = chain(4)
    changed["2"]["inputs"]["b"] = 2
    after = signatures(changed)
    assert after["1"] == base["1"]
    assert all(after[n] != base[n] for n in ("2", "3", "4"))


def test_link_slot_and_constant_type_matter() -> None:
    """1 and 1.0 and "1" are different constants; so are different output slots."""
    sig = [signatures({"1": {"class_type": "Int", "inputs": {"value": v}}})["1"] for v in (1, 1.0, "1", True)]
    assert len(set(sig)) == 4


def test_unstable_values_never_match() -> None:
    """A NaN constant or a non-JSON value makes the signature unique on every computation."""
    for value in (math.nan, object(), [1, math.nan]):
        prompt = {"1": {"class_type": "Int", "inputs": {"value": value}},
                  "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
        first, second = signatures(prompt), signatures(prompt)
        assert first["1"] != second["1"] and first["2"] != second["2"]


def test_nested_constants_are_order_insensitive_for_dicts() -> None:
    """Dict constants compare by content, not key order."""
    a = signatures({"1": {"class_type": "Int", "inputs": {"value": {"x": 1, "y": [1, 2]}}}})
    b = signatures({"1": {"class_type": "Int", "inputs": {"value": {"y": [1, 2], "x": 1}}}})
    assert a == b


def test_not_idempotent_and_unique_id_include_the_node_id() -> None:
    """NOT_IDEMPOTENT (and a hidden UNIQUE_ID) make identical nodes under different ids differ."""
    for cls in ("NotIdempotent", "Int"):
        sig = signatures({"1": {"class_type": cls, "inputs": {"value": 1}},
                          "2": {"class_type": cls, "inputs": {"value": 1}}})
        assert (sig["1"] != sig["2"]) is (cls == "NotIdempotent")


def test_make_cache_parses_policies() -> None:
    """The four policy names and their arguments; anything else is a ValueError."""
    assert isinstance(make_cache("classic"), ClassicCache)
    assert isinstance(make_cache("none"), NullCache)
    lru = make_cache("lru:3")
    assert isinstance(lru, LruCache) and lru.size == 3
    ram = make_cache("ram:0.5")
    assert isinstance(ram, RamCache) and ram.budget == 512 * 1024**2
    for bad in ("lru", "lru:0", "lru:x", "ram:-1", "fast", "classic:1"):
        with pytest.raises(ValueError, match="cache policy"):
            make_cache(bad)


def test_classic_keeps_only_the_last_prompt_lru_keeps_n() -> None:
    """Alternating two prompts: classic re-runs the differing part each time, lru:N keeps both."""
    a, b = chain(5, start=0), chain(5, start=100)
    classic, lru = Executor(REGISTRY), Executor(REGISTRY, cache="lru:100")
    for executor in (classic, lru):
        executor.run(a, "1")
        executor.run(b, "2")
    assert len(classic.run(a, "3").executed) == 5
    assert lru.run(a, "3").executed == []


def test_lru_evicts_the_oldest_generation() -> None:
    """With room for 5 entries, a third distinct prompt pushes out the first one's entries."""
    executor = Executor(REGISTRY, cache="lru:5")
    for start in (0, 100, 200):
        executor.run(chain(5, start=start), str(start))
    assert len(executor.cache) <= 10
    assert len(executor.run(chain(5, start=0), "again").executed) == 5
    assert executor.run(chain(5, start=0), "again2").executed == []


def test_none_policy_reruns_everything() -> None:
    """cache='none' keeps nothing between prompts."""
    executor = Executor(REGISTRY, cache="none")
    executor.run(chain(4), "1")
    assert len(executor.run(chain(4), "2").executed) == 4


class FakeArray:
    """Duck-types a numpy array (``nbytes``)."""

    nbytes = 10_000_000


class FakeTensor:
    """Duck-types a torch tensor (``element_size() * nelement()``)."""

    def element_size(self) -> int:
        return 4

    def nelement(self) -> int:
        return 1_000_000


def test_estimate_size_duck_types_arrays_and_tensors() -> None:
    """Buffers count by their size; a shared object counts once."""
    tensor = FakeTensor()
    assert estimate_size(FakeArray()) == 10_000_000
    assert 4_000_000 <= estimate_size({"samples": tensor, "again": [tensor]}) < 4_010_000


def test_ram_cache_evicts_beyond_its_budget() -> None:
    """A budget of ~9 MB holds two 4 MB entries; a third evicts one, the oldest generation first."""
    cache = RamCache(9_000_000 / 1024**3)
    cache.begin_prompt(set())
    cache.put("old", CacheEntry([[FakeTensor()]]))
    cache.begin_prompt(set())
    cache.put("mid", CacheEntry([[FakeTensor()]]))
    cache.put("new", CacheEntry([[FakeTensor()]]))
    assert set(cache.entries) == {"mid", "new"}
    assert cache.total <= cache.budget
