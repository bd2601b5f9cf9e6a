"""String nodes: case, trimming, length, substrings, replacing, comparing, and regular expressions.

Names, inputs and categories are those of ComfyUI's ``comfy_extras/nodes_string.py``.
Unlike ComfyUI, a regex that does not compile stops the node with a one-line reason
instead of quietly giving an empty string or False.
"""

from __future__ import annotations

import re
from typing import Annotated

from .api import Multiline, OneOf, Output, Range, node

_MODULE = "comfy_extras.nodes_string"
_CATEGORY = "utils/string"

Text = Annotated[str, Multiline()]

CASE_MODES = ("UPPERCASE", "lowercase", "Capitalize", "Title Case")
TRIM_MODES = ("Both", "Left", "Right")
COMPARE_MODES = ("Starts With", "Ends With", "Equal")
EXTRACT_MODES = ("First Match", "All Matches", "First Group", "All Groups")


def compile_pattern(pattern: str, case_insensitive: bool, multiline: bool, dotall: bool) -> re.Pattern[str]:
    """Compile ``pattern`` with the nodes' flags; a bad pattern raises ValueError with the reason."""
    flags = (re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0) | (
        re.DOTALL if dotall else 0)
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"the regex {pattern!r} does not compile: {exc}") from None


@node(category=_CATEGORY, display_name="Case Converter", python_module=_MODULE)
def CaseConverter(string: Text, mode: Annotated[str, OneOf(CASE_MODES, v3=True)]) -> str:
    """Upper-cases, lower-cases, capitalizes or title-cases the text."""
    if mode == "UPPERCASE":
        return string.upper()
    if mode == "lowercase":
        return string.lower()
    if mode == "Capitalize":
        return string.capitalize()
    return string.title()


@node(category=_CATEGORY, display_name="Trim", python_module=_MODULE)
def StringTrim(string: Text, mode: Annotated[str, OneOf(TRIM_MODES, v3=True)]) -> str:
    """Removes whitespace from both ends, the start, or the end."""
    if mode == "Left":
        return string.lstrip()
    if mode == "Right":
        return string.rstrip()
    return string.strip()


@node(category=_CATEGORY, display_name="Length", python_module=_MODULE)
def StringLength(string: Text) -> Annotated[int, Output("length")]:
    """The number of characters."""
    return len(string)


@node(category=_CATEGORY, display_name="Substring", python_module=_MODULE)
def StringSubstring(string: Text, start: int, end: int) -> str:
    """The characters from ``start`` up to ``end`` (Python slicing: negative counts from the end)."""
    return string[start:end]


@node(category=_CATEGORY, display_name="Replace", python_module=_MODULE)
def StringReplace(string: Text, find: Text, replace: Text) -> str:
    """Replaces every occurrence of ``find``."""
    return string.replace(find, replace)


@node(category=_CATEGORY, display_name="Contains", python_module=_MODULE)
def StringContains(string: Text, substring: Text, case_sensitive: bool = True) -> Annotated[bool, Output("contains")]:
    """Whether ``substring`` occurs in the text."""
    if not case_sensitive:
        string, substring = string.lower(), substring.lower()
    return substring in string


@node(category=_CATEGORY, display_name="Compare", python_module=_MODULE)
def StringCompare(
    string_a: Text,
    string_b: Text,
    mode: Annotated[str, OneOf(COMPARE_MODES, v3=True)],
    case_sensitive: bool = True,
) -> bool:
    """Whether string_a starts with, ends with, or equals string_b."""
    if not case_sensitive:
        string_a, string_b = string_a.lower(), string_b.lower()
    if mode == "Starts With":
        return string_a.startswith(string_b)
    if mode == "Ends With":
        return string_a.endswith(string_b)
    return string_a == string_b


@node(category=_CATEGORY, display_name="Regex Match", python_module=_MODULE)
def RegexMatch(
    string: Text,
    regex_pattern: Text,
    case_insensitive: bool = True,
    multiline: bool = False,
    dotall: bool = False,
) -> Annotated[bool, Output("matches")]:
    """Whether the pattern matches anywhere in the text."""
    return compile_pattern(regex_pattern, case_insensitive, multiline, dotall).search(string) is not None


@node(category=_CATEGORY, display_name="Regex Extract", python_module=_MODULE)
def RegexExtract(
    string: Text,
    regex_pattern: Text,
    mode: Annotated[str, OneOf(EXTRACT_MODES, v3=True)],
    case_insensitive: bool = True,
    multiline: bool = False,
    dotall: bool = False,
    group_index: Annotated[int, Range(0, 100)] = 1,
) -> str:
    """The first match, all matches (one per line), or group ``group_index`` of the first or every match.

    Nothing found gives an empty string. "All Matches" lists what ``re.findall`` gives: the
    whole match, or the first group when the pattern has groups.
    """
    pattern = compile_pattern(regex_pattern, case_insensitive, multiline, dotall)
    if mode == "First Match":
        match = pattern.search(string)
        return match.group(0) if match else ""
    if mode == "All Matches":
        found = pattern.findall(string)
        return "\n".join(m[0] if isinstance(m, tuple) else m for m in found)
    if mode == "First Group":
        match = pattern.search(string)
        return (match.group(group_index) or "") if match and len(match.groups()) >= group_index else ""
    return "\n".join(m.group(group_index) or "" for m in pattern.finditer(string)
                     if m.groups() and len(m.groups()) >= group_index)


@node(category=_CATEGORY, display_name="Regex Replace", python_module=_MODULE)
def RegexReplace(
    string: Text,
    regex_pattern: Text,
    replace: Text,
    case_insensitive: bool | None = True,
    multiline: bool | None = False,
    dotall: bool | None = False,
    count: Annotated[int, Range(0, 100)] | None = 0,
) -> str:
    """Replaces matches of the pattern (``\\1`` refers to a group); ``count`` 0 replaces them all."""
    pattern = compile_pattern(regex_pattern, bool(case_insensitive), bool(multiline), bool(dotall))
    try:
        return pattern.sub(replace, string, count=count or 0)
    except re.error as exc:
        raise ValueError(f"the replacement {replace!r} is not valid for this regex: {exc}") from None
