"""Prompt weight parsing: ComfyUI's ``token_weights`` rules, quirks included (PROTOCOL.md 9.9)."""

import pytest

from diffusion.prompt_weights import parse_prompt_weights, split_groups


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a (cat)", [("a ", 1.0), ("cat", 1.1)]),
        ("a ((cat))", [("a ", 1.0), ("cat", 1.1 * 1.1)]),
        ("(((cat)))", [("cat", 1.1 * 1.1 * 1.1)]),
        ("a (cat:1.5)", [("a ", 1.0), ("cat", 1.5)]),
        # an explicit weight replaces every outer multiplier
        ("((cat:1.5))", [("cat", 1.5)]),
        ("(a (cat:0.5) dog)", [("a ", 1.1), ("cat", 0.5), (" dog", 1.1)]),
        # a weight that is not a float keeps the colon and the 1.1 factor
        ("(cat:abc)", [("cat:abc", 1.1)]),
        ("(a:b:1.5)", [("a:b", 1.5)]),
        ("(cat: 1.5)", [("cat", 1.5)]),
        ("(cat:-1)", [("cat", -1.0)]),
        ("[cat]", [("[cat]", 1.0)]),
        ("a (b", [("a ", 1.0), ("(b", 1.0)]),
        ("(cat:1.5", [("(cat:1.5", 1.0)]),
        ("((cat)", [("(cat", 1.1)]),
        # an unmatched ')' switches group parsing off for what follows
        ("a ) (b)", [("a ) (b)", 1.0)]),
        ("\\(escaped\\) parens", [("(escaped) parens", 1.0)]),
        ("(a \\) b)", [("a ) b", 1.1)]),
        ("", []),
        ("()", []),
    ],
)
def test_segments_and_weights(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_weights(text) == expected


def test_groups_are_cut_at_top_level_only() -> None:
    assert split_groups("x (a (b) c) y") == ["x ", "(a (b) c)", " y"]


def test_deep_nesting_does_not_recurse() -> None:
    depth = 3000  # far past Python's default recursion limit
    segments = parse_prompt_weights("(" * depth + "cat" + ")" * depth)
    assert [text for text, _ in segments] == ["cat"]
    assert segments[0][1] == pytest.approx(1.1**depth, rel=1e-9)
