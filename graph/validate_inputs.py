"""The checks of one node's inputs (PROTOCOL.md sections 2.3-2.5), with ComfyUI's exact error entries.

:func:`check_node` looks at one node alone: presence, link shape and type, constant
coercion, min/max, combo options and the node's own ``VALIDATE_INPUTS``. It returns the
node's own errors and the links whose sources must be valid too; walking the graph is
``graph.validate``'s job.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graph.listmap import map_calls
from graph.prompt import is_link
from graph.schema import ExecutionBlocker, InputSpec, NodeSchema

#: Constant types that validation converts in place, with the converter ComfyUI applies.
COERCE = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}

#: A combo longer than this is not echoed back in a ``value_not_in_list`` error.
MAX_LISTED_OPTIONS = 20


def error_entry(type_: str, message: str, details: str, extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ComfyUI error object: ``{"type", "message", "details", "extra_info"}``."""
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}}


def full_type_name(exc_type: type) -> str:
    """An exception class's name as ComfyUI prints it: ``module.Qualname``, bare for builtins."""
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


def exception_entry(type_: str, message: str, exc: BaseException, extra: Mapping[str, Any] | None = None) -> dict:
    """An error entry for an exception raised while validating (with its type and traceback)."""
    info: dict[str, Any] = dict(extra or {})
    if type_ == "exception_during_inner_validation":
        info["exception_message"] = str(exc)
    info["exception_type"] = full_type_name(type(exc))
    info["traceback"] = traceback.format_tb(exc.__traceback__)
    return error_entry(type_, message, str(exc), info)


def types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's non-strict ``validate_node_input``: may an output of type ``received`` feed ``expected``?"""
    if not (received != expected):  # noqa: SIM202  # a str subclass may define __ne__ (the "any type" hack)
        return True
    if "*" in (received, expected) or "COMFY_MATCHTYPE_V3" in (received, expected):
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not (isinstance(received, str) and isinstance(expected, str)):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def input_type(spec: InputSpec) -> Any:
    """The input's type as ComfyUI's checks see it: a legacy combo's type is its list of options."""
    if spec.is_combo and spec.legacy_combo:
        return spec.current_choices()
    return spec.type


def input_config(spec: InputSpec) -> list[Any]:
    """``[input_type, extra_info]``, the spec pair ComfyUI echoes in ``extra_info.input_config``."""
    config = spec.config()
    return [config[0], config[1] if len(config) > 1 else {}]


@dataclass
class NodeCheck:
    """What checking one node alone found."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    #: Links that passed the shape and type checks: (input name, input spec, link value, source id).
    sources: list[tuple[str, InputSpec, list[Any], str]] = field(default_factory=list)


def check_node(node_id: str, inputs: dict[str, Any], schema: NodeSchema, prompt: Mapping[str, Any],
               schemas: Mapping[str, NodeSchema]) -> NodeCheck:
    """Check one node's inputs, converting constants in ``inputs`` in place (ComfyUI order and strings).

    ``schemas`` maps every node id of ``prompt`` to its (known) schema. Raises only if a
    node's own ``VALIDATE_INPUTS`` raises or a comparison is impossible; the caller turns that
    into an ``exception_during_*`` entry.
    """
    check = NodeCheck()
    behaviour = schema.behaviour
    custom_params = (behaviour.validate_params or frozenset()) if behaviour.validate else frozenset()
    custom_takes_all = behaviour.validate is not None and behaviour.validate_params is None
    wants_types = behaviour.validate is not None and behaviour.validate_wants_input_types
    received_types: dict[str, Any] = {}
    specs = schema.input_specs()
    for spec in specs:
        if spec.section == "hidden":
            continue
        name = spec.name
        if name not in inputs:
            if spec.section == "required":
                check.errors.append(error_entry("required_input_missing", "Required input is missing", name,
                                                {"input_name": name}))
            continue
        value = inputs[name]
        if isinstance(value, list):
            _check_link(node_id, name, value, spec, prompt, schemas, wants_types, received_types, check)
            continue
        error = _check_constant(name, value, spec, inputs, skip_bounds=custom_takes_all or name in custom_params)
        if error is not None:
            check.errors.append(error)
    if behaviour.validate is not None:
        check.errors.extend(_custom_validation(node_id, inputs, schema, prompt, received_types))
    return check


def _check_link(node_id: str, name: str, value: list[Any], spec: InputSpec, prompt: Mapping[str, Any],
                schemas: Mapping[str, NodeSchema], wants_types: bool, received_types: dict[str, Any],
                check: NodeCheck) -> None:
    """Shape, target and type checks of a linked input; a good link is queued in ``check.sources``."""
    if len(value) != 2:
        check.errors.append(error_entry(
            "bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]", name,
            {"input_name": name, "input_config": input_config(spec), "received_value": value}))
        return
    source, slot = value
    if not isinstance(source, str) or source not in prompt:
        # ComfyUI fails here with a bare KeyError; we say which link dangles, on the node holding it.
        check.errors.append(error_entry(
            "exception_during_validation", "Exception when validating node",
            f"input '{name}' of node '{node_id}' links to node {source!r}, which is not in the prompt",
            {"exception_type": "KeyError", "traceback": [], "input_name": name, "linked_node": value}))
        return
    source_schema = schemas[source]
    try:
        received = source_schema.output_types[slot]
    except (IndexError, TypeError):
        check.errors.append(error_entry(
            "exception_during_validation", "Exception when validating node",
            f"input '{name}' of node '{node_id}' links to output {slot!r} of node '{source}' "
            f"({source_schema.name}), which has {len(source_schema.outputs)} output(s)",
            {"exception_type": "IndexError", "traceback": [], "input_name": name, "linked_node": value}))
        return
    received_types[name] = received
    expected = input_type(spec)
    if not wants_types and not types_match(received, expected):
        check.errors.append(error_entry(
            "return_type_mismatch", "Return type mismatch between linked nodes",
            f"{name}, received_type({received}) mismatch input_type({expected})",
            {"input_name": name, "input_config": input_config(spec), "received_type": received,
             "linked_node": value}))
        return
    check.sources.append((name, spec, value, source))


def _check_constant(name: str, value: Any, spec: InputSpec, inputs: dict[str, Any],
                    skip_bounds: bool) -> dict[str, Any] | None:
    """Unwrap, convert and range/combo-check one constant; the first error found, or None."""
    expected = spec.type if not spec.is_combo else input_type(spec)
    try:
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
            inputs[name] = value
        convert = COERCE.get(expected) if isinstance(expected, str) else None
        if convert is not None:
            value = convert(value)
            inputs[name] = value
    except Exception as exc:
        return error_entry("invalid_input_type", f"Failed to convert an input value to a {expected} value",
                           f"{name}, {value}, {exc}",
                           {"input_name": name, "input_config": input_config(spec), "received_value": value,
                            "exception_message": str(exc)})
    if skip_bounds:
        return None
    options = spec.options
    if "min" in options and value < options["min"]:
        return error_entry("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}", name,
                           {"input_name": name, "input_config": input_config(spec), "received_value": value})
    if "max" in options and value > options["max"]:
        return error_entry("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}", name,
                           {"input_name": name, "input_config": input_config(spec), "received_value": value})
    if spec.is_combo:
        choices = spec.current_choices()
        if value not in choices:
            listed: list[Any] | None = input_config(spec)
            if len(choices) > MAX_LISTED_OPTIONS:
                about, listed = f"(list of length {len(choices)})", None
            else:
                about = str(choices)
            return error_entry("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {about}",
                               {"input_name": name, "input_config": listed, "received_value": value})
    return None


def _custom_validation(node_id: str, inputs: Mapping[str, Any], schema: NodeSchema, prompt: Mapping[str, Any],
                       received_types: dict[str, Any]) -> list[dict[str, Any]]:
    """Call the node's VALIDATE_INPUTS (list-mapped) and report each failure once per input passed."""
    behaviour = schema.behaviour
    assert behaviour.validate is not None
    declared = {spec.name: spec for spec in schema.input_specs()}
    data: dict[str, list[Any]] = {}
    for name, value in inputs.items():
        spec = declared.get(name)
        if is_link(value):
            data[name] = [None]  # links are not evaluated at validation time
        elif spec is not None:
            data[name] = [value]
    for spec in declared.values():
        if spec.section == "hidden":
            data[spec.name] = [{"PROMPT": prompt, "UNIQUE_ID": node_id}.get(spec.type)]
    params = behaviour.validate_params
    passed = {name: values for name, values in data.items() if params is None or name in params}
    if behaviour.validate_wants_input_types:
        passed["input_types"] = [received_types]
    results = map_calls(behaviour.validate, passed, schema.input_is_list)
    errors = []
    for name in passed:
        for result in results:
            if result is True or isinstance(result, ExecutionBlocker):
                continue
            details = name if result is False else f"{name} - {result}"
            errors.append(error_entry("custom_validation_failed", "Custom validation failed for node", details,
                                      {"input_name": name}))
    return errors
