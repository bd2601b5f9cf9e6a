"""The pure nodes: their ComfyUI-facing definitions and what they compute."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from nodes.api import Services
from nodes.folders import Folders
from nodes.object_info import node_info
from nodes.primitives import MATH_OPS, preview_text
from nodes.registry import NodeRegistry, build_registry


class StubContext:
    """The executor's ExecContext; pure nodes never use it."""

    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        pass

    def check_interrupted(self) -> None:
        pass


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    return build_registry(Services(folders=Folders(tmp_path_factory.mktemp("base"))))


def run(registry: NodeRegistry, name: str, **inputs: Any) -> Any:
    b = registry[name].behaviour
    return b.execute(b.new_instance(), StubContext(), inputs)


def test_primitive_definitions(registry: NodeRegistry) -> None:
    expected = {
        "PrimitiveInt": ("Int", ["INT", {"min": -sys.maxsize, "max": sys.maxsize, "control_after_generate": True}]),
        "PrimitiveFloat": ("Float", ["FLOAT", {"min": -sys.maxsize, "max": sys.maxsize}]),
        "PrimitiveString": ("String", ["STRING", {"multiline": False}]),
        "PrimitiveStringMultiline": ("String (Multiline)", ["STRING", {"multiline": True}]),
        "PrimitiveBoolean": ("Boolean", ["BOOLEAN"]),
    }
    for name, (display, spec) in expected.items():
        info = node_info(registry[name])
        assert info["display_name"] == display and info["category"] == "utils/primitive"
        assert info["input"] == {"required": {"value": spec}}
        assert info["output"] == [spec[0]]
        assert info["description"]
    assert run(registry, "PrimitiveInt", value=5) == (5,)
    assert run(registry, "PrimitiveBoolean", value=False) == (False,)


def test_string_concatenate(registry: NodeRegistry) -> None:
    info = node_info(registry["StringConcatenate"])
    assert info["input"]["required"] == {"string_a": ["STRING", {"multiline": True}],
                                         "string_b": ["STRING", {"multiline": True}],
                                         "delimiter": ["STRING", {"default": "", "multiline": False}]}
    assert info["display_name"] == "Concatenate" and info["category"] == "utils/string"
    assert run(registry, "StringConcatenate", string_a="a", string_b="b", delimiter=", ") == ("a, b",)
    assert run(registry, "StringConcatenate", string_a="a", string_b="b") == ("ab",)


@pytest.mark.parametrize(("op", "a", "b", "want"), [
    ("add", 7, -3, 4), ("sub", 7, 3, 4), ("mul", 7, 3, 21), ("div", 7, 2, 3), ("div", -7, 2, -3),
    ("floordiv", -7, 2, -4), ("mod", -7, 3, 2), ("pow", 2, 10, 1024), ("min", 2, -1, -1), ("max", 2, -1, 2),
    ("div", 10**30 + 1, 3, (10**30 + 1) // 3),
])
def test_int_math(registry: NodeRegistry, op: str, a: int, b: int, want: int) -> None:
    assert run(registry, "IntMath", a=a, b=b, op=op) == (want,)


@pytest.mark.parametrize(("op", "a", "b", "want"), [
    ("add", 0.5, 0.25, 0.75), ("div", 1.0, 4.0, 0.25), ("floordiv", 7.5, 2.0, 3.0), ("pow", 2.0, 0.5, 2**0.5),
    ("mod", 7.5, 2.0, 1.5), ("min", 1.0, 2.0, 1.0),
])
def test_float_math(registry: NodeRegistry, op: str, a: float, b: float, want: float) -> None:
    assert run(registry, "FloatMath", a=a, b=b, op=op) == (pytest.approx(want),)


def test_math_errors_and_combo(registry: NodeRegistry) -> None:
    for name in ("IntMath", "FloatMath"):
        with pytest.raises(ValueError, match="division by zero"):
            run(registry, name, a=1, b=0, op="div")
        assert registry[name].input("op").current_choices() == list(MATH_OPS)
        assert node_info(registry[name])["input"]["required"]["op"] == [list(MATH_OPS), {"default": "add"}]
    with pytest.raises(ValueError, match="too large"):
        run(registry, "IntMath", a=3, b=10**9, op="pow")
    with pytest.raises(ValueError, match="non-negative"):
        run(registry, "IntMath", a=3, b=-1, op="pow")


def test_preview_any(registry: NodeRegistry) -> None:
    info = node_info(registry["PreviewAny"])
    assert info["input"] == {"required": {"source": ["*"]}}
    assert info["output"] == [] and info["output_node"] is True and info["display_name"] == "Preview Any"
    assert run(registry, "PreviewAny", source=3) == {"result": (), "ui": {"text": ["3"]}}
    assert run(registry, "PreviewAny", source={"a": [1, 2]}) == {"result": (), "ui": {"text": ['{"a": [1, 2]}']}}
    assert preview_text(None) == "None" and preview_text("x") == "x" and preview_text(True) == "True"
    assert preview_text(Path("/x")) == "/x"  # not JSON: falls back to str()
