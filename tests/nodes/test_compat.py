"""ComfyUI V1 custom node packs: loading, schemas, failures, and the behaviour callables."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from nodes.api import Services
from nodes.compat import find_packs, load_custom_nodes
from nodes.folders import Folders
from nodes.object_info import node_info
from nodes.registry import NodeRegistry, build_registry

PACKS = Path(__file__).resolve().parents[1] / "data" / "custom_nodes"


class StubContext:
    """The executor's ExecContext; V1 nodes never look at it."""

    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        pass

    def check_interrupted(self) -> None:
        pass


@pytest.fixture
def registry(tmp_path: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(tmp_path)), custom_nodes_dirs=[PACKS])


def test_packs_found_in_order_without_disabled_or_cache_dirs() -> None:
    names = [p.name for p in find_packs(PACKS)]
    assert {"broken_pack.py", "example_pack.py", "example_package"} <= set(names)
    assert names == sorted(names)
    assert not any(n.endswith(".disabled") or n.startswith("__") for n in names)


def test_broken_pack_is_reported_and_the_rest_loads(registry: NodeRegistry, caplog: pytest.LogCaptureFixture) -> None:
    failures = {f.name: f for f in registry.load_report}
    assert failures["broken_pack"].error == "RuntimeError: this pack is broken on purpose"
    assert failures["broken_pack"].path.endswith("broken_pack.py")
    # One class with a failing INPUT_TYPES is reported alone; its pack still loads.
    assert failures["example_package/BrokenInputs"].error == "RuntimeError: cannot list inputs"
    assert "BrokenInputs" not in registry
    assert {"example_pack", "example_package"} <= set(registry.custom_packs)
    assert "broken_pack" not in registry.custom_packs
    assert "custom_nodes.broken_pack" not in sys.modules


def test_failures_are_logged_with_their_error(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.WARNING, logger="nodes.compat"):
        load_custom_nodes([PACKS])
    assert any("broken_pack" in r.getMessage() and "broken on purpose" in r.getMessage() for r in caplog.records)


def test_schemas_of_the_single_file_pack(registry: NodeRegistry) -> None:
    info = node_info(registry["StringRepeat"])
    assert info["input"] == {
        "required": {"text": ["STRING", {"multiline": True, "default": "ab"}],
                     "times": ["INT", {"default": 2, "min": 1, "max": 100, "tooltip": "How many copies."}]},
        "optional": {"separator": ["STRING", {"default": ""}]},
    }
    assert info["input_order"] == {"required": ["text", "times"], "optional": ["separator"]}
    assert (info["display_name"], info["category"], info["description"]) == (
        "Repeat String", "example/text", "Repeats a string.")
    assert info["python_module"] == "custom_nodes.example_pack"
    assert info["output"] == ["STRING"] and info["output_name"] == ["STRING"]

    split = node_info(registry["SplitWords"])
    assert split["output_is_list"] == [True, False]
    assert split["output_name"] == ["words", "count"]
    assert split["output_tooltips"] == ["Each word.", "How many words."]

    show = registry["ShowText"]
    assert show.output_node
    assert node_info(show)["input"]["hidden"] == {"unique_id": "UNIQUE_ID", "prompt": "PROMPT",
                                                  "extra_pnginfo": "EXTRA_PNGINFO"}
    assert registry["JoinStrings"].input_is_list
    assert not registry["StringRepeat"].input_is_list


def test_package_pack_with_relative_imports(registry: NodeRegistry) -> None:
    info = node_info(registry["MultiplyFloat"])
    assert info["python_module"] == "custom_nodes.example_package"
    assert info["display_name"] == "Multiply (float)"
    assert info["output_name"] == ["product"]
    b = registry["MultiplyFloat"].behaviour
    assert b.execute(b.new_instance(), StubContext(), {"a": 1.5, "b": 4.0}) == (6.0,)


def test_builtin_nodes_cannot_be_replaced(registry: NodeRegistry) -> None:
    assert registry["PrimitiveInt"].python_module == "nodes"


def test_execute_fingerprint_and_validate(registry: NodeRegistry) -> None:
    repeat = registry["StringRepeat"].behaviour
    assert repeat.execute(repeat.new_instance(), StubContext(), {"text": "ab", "times": 3, "separator": "-"}) == (
        "ab-ab-ab",)

    even = registry["EvenNumber"].behaviour
    assert even.fingerprint({"value": 4, "label": None}) == "even:4"  # only the inputs IS_CHANGED names
    assert even.validate_params == frozenset({"value"}) and not even.validate_wants_input_types
    assert even.validate({"value": 4}) is True
    assert even.validate({"value": 3}) == "3 is odd"

    typed = registry["TypeCheckedNode"].behaviour
    assert typed.validate_wants_input_types and typed.validate_params == frozenset()
    assert typed.validate({"anything": 1, "input_types": {"anything": "INT"}}) is True

    kwargs = registry["KwargsValidated"].behaviour
    assert kwargs.validate_params is None  # **kwargs: every input, and no min/max/combo checks
    assert kwargs.validate({"a": 60, "b": 50}) == "too big"
    assert registry["StringRepeat"].behaviour.validate is None


def test_lazy_status_and_any_type(registry: NodeRegistry) -> None:
    switch = registry["LazySwitch"]
    assert switch.input("on_true").lazy and not switch.input("switch").lazy
    # The "any type" str subclass is kept, so type matching still sees its __ne__ hack.
    any_type = switch.input("on_true").type
    assert any_type == "*" and type(any_type).__name__ == "AnyType"
    assert not any_type.__ne__("IMAGE")
    b = switch.behaviour
    instance = b.new_instance()
    assert b.check_lazy(instance, {"switch": True, "on_true": None, "on_false": None}) == ["on_true"]
    assert b.check_lazy(instance, {"switch": False, "on_true": None, "on_false": None}) == ["on_false"]
    assert b.check_lazy(instance, {"switch": True, "on_true": 5, "on_false": None}) == []
    assert b.execute(instance, StubContext(), {"switch": True, "on_true": 5}) == (5,)


def test_output_node_ui_async_and_instance_state(registry: NodeRegistry) -> None:
    show = registry["ShowText"].behaviour
    result = show.execute(show.new_instance(), StubContext(), {"text": "hi", "unique_id": "3", "prompt": {}})
    assert result == {"ui": {"text": ["hi"]}, "result": ("hi",)}

    echo = registry["AsyncEcho"].behaviour
    assert echo.execute(echo.new_instance(), StubContext(), {"text": "hi"}) == ("HI",)

    counter = registry["Counter"].behaviour
    instance = counter.new_instance()
    assert [counter.execute(instance, StubContext(), {})[0] for _ in range(3)] == [1, 2, 3]


def test_dynamic_input_types_are_reread(registry: NodeRegistry) -> None:
    schema = registry["DynamicChoices"]
    info = node_info(schema)
    assert info["input"]["required"] == {"choice": [["first", "second"]],
                                         "mode": ["COMBO", {"options": ["a", "b"]}]}
    assert info["deprecated"] is True and info["experimental"] is True and schema.not_idempotent
    sys.modules["custom_nodes.example_pack"].CHOICES.append("third")
    assert node_info(schema)["input"]["required"]["choice"] == [["first", "second", "third"]]
    assert schema.input("choice").current_choices() == ["first", "second", "third"]


def test_each_registry_imports_packs_afresh(tmp_path: Path) -> None:
    first = build_registry(Services(folders=Folders(tmp_path)), custom_nodes_dirs=[PACKS])
    sys.modules["custom_nodes.example_pack"].CHOICES.append("only in the first")
    second = build_registry(Services(folders=Folders(tmp_path)), custom_nodes_dirs=[PACKS])
    assert node_info(second["DynamicChoices"])["input"]["required"]["choice"] == [["first", "second"]]
    assert "only in the first" in node_info(first["DynamicChoices"])["input"]["required"]["choice"][0]


def test_missing_directory_and_pack_without_mappings(tmp_path: Path) -> None:
    (tmp_path / "empty_pack.py").write_text("X = 1\n")
    loaded = load_custom_nodes([tmp_path / "missing", tmp_path])
    assert [f.name for f in loaded.failures] == ["empty_pack"]
    assert "NODE_CLASS_MAPPINGS" in loaded.failures[0].error
    assert loaded.schemas == []


def test_packs_using_folder_paths_see_their_registrys_folders(tmp_path: Path) -> None:
    lora = tmp_path / "a/models/loras/style.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"")
    a = build_registry(Services(folders=Folders(tmp_path / "a")), custom_nodes_dirs=[PACKS])
    b = build_registry(Services(folders=Folders(tmp_path / "b")), custom_nodes_dirs=[PACKS])
    assert node_info(a["ListLoras"])["input"]["required"]["lora_name"] == [["style.safetensors"]]
    assert node_info(b["ListLoras"])["input"]["required"]["lora_name"] == [[]]
    resolve = a["ListLoras"].behaviour
    assert resolve.execute(resolve.new_instance(), StubContext(), {"lora_name": "style.safetensors"}) == (str(lora),)
    with pytest.raises(FileNotFoundError):
        resolve.execute(resolve.new_instance(), StubContext(), {"lora_name": "../../escape.safetensors"})

    save = b["SaveText"].behaviour
    ui = save.execute(save.new_instance(), StubContext(), {"text": "hello", "filename_prefix": "notes/text"})
    assert ui == {"ui": {"files": [{"filename": "text_00001_.txt", "subfolder": "notes", "type": "output"}]}}
    assert (tmp_path / "b/output/notes/text_00001_.txt").read_text() == "hello"
