"""Every built-in node that ComfyUI also has is described as ComfyUI 0.3.64 describes it.

``../shared/reference/comfy_object_info_0.3.64.json`` is ComfyUI's own ``/object_info``.
For each of our nodes with a name in it, the inputs (types, defaults, bounds, choices;
file lists aside), their order, the outputs and their names, the category and the
output-node flag must be the same. Tooltips and descriptions are ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodes.api import Services
from nodes.folders import Folders
from nodes.object_info import node_info
from nodes.registry import NodeRegistry, build_registry

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "comfy_object_info_0.3.64.json"
#: Option keys that are descriptive only (ours may differ or be absent).
_DESCRIPTIVE = {"tooltip", "placeholder", "advanced", "display_name"}
#: Combos that list folders of the machine ComfyUI ran on (its input folder had a ``3d`` subfolder).
_FOLDER_LISTS = {("LoadImageSetFromFolderNode", "folder"), ("LoadImageTextSetFromFolderNode", "folder")}


def _reference() -> dict[str, Any]:
    if not REFERENCE.is_file():
        pytest.skip(f"the shared reference file is not here ({REFERENCE})")
    return json.loads(REFERENCE.read_text())


def _normal_input(entry: list[Any], file_list: bool) -> list[Any]:
    """An input entry without descriptive keys; a combo of files compares by being a combo."""
    kind = entry[0]
    options = {k: v for k, v in (entry[1] if len(entry) > 1 else {}).items() if k not in _DESCRIPTIVE}
    if isinstance(kind, list) and file_list:
        kind = "<files>"
    return [kind, options]


def _is_file_list(reference_kind: Any, where: tuple[str, str] = ("", "")) -> bool:
    # The reference empties file lists (checkpoints, images, ...): an empty combo there is a folder listing.
    return isinstance(reference_kind, list) and (not reference_kind or where in _FOLDER_LISTS)


def _shape(info: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    inputs: dict[str, dict[str, Any]] = {}
    for section in ("required", "optional"):
        ref_section = reference["input"].get(section, {})
        ours = info["input"].get(section, {})
        inputs[section] = {
            name: _normal_input(entry if isinstance(entry, list) else [entry],
                                _is_file_list(ref_section.get(name, [None])[0], (reference["name"], name)))
            for name, entry in ours.items()
        }
    return {
        "input": inputs,
        "input_order": {s: info["input_order"].get(s, []) for s in ("required", "optional")},
        "output": info["output"],
        "output_name": info["output_name"],
        "output_is_list": info["output_is_list"],
        "category": info["category"],
        "output_node": info["output_node"],
    }


def _reference_shape(reference: dict[str, Any]) -> dict[str, Any]:
    inputs = {
        section: {name: _normal_input(entry, _is_file_list(entry[0], (reference["name"], name)))
                  for name, entry in reference["input"].get(section, {}).items()}
        for section in ("required", "optional")
    }
    return {
        "input": inputs,
        "input_order": {s: reference["input_order"].get(s, []) for s in ("required", "optional")},
        "output": reference["output"],
        "output_name": reference["output_name"],
        "output_is_list": reference["output_is_list"],
        "category": reference["category"],
        "output_node": reference["output_node"],
    }


def _shared_nodes() -> list[str]:
    if not REFERENCE.is_file():
        return []
    names = set(json.loads(REFERENCE.read_text())["nodes"])
    return sorted(n for n in build_registry() if n in names)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    # An empty base folder: file combos list nothing, as in the reference.
    return build_registry(Services(folders=Folders(tmp_path_factory.mktemp("empty_base"))))


@pytest.mark.parametrize("name", _shared_nodes())
def test_node_matches_comfyui(name: str, registry: NodeRegistry) -> None:
    reference = _reference()["nodes"][name]
    ours = node_info(registry[name])
    assert _shape(ours, reference) == _reference_shape(reference)


def test_many_nodes_are_compared() -> None:
    _reference()  # skips when the shared reference file is not beside the checkout
    assert len(_shared_nodes()) >= 40
