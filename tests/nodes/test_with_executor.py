"""The compat pack and the pure nodes run through the real validator and executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

PACKS = Path(__file__).resolve().parents[1] / "data" / "custom_nodes"


@pytest.fixture
def registry(tmp_path: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(tmp_path)), custom_nodes_dirs=[PACKS])


def run(registry: NodeRegistry, executor: Executor, prompt: dict) -> tuple[dict, list[str]]:
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    events: list[tuple[str, dict]] = []
    result = executor.run(checked.prompt, "p", checked.outputs, sink=lambda e, d: events.append((e, d)))
    assert result.status == "success", result.error
    return result.outputs, result.executed


def test_custom_pack_lists_lazy_and_async_nodes_run(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "SplitWords", "inputs": {"text": "x y z"}},            # OUTPUT_IS_LIST words
        "2": {"class_type": "AsyncEcho", "inputs": {"text": ["1", 0]}},             # mapped once per word
        "3": {"class_type": "JoinStrings", "inputs": {"strings": ["2", 0], "separator": "+"}},  # INPUT_IS_LIST
        "4": {"class_type": "StringRepeat", "inputs": {"text": "never", "times": 1}},
        "5": {"class_type": "LazySwitch", "inputs": {"switch": True, "on_true": ["3", 0], "on_false": ["4", 0]}},
        "6": {"class_type": "ShowText", "inputs": {"text": ["5", 0]}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
    }
    executor = Executor(registry)
    outputs, executed = run(registry, executor, prompt)
    assert outputs["6"] == {"text": ["X+Y+Z"]}
    assert outputs["7"] == {"text": ["3"]}
    assert "4" not in executed  # the lazy branch not chosen never ran
    _, again = run(registry, executor, prompt)
    assert again == []  # unchanged prompt: everything cached


def test_validate_inputs_and_is_changed_through_the_engine(registry: NodeRegistry) -> None:
    odd = {"1": {"class_type": "EvenNumber", "inputs": {"value": 3, "label": "x"}},
           "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    checked = validate_prompt(odd, registry)
    assert not checked.ok
    error = checked.node_errors["1"]["errors"][0]
    assert error["type"] == "custom_validation_failed" and "3 is odd" in error["details"]

    executor = Executor(registry)
    even = {"1": {"class_type": "EvenNumber", "inputs": {"value": 4, "label": "x"}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    outputs, executed = run(registry, executor, even)
    assert outputs["2"] == {"text": ["4"]} and executed == ["1", "2"]
    assert run(registry, executor, even)[1] == []  # same IS_CHANGED value: cached

    clock = {"1": {"class_type": "Clock", "inputs": {"label": "x"}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    first, _ = run(registry, executor, clock)
    second, executed = run(registry, executor, clock)
    assert executed == ["1", "2"]  # IS_CHANGED is NaN: runs every time
    assert int(second["2"]["text"][0]) == int(first["2"]["text"][0]) + 1


def test_pure_nodes_chain(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 6}},
        "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 4, "op": "mul"}},
        "3": {"class_type": "PrimitiveString", "inputs": {"value": "n="}},
        "4": {"class_type": "StringConcatenate", "inputs": {"string_a": ["3", 0], "string_b": "x", "delimiter": ""}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }
    executor = Executor(registry)
    outputs, _ = run(registry, executor, prompt)
    assert outputs == {"5": {"text": ["24"]}, "6": {"text": ["n=x"]}}
    prompt["2"]["inputs"]["op"] = "add"
    outputs, executed = run(registry, executor, prompt)
    assert outputs["5"] == {"text": ["10"]} and executed == ["2", "5"]


def test_math_error_is_an_execution_error(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 0, "op": "div"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result = Executor(registry).run(prompt, "p")
    assert result.status == "error"
    assert "division by zero" in result.error["exception_message"]
