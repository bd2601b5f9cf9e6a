"""String nodes: each mode on small strings, and a regex that does not compile stopping the node."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import build_registry
from nodes.strings import (
    CaseConverter,
    RegexExtract,
    RegexMatch,
    RegexReplace,
    StringCompare,
    StringContains,
    StringLength,
    StringReplace,
    StringSubstring,
    StringTrim,
)


@pytest.mark.parametrize(("mode", "expected"), [
    ("UPPERCASE", "HELLO WORLD-WIDE"), ("lowercase", "hello world-wide"),
    ("Capitalize", "Hello world-wide"), ("Title Case", "Hello World-Wide"),
])
def test_case_converter(mode: str, expected: str) -> None:
    assert CaseConverter("hELLO world-wide", mode) == expected


def test_trim_length_substring_replace() -> None:
    assert StringTrim("  a b \n", "Both") == "a b"
    assert StringTrim("  a b \n", "Left") == "a b \n"
    assert StringTrim("  a b \n", "Right") == "  a b"
    assert StringLength("héllo") == 5
    assert StringSubstring("abcdef", 1, -1) == "bcde" and StringSubstring("abc", 5, 9) == ""
    assert StringReplace("a-b-c", "-", "+") == "a+b+c"


def test_contains_and_compare() -> None:
    assert StringContains("Big Cat", "cat", False) is True
    assert StringContains("Big Cat", "cat", True) is False
    assert StringCompare("Prefix-x", "prefix", "Starts With", False) is True
    assert StringCompare("Prefix-x", "prefix", "Starts With", True) is False
    assert StringCompare("a.png", ".png", "Ends With", True) is True
    assert StringCompare("A", "a", "Equal", True) is False and StringCompare("A", "a", "Equal", False) is True


def test_regex_match_flags() -> None:
    assert RegexMatch("Hello", "^hello$", True, False, False) is True
    assert RegexMatch("Hello", "^hello$", False, False, False) is False
    assert RegexMatch("one\ntwo", "^two", True, True, False) is True
    assert RegexMatch("one\ntwo", "^two", True, False, False) is False
    assert RegexMatch("a\nb", "a.b", True, False, True) is True


TEXT = "w=512 h=768; w=64 h=32"


@pytest.mark.parametrize(("mode", "group", "expected"), [
    ("First Match", 1, "w=512 h=768"),
    ("All Matches", 1, "512\n64"),  # findall with groups gives the first group
    ("First Group", 2, "768"),
    ("All Groups", 2, "768\n32"),
    ("First Group", 3, ""),  # no such group
])
def test_regex_extract_modes(mode: str, group: int, expected: str) -> None:
    assert RegexExtract(TEXT, r"w=(\d+) h=(\d+)", mode, True, False, False, group) == expected


def test_regex_extract_without_groups_and_without_matches() -> None:
    assert RegexExtract("a1 b22", r"\d+", "All Matches", True, False, False, 1) == "1\n22"
    assert RegexExtract("abc", r"\d", "First Match", True, False, False, 1) == ""


def test_regex_replace() -> None:
    assert RegexReplace("Cat cat CAT", "cat", "dog") == "dog dog dog"
    assert RegexReplace("Cat cat CAT", "cat", "dog", False) == "Cat dog CAT"
    assert RegexReplace("a1b2c3", r"(\d)", r"<\1>", True, False, False, 2) == "a<1>b<2>c3"


def test_a_regex_that_does_not_compile_gives_a_reason() -> None:
    with pytest.raises(ValueError, match=r"does not compile: missing \), unterminated subpattern"):
        RegexMatch("x", "(a", True, False, False)
    with pytest.raises(ValueError, match="not valid for this regex"):
        RegexReplace("x", "(x)", r"\2")


def test_bad_regex_stops_its_node_with_the_reason(tmp_path: Path) -> None:
    registry = build_registry(Services(folders=Folders(tmp_path)))
    prompt = {"1": {"class_type": "RegexExtract", "inputs": {
        "string": "abc", "regex_pattern": "[a-", "mode": "First Match", "case_insensitive": True,
        "multiline": False, "dotall": False, "group_index": 1}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    result = Executor(registry).run(checked.prompt, "p", checked.outputs)
    assert result.status == "error" and "does not compile" in str(result.error)
