"""Every UI workflow of the corpus converts to exactly its paired API prompt.

``tests/data/workflows/<name>.ui.json`` is a workflow in the official editor's shape and
``<name>.api.json`` the prompt the editor's ``graphToPrompt`` sends for it (PROTOCOL.md 6.5).
Pairs without an ``.api.json`` (e.g. validation-error cases) are skipped here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph.schema import Registry
from graph.workflow import to_prompt
from graph.workflow_models import is_ui_workflow

CORPUS = Path(__file__).parents[1] / "data" / "workflows"
PAIRS = sorted(
    p.name.removesuffix(".ui.json")
    for p in CORPUS.glob("*.ui.json")
    if p.with_name(p.name.replace(".ui.json", ".api.json")).exists()
)


def test_corpus_is_big_enough() -> None:
    assert len(PAIRS) >= 12


@pytest.mark.parametrize("name", PAIRS)
def test_converts_exactly(name: str, toy_registry: Registry) -> None:
    workflow = json.loads((CORPUS / f"{name}.ui.json").read_text())
    expected = json.loads((CORPUS / f"{name}.api.json").read_text())
    assert is_ui_workflow(workflow)
    assert not is_ui_workflow(expected)
    assert to_prompt(workflow, toy_registry) == expected


@pytest.mark.parametrize("name", PAIRS)
def test_conversion_does_not_change_the_workflow(name: str, toy_registry: Registry) -> None:
    workflow = json.loads((CORPUS / f"{name}.ui.json").read_text())
    before = json.dumps(workflow, sort_keys=True)
    to_prompt(workflow, toy_registry)
    assert json.dumps(workflow, sort_keys=True) == before
