"""Building registries: built-in modules, missing modules, services bound per registry."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import BUILTIN_MODULES, build_registry, builtin_modules, declarations


def test_default_registry_has_the_pure_nodes_and_cwd_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    registry = build_registry()
    assert {"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean",
            "StringConcatenate", "IntMath", "FloatMath", "PreviewAny"} <= set(registry)
    assert registry.services.folders.base_dir == tmp_path
    assert registry.load_report == [] and registry.custom_packs == []


def test_declarations_in_definition_order_and_not_reexports() -> None:
    primitives = importlib.import_module("nodes.primitives")
    names = [d.name for d in declarations(primitives)]
    assert names[:3] == ["PrimitiveInt", "PrimitiveFloat", "PrimitiveString"]
    assert names.count("PreviewAny") == 1


def test_missing_builtin_module_is_skipped_but_broken_one_raises(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert [m.__name__ for m in builtin_modules(["nodes.primitives", "nodes.not_written_yet"])] == [
        "nodes.primitives"]
    (tmp_path / "nb_broken_node_module.py").write_text("import nb_dependency_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="nb_dependency_that_does_not_exist"):
        builtin_modules(["nb_broken_node_module"])
    assert BUILTIN_MODULES[0] == "nodes.primitives"


def test_registries_are_independent(tmp_path: Path) -> None:
    a = build_registry(Services(folders=Folders(tmp_path / "a"), precision="fp32"))
    b = build_registry(Services(folders=Folders(tmp_path / "b")))
    assert a["PrimitiveInt"] is not b["PrimitiveInt"]
    assert a.services.precision == "fp32" and b.services.precision == "auto"
