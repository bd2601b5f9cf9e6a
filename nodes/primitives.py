"""Pure nodes: primitive values, strings, arithmetic and PreviewAny (no torch, no files).

Names, inputs and categories follow ComfyUI's core nodes where it has them
(``PrimitiveInt`` ... in ``utils/primitive``, ``StringConcatenate`` in ``utils/string``,
``PreviewAny`` in ``utils``). ``IntMath``/``FloatMath`` are ours: ComfyUI's core has no
arithmetic node.
"""

from __future__ import annotations

import json
import math
import operator
import sys
from collections.abc import Callable
from typing import Annotated, Any

from .api import AnyType, Input, Multiline, OneOf, Range, Result, node

MATH_OPS = ("add", "sub", "mul", "div", "floordiv", "mod", "pow", "min", "max")

# A guard against `pow` results that would take minutes and gigabytes to compute.
_MAX_POW_BITS = 1 << 16


@node(category="utils/primitive", display_name="Int")
def PrimitiveInt(
    value: Annotated[int, Range(-sys.maxsize, sys.maxsize), Input(control_after_generate=True)],
) -> int:
    """An integer constant."""
    return value


@node(category="utils/primitive", display_name="Float")
def PrimitiveFloat(value: Annotated[float, Range(-sys.maxsize, sys.maxsize)]) -> float:
    """A floating-point constant."""
    return value


@node(category="utils/primitive", display_name="String")
def PrimitiveString(value: Annotated[str, Input(multiline=False)]) -> str:
    """A one-line string constant."""
    return value


@node(category="utils/primitive", display_name="String (Multiline)")
def PrimitiveStringMultiline(value: Annotated[str, Multiline()]) -> str:
    """A multi-line string constant."""
    return value


@node(category="utils/primitive", display_name="Boolean")
def PrimitiveBoolean(value: bool) -> bool:
    """A boolean constant."""
    return value


@node(category="utils/string", display_name="Concatenate")
def StringConcatenate(
    string_a: Annotated[str, Multiline()],
    string_b: Annotated[str, Multiline()],
    delimiter: Annotated[str, Input(multiline=False)] = "",
) -> str:
    """Joins two strings with a delimiter between them."""
    return delimiter.join((string_a, string_b))


def _int_div(a: int, b: int) -> int:
    """Division truncated toward zero (C-style), exact for big integers."""
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b >= 0) else -quotient


def _int_pow(a: int, b: int) -> int:
    if b < 0:
        raise ValueError("IntMath pow needs a non-negative exponent")
    if abs(a) > 1 and b * abs(a).bit_length() > _MAX_POW_BITS:
        raise ValueError(f"IntMath pow result too large ({a} ** {b})")
    return int(a**b)


_INT_OPS: dict[str, Callable[[int, int], int]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": _int_div,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": _int_pow, "min": min, "max": max,
}
_FLOAT_OPS: dict[str, Callable[[float, float], float]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": math.pow, "min": min, "max": max,
}


@node(category="utils/math", display_name="Int Math")
def IntMath(
    a: Annotated[int, Range(-sys.maxsize, sys.maxsize)] = 0,
    b: Annotated[int, Range(-sys.maxsize, sys.maxsize)] = 0,
    op: Annotated[str, OneOf(MATH_OPS)] = "add",
) -> int:
    """Integer arithmetic: ``a op b``; ``div`` truncates toward zero, ``floordiv`` rounds down."""
    if b == 0 and op in ("div", "floordiv", "mod"):
        raise ValueError(f"IntMath {op}: division by zero")
    return _INT_OPS[op](a, b)


@node(category="utils/math", display_name="Float Math")
def FloatMath(
    a: Annotated[float, Range(-sys.maxsize, sys.maxsize, step=0.01)] = 0.0,
    b: Annotated[float, Range(-sys.maxsize, sys.maxsize, step=0.01)] = 0.0,
    op: Annotated[str, OneOf(MATH_OPS)] = "add",
) -> float:
    """Floating-point arithmetic: ``a op b``."""
    if b == 0 and op in ("div", "floordiv", "mod"):
        raise ValueError(f"FloatMath {op}: division by zero")
    return float(_FLOAT_OPS[op](a, b))


def preview_text(value: Any) -> str:
    """How PreviewAny shows a value: strings as they are, numbers with str(), the rest as JSON if possible."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return str(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        try:
            return str(value)
        except Exception:
            return "source exists, but could not be serialized."


@node(category="utils", display_name="Preview Any", output_node=True)
def PreviewAny(source: AnyType) -> Result:
    """Shows any value as text in the editor."""
    return Result(ui={"text": [preview_text(source)]})
