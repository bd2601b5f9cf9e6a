"""The dependency rule of ARCHITECTURE.md, checked on the source: server -> graph, nodes;
nodes -> graph, diffusion; graph and diffusion import nothing of ours; graph never imports torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"graph", "nodes", "diffusion", "server"}
ALLOWED = {
    "graph": {"graph"},
    "diffusion": {"diffusion"},
    "nodes": {"nodes", "graph", "diffusion"},
    "server": {"server", "graph", "nodes"},
}
FORBIDDEN_THIRD_PARTY = {"graph": {"torch", "diffusers", "transformers", "PIL", "numpy"}}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    """No module imports a package of ours that its layer may not depend on."""
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        imported = _imported_top_levels(path)
        bad = (imported & OURS) - ALLOWED[package]
        bad |= imported & FORBIDDEN_THIRD_PARTY.get(package, set())
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []
