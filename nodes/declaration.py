"""Reading a node's signature into its ComfyUI schema.

:func:`node` turns a typed function into a :class:`NodeDecl`: each parameter's hint and
default become an :class:`~graph.schema.InputSpec`, the return annotation the
:class:`~graph.schema.OutputSpec` list, and ``NodeDecl.schema(services)`` binds a
registry's :class:`~nodes.api.Services` into the executable :class:`~graph.schema.NodeSchema`.
The vocabulary a signature is written in (``Range``, ``OneOf``, ``Socket``...) lives in
:mod:`nodes.api`, which node authors import; it re-exports :func:`node` and :class:`NodeDecl`.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import NoneType, UnionType
from typing import Annotated, Any

from graph.schema import ExecContext, ExecutionBlocker, InputSpec, NodeBehaviour, NodeSchema, OutputSpec

from .api import (
    REQUIRED,
    Context,
    HiddenKind,
    Input,
    Multiline,
    OneOf,
    Output,
    Range,
    Result,
    Seed,
    ServiceChoices,
    Services,
    SocketType,
    Tooltip,
)

__all__ = ["NodeDecl", "filtered_caller", "node", "param_names", "resolve_awaitable"]

_WIDGETS: dict[Any, str] = {bool: "BOOLEAN", int: "INT", float: "FLOAT", str: "STRING"}
# Emitted in this order, which is ComfyUI's usual one; anything else follows.
_OPTION_ORDER = ("default", "min", "max", "step", "round", "display", "multiline", "dynamicPrompts",
                 "control_after_generate")


# -- reading a signature ---------------------------------------------------------------------


@dataclass
class _Hint:
    """A type hint taken apart: the bare type, its markers, and the list/optional wrappers."""

    base: Any
    metas: list[Any] = field(default_factory=list)
    optional: bool = False
    is_list: bool = False


def _unwrap(hint: Any) -> _Hint:
    out = _Hint(hint)
    while True:
        origin = typing.get_origin(out.base)
        if origin is Annotated:
            out.base, *metas = typing.get_args(out.base)
            out.metas.extend(metas)
        elif origin in (typing.Union, UnionType) and NoneType in typing.get_args(out.base):
            rest = [a for a in typing.get_args(out.base) if a is not NoneType]
            out.base = rest[0] if len(rest) == 1 else Any
            out.optional = True
        elif origin is list and not out.is_list:
            out.base = (typing.get_args(out.base) or (Any,))[0]
            out.is_list = True
        else:
            return out


def _type_name(hint: _Hint, where: str) -> str:
    for meta in reversed(hint.metas):
        if isinstance(meta, SocketType):
            return meta.name
    if hint.base in _WIDGETS:
        return _WIDGETS[hint.base]
    if hint.base is Any:
        return "*"
    raise TypeError(f"{where}: cannot tell the ComfyUI type of {hint.base!r}; use Socket(...) or int/float/str/bool")


@dataclass
class _Param:
    """One declared input: its spec (without bound services) and how to call the function with it."""

    name: str
    spec: InputSpec
    default: Any
    choices: Any = None  # OneOf.choices, bound to services in NodeDecl.schema()


def _input_param(name: str, hint: Any, default: Any, where: str) -> _Param:
    h = _unwrap(hint)
    hidden = next((m for m in h.metas if isinstance(m, HiddenKind)), None)
    if hidden is not None:
        return _Param(name, InputSpec(name, hidden.kind, "hidden"), default)
    options: dict[str, Any] = {}
    optional = h.optional
    combo = next((m for m in h.metas if isinstance(m, OneOf)), None)
    choices: Any = combo.choices if combo is not None else None
    type_name = "COMBO" if combo is not None else _type_name(h, where)
    legacy = combo is None or (choices is not None and not combo.v3)
    if combo is not None and combo.v3:
        options["multiselect"] = False
    if default is not REQUIRED and default is not inspect.Parameter.empty and default is not None:
        options["default"] = default
    for meta in h.metas:
        if isinstance(meta, Range):
            for key in ("min", "max", "step", "round", "display"):
                if getattr(meta, key) is not None:
                    options[key] = getattr(meta, key)
        elif isinstance(meta, Seed):
            options.setdefault("default", 0)
            options.update(min=meta.min, max=meta.max, control_after_generate=True)
        elif isinstance(meta, Multiline):
            options["multiline"] = True
            if meta.dynamic_prompts:
                options["dynamicPrompts"] = True
        elif isinstance(meta, Tooltip):
            options["tooltip"] = meta.text
        elif isinstance(meta, Input):
            optional = optional or meta.optional
            options.update(meta.options)
    ordered = {k: options[k] for k in _OPTION_ORDER if k in options}
    ordered.update({k: v for k, v in options.items() if k not in ordered and k != "tooltip"})
    if "tooltip" in options:
        ordered["tooltip"] = options["tooltip"]
    spec = InputSpec(name, type_name, "optional" if optional else "required", ordered,
                     choices=() if choices is not None else None, legacy_combo=legacy)
    return _Param(name, spec, default, choices)


def _output_spec(hint: Any, default_name: str | None, where: str) -> OutputSpec:
    h = _unwrap(hint)
    type_name = _type_name(h, where)
    name, tooltip = default_name or type_name, None
    for meta in h.metas:
        if isinstance(meta, Output):
            name = meta.name or name
            tooltip = meta.tooltip or tooltip
        elif isinstance(meta, Tooltip):
            tooltip = meta.text
    return OutputSpec(type_name, name, h.is_list, tooltip)


def _outputs(hint: Any, where: str, localns: Mapping[str, Any] | None = None) -> tuple[OutputSpec, ...]:
    if hint is None or hint is NoneType or hint is inspect.Signature.empty or hint is Result:
        return ()
    if isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields"):
        fields = typing.get_type_hints(hint, localns=dict(localns or {}), include_extras=True)
        return tuple(_output_spec(fields[f], f, where) for f in hint._fields)
    if typing.get_origin(hint) is tuple:
        return tuple(_output_spec(a, None, where) for a in typing.get_args(hint) if a is not Ellipsis)
    return (_output_spec(hint, None, where),)


def param_names(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The parameter names of ``fn``, or None when it takes ``**kwargs`` (meaning: all inputs)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset(params)


def filtered_caller(fn: Callable[..., Any], **extra: Any) -> Callable[[Mapping[str, Any]], Any]:
    """A caller of ``fn`` that passes the inputs (and ``extra``) its signature names, all if it has ``**kwargs``.

    The signature is read once here, not on every call (IS_CHANGED runs for every node of every prompt).
    """
    names = param_names(fn)

    def call(values: Mapping[str, Any]) -> Any:
        merged = {**values, **extra} if extra else values
        if names is None:
            return resolve_awaitable(fn(**merged))
        return resolve_awaitable(fn(**{k: v for k, v in merged.items() if k in names}))

    return call


def resolve_awaitable(value: Any) -> Any:
    """``value``, or its result if it is awaitable (an ``async`` node function).

    The executor calls nodes synchronously from a worker thread; if a loop already
    runs in this thread the coroutine runs on a helper thread's own loop instead.
    """
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wait()).result()


# -- the declaration -------------------------------------------------------------------------


class NodeDecl:
    """A node type declared with :func:`node`; still callable as the plain function."""

    def __init__(self, func: Callable[..., Any], *, name: str, category: str, display_name: str,
                 description: str, output_node: bool, input_is_list: bool | None, not_idempotent: bool,
                 deprecated: bool, experimental: bool, python_module: str,
                 localns: Mapping[str, Any] | None = None,
                 extra_inputs: Sequence[tuple[str, Any, Any]] = ()) -> None:
        self.func = func
        self.name = name
        self.category = category
        self.display_name = display_name
        self.description = description
        self.output_node = output_node
        self.not_idempotent = not_idempotent
        self.deprecated = deprecated
        self.experimental = experimental
        self.python_module = python_module
        self.module = func.__module__
        self.fingerprint_fn: Callable[..., Any] | None = None
        self.validate_fn: Callable[..., Any] | None = None
        self.lazy_fn: Callable[..., Any] | None = None
        self.ctx_param: str | None = None
        self.accepts_extra = False
        self.params: list[_Param] = []
        hints = typing.get_type_hints(func, localns=dict(localns or {}), include_extras=True)
        list_inputs: list[bool] = []
        for p in inspect.signature(func).parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                self.accepts_extra = True
                continue
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError(f"{name}: *args cannot be a node input")
            hint = hints.get(p.name, Any)
            if hint is Context:
                self.ctx_param = p.name
                continue
            param = _input_param(p.name, hint, p.default, f"{name}.{p.name}")
            self.params.append(param)
            if param.spec.section != "hidden":
                list_inputs.append(_unwrap(hint).is_list)
        if extra_inputs and not self.accepts_extra:
            raise TypeError(f"{name}: extra_inputs are passed through **kwargs, which the function lacks")
        for input_name, hint, default in extra_inputs:  # wire names that are no Python identifiers
            self.params.append(_input_param(input_name, hint, default, f"{name}.{input_name}"))
        if input_is_list is None and any(list_inputs) and not all(list_inputs):
            raise TypeError(f"{name}: either every input is a list[...] (INPUT_IS_LIST) or none is")
        self.input_is_list = input_is_list if input_is_list is not None else any(list_inputs)
        self.outputs = _outputs(hints.get("return", inspect.Signature.empty), f"{name} return", localns)
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the node's function directly (handy in tests)."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<node {self.name}>"

    def fingerprint(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: IS_CHANGED. Called with the constant inputs it names (links are None).

        It may also take ``services``. Return a value that changes when the node must re-run.
        """
        self.fingerprint_fn = fn
        return fn

    def validator(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: VALIDATE_INPUTS. Returns True or an error string; may take ``input_types``/``services``."""
        self.validate_fn = fn
        return fn

    def lazy_status(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: check_lazy_status. Gets the inputs (unevaluated lazy ones None), returns names still needed."""
        self.lazy_fn = fn
        return fn

    def schema(self, services: Services) -> NodeSchema:
        """The :class:`NodeSchema` of this node with ``services`` bound in."""
        inputs = tuple(_bind_choices(p, services) for p in self.params)
        behaviour = NodeBehaviour(
            execute=lambda instance, ctx, values: self._execute(ctx, values, services),
            fingerprint=_bind(self.fingerprint_fn, services),
            validate=_bind(self.validate_fn, services),
            validate_params=self._validate_params(),
            validate_wants_input_types=bool(self.validate_fn)
            and "input_types" in inspect.signature(self.validate_fn).parameters,
            check_lazy=_lazy_checker(self.lazy_fn),
        )
        return NodeSchema(
            name=self.name, inputs=inputs, outputs=self.outputs, behaviour=behaviour,
            display_name=self.display_name, category=self.category, description=self.description,
            output_node=self.output_node, input_is_list=self.input_is_list, not_idempotent=self.not_idempotent,
            python_module=self.python_module, deprecated=self.deprecated, experimental=self.experimental,
        )

    def _validate_params(self) -> frozenset[str] | None:
        if self.validate_fn is None:
            return frozenset()
        names = param_names(self.validate_fn)
        return None if names is None else names - {"input_types", "services"}

    def _execute(self, exec_ctx: ExecContext, values: Mapping[str, Any], services: Services) -> Any:
        kwargs: dict[str, Any] = {}
        for p in self.params:
            if p.name in values:
                kwargs[p.name] = values[p.name]
            elif p.default is REQUIRED or p.default is inspect.Parameter.empty:
                kwargs[p.name] = None  # a missing upstream value or an unevaluated lazy input, as ComfyUI passes
        if self.accepts_extra:
            kwargs.update({k: v for k, v in values.items() if k not in kwargs})
        if self.ctx_param is not None:
            kwargs[self.ctx_param] = Context(exec_ctx, services)
        return self._to_comfy(resolve_awaitable(self.func(**kwargs)))

    def _to_comfy(self, out: Any) -> Any:
        """The function's return value in ComfyUI's result forms (tuple, dict with ui, blocker)."""
        if isinstance(out, Result):
            return out.to_comfy()
        if isinstance(out, ExecutionBlocker):
            return tuple(out for _ in self.outputs)
        if _is_result_dict(out):
            return out
        n = len(self.outputs)
        if n == 0:
            if out is not None:
                raise TypeError(f"{self.name} has no outputs; return None or Result(ui=...), not {type(out).__name__}")
            return ()
        if n == 1:
            return (out,)
        if not isinstance(out, tuple | list) or len(out) != n:
            raise TypeError(f"{self.name} must return {n} values, got {type(out).__name__}")
        return tuple(out)


_RESULT_KEYS = frozenset({"ui", "result", "expand"})


def _is_result_dict(value: Any) -> bool:
    """A ComfyUI-style ``{"ui": ..., "result": ...}`` dict (an output value such as a LATENT has other keys)."""
    return isinstance(value, dict) and bool(value) and value.keys() <= _RESULT_KEYS and (
        "ui" in value or "expand" in value)


def _bind(fn: Callable[..., Any] | None, services: Services) -> Callable[[dict[str, Any]], Any] | None:
    """A hook (fingerprint, validator) taking an inputs dict, with ``services`` passed if it asks for them."""
    if fn is None:
        return None
    return filtered_caller(fn, services=services) if "services" in inspect.signature(fn).parameters \
        else filtered_caller(fn)


def _lazy_checker(fn: Callable[..., Any] | None) -> Callable[[Any, dict[str, Any]], list[str]] | None:
    if fn is None:
        return None
    call = filtered_caller(fn)
    return lambda instance, values: list(call(values) or ())


def _bind_choices(param: _Param, services: Services) -> InputSpec:
    choices = param.choices
    if choices is None:
        return param.spec
    if isinstance(choices, ServiceChoices):
        provider = choices.provider
        choices = lambda: provider(services)  # noqa: E731  # re-read at each /object_info and validation
    elif not callable(choices):
        choices = tuple(choices)
    return InputSpec(param.spec.name, "COMBO", param.spec.section, param.spec.options, choices=choices,
                     legacy_combo=param.spec.legacy_combo)


def node(
    name: str | None = None,
    *,
    category: str = "sd",
    display_name: str | None = None,
    description: str | None = None,
    output_node: bool = False,
    input_is_list: bool | None = None,
    not_idempotent: bool = False,
    deprecated: bool = False,
    experimental: bool = False,
    python_module: str = "nodes",
    extra_inputs: Sequence[tuple[str, Any, Any]] = (),
) -> Callable[[Callable[..., Any]], NodeDecl]:
    """Declare a node type from a typed function (see the module docstring).

    ``name`` defaults to the function's name (the ``class_type``); ``description`` to its docstring.
    ``extra_inputs`` = ``(name, hint, default)`` inputs after the signature's, for input names that
    are not Python identifiers (``"input_blocks.4."``); the function gets them through ``**kwargs``.
    """

    def wrap(func: Callable[..., Any]) -> NodeDecl:
        # With postponed annotations, names defined in the declaring scope (a NamedTuple of
        # outputs inside a function, say) are only visible through the caller's locals.
        caller = inspect.currentframe()
        localns = caller.f_back.f_locals if caller is not None and caller.f_back is not None else None
        return NodeDecl(
            func, name=name or func.__name__, category=category, display_name=display_name or "",
            description=description if description is not None else inspect.cleandoc(func.__doc__ or ""),
            output_node=output_node, input_is_list=input_is_list, not_idempotent=not_idempotent,
            deprecated=deprecated, experimental=experimental, python_module=python_module, localns=localns,
            extra_inputs=extra_inputs,
        )

    return wrap
