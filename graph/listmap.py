"""List semantics of node calls (PROTOCOL.md section 5.4).

Inside the engine every input value is a *list* (a batch of calls): a constant is
``[value]``, a link is the list the upstream node stored for that output slot. A node is
called once with the whole lists (``INPUT_IS_LIST``) or once per element of the longest
list, shorter lists repeating their last element. Outputs of several calls are collected
per slot (or concatenated for ``OUTPUT_IS_LIST`` slots); ``ui`` dicts are concatenated per
key. Execution, ``IS_CHANGED``, ``VALIDATE_INPUTS`` and ``check_lazy_status`` all go
through this mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def call_count(inputs: Mapping[str, Sequence[Any]], input_is_list: bool) -> int:
    """How many times the node is called: 1 for ``INPUT_IS_LIST`` or no inputs, else the longest list."""
    if input_is_list or not inputs:
        return 1
    return max(len(values) for values in inputs.values())


def call_inputs(inputs: Mapping[str, Sequence[Any]], index: int, input_is_list: bool) -> dict[str, Any]:
    """The keyword inputs of call ``index``: whole lists, or element ``index`` (the last one past the end)."""
    if input_is_list:
        return dict(inputs)
    # Past the end of a shorter list its last element is reused; an empty list gives None.
    return {name: (values[index] if index < len(values) else values[-1]) if values else None
            for name, values in inputs.items()}


def map_calls(fn: Callable[[dict[str, Any]], Any], inputs: Mapping[str, Sequence[Any]],
              input_is_list: bool, before_call: Callable[[], None] | None = None) -> list[Any]:
    """Call ``fn(kwargs)`` over the lists as a node would be called; returns one result per call."""
    results = []
    for index in range(call_count(inputs, input_is_list)):
        if before_call is not None:
            before_call()
        results.append(fn(call_inputs(inputs, index, input_is_list)))
    return results


def merge_outputs(per_call: Sequence[Sequence[Any]], is_list: Sequence[bool]) -> list[list[Any]]:
    """Per-slot output lists from the per-call result tuples.

    A slot flagged as a list output (``OUTPUT_IS_LIST``) concatenates the lists each call
    returned; any other slot collects one value per call. The slot count is that of the
    longest result (missing values are None), at least the declared one.
    """
    if len(per_call) == 1 and len(per_call[0]) == len(is_list) and not any(is_list):
        return [[value] for value in per_call[0]]  # the common case, kept cheap
    slots = max([len(is_list), *(len(r) for r in per_call)]) if per_call else len(is_list)
    merged: list[list[Any]] = []
    for k in range(slots):
        flag = is_list[k] if k < len(is_list) else False
        column: list[Any] = []
        for result in per_call:
            value = result[k] if k < len(result) else None
            if flag and isinstance(value, list | tuple):
                column.extend(value)
            else:
                column.append(value)
        merged.append(column)
    return merged


def merge_ui(per_call: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """One ``ui`` dict from the calls' dicts: each key's lists concatenated (keys of the first one)."""
    uis = [ui for ui in per_call if ui]
    if not uis:
        return None
    if len(uis) == 1:
        return dict(uis[0])
    merged: dict[str, list[Any]] = {}
    for key in uis[0]:
        items: list[Any] = []
        for ui in uis:
            value = ui.get(key, [])
            if isinstance(value, list | tuple):
                items.extend(value)
            else:
                items.append(value)
        merged[key] = items
    return merged
