"""Small executable node types for executor, cache and validation tests.

Each behaviour is real Python (no mocks): the executor runs them and the tests look at
what ran (``RunResult.executed``) and what came out. ``make_registry()`` returns a fresh
registry, so a test may add to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from graph.schema import ExecutionBlocker, InputSpec, NodeBehaviour, NodeSchema, OutputSpec, Registry


def _in(name: str, type_: str, section: str = "required", **options: Any) -> InputSpec:
    return InputSpec(name, type_, section, options)  # type: ignore[arg-type]


def _schema(name: str, inputs: Sequence[InputSpec], outputs: Sequence[str | OutputSpec],
            execute: Callable[[Any, Any, dict[str, Any]], Any], **kw: Any) -> NodeSchema:
    behaviour_kw = {k: kw.pop(k) for k in list(kw) if k in {
        "new_instance", "fingerprint", "validate", "validate_params", "validate_wants_input_types", "check_lazy"}}
    outs = tuple(o if isinstance(o, OutputSpec) else OutputSpec(o, o) for o in outputs)
    return NodeSchema(name, tuple(inputs), outs, NodeBehaviour(execute, **behaviour_kw), name, **kw)


def _value(instance: Any, ctx: Any, inputs: dict[str, Any]) -> tuple[Any]:
    return (inputs["value"],)


def _add(instance: Any, ctx: Any, inputs: dict[str, Any]) -> tuple[int]:
    return (inputs["a"] + inputs.get("b", 0),)


def _show(instance: Any, ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"ui": {"text": [str(inputs.get("value"))]}, "result": ()}


def _fail(instance: Any, ctx: Any, inputs: dict[str, Any]) -> tuple[int]:
    raise ValueError(f"boom {inputs['a']}")


def _switch(instance: Any, ctx: Any, inputs: dict[str, Any]) -> tuple[Any]:
    return (inputs["on_true"] if inputs["cond"] else inputs["on_false"],)


def _switch_lazy(instance: Any, inputs: dict[str, Any]) -> list[str]:
    wanted = "on_true" if inputs["cond"] else "on_false"
    return [wanted] if inputs.get(wanted) is None else []


def _range(instance: Any, ctx: Any, inputs: dict[str, Any]) -> tuple[list[int]]:
    return (list(range(inputs["count"])),)


def _sum(instance: Any, ctx: Any, inputs: dict[str, Any]) -> tuple[int]:
    return (sum(inputs["values"]),)


def _steps(instance: Any, ctx: Any, inputs: dict[str, Any]) -> tuple[int]:
    for step in range(inputs["steps"]):
        ctx.progress(step + 1, inputs["steps"], preview=f"preview {step + 1}" if inputs.get("previews") else None)
    return (inputs["steps"],)


def _block(instance: Any, ctx: Any, inputs: dict[str, Any]) -> Any:
    return ExecutionBlocker(inputs["message"] or None) if inputs["block"] else (inputs["value"],)


def _unique(instance: Any, ctx: Any, inputs: dict[str, Any]) -> tuple[str]:
    return (f"{inputs['unique_id']}:{type(inputs['prompt']).__name__}:{inputs['extra_pnginfo']}",)


class Counter:
    """A stateful node instance: counts its own calls (instances persist per node id and class)."""

    def __init__(self) -> None:
        self.calls = 0


def _count(instance: Counter, ctx: Any, inputs: dict[str, Any]) -> tuple[int]:
    instance.calls += 1
    return (instance.calls,)


def _positive(inputs: dict[str, Any]) -> Any:
    return True if inputs.get("value") is None or inputs["value"] > 0 else "must be positive"


def make_registry() -> Registry:
    """A fresh registry of the toy node types below."""
    schemas = [
        _schema("Int", [_in("value", "INT", default=0, min=-1000, max=1000)], ["INT"], _value),
        _schema("Text", [_in("value", "STRING", default="")], ["STRING"], _value),
        _schema("Add", [_in("a", "INT"), _in("b", "INT", "optional", default=0)], ["INT"], _add),
        _schema("Show", [_in("value", "*")], [], _show, output_node=True),
        _schema("Fail", [_in("a", "INT")], ["INT"], _fail),
        _schema("Switch", [_in("cond", "BOOLEAN"), _in("on_true", "*", lazy=True), _in("on_false", "*", lazy=True)],
                ["*"], _switch, check_lazy=_switch_lazy),
        _schema("Range", [_in("count", "INT", default=3, min=0)], [OutputSpec("INT", "INT", is_list=True)], _range),
        _schema("Sum", [_in("values", "INT")], ["INT"], _sum, input_is_list=True),
        _schema("Steps", [_in("steps", "INT", default=3), _in("previews", "BOOLEAN", "optional")], ["INT"], _steps),
        _schema("Block", [_in("value", "*"), _in("block", "BOOLEAN"), _in("message", "STRING")], ["*"], _block),
        _schema("Unique", [_in("unique_id", "UNIQUE_ID", "hidden"), _in("prompt", "PROMPT", "hidden"),
                           _in("extra_pnginfo", "EXTRA_PNGINFO", "hidden")], ["STRING"], _unique),
        _schema("Volatile", [_in("value", "INT")], ["INT"], _value, fingerprint=lambda inputs: math.nan),
        _schema("Fingerprinted", [_in("value", "INT"), _in("file", "STRING")], ["INT"], _value,
                fingerprint=lambda inputs: FILES.get(inputs["file"])),
        _schema("Count", [_in("tick", "INT", "optional")], ["INT"], _count, new_instance=Counter),
        _schema("Positive", [_in("value", "INT", min=100)], ["INT"], _value, validate=_positive,
                validate_params=frozenset({"value"})),
        _schema("NotIdempotent", [_in("value", "INT")], ["INT"], _value, not_idempotent=True),
    ]
    return Registry({schema.name: schema for schema in schemas})


#: What the ``Fingerprinted`` node's IS_CHANGED reads: a stand-in for a file's content hash.
FILES: dict[str, str] = {}


def chain(length: int, start: int = 0) -> dict[str, Any]:
    """A prompt: ``Int`` -> ``Add`` x (length - 2) -> ``Show``; node ids "1".."length"."""
    prompt: dict[str, Any] = {"1": {"class_type": "Int", "inputs": {"value": start}}}
    for i in range(2, length):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt[str(length)] = {"class_type": "Show", "inputs": {"value": [str(length - 1), 0]}}
    return prompt
