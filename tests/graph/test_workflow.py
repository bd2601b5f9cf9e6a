"""Conversion rules one at a time, on small hand-made workflows (the corpus covers whole graphs)."""

from __future__ import annotations

from typing import Any

import pytest

from graph.schema import InputSpec, NodeBehaviour, NodeSchema, OutputSpec, Registry
from graph.workflow import to_prompt
from graph.workflow_models import WorkflowError, is_ui_workflow, parse_workflow
from graph.workflow_widgets import default_value, widget_inputs, widget_layout


def node(id: int | str, type: str, wv: Any = None, inputs: list[dict[str, Any]] | None = None, **kw: Any) -> dict:
    """A minimal editor node."""
    n: dict[str, Any] = {"id": id, "type": type, "mode": 0, "inputs": inputs or [], "outputs": [], "properties": {}}
    if wv is not None:
        n["widgets_values"] = wv
    n.update(kw)
    return n


def sock(name: str, type: str, link: int | None = None, widget: bool = False) -> dict[str, Any]:
    s: dict[str, Any] = {"name": name, "type": type, "link": link}
    if widget:
        s["widget"] = {"name": name}
    return s


def workflow(nodes: list[dict], links: list[list[Any]], **kw: Any) -> dict[str, Any]:
    return {"last_node_id": 0, "last_link_id": 0, "nodes": nodes, "links": links, "version": 0.4, **kw}


def ckpt(id: int = 1) -> dict:
    return node(
        id,
        "CheckpointLoaderSimple",
        ["v1-5-pruned-emaonly-fp16.safetensors"],
        outputs=[{"name": "MODEL", "type": "MODEL"}, {"name": "CLIP", "type": "CLIP"}, {"name": "VAE", "type": "VAE"}],
    )


# -- widgets_values layout ---------------------------------------------------------------------


def test_widget_layouts_match_the_editor(toy_registry: Registry) -> None:
    def names(cls: str) -> list[str]:
        return [slot.name for slot in widget_layout(toy_registry[cls])]

    assert names("KSampler") == [
        "seed",
        "control_after_generate",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "denoise",
    ]
    assert names("KSamplerAdvanced")[:3] == ["add_noise", "noise_seed", "control_after_generate"]
    assert names("LoadImage") == ["image", "upload"]
    assert names("LoadImageMask") == ["image", "channel", "upload"]
    assert names("VAEDecode") == []
    assert names("ShowTextForced") == ["repeat"]


def _schema(*inputs: InputSpec) -> NodeSchema:
    return NodeSchema("T", inputs, (OutputSpec("INT", "INT"),), NodeBehaviour(lambda i, c, x: ()))


def test_seed_named_int_gets_a_control_slot_unless_disabled() -> None:
    plain = _schema(InputSpec("seed", "INT"), InputSpec("steps", "INT"))
    disabled = _schema(InputSpec("seed", "INT", options={"control_after_generate": False}), InputSpec("steps", "INT"))
    assert widget_inputs(plain, [5, "fixed", 9]) == {"seed": 5, "steps": 9}
    assert widget_inputs(disabled, [5, 9]) == {"seed": 5, "steps": 9}


def test_combo_with_control_has_control_and_filter_slots() -> None:
    schema = _schema(
        InputSpec("pick", "COMBO", options={"control_after_generate": True}, choices=("a", "b")), InputSpec("n", "INT")
    )
    assert [s.name for s in widget_layout(schema)] == ["pick", "control_after_generate", "control_filter_list", "n"]
    assert widget_inputs(schema, ["b", "increment", "", 3]) == {"pick": "b", "n": 3}


def test_optional_widgets_follow_required_and_default_input_is_a_socket() -> None:
    schema = _schema(
        InputSpec("opt", "INT", "optional"),
        InputSpec("req", "STRING"),
        InputSpec("sock", "INT", "optional", {"defaultInput": True}),
        InputSpec("hidden", "UNIQUE_ID", "hidden"),
    )
    assert [s.name for s in widget_layout(schema)] == ["req", "opt"]


def test_missing_values_take_editor_defaults(toy_registry: Registry) -> None:
    assert widget_inputs(toy_registry["KSampler"], None) == {
        "seed": 0,
        "steps": 20,
        "cfg": 8.0,
        "sampler_name": "euler",
        "scheduler": "simple",
        "denoise": 1.0,
    }
    assert default_value(InputSpec("b", "BOOLEAN")) is False
    assert default_value(InputSpec("s", "STRING")) == ""
    assert default_value(InputSpec("f", "FLOAT")) == 0


def test_named_values_win_and_dict_widgets_values_are_named(toy_registry: Registry) -> None:
    schema = toy_registry["EmptyLatentImage"]
    assert widget_inputs(schema, [512, 512, 1], {"height": 768}) == {"width": 512, "height": 768, "batch_size": 1}
    assert widget_inputs(schema, {"width": 640}) == {"width": 640, "height": 512, "batch_size": 1}


def test_legacy_force_input_value_is_dropped_only_when_the_count_says_legacy(toy_registry: Registry) -> None:
    schema = toy_registry["ShowTextForced"]
    assert widget_inputs(schema, ["old", 4]) == {"repeat": 4}
    assert widget_inputs(schema, [4]) == {"repeat": 4}


# -- graph rules ---------------------------------------------------------------------------------


def test_unknown_node_type_names_the_node(toy_registry: Registry) -> None:
    wf = workflow([ckpt(), node(7, "FancyUpscaler", [2])], [])
    with pytest.raises(WorkflowError, match=r"node 7 has unknown type 'FancyUpscaler'"):
        to_prompt(wf, toy_registry)


def test_unknown_types_are_fine_when_muted_or_bypassed(toy_registry: Registry) -> None:
    wf = workflow([ckpt(), node(7, "FancyUpscaler", [2], mode=2), node(8, "OtherCustom", mode=4)], [])
    assert list(to_prompt(wf, toy_registry)) == ["1"]


def test_unknown_type_inside_a_subgraph_names_the_flat_id(toy_registry: Registry) -> None:
    definition = {"id": "sub-1", "name": "S", "nodes": [node(4, "Missing")], "links": [], "inputs": [], "outputs": []}
    wf = workflow([node(9, "sub-1")], [], definitions={"subgraphs": [definition]})
    with pytest.raises(WorkflowError, match=r"node 9:4 has unknown type 'Missing'"):
        to_prompt(wf, toy_registry)


def test_reroute_loop_is_an_error(toy_registry: Registry) -> None:
    nodes = [
        node(1, "Reroute", inputs=[sock("", "*", 1)]),
        node(2, "Reroute", inputs=[sock("", "*", 2)]),
        node(3, "PreviewAny", inputs=[sock("source", "*", 3)]),
    ]
    links = [[1, 2, 0, 1, 0, "*"], [2, 1, 0, 2, 0, "*"], [3, 1, 0, 3, 0, "*"]]
    with pytest.raises(WorkflowError, match="loop"):
        to_prompt(workflow(nodes, links), toy_registry)


def test_subgraph_that_contains_itself_is_an_error(toy_registry: Registry) -> None:
    definition = {"id": "s", "name": "Loop", "nodes": [node(1, "s")], "links": [], "inputs": [], "outputs": []}
    with pytest.raises(WorkflowError, match="contains itself"):
        to_prompt(workflow([node(1, "s")], [], definitions={"subgraphs": [definition]}), toy_registry)


def test_definitions_nested_inside_definitions_are_found(toy_registry: Registry) -> None:
    inner = {"id": "inner", "name": "I", "nodes": [ckpt(3)], "links": [], "inputs": [], "outputs": []}
    outer = {
        "id": "outer",
        "name": "O",
        "nodes": [node(2, "inner")],
        "links": [],
        "inputs": [],
        "outputs": [],
        "definitions": {"subgraphs": [inner]},
    }
    prompt = to_prompt(workflow([node(1, "outer")], [], definitions={"subgraphs": [outer]}), toy_registry)
    assert list(prompt) == ["1:2:3"]


def test_dangling_link_and_null_link_holes_are_ignored(toy_registry: Registry) -> None:
    nodes = [node(1, "PreviewAny", inputs=[sock("source", "*", 99)])]
    prompt = to_prompt(workflow(nodes, [None]), toy_registry)
    assert prompt == {"1": {"inputs": {}, "class_type": "PreviewAny", "_meta": {"title": "Preview Any"}}}


def test_linked_widget_socket_overrides_the_stale_value(toy_registry: Registry) -> None:
    nodes = [
        node(1, "PrimitiveString", ["hi"]),
        node(2, "StringConcatenate", ["stale", "b", ""], inputs=[sock("string_a", "STRING", 1, widget=True)]),
    ]
    prompt = to_prompt(workflow(nodes, [[1, 1, 0, 2, 0, "STRING"]]), toy_registry)
    assert prompt["2"]["inputs"] == {"string_a": ["1", 0], "string_b": "b", "delimiter": ""}


def test_string_node_ids_and_slots_are_accepted(toy_registry: Registry) -> None:
    nodes = [ckpt(1), node("2", "CLIPTextEncode", ["x"], inputs=[sock("clip", "CLIP", 5)])]
    prompt = to_prompt(workflow(nodes, [[5, "1", "1", "2", "0", "CLIP"]]), toy_registry)
    assert prompt["2"]["inputs"]["clip"] == ["1", 1]


def test_primitive_node_feeds_every_target(toy_registry: Registry) -> None:
    nodes = [
        node(1, "PrimitiveNode", ["shared"], outputs=[{"name": "STRING", "type": "STRING", "links": [1, 2]}]),
        node(2, "StringConcatenate", ["a", "b", ""], inputs=[sock("string_a", "STRING", 1, widget=True)]),
        node(3, "StringConcatenate", ["a", "b", ""], inputs=[sock("string_b", "STRING", 2, widget=True)]),
    ]
    links = [[1, 1, 0, 2, 0, "STRING"], [2, 1, 0, 3, 0, "STRING"]]
    prompt = to_prompt(workflow(nodes, links), toy_registry)
    assert prompt["2"]["inputs"]["string_a"] == "shared"
    assert prompt["3"]["inputs"]["string_b"] == "shared"
    assert "1" not in prompt


def test_bypass_with_no_matching_input_leaves_the_input_unset(toy_registry: Registry) -> None:
    nodes = [
        ckpt(1),
        node(
            2,
            "CLIPSetLastLayer",
            [-2],
            inputs=[sock("clip", "CLIP", 1)],
            mode=4,
            outputs=[{"name": "CLIP", "type": "CLIP"}],
        ),
        node(3, "VAEDecode", inputs=[sock("samples", "LATENT", None), sock("vae", "VAE", 2)]),
    ]
    links = [[1, 1, 1, 2, 0, "CLIP"], [2, 2, 0, 3, 1, "VAE"]]
    prompt = to_prompt(workflow(nodes, links), toy_registry)
    assert prompt["3"]["inputs"] == {}


def test_muted_source_removes_the_link(toy_registry: Registry) -> None:
    nodes = [node(1, "PrimitiveString", ["x"], mode=2), node(2, "PreviewAny", inputs=[sock("source", "*", 1)])]
    prompt = to_prompt(workflow(nodes, [[1, 1, 0, 2, 0, "STRING"]]), toy_registry)
    assert prompt == {"2": {"inputs": {}, "class_type": "PreviewAny", "_meta": {"title": "Preview Any"}}}


def test_schema_1_links_as_objects(toy_registry: Registry) -> None:
    nodes = [node(1, "PrimitiveInt", [3, "fixed"]), node(2, "PreviewAny", inputs=[sock("source", "*", 4)])]
    links = [{"id": 4, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "INT"}]
    wf = {"version": 1, "state": {"lastNodeId": 2, "lastLinkId": 4}, "nodes": nodes, "links": links}
    assert to_prompt(wf, toy_registry)["2"]["inputs"] == {"source": ["1", 0]}


# -- formats ---------------------------------------------------------------------------------------


def test_is_ui_workflow() -> None:
    assert is_ui_workflow({"nodes": [], "links": []})
    assert not is_ui_workflow({"3": {"class_type": "KSampler", "inputs": {}}})
    assert not is_ui_workflow([{"nodes": []}])


def test_unknown_keys_are_kept() -> None:
    wf = workflow([node(1, "Note", ["hi"], color="#432", custom_thing={"a": 1})], [], extra={"ds": {"scale": 1}})
    parsed = parse_workflow(wf)
    assert parsed.nodes[0].model_extra == {"color": "#432", "custom_thing": {"a": 1}}
    assert parsed.model_dump(exclude_unset=True, by_alias=True)["extra"] == {"ds": {"scale": 1}}


def test_malformed_workflow_error_names_the_node() -> None:
    wf = workflow([node(1, "Note"), {"id": 5, "type": "KSampler", "mode": "fast"}], [])
    with pytest.raises(WorkflowError, match=r"nodes\[id=5\]\.mode"):
        parse_workflow(wf)
    with pytest.raises(WorkflowError, match=r"link \[1\] origin_id: Field required"):
        parse_workflow(workflow([], [None, {"id": 1}]))
    with pytest.raises(WorkflowError, match="not a UI workflow"):
        parse_workflow({"3": {}})


def test_upload_slot_closes_the_required_widgets() -> None:
    schema = _schema(
        InputSpec("image", "COMBO", options={"image_upload": True}, choices=("a.png",)),
        InputSpec("feather", "INT", "optional"),
    )
    assert [s.name for s in widget_layout(schema)] == ["image", "upload", "feather"]
    assert widget_inputs(schema, ["a.png", "image", 6]) == {"image": "a.png", "feather": 6}


def test_bypass_rule_picks_inputs_like_the_editor() -> None:
    from graph.workflow_models import Node
    from graph.workflow_sockets import bypass_input

    n = Node.model_validate(
        {
            "id": 1,
            "type": "X",
            "inputs": [sock("a", "UPSCALE_MODEL"), sock("b", "IMAGE"), sock("c", "IMAGE,MASK")],
            "outputs": [{"name": "o", "type": "IMAGE"}, {"name": "m", "type": "MASK"}],
        }
    )
    assert bypass_input(n, 0, "IMAGE", "IMAGE") == 1  # same index does not fit: first exact type
    assert bypass_input(n, 1, "MASK", "MASK") == 2  # no exact MASK: first compatible with both
    assert bypass_input(n, 1, "*", "MASK") == 1  # any-typed consumer: same index
    assert bypass_input(n, 5, "*", "MASK") == 0  # ... else the first
    assert bypass_input(n, 0, "LATENT", "IMAGE") is None


def test_linked_subgraph_input_never_falls_back_to_the_promoted_value(toy_registry: Registry) -> None:
    definition = {
        "id": "sub",
        "name": "S",
        "inputs": [{"name": "text", "type": "STRING"}],
        "outputs": [],
        "nodes": [
            node(1, "StringConcatenate", ["inner", "b", ""], inputs=[sock("string_a", "STRING", 1, widget=True)])
        ],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "STRING"}],
    }
    muted_source = node(2, "PrimitiveString", ["x"], mode=2)
    linked = node(3, "sub", ["promoted"], inputs=[sock("text", "STRING", 7, widget=True)])
    unlinked = node(4, "sub", ["promoted"], inputs=[sock("text", "STRING", None, widget=True)])
    bare = node(5, "sub", inputs=[sock("text", "STRING", None, widget=True)])
    wf = workflow(
        [muted_source, linked, unlinked, bare], [[7, 2, 0, 3, 0, "STRING"]], definitions={"subgraphs": [definition]}
    )
    prompt = to_prompt(wf, toy_registry)
    assert "string_a" not in prompt["3:1"]["inputs"]  # linked to a muted node: the link is dropped
    assert prompt["4:1"]["inputs"]["string_a"] == "promoted"
    assert prompt["5:1"]["inputs"]["string_a"] == "inner"  # no promoted value: the inner widget's own
