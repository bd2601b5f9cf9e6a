"""The API-format prompt: ``{node_id: {"class_type", "inputs", "_meta"?}}`` (PROTOCOL.md section 2.1).

This module only knows the *shape* of a prompt. Whether a node's inputs make sense for its
class is ``graph.validate``'s business, which works on the plain dict that
:func:`parse_prompt` returns.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel


class PromptFormatError(ValueError):
    """The data is not an API prompt at all (the message is one line, fit for a user)."""


class NodeMeta(BaseModel):
    """The optional ``_meta`` of a node call; the backend ignores it, the editor shows the title."""

    model_config = ConfigDict(extra="allow")

    title: str | None = None


class NodeCall(BaseModel):
    """One node of a prompt: its class, its inputs (constants or links) and optional metadata.

    Unknown keys are kept, so a prompt read and written again is unchanged.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    class_type: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    meta: NodeMeta | None = Field(default=None, alias="_meta")

    def links(self) -> dict[str, tuple[str, int]]:
        """The inputs that are links, as ``{input name: (source node id, output index)}``."""
        return {name: (value[0], int(value[1])) for name, value in self.inputs.items() if is_link(value)}


class Prompt(RootModel[dict[str, NodeCall]]):
    """A whole API prompt: node id -> :class:`NodeCall`."""

    def to_dict(self) -> dict[str, Any]:
        """The prompt as plain JSON data (``_meta`` only where it was given)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def is_link(value: Any) -> bool:
    """ComfyUI's link rule: a 2-item list whose first item is a str and second an int or float.

    ``[5, 0]`` (numeric node id) is *not* a link, and neither is a tuple: prompts are JSON.
    Like ComfyUI (where ``bool`` is an ``int``), ``["a", true]`` counts as a link.
    """
    if not isinstance(value, list) or len(value) != 2:
        return False
    return isinstance(value[0], str) and isinstance(value[1], int | float)


def parse_prompt(data: Any) -> dict[str, Any]:
    """Return ``data`` as an API prompt dict, accepting a JSON text or an already-parsed object.

    Lenient on purpose: nodes are not checked here (validation reports those per node, with
    ComfyUI's error shapes). Only something that cannot be a prompt at all raises
    :class:`PromptFormatError`.
    """
    if isinstance(data, str | bytes | bytearray):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise PromptFormatError(
                f"prompt is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    if not isinstance(data, dict):
        raise PromptFormatError(f"a prompt must be a JSON object of nodes, not {_json_kind(data)}")
    return {str(node_id): node for node_id, node in data.items()}


def _json_kind(value: Any) -> str:
    """A short English name of a JSON value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
