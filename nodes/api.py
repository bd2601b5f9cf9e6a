"""Declaring a node once, as a typed function.

A node is a plain function whose signature is its schema::

    @node(category="sampling")
    def KSampler(
        model: Model,
        seed: Annotated[int, Seed()],
        steps: Annotated[int, Range(1, 10_000)] = 20,
        sampler_name: Annotated[str, OneOf(SAMPLERS)] = "euler",
        positive: Conditioning = REQUIRED,
        *, ctx: Context,
    ) -> Annotated[Latent, Tooltip("The denoised latent.")]:
        '''Denoises a latent image.'''

How a signature maps onto ComfyUI's node definition (PROTOCOL.md 4):

- ``int``/``float``/``str``/``bool`` are INT/FLOAT/STRING/BOOLEAN widgets; the Python
  default is the widget default. :class:`Range`, :class:`Seed`, :class:`Multiline`,
  :class:`OneOf` (a combo), :class:`Tooltip` and :class:`Input` (any other option:
  ``lazy``, ``force_input``, ``image_upload``...) add options.
- Socket types are ``Annotated`` aliases made by :func:`Socket` (``Model``, ``Latent``
  ... or ``Socket("MY_TYPE")``); ``AnyType`` is ``"*"``.
- ``X | None`` (or ``Input(optional=True)``) puts the input under ``optional``;
  :func:`Hidden` aliases (``HiddenPrompt``, ``ExtraPngInfo``, ``UniqueId``) under ``hidden``.
- ``REQUIRED`` is the default of a required input that follows defaulted ones.
- The return annotation declares the outputs: one type, ``tuple[A, B]``, or a
  ``NamedTuple`` whose field names are the output names; ``list[X]`` marks an
  OUTPUT_IS_LIST slot. ``@node(input_is_list=True)`` (or ``list[X]`` parameters) is INPUT_IS_LIST.
- The docstring is the description; ``IS_CHANGED``, ``VALIDATE_INPUTS`` and
  ``check_lazy_status`` are attached with ``@MyNode.fingerprint``, ``@MyNode.validator``
  and ``@MyNode.lazy_status``.

How a node reaches its services: ``@node`` returns a :class:`NodeDecl`, a
declaration with no state (both are defined in :mod:`nodes.declaration`, which reads the
signature, and re-exported here). ``nodes.registry.build_registry(services)`` calls
``decl.schema(services)`` for each declaration, which binds that registry's
:class:`Services` into the schema's callables: file-list combos read *its* folders and
a function taking ``ctx: Context`` gets ``ctx.services``. Nothing is global, so tests
build a fresh registry per test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from graph.schema import ExecContext

from .folders import Folders

if TYPE_CHECKING:
    from .declaration import NodeDecl, filtered_caller, node, param_names, resolve_awaitable

__all__ = [
    "REQUIRED", "AnyType", "Clip", "ClipVision", "ClipVisionOutput", "Conditioning", "Context", "ControlNet",
    "ExtraPngInfo", "Guider", "Hidden", "HiddenPrompt", "Image", "Input", "Latent", "Mask", "Model", "NodeDecl",
    "Noise", "OneOf", "Output", "Range", "Result", "Sampler", "Seed", "Services", "Sigmas", "Socket", "StyleModel",
    "Tooltip", "UniqueId", "UpscaleModel", "Vae", "files_in", "files_in_input", "filtered_caller", "node",
    "param_names", "resolve_awaitable",
]


@dataclass
class Services:
    """What built-in nodes of one registry share: folders, precision, and the model cache.

    ``models`` is the loaded-model cache (``diffusion.memory.ModelCache``); when not given
    it is created by :meth:`model_cache` on first use, so building a registry never loads
    the model runtime.
    """

    folders: Folders
    precision: str = "auto"
    models: Any = None
    #: ``--compile``: ``off``, ``on`` or ``auto`` (compile only where it wins: CUDA).
    compile: str = "off"
    #: Set once :meth:`preload` has finished (None: never started).
    _preloaded: threading.Event | None = field(default=None, repr=False)

    def model_cache(self) -> Any:
        """The model cache, created on first use."""
        if self.models is None:
            from diffusion.memory import ModelCache

            self.models = ModelCache()
        return self.models

    def compile_backend(self) -> str | None:
        """The torch.compile backend loaded UNets and VAE decoders run through (None: eager).

        When compiling, inductor's artefacts are kept under ``user/cache/torch-compile`` (or
        ``TORCHINDUCTOR_CACHE_DIR``), so a fresh process pays no compile time for a model and
        shape compiled before.
        """
        from diffusion.memory import pick_device
        from diffusion.unet_patches.compute import compile_choice, use_compile_cache

        enabled, _why = compile_choice(self.compile, pick_device())
        if not enabled:
            return None
        use_compile_cache(str(self.folders.user_dir / "cache" / "torch-compile"))
        return "inductor"

    def runtime_choices(self) -> dict[str, Any]:
        """What ``auto`` settings picked on this machine and why (``/system_stats``, ``run --json``)."""
        from diffusion.memory import pick_device
        from diffusion.precision import precision_reason, resolve_precision
        from diffusion.unet_patches.compute import CACHE_ENV, compile_choice

        device = pick_device()
        picked = resolve_precision(self.precision, device)
        enabled, why = compile_choice(self.compile, device)
        import os

        return {
            "device": str(device),
            "precision": {"setting": self.precision, "picked": picked.name, "why": precision_reason(
                self.precision, device)},
            "compile": {"setting": self.compile, "enabled": enabled, "why": why,
                        "cache_dir": os.environ.get(CACHE_ENV) or str(self.folders.user_dir / "cache" /
                                                                      "torch-compile")},
        }

    def start_preload(self, on_done: Callable[[float | None], None] | None = None) -> None:
        """Import the model runtime (torch, diffusers, transformers) in a background thread.

        The built-in nodes import it lazily, so a registry builds in a blink; a server starts
        this at start-up so the first prompt's loader does not pay the ~4 s of imports.
        ``on_done`` gets the seconds it took (None when an import failed: the first prompt
        then imports it again and reports what fails).
        """
        done = self._preloaded = threading.Event()  # before the thread: a prompt now waits for it

        def run() -> None:
            import importlib
            import time

            start = time.perf_counter()
            took: float | None = None
            try:
                for module in ("diffusion.checkpoint", "diffusion.ksampler", "diffusion.vae"):
                    importlib.import_module(module)
                took = time.perf_counter() - start
            except Exception:
                import logging

                logging.getLogger(__name__).exception("preloading the model runtime failed")
            finally:
                done.set()
            if on_done is not None:
                on_done(took)

        threading.Thread(target=run, name="noodlebox-preload", daemon=True).start()

    def wait_for_preload(self) -> None:
        """Block until a :meth:`start_preload` under way has finished.

        diffusers' lazily filled module namespace is not safe to import from two threads at
        once: code that imports the runtime while a preload may run waits here first.
        """
        if self._preloaded is not None:
            self._preloaded.wait()

    def runtime_ready(self) -> bool:
        """True when the model runtime is imported and no preload is still under way."""
        import sys

        if self._preloaded is not None:
            return self._preloaded.is_set()
        return "diffusion.checkpoint" in sys.modules

    def free_models(self) -> int:
        """Drop every loaded model (``/free``); returns how many were dropped (0 if none was ever loaded)."""
        if self.models is None:
            return 0
        return int(self.models.unload())


class Context:
    """What a running node sees: the executor's :class:`ExecContext` plus the registry's services."""

    def __init__(self, exec_ctx: ExecContext, services: Services) -> None:
        self.exec_ctx = exec_ctx
        self.services = services

    @property
    def node_id(self) -> str:
        """The id of the node being run."""
        return self.exec_ctx.node_id

    @property
    def prompt_id(self) -> str:
        """The id of the prompt being run."""
        return self.exec_ctx.prompt_id

    @property
    def folders(self) -> Folders:
        """Shortcut for ``services.folders``."""
        return self.services.folders

    @property
    def extra_data(self) -> Mapping[str, Any]:
        """The prompt's ``extra_data`` (``preview_method``, ``client_id``...); empty if the executor gives none."""
        return getattr(self.exec_ctx, "extra_data", None) or {}

    def progress(self, value: int, total: int, preview: Any | None = None) -> None:
        """Report ``value`` of ``total`` steps; raises ExecutionInterrupted if the run was stopped."""
        self.exec_ctx.progress(value, total, preview)

    def check_interrupted(self) -> None:
        """Raise ExecutionInterrupted if the run was stopped."""
        self.exec_ctx.check_interrupted()


# -- markers used inside Annotated[...] -------------------------------------------------


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default for a required input that comes after inputs with defaults.
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class SocketType:
    """Marker: the input or output is a socket of this type (``MODEL``, ``LATENT``, ``*``...)."""

    name: str


@dataclass(frozen=True)
class HiddenKind:
    """Marker: a hidden input the executor injects (``PROMPT``, ``EXTRA_PNGINFO``, ``UNIQUE_ID``...)."""

    kind: str


def Socket(type_name: str) -> Any:
    """A typed alias for a socket type: ``Model = Socket("MODEL")``, then ``model: Model``."""
    return Annotated[Any, SocketType(type_name)]


def Hidden(kind: str) -> Any:
    """A typed alias for a hidden input: ``prompt: Hidden("PROMPT") = None``."""
    return Annotated[Any, HiddenKind(kind)]


@dataclass(frozen=True)
class Range:
    """Bounds of a number widget: ``min``, ``max``, ``step``, ``round`` (None = not emitted)."""

    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | bool | None = None
    display: str | None = None


@dataclass(frozen=True)
class Seed:
    """An INT seed widget: 0..2**64-1 with the editor's control_after_generate."""

    min: int = 0
    max: int = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class Multiline:
    """A textarea STRING widget; ``dynamic_prompts`` lets the editor expand ``{a|b}``."""

    dynamic_prompts: bool = False


@dataclass(frozen=True)
class ServiceChoices:
    """Combo options computed from a registry's services each time they are asked for."""

    provider: Callable[[Services], Sequence[Any]]


def files_in(key: str) -> ServiceChoices:
    """Combo options = the files of folder ``key`` of the registry: ``OneOf(files_in("checkpoints"))``."""
    return ServiceChoices(lambda services: services.folders.filename_list(key))


def files_in_input(content_types: Sequence[str] = ("image",)) -> ServiceChoices:
    """Combo options = files at the top of the registry's input dir of these MIME kinds (LoadImage's list)."""
    kinds = tuple(content_types)
    return ServiceChoices(lambda services: services.folders.input_files(kinds))


@dataclass(frozen=True)
class OneOf:
    """A combo: a static sequence, a zero-argument callable, or :func:`files_in` choices.

    ``v3=True`` writes it the way ComfyUI's V3 nodes do, ``["COMBO", {"multiselect": false,
    "options": [...]}]``. ``choices=None`` is a ``"COMBO"`` whose options the editor fetches
    itself (a ``remote`` route): ``["COMBO", {...}]`` with no list; give the node a validator for it.
    """

    choices: Sequence[Any] | Callable[[], Sequence[Any]] | ServiceChoices | None
    v3: bool = False


@dataclass(frozen=True)
class Tooltip:
    """Tooltip of an input or output."""

    text: str


_OPTION_NAMES = {"force_input": "forceInput", "raw_link": "rawLink", "dynamic_prompts": "dynamicPrompts"}


class Input:
    """Any other input option: ``Input(optional=True, lazy=True, force_input=True, image_upload=True, ...)``.

    ``optional`` moves the input to the ``optional`` section; every other keyword becomes
    an option of the ``/object_info`` spec (``force_input``/``raw_link``/``dynamic_prompts``
    are spelled ComfyUI's way).
    """

    def __init__(self, *, optional: bool = False, **options: Any) -> None:
        self.optional = optional
        self.options = {_OPTION_NAMES.get(k, k): v for k, v in options.items()}


@dataclass(frozen=True)
class Output:
    """Name and tooltip of an output: ``-> Annotated[Latent, Output("samples", "The result.")]``."""

    name: str | None = None
    tooltip: str | None = None


@dataclass
class Result:
    """What an output node returns: output values plus a ``ui`` dict shown in the editor and history."""

    values: tuple[Any, ...] = ()
    ui: dict[str, list[Any]] | None = None
    expand: dict[str, Any] | None = None

    def __init__(self, *values: Any, ui: dict[str, list[Any]] | None = None, expand: dict[str, Any] | None = None):
        self.values, self.ui, self.expand = values, ui, expand

    def to_comfy(self) -> dict[str, Any]:
        """The ComfyUI-style dict: ``{"ui": ..., "result": (...), "expand": ...}``."""
        out: dict[str, Any] = {"result": self.values}
        if self.ui is not None:
            out["ui"] = self.ui
        if self.expand is not None:
            out["expand"] = self.expand
        return out


Model = Socket("MODEL")
Clip = Socket("CLIP")
Vae = Socket("VAE")
Conditioning = Socket("CONDITIONING")
Latent = Socket("LATENT")
Image = Socket("IMAGE")
Mask = Socket("MASK")
ClipVision = Socket("CLIP_VISION")
ClipVisionOutput = Socket("CLIP_VISION_OUTPUT")
ControlNet = Socket("CONTROL_NET")
StyleModel = Socket("STYLE_MODEL")
UpscaleModel = Socket("UPSCALE_MODEL")
Sigmas = Socket("SIGMAS")
Sampler = Socket("SAMPLER")
Noise = Socket("NOISE")
Guider = Socket("GUIDER")
AnyType = Socket("*")
HiddenPrompt = Hidden("PROMPT")
ExtraPngInfo = Hidden("EXTRA_PNGINFO")
UniqueId = Hidden("UNIQUE_ID")


# -- re-exported from nodes.declaration -------------------------------------------------------

# nodes.declaration imports this vocabulary, so it is imported here on first use (PEP 562)
# rather than at the top: either module can then be imported first without a cycle.
_FROM_DECLARATION = frozenset({"NodeDecl", "filtered_caller", "node", "param_names", "resolve_awaitable"})


def __getattr__(name: str) -> Any:
    """``node``, ``NodeDecl`` and the calling helpers, taken from :mod:`nodes.declaration` when first asked for."""
    if name not in _FROM_DECLARATION:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import declaration

    value = getattr(declaration, name)
    globals()[name] = value
    return value
