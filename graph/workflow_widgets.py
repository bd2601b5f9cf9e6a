"""Which input each entry of a node's ``widgets_values`` belongs to (PROTOCOL.md section 6.4).

The editor builds a node's widgets from its definition, in ``input_order`` (required, then
optional), and saves their values positionally. Some widgets exist only in the editor (the
``control_after_generate`` mode, its combo filter, the image upload button): they take a
slot in ``widgets_values`` but are never sent to the backend, so the layout must reproduce
them to read the other values at the right index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graph.schema import WIDGET_TYPES, InputSpec, NodeSchema

#: INT inputs with these names get a control widget even without ``control_after_generate``.
SEED_NAMES = frozenset({"seed", "noise_seed"})
#: Combo options that make the editor add an upload button widget.
UPLOAD_OPTIONS = ("image_upload", "animated_image_upload", "video_upload", "audio_upload")


@dataclass(frozen=True)
class WidgetSlot:
    """One entry of ``widgets_values``: the input it fills, or a frontend-only widget (``spec`` None)."""

    name: str
    spec: InputSpec | None

    @property
    def serialized(self) -> bool:
        """True if the value is sent to the backend as an input."""
        return self.spec is not None


def has_control_widget(spec: InputSpec) -> bool:
    """True if the editor adds a ``control_after_generate`` widget after this input's widget."""
    option = spec.options.get("control_after_generate")
    if option is False:
        return False
    if option:
        return True
    return spec.type == "INT" and spec.name in SEED_NAMES


def _is_socket_only(spec: InputSpec) -> bool:
    """forceInput (or the deprecated defaultInput on an optional input) removes the widget."""
    if spec.options.get("forceInput"):
        return True
    return spec.section == "optional" and bool(spec.options.get("defaultInput"))


def _is_widget_type(spec: InputSpec) -> bool:
    """True if the input's type would draw a widget, ignoring forceInput."""
    return spec.section != "hidden" and (spec.is_combo or spec.type in WIDGET_TYPES)


def widget_layout(schema: NodeSchema, *, with_force_input: bool = False) -> list[WidgetSlot]:
    """The node's widget slots in ``widgets_values`` order.

    ``with_force_input`` gives the layout of legacy workflows, saved when forceInput inputs
    still had a widget (used to drop their stale values, as the editor does on load).
    """
    required = [s for s in schema.input_specs() if s.section == "required"]
    optional = [s for s in schema.input_specs() if s.section == "optional"]
    layout = _section_layout(required, with_force_input)
    # The editor appends its synthetic ``upload`` input (the button) to the required inputs.
    uploads = [s for s in required + optional if s.is_combo and any(s.options.get(k) for k in UPLOAD_OPTIONS)]
    layout += [WidgetSlot("upload", None) for _ in uploads]
    return layout + _section_layout(optional, with_force_input)


def _section_layout(specs: list[InputSpec], with_force_input: bool) -> list[WidgetSlot]:
    layout: list[WidgetSlot] = []
    for spec in specs:
        if not _is_widget_type(spec) or (_is_socket_only(spec) and not with_force_input):
            continue
        layout.append(WidgetSlot(spec.name, spec))
        if has_control_widget(spec):
            layout.append(WidgetSlot("control_after_generate", None))
            if spec.is_combo:
                layout.append(WidgetSlot("control_filter_list", None))
    return layout


def default_value(spec: InputSpec) -> Any:
    """The value a widget has when ``widgets_values`` does not give one (editor defaults)."""
    options = spec.options
    if "default" in options:
        return options["default"]
    if spec.is_combo:
        choices = spec.current_choices()
        return choices[0] if choices else ""
    if spec.type in ("INT", "FLOAT"):
        return 0
    if spec.type == "STRING":
        return options.get("defaultVal", "")
    if spec.type == "BOOLEAN":
        return False
    return None


def widget_inputs(
    schema: NodeSchema,
    widgets_values: Sequence[Any] | Mapping[str, Any] | None,
    named: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{input name: value}`` for every widget the node sends to the backend.

    Named values (``widgets_values_named``, or a dict ``widgets_values`` written by some
    custom nodes) win; positional values fill the rest; the definition's defaults fill
    whatever is still missing. Values are returned as saved (arrays are not wrapped yet).
    """
    layout = widget_layout(schema)
    positional: dict[str, Any] = {}
    if isinstance(widgets_values, Mapping):
        named = {**widgets_values, **(named or {})}
    elif widgets_values:
        legacy = widget_layout(schema, with_force_input=True)
        # A legacy file saved values for forceInput inputs too: read it with that layout.
        is_legacy = len(legacy) != len(layout) and len(widgets_values) == len(legacy)
        for slot, value in zip(legacy if is_legacy else layout, widgets_values, strict=False):
            if slot.spec is not None and not _is_socket_only(slot.spec):
                positional[slot.name] = value
    result: dict[str, Any] = {}
    for slot in layout:
        if slot.spec is None:
            continue
        if named is not None and slot.name in named:
            result[slot.name] = named[slot.name]
        elif slot.name in positional:
            result[slot.name] = positional[slot.name]
        else:
            result[slot.name] = default_value(slot.spec)
    return result
