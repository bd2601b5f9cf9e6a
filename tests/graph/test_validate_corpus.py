"""Validation against a corpus of prompts and their expected ComfyUI-shaped answers.

Each ``tests/data/validation/<case>.json`` holds a ``prompt`` (for the ComfyUI-shaped toy
registry of ``conftest.py``), optional ``partial_execution_targets`` and the ``expected``
result: ``ok``, the top-level ``error``, ``node_errors``, ``outputs`` and, for ``ok_*``
cases, the coerced ``prompt``. The strings are ComfyUI's (PROTOCOL.md section 2.5).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from graph.schema import Registry
from graph.validate import validate_prompt

CORPUS = Path(__file__).resolve().parents[1] / "data" / "validation"
CASES = sorted(CORPUS.glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_case(path: Path, toy_registry: Registry) -> None:
    """The validator's answer equals the recorded one, and the caller's prompt is left as sent."""
    case = json.loads(path.read_text())
    sent = copy.deepcopy(case["prompt"])
    result = validate_prompt(case["prompt"], toy_registry, case.get("partial_execution_targets"))
    expected = case["expected"]
    assert result.ok is expected["ok"]
    assert result.error == expected["error"]
    assert result.node_errors == expected["node_errors"]
    assert list(result.node_errors) == list(expected["node_errors"])  # order too
    assert result.outputs == expected["outputs"]
    if "prompt" in expected:
        assert result.prompt == expected["prompt"]
    assert case["prompt"] == sent
    if not result.ok:
        assert result.response_body() == {"error": expected["error"], "node_errors": expected["node_errors"]}


def test_corpus_covers_every_error_type() -> None:
    """The corpus holds at least one case of each error type validation can produce from the registry."""
    seen: set[str] = set()
    for path in CASES:
        expected = json.loads(path.read_text())["expected"]
        if expected["error"]:
            seen.add(expected["error"]["type"])
        for entry in expected["node_errors"].values():
            seen.update(e["type"] for e in entry["errors"])
    assert seen >= {
        "invalid_prompt", "prompt_no_outputs", "prompt_outputs_failed_validation", "required_input_missing",
        "bad_linked_input", "return_type_mismatch", "invalid_input_type", "value_smaller_than_min",
        "value_bigger_than_max", "value_not_in_list", "exception_during_validation",
    }
