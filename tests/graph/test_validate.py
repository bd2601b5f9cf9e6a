"""Validation behaviour beyond the corpus: VALIDATE_INPUTS, exceptions, type matching, scale, odd input."""

from __future__ import annotations

from typing import Any

import pytest
from toy_nodes import chain, make_registry

from graph.schema import InputSpec, NodeBehaviour, NodeSchema, OutputSpec, Registry
from graph.validate import validate_prompt
from graph.validate_inputs import types_match


def _with(registry: Registry, name: str, inputs: list[InputSpec], outputs: list[str], **behaviour: Any) -> Registry:
    execute = behaviour.pop("execute", lambda instance, ctx, kw: ())
    output_node = behaviour.pop("output_node", True)
    registry.add(NodeSchema(name, tuple(inputs), tuple(OutputSpec(t, t) for t in outputs),
                            NodeBehaviour(execute, **behaviour), output_node=output_node))
    return registry


def test_custom_validation_skips_bounds_and_reports_its_string() -> None:
    """A VALIDATE_INPUTS that names an input takes over its min check and reports ``<x> - <msg>``."""
    registry = make_registry()
    show = {"class_type": "Show", "inputs": {"value": ["1", 0]}}
    below_min = validate_prompt({"1": {"class_type": "Positive", "inputs": {"value": 5}}, "2": show}, registry)
    assert below_min.ok and below_min.node_errors == {}
    negative = validate_prompt({"1": {"class_type": "Positive", "inputs": {"value": -3}}, "2": show}, registry)
    assert not negative.ok
    assert negative.node_errors["1"]["errors"] == [{
        "type": "custom_validation_failed", "message": "Custom validation failed for node",
        "details": "value - must be positive", "extra_info": {"input_name": "value"}}]
    assert negative.node_errors["1"]["dependent_outputs"] == ["2"]


def test_custom_validation_with_kwargs_gets_everything_and_fails_once_per_input() -> None:
    """With ``validate_params=None`` (``**kwargs``) it gets all inputs (links as None) and skips all bounds."""
    seen: list[dict[str, Any]] = []

    def validate(inputs: dict[str, Any]) -> bool:
        seen.append(inputs)
        return False

    registry = _with(make_registry(), "Picky", [InputSpec("a", "INT", options={"max": 1}), InputSpec("b", "INT"),
                                                InputSpec("uid", "UNIQUE_ID", "hidden")], [], validate=validate)
    prompt = {"1": {"class_type": "Int", "inputs": {"value": 1}},
              "2": {"class_type": "Picky", "inputs": {"a": "7", "b": ["1", 0], "extra": 3}}}
    result = validate_prompt(prompt, registry)
    assert seen == [{"a": 7, "b": None, "uid": "2"}]  # coerced, link as None, undeclared constant dropped
    assert [e["details"] for e in result.node_errors["2"]["errors"]] == ["a", "b", "uid"]
    assert {e["type"] for e in result.node_errors["2"]["errors"]} == {"custom_validation_failed"}


def test_custom_validation_wanting_input_types_skips_type_checks() -> None:
    """``input_types`` makes ComfyUI skip return_type_mismatch and pass the received types instead."""
    got: list[Any] = []
    registry = _with(make_registry(), "Loose", [InputSpec("x", "IMAGE")], [],
                     validate=lambda inputs: got.append(inputs["input_types"]) or True,
                     validate_params=frozenset({"x"}), validate_wants_input_types=True)
    prompt = {"1": {"class_type": "Int", "inputs": {"value": 1}},
              "2": {"class_type": "Loose", "inputs": {"x": ["1", 0]}}}
    assert validate_prompt(prompt, registry).ok
    assert got == [{"x": "INT"}]


def _raising(inputs: dict[str, Any]) -> bool:
    raise RuntimeError("validator broke")


def test_exception_in_upstream_validation_is_attached_to_the_source() -> None:
    """An upstream VALIDATE_INPUTS that raises gives the *source* an exception_during_inner_validation."""
    registry = _with(make_registry(), "Broken", [InputSpec("value", "INT")], ["INT"], validate=_raising,
                     validate_params=frozenset({"value"}), output_node=False)
    prompt = {"1": {"class_type": "Broken", "inputs": {"value": 1}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    assert not result.ok
    (entry,) = result.node_errors["1"]["errors"]
    assert entry["type"] == "exception_during_inner_validation"
    assert entry["message"] == "Exception when validating inner node"
    assert entry["details"] == "validator broke"
    info = entry["extra_info"]
    assert list(info) == [
        "input_name", "input_config", "exception_message", "exception_type", "traceback", "linked_node"]
    assert info["input_name"] == "value" and info["input_config"] == ["*", {}] and info["linked_node"] == ["1", 0]
    assert info["exception_type"] == "RuntimeError" and info["traceback"]
    assert "2" not in result.node_errors  # invalid only because of its source


def test_exception_in_output_validation_is_exception_during_validation() -> None:
    """The same failure on an output node itself is reported as exception_during_validation."""
    registry = _with(make_registry(), "BrokenOut", [InputSpec("value", "INT")], [], validate=_raising,
                     validate_params=frozenset({"value"}))
    result = validate_prompt({"1": {"class_type": "BrokenOut", "inputs": {"value": 1}}}, registry)
    (entry,) = result.node_errors["1"]["errors"]
    assert entry["type"] == "exception_during_validation"
    assert entry["extra_info"]["exception_type"] == "RuntimeError"
    assert result.error["details"] == "Exception when validating node: validator broke"


@pytest.mark.parametrize(("received", "expected", "ok"), [
    ("IMAGE", "IMAGE", True), ("IMAGE", "MASK", False), ("*", "MASK", True), ("MASK", "*", True),
    ("INT,FLOAT", "FLOAT", True), ("INT, FLOAT", "STRING,FLOAT ", True), ("INT,*", "MODEL", True),
    ("INT,FLOAT", "STRING", False), (["a", "b"], "COMBO", True), (["a", "b"], ["a", "b"], True),
    ("STRING", ["a", "b"], False), ("COMFY_MATCHTYPE_V3", "LATENT", True), (1, "INT", False),
])
def test_type_matching(received: Any, expected: Any, ok: bool) -> None:
    """PROTOCOL.md 2.4: equality, "*", MatchType, combo lists, comma-separated unions."""
    assert types_match(received, expected) is ok


def test_boolean_coercion_is_pythons() -> None:
    """ComfyUI converts with ``bool(v)``, so the string "false" is True; the coerced prompt shows it."""
    registry = _with(make_registry(), "Flag", [InputSpec("on", "BOOLEAN")], [])
    result = validate_prompt({"1": {"class_type": "Flag", "inputs": {"on": "false"}}}, registry)
    assert result.ok and result.prompt["1"]["inputs"]["on"] is True


def test_ten_thousand_node_chain_validates() -> None:
    """No recursion: a 10,000-node chain validates, and an error at its far end reaches the output."""
    prompt = chain(10_000)
    assert validate_prompt(prompt, make_registry()).ok
    prompt["1"]["inputs"]["value"] = 5000
    result = validate_prompt(prompt, make_registry())
    assert not result.ok and list(result.node_errors) == ["1"]
    assert result.node_errors["1"]["dependent_outputs"] == ["10000"]


def test_long_cycle_is_reported_without_recursion() -> None:
    """A 5,000-node ring behind an output gives each ring node the cycle error, iteratively."""
    prompt = chain(5_000)
    prompt["1"] = {"class_type": "Add", "inputs": {"a": ["4999", 0]}}
    result = validate_prompt(prompt, make_registry())
    assert not result.ok
    assert len(result.node_errors) == 4_999
    assert {e["extra_info"]["exception_type"] for n in result.node_errors.values() for e in n["errors"]} == {
        "graph.DependencyCycleError"}


@pytest.mark.parametrize("prompt", [
    None, 3, "text", [], {"1": None}, {"1": {"class_type": ["x"]}}, {"1": {"class_type": "Show", "inputs": 5}},
    {"1": {"class_type": "Show", "inputs": {"value": [None, None]}}},
    {"1": {"class_type": "Show", "inputs": {"value": ["1", "0"]}}},
    {"1": {"class_type": "Int", "inputs": {"value": {"__value__": [1]}}}, "2": {"class_type": "Show", "inputs": {}}},
])
def test_odd_input_never_raises(prompt: Any) -> None:
    """Whatever arrives, validation answers with a result (a 400 body), never an exception."""
    result = validate_prompt(prompt, make_registry())
    assert not result.ok
    assert set(result.response_body()) == {"error", "node_errors"}
    assert result.error is not None and set(result.error) == {"type", "message", "details", "extra_info"}


def test_dependent_outputs_lists_each_output_that_reached_the_node() -> None:
    """Two outputs failing through one bad node name both; an unrelated failure does not."""
    prompt = {
        "1": {"class_type": "Int", "inputs": {"value": 5000}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        "4": {"class_type": "Int", "inputs": {"value": -5000}},
        "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}},
    }
    result = validate_prompt(prompt, make_registry())
    assert result.node_errors["1"]["dependent_outputs"] == ["2", "3"]
    assert result.node_errors["4"]["dependent_outputs"] == ["5"]
    assert result.error["details"] == ""
