"""Pydantic models of the editor's UI workflow JSON, schema 0.4 and 1 (PROTOCOL.md section 6.1-6.3).

Every model keeps unknown keys (the editor's zod schemas are ``passthrough`` too), so a
workflow read here and written back loses nothing. Only what conversion needs is typed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class WorkflowError(ValueError):
    """A UI workflow that cannot be read or converted (one-line message naming the culprit)."""


class _Passthrough(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


NodeId = int | str
#: Ids of the pseudo nodes inside a subgraph definition: its inputs and its outputs.
SUBGRAPH_INPUT_ID = -10
SUBGRAPH_OUTPUT_ID = -20


class WidgetRef(_Passthrough):
    """``input.widget``: marks a socket that stands for a widget of the same node."""

    name: str


class NodeInput(_Passthrough):
    """One input socket of a node."""

    name: str = ""
    type: Any = "*"
    link: int | None = None
    widget: WidgetRef | None = None
    label: str | None = None


class NodeOutput(_Passthrough):
    """One output socket of a node."""

    name: str = ""
    type: Any = "*"
    links: list[int] | None = None


class Node(_Passthrough):
    """A node of the editor's graph (``zComfyNode``)."""

    id: NodeId
    type: str
    mode: int = 0
    title: str | None = None
    inputs: list[NodeInput] = Field(default_factory=list)
    outputs: list[NodeOutput] = Field(default_factory=list)
    properties: dict[str, Any] = Field(default_factory=dict)
    widgets_values: list[Any] | dict[str, Any] | None = None
    widgets_values_named: dict[str, Any] | None = None

    @field_validator("inputs", "outputs", mode="before")
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        # Some savers write null for an empty list.
        return [] if value is None else value

    @field_validator("properties", mode="before")
    @classmethod
    def _null_dict(cls, value: Any) -> Any:
        return {} if value is None else value


class Link(_Passthrough):
    """A link in schema-1 object form; 0.4 tuples are read into this too."""

    id: int
    origin_id: NodeId
    origin_slot: int
    target_id: NodeId
    target_slot: int
    type: Any = "*"

    @classmethod
    def from_any(cls, raw: Any) -> Link:
        """Read a 0.4 tuple ``[id, origin, origin_slot, target, target_slot, type]`` or a link object."""
        if isinstance(raw, list | tuple):
            if len(raw) < 5:
                raise WorkflowError(f"link {raw!r} has fewer than 5 fields")
            keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
            return cls.model_validate(dict(zip(keys, raw, strict=False)))
        return cls.model_validate(raw)


class Group(_Passthrough):
    """A visual group (no meaning for execution)."""

    title: str = ""
    bounding: list[float] = Field(default_factory=list)


class SubgraphIO(_Passthrough):
    """One input or output of a subgraph definition."""

    name: str = ""
    type: Any = "*"
    link_ids: list[int] | None = Field(default=None, alias="linkIds")


class Definitions(_Passthrough):
    """``definitions``: the subgraph blueprints used by instances in the graph."""

    subgraphs: list[SubgraphDefinition] = Field(default_factory=list)


class _GraphBody(_Passthrough):
    """What the root graph and a subgraph definition share: nodes, links, groups."""

    nodes: list[Node] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list)
    definitions: Definitions | None = None

    @field_validator("links", mode="before")
    @classmethod
    def _read_links(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise WorkflowError("'links' must be an array")
        links = []
        for index, raw in enumerate(value):
            if raw is None:  # 0.4 files may hold null holes where links were deleted
                continue
            try:
                links.append(Link.from_any(raw))
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(part) for part in first["loc"])
                raise WorkflowError(f"link [{index}] {field}: {first['msg']}") from None
        return links

    @field_validator("nodes", "groups", mode="before")
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        return [] if value is None else value


class SubgraphDefinition(_GraphBody):
    """A subgraph blueprint (schema-1 graph plus its id, name and IO)."""

    id: str
    name: str = ""
    inputs: list[SubgraphIO] = Field(default_factory=list)
    outputs: list[SubgraphIO] = Field(default_factory=list)
    widgets: list[dict[str, Any]] = Field(default_factory=list)


class Workflow(_GraphBody):
    """A whole UI workflow; ``version`` 1 uses link objects and ``state``, anything else is 0.4."""

    version: float = 0.4
    last_node_id: int | str | None = None
    last_link_id: int | None = None
    state: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None

    def subgraph_definitions(self) -> dict[str, SubgraphDefinition]:
        """Every subgraph definition by id, including those nested inside other definitions."""
        found: dict[str, SubgraphDefinition] = {}
        pending: list[_GraphBody] = [self]
        while pending:
            body = pending.pop()
            for definition in body.definitions.subgraphs if body.definitions else []:
                if definition.id not in found:
                    found[definition.id] = definition
                    pending.append(definition)
        return found


Definitions.model_rebuild()


def is_ui_workflow(data: Any) -> bool:
    """True if ``data`` looks like an editor workflow (an object with a ``nodes`` array).

    An API prompt maps ids to node objects, so its values are never a list: the two
    formats cannot be confused.
    """
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def parse_workflow(data: Any) -> Workflow:
    """Read a UI workflow dict into :class:`Workflow`, or raise :class:`WorkflowError` (one line)."""
    if not is_ui_workflow(data):
        raise WorkflowError("not a UI workflow: expected a JSON object with a 'nodes' array")
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _error_location(data, first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise WorkflowError(f"malformed workflow at {where}: {message}") from None


def _error_location(data: Any, loc: tuple[Any, ...]) -> str:
    """``nodes[3].inputs[0].link`` style path, naming the node id when the path enters a node."""
    parts: list[str] = []
    current = data
    for key in loc:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            parts.append(f".{key}" if parts else str(key))
        try:
            current = current[key]
        except (KeyError, IndexError, TypeError):
            current = None
        if parts[0] == "nodes" and len(parts) == 2 and isinstance(current, dict) and "id" in current:
            parts[1] = f"[id={current['id']}]"
    return "".join(parts) or "top level"
