"""Bad custom node packs: each failure is reported with its reason, and the other packs still load."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from pack_kit import BAD_PACKS, DATA, pack_registry, run_prompt

from nodes.registry import NodeRegistry


def _outside_temp() -> Path | None:
    """A place that is neither a pack's folder nor the system temp dir (which packs may write to)."""
    temp = Path(tempfile.gettempdir()).resolve()
    for folder in (Path.home(), DATA.resolve().parents[2]):
        if temp != folder.resolve() and temp not in folder.resolve().parents:
            return folder / ".noodlebox-test-escaped-by-pack.txt"
    return None


ESCAPED = _outside_temp() or DATA / "escaped_by_pack.txt"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    # The surface's own first import (torch, the samplers) must not count against the packs' one second.
    import nodes.comfy_surface.comfy.samplers
    import nodes.comfy_surface.comfy.utils  # noqa: F401
    import nodes.compat as compat

    if _outside_temp() is None:
        pytest.skip("every candidate folder is inside the system temp dir, where packs may write")
    before = compat.IMPORT_TIMEOUT_S
    compat.IMPORT_TIMEOUT_S = 1.0
    os.environ["NOODLEBOX_TEST_ESCAPE_TARGET"] = str(ESCAPED)
    try:
        return pack_registry(tmp_path_factory.mktemp("bad"), [BAD_PACKS])
    finally:
        compat.IMPORT_TIMEOUT_S = before
        del os.environ["NOODLEBOX_TEST_ESCAPE_TARGET"]


def errors(registry: NodeRegistry) -> dict[str, str]:
    return {f.name: f.error for f in registry.load_report}


def test_the_good_pack_loads_and_each_bad_one_is_reported(registry: NodeRegistry) -> None:
    assert registry.custom_packs == ["fails_at_run"]
    assert set(errors(registry)) == {"loops_at_import", "missing_attribute", "missing_module", "needs_package",
                                     "writes_outside", "writes_outside/write"}


def test_a_pack_that_loops_at_import_is_stopped(registry: NodeRegistry) -> None:
    assert errors(registry)["loops_at_import"].startswith("ImportTimeout: import took longer than 1 s")


def test_names_not_provided_are_named(registry: NodeRegistry) -> None:
    assert errors(registry)["missing_module"] == (
        "ModuleNotFoundError: noodlebox does not provide ComfyUI's module 'comfy.ldm'")
    assert errors(registry)["missing_attribute"] == (
        "NotProvidedError: noodlebox does not provide ComfyUI's comfy.utils.no_such_helper")


def test_missing_package_reports_the_requirements_and_installs_nothing(registry: NodeRegistry) -> None:
    error = errors(registry)["needs_package"]
    assert error.startswith("ModuleNotFoundError: No module named 'noodlebox_absent_package'")
    assert "requirements.txt lists: noodlebox-absent-package, numpy" in error
    assert "does not install" in error


def test_writes_outside_the_pack_folder_are_refused(registry: NodeRegistry) -> None:
    assert not ESCAPED.exists()
    assert errors(registry)["writes_outside"].startswith("PermissionError: custom node packs may not write")
    assert errors(registry)["writes_outside/write"].endswith(str(ESCAPED))


def test_a_node_failing_at_run_time_names_its_pack(registry: NodeRegistry) -> None:
    result, events = run_prompt(registry, {"1": {"class_type": "AlwaysFails", "inputs": {"value": 3}}})
    assert result.status == "error"
    error = dict(events)["execution_error"]
    assert error["exception_message"] == "cannot handle 3 [custom node pack fails_at_run]"
    assert error["exception_type"] == "ValueError"
    assert error["node_type"] == "AlwaysFails"


def test_pack_stdout_goes_to_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     caplog: pytest.LogCaptureFixture) -> None:
    from nodes.compat import load_custom_nodes

    packs = tmp_path / "custom_nodes"
    packs.mkdir()
    (packs / "chatty.py").write_text('print("chatty pack here")\nNODE_CLASS_MAPPINGS = {}\n')
    with caplog.at_level(logging.INFO, logger="custom_nodes"):
        loaded = load_custom_nodes([packs])
    assert loaded.loaded == ["chatty"]
    assert "chatty pack here" not in capsys.readouterr().out
    assert any(r.name == "custom_nodes.chatty" and r.getMessage() == "chatty pack here" for r in caplog.records)


def test_pack_output_stays_out_of_validate_convert_and_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from server.cli import main

    packs = tmp_path / "custom_nodes"
    packs.mkdir()
    (packs / "loud.py").write_text('print("LOUD PACK")\n'
                                   'class Loud:\n'
                                   '    @classmethod\n'
                                   '    def INPUT_TYPES(cls):\n'
                                   '        return {"required": {"v": ("INT", {"default": 1})}}\n'
                                   '    RETURN_TYPES = ("INT",)\n'
                                   '    FUNCTION = "go"\n'
                                   '    OUTPUT_NODE = True\n'
                                   '    def go(self, v):\n'
                                   '        print("LOUD RUN")\n'
                                   '        return (v,)\n'
                                   'NODE_CLASS_MAPPINGS = {"Loud": Loud}\n')
    prompt = tmp_path / "p.json"
    prompt.write_text(json.dumps({"1": {"class_type": "Loud", "inputs": {"v": 2}}}))
    assert main(["validate", "--custom-nodes", str(packs), str(prompt)]) == 0
    out, _ = capsys.readouterr()
    assert "LOUD" not in out
    assert main(["convert", "--custom-nodes", str(packs), str(prompt)]) == 0
    out, _ = capsys.readouterr()
    assert "LOUD" not in out and json.loads(out)["1"]["class_type"] == "Loud"
    assert main(["run", "--custom-nodes", str(packs), "--base-dir", str(tmp_path), str(prompt)]) == 0
    out, _ = capsys.readouterr()
    assert "LOUD" not in out
