"""What the engine knows of a node type, as plain data.

Validation, the executor and ``/object_info`` work on these objects alone, so
``graph/`` never imports ``nodes/``: a :class:`Registry` of :class:`NodeSchema` is
handed in by whoever builds it (``nodes.registry`` for built-in and custom nodes,
tests for their own toy nodes).

Conventions follow ComfyUI's node definitions (PROTOCOL.md section 4): an input's
``options`` dict is exactly the second element of its ``/object_info`` spec
(``default``, ``min``, ``max``, ``step``, ``round``, ``multiline``, ``tooltip``,
``lazy``, ``forceInput``, ``control_after_generate``, ``image_upload``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Section = Literal["required", "optional", "hidden"]

#: Types whose constants become editor widgets (plus combos).
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})

#: Hidden input kinds the executor knows how to inject.
HIDDEN_KINDS = frozenset(
    {"PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"}
)


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a node type.

    ``type`` is ``INT``/``FLOAT``/``STRING``/``BOOLEAN``/``COMBO``, a socket type such
    as ``MODEL`` or ``"A,B"`` or ``"*"``, or for hidden inputs the kind (``PROMPT``,
    ``UNIQUE_ID``...). ``choices`` holds a combo's options; a zero-argument callable is
    allowed so that file lists (checkpoints, input images) are read when asked for.
    ``legacy_combo`` says whether ``/object_info`` writes the combo as
    ``[[options...], {...}]`` (ComfyUI's classic form, the default) or as
    ``["COMBO", {"options": [...]}]``.
    """

    name: str
    type: str
    section: Section = "required"
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    legacy_combo: bool = True

    @property
    def is_combo(self) -> bool:
        """True for a combo (list of choices) input."""
        return self.type == "COMBO" or self.choices is not None

    @property
    def lazy(self) -> bool:
        """True if the input is only evaluated when ``check_lazy_status`` asks for it."""
        return bool(self.options.get("lazy", False))

    @property
    def is_widget(self) -> bool:
        """True if the editor draws a widget for it (and it takes a slot in widgets_values)."""
        if self.section == "hidden" or self.options.get("forceInput"):
            return False
        return self.is_combo or self.type in WIDGET_TYPES

    def current_choices(self) -> list[Any]:
        """The combo's options now (calls the provider if it is dynamic)."""
        if self.choices is None:
            return list(self.options.get("options", []))
        if callable(self.choices):
            return list(self.choices())
        return list(self.choices)

    def config(self) -> list[Any]:
        """The ``/object_info`` spec of this input: ``[TYPE, options]``."""
        if self.section == "hidden":
            return self.type  # type: ignore[return-value]  # V1 hidden entries are bare strings
        if self.is_combo:
            opts = self.current_choices()
            if self.legacy_combo:
                return [opts, dict(self.options)] if self.options else [opts]
            if self.choices is None and "options" not in self.options:  # a remote combo: the editor lists it
                return ["COMBO", dict(self.options)]
            return ["COMBO", {**self.options, "options": opts}]
        return [self.type, dict(self.options)] if self.options else [self.type]


@dataclass(frozen=True)
class OutputSpec:
    """One output slot: its type, its name, and whether it carries a list (OUTPUT_IS_LIST)."""

    type: str | list[Any]
    name: str
    is_list: bool = False
    tooltip: str | None = None


class ExecContext(Protocol):
    """What a running node may ask of the executor.

    ``progress`` reports a step (and an optional opaque preview object that the
    executor passes through to its event sink); it raises
    :class:`ExecutionInterrupted` when the run was interrupted, so a long loop that
    reports progress stops at the next step. A context may also have an ``extra_data``
    mapping (the prompt's ``extra_data``, e.g. ``preview_method``); nodes read it with
    ``getattr(ctx, "extra_data", {})`` since older contexts lack it.
    """

    node_id: str
    prompt_id: str

    def progress(self, value: int, total: int, preview: Any | None = None) -> None:
        """Report ``value`` of ``total`` steps done; raises ExecutionInterrupted if asked to stop."""

    def check_interrupted(self) -> None:
        """Raise ExecutionInterrupted if the run was interrupted."""


class ExecutionInterrupted(Exception):
    """Raised inside a node when the user interrupted the prompt."""


class ExecutionBlocker:
    """An output value that blocks every consumer (ComfyUI's ExecutionBlocker).

    With a message, the first consumer reports an ``execution_error`` event and the
    prompt goes on; with ``None`` the block is silent.
    """

    def __init__(self, message: str | None) -> None:
        self.message = message


@dataclass(frozen=True)
class NodeBehaviour:
    """The callables behind a node type; all of them take already-coerced inputs.

    - ``new_instance()`` makes the per-node object (cached per (node id, class) across
      prompts, as ComfyUI does for V1 classes); functional nodes return ``None``.
    - ``execute(instance, ctx, inputs)`` runs one call and returns a ComfyUI-style
      result: a tuple of output values, or a dict with ``"ui"``/``"result"``
      (/``"expand"``), or an :class:`ExecutionBlocker`.
    - ``fingerprint(inputs)`` is IS_CHANGED (constant inputs only; links are None).
    - ``validate(inputs)`` is VALIDATE_INPUTS: returns True or an error string.
      ``validate_params`` names the inputs it takes (``None`` = all, as with
      ``**kwargs``); ``validate_wants_input_types`` adds ``input_types``.
    - ``check_lazy(instance, inputs)`` returns the names of lazy inputs still needed.
    """

    execute: Callable[[Any, ExecContext, dict[str, Any]], Any]
    new_instance: Callable[[], Any] = lambda: None
    fingerprint: Callable[[dict[str, Any]], Any] | None = None
    validate: Callable[[dict[str, Any]], Any] | None = None
    validate_params: frozenset[str] | None = None
    validate_wants_input_types: bool = False
    check_lazy: Callable[[Any, dict[str, Any]], Sequence[str]] | None = None


@dataclass(frozen=True)
class NodeSchema:
    """Everything the engine needs to know of one node type."""

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    behaviour: NodeBehaviour
    display_name: str = ""
    category: str = "sd"
    description: str = ""
    output_node: bool = False
    input_is_list: bool = False
    not_idempotent: bool = False
    python_module: str = "nodes"
    deprecated: bool = False
    experimental: bool = False
    #: For classes whose INPUT_TYPES changes at run time: re-reads the inputs.
    dynamic_inputs: Callable[[], tuple[InputSpec, ...]] | None = None

    def input_specs(self) -> tuple[InputSpec, ...]:
        """The declared inputs now (re-read for dynamic V1 classes)."""
        return self.dynamic_inputs() if self.dynamic_inputs is not None else self.inputs

    def input(self, name: str) -> InputSpec | None:
        """The declared input called ``name`` (required, optional or hidden), or None."""
        for spec in self.input_specs():
            if spec.name == name:
                return spec
        return None

    @property
    def output_types(self) -> list[Any]:
        """RETURN_TYPES."""
        return [o.type for o in self.outputs]


class Registry(Mapping[str, NodeSchema]):
    """Node types by class name (``class_type``)."""

    def __init__(self, schemas: Mapping[str, NodeSchema] | None = None) -> None:
        self._schemas: dict[str, NodeSchema] = dict(schemas or {})

    def add(self, schema: NodeSchema) -> None:
        """Register ``schema`` under its name (replacing any earlier one)."""
        self._schemas[schema.name] = schema

    def __getitem__(self, name: str) -> NodeSchema:
        return self._schemas[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._schemas)

    def __len__(self) -> int:
        return len(self._schemas)
