"""ComfyUI's ``comfy_api.latest.io``: the V3 node schema.

A V3 node is a :class:`ComfyNode` subclass with a ``define_schema()`` classmethod giving
a :class:`Schema` (id, display name, category, inputs, outputs, hidden inputs, flags)
and an ``execute(**inputs)`` classmethod returning a :class:`NodeOutput`. Input and
output types are classes with nested ``Input``/``Output`` (``io.Int.Input("steps",
default=20, min=1)``); :func:`Custom` makes one for any type name. ``v3.to_v1_class``
turns such a node into the class form the loader reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, ClassVar

from ... import missing

__getattr__ = missing("comfy_api.latest.io")


class FolderType(StrEnum):
    """Where a saved file lives."""

    input = "input"
    output = "output"
    temp = "temp"


class Hidden(StrEnum):
    """Hidden inputs a node may ask for; ``cls.hidden.<name>`` holds them while ``execute`` runs."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """The hidden values of one call: ``unique_id``, ``prompt``, ``extra_pnginfo``... (None when absent)."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        for hidden in Hidden:
            setattr(self, hidden.name, (values or {}).get(hidden.name))


_OPTION_NAMES = {"force_input": "forceInput", "dynamic_prompts": "dynamicPrompts", "display_mode": "display"}


class Input:
    """One input: its id, type and ``/object_info`` options."""

    io_type: ClassVar[str] = "*"

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, extra_dict: dict[str, Any] | None = None, **options: Any) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.options: dict[str, Any] = {}
        for key, value in {"tooltip": tooltip, "lazy": lazy, **options}.items():
            if value is not None:
                self.options[_OPTION_NAMES.get(key, key)] = value
        if display_name is not None:
            self.options["display_name"] = display_name
        self.options.update(extra_dict or {})

    def entry(self) -> tuple[Any, dict[str, Any]]:
        """The ``INPUT_TYPES`` entry: ``(type, options)``."""
        return (self.io_type, dict(self.options))


@dataclass
class Output:
    """One output: its id, display name, tooltip and whether it is a list."""

    id: str | None = None
    display_name: str | None = None
    tooltip: str | None = None
    is_output_list: bool = False
    io_type: str = "*"

    @property
    def name(self) -> str:
        """The output's name (display name, else id, else type)."""
        return self.display_name or self.id or self.io_type


class ComfyType:
    """A socket type: ``Input``/``Output`` nested classes carry its ``io_type``."""

    io_type: ClassVar[str] = "*"
    Input: ClassVar[type[Input]]
    Output: ClassVar[type[Output]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        io_type = cls.io_type
        if "Input" not in cls.__dict__:
            cls.Input = type("Input", (Input,), {"io_type": io_type, "__qualname__": f"{cls.__name__}.Input"})
        if "Output" not in cls.__dict__:

            def output_init(self: Output, id: str | None = None, display_name: str | None = None,
                            tooltip: str | None = None, is_output_list: bool = False) -> None:
                Output.__init__(self, id, display_name, tooltip, is_output_list, io_type)

            cls.Output = type("Output", (Output,), {"__init__": output_init, "__qualname__": f"{cls.__name__}.Output"})


def Custom(io_type: str) -> type[ComfyType]:
    """A socket type class for the type name ``io_type``."""
    return type(io_type, (ComfyType,), {"io_type": io_type})


class _NumberInput(Input):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: Any = None, min: Any = None, max: Any = None, step: Any = None,
                 display_mode: Any = None, **options: Any) -> None:
        mode = getattr(display_mode, "value", display_mode)
        super().__init__(id, display_name, optional, tooltip, lazy, default=default, min=min, max=max, step=step,
                         display_mode=mode, **options)


class Int(ComfyType):
    """INT: ``Int.Input(id, default=, min=, max=, step=, control_after_generate=)``."""

    io_type = "INT"

    class Input(_NumberInput):
        io_type = "INT"


class Float(ComfyType):
    """FLOAT: ``Float.Input(id, default=, min=, max=, step=, round=)``."""

    io_type = "FLOAT"

    class Input(_NumberInput):
        io_type = "FLOAT"


class String(ComfyType):
    """STRING: ``String.Input(id, default=, multiline=, placeholder=, dynamic_prompts=)``."""

    io_type = "STRING"


class Boolean(ComfyType):
    """BOOLEAN: ``Boolean.Input(id, default=, label_on=, label_off=)``."""

    io_type = "BOOLEAN"


class Combo(ComfyType):
    """A combo: ``Combo.Input(id, options=[...], default=)``."""

    io_type = "COMBO"

    class Input(Input):
        io_type = "COMBO"

        def __init__(self, id: str, options: Any = None, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: Any = None, **kwargs: Any) -> None:
            if isinstance(options, type) and issubclass(options, Enum):
                options = [member.value for member in options]
            self.choices = list(options or [])
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default=default, **kwargs)

        def entry(self) -> tuple[Any, dict[str, Any]]:
            """A classic combo entry: ``([choices], options)``."""
            return (self.choices, dict(self.options))


class MultiType:
    """An input that accepts several types: ``MultiType.Input(id_or_input, types=[io.Int, ...])``."""

    class Input(Input):
        def __init__(self, id: str | Input, types: list[Any], display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, **kwargs: Any) -> None:
            base = id if isinstance(id, Input) else None
            names = [getattr(t, "io_type", t) for t in types]
            if base is not None:
                names.insert(0, base.io_type)
            self.io_type = ",".join(dict.fromkeys(names))  # type: ignore[misc]
            super().__init__(base.id if base is not None else id, display_name, optional, tooltip, **kwargs)
            if base is not None:
                self.options = {**base.options, **self.options}


class AnyType(ComfyType):
    """Any type (``*``)."""

    io_type = "*"


class MatchType:
    """Inputs and outputs that share one type chosen at run time; served as ``*``."""

    class Template:
        """A named type template."""

        def __init__(self, template_id: str, allowed_types: Any = None) -> None:
            self.template_id = template_id

    class Input(Input):
        io_type = "*"

        def __init__(self, id: str, template: Any = None, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, **kwargs: Any) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, **kwargs)

    class Output(Output):
        def __init__(self, template: Any = None, id: str | None = None, display_name: str | None = None,
                     tooltip: str | None = None, is_output_list: bool = False) -> None:
            super().__init__(id, display_name, tooltip, is_output_list, "*")


_SOCKETS = {
    "Image": "IMAGE", "Mask": "MASK", "Latent": "LATENT", "Conditioning": "CONDITIONING", "Sampler": "SAMPLER",
    "Sigmas": "SIGMAS", "Noise": "NOISE", "Guider": "GUIDER", "Clip": "CLIP", "ControlNet": "CONTROL_NET",
    "Vae": "VAE", "Model": "MODEL", "ClipVision": "CLIP_VISION", "ClipVisionOutput": "CLIP_VISION_OUTPUT",
    "StyleModel": "STYLE_MODEL", "UpscaleModel": "UPSCALE_MODEL", "Audio": "AUDIO", "Video": "VIDEO",
    "BBOX": "BBOX", "SEGS": "SEGS", "Webcam": "WEBCAM", "Point": "POINT",
}
for _name, _type in _SOCKETS.items():
    globals()[_name] = type(_name, (ComfyType,), {"io_type": _type, "__module__": __name__,
                                                  "__doc__": f"The {_type} socket type."})
Image: type[ComfyType]
Mask: type[ComfyType]
Latent: type[ComfyType]
Conditioning: type[ComfyType]
Model: type[ComfyType]
Clip: type[ComfyType]
Vae: type[ComfyType]


class NodeOutput:
    """What ``execute`` returns: the output values, plus optional ``ui``, ``expand`` and ``block_execution``."""

    def __init__(self, *args: Any, ui: Any = None, expand: Any = None, block_execution: str | None = None) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        """The output values (None when there are none)."""
        return self.args or None


@dataclass
class Schema:
    """A V3 node's definition."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    search_aliases: list[str] = field(default_factory=list)
    enable_expand: bool = False
    price_badge: Any = None


class ComfyNode:
    """Base of V3 nodes: override ``define_schema`` and ``execute`` (and optionally ``fingerprint_inputs``,
    ``validate_inputs``, ``check_lazy_status``), all classmethods."""

    hidden: ClassVar[HiddenHolder] = HiddenHolder()

    @classmethod
    def define_schema(cls) -> Schema:
        """The node's schema."""
        raise NotImplementedError(f"{cls.__name__} must define define_schema()")

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        """Run the node."""
        raise NotImplementedError(f"{cls.__name__} must define execute()")

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        """The schema (ComfyUI's spelling)."""
        return cls.define_schema()
