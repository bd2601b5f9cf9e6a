"""The API prompt shape: link rule, lenient parsing, models that keep unknown keys."""

from __future__ import annotations

import pytest

from graph.prompt import NodeCall, Prompt, PromptFormatError, is_link, parse_prompt


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["4", 0], True),
        (["4", 1.0], True),
        (["4:2", 3], True),
        (["4", True], True),  # bool is an int in Python, as in ComfyUI's check
        ([4, 0], False),  # numeric id: not a link (ComfyUI then fails validation)
        (("4", 0), False),
        (["4", "0"], False),
        (["4", 0, 1], False),
        ("4", False),
        ({"__value__": ["4", 0]}, False),
    ],
)
def test_is_link(value: object, expected: bool) -> None:
    assert is_link(value) is expected


def test_parse_prompt_accepts_text_and_objects() -> None:
    data = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}
    assert parse_prompt(data) == data
    assert parse_prompt('{"3": {"class_type": "KSampler", "inputs": {}}}') == {
        "3": {"class_type": "KSampler", "inputs": {}}
    }
    # Node contents are not checked here: validation reports them per node.
    assert parse_prompt({"1": {"inputs": {}}}) == {"1": {"inputs": {}}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "not an array"),
        ("null", "not null"),
        (42, "not a number"),
        ('{"a": ', "not valid JSON: Expecting value at line 1 column 7"),
    ],
)
def test_parse_prompt_rejects_non_objects_with_one_line(data: object, message: str) -> None:
    with pytest.raises(PromptFormatError) as info:
        parse_prompt(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_node_call_keeps_meta_and_extra_keys() -> None:
    raw = {
        "class_type": "SaveImage",
        "inputs": {"images": ["8", 0], "filename_prefix": "x"},
        "_meta": {"title": "Save", "color": "red"},
        "is_changed": ["abc"],
    }
    call = NodeCall.model_validate(raw)
    assert call.meta is not None and call.meta.title == "Save"
    assert call.links() == {"images": ("8", 0)}
    assert call.model_dump(by_alias=True, exclude_none=True) == raw


def test_prompt_round_trip() -> None:
    raw = {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}, "_meta": {"title": "Show"}},
    }
    assert Prompt.model_validate(raw).to_dict() == raw
