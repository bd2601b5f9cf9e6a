"""ComfyUI's prompt weight syntax: ``(word)``, ``((word))``, ``(word:1.2)`` and ``\\(`` escapes.

The rules (PROTOCOL.md 9.9) are ComfyUI's, quirks included, because a prompt must
mean the same thing here as there:

- a top-level ``( ... )`` group multiplies the current weight by 1.1;
- ``(text:w)`` *sets* the weight to ``w`` (replacing every outer multiplier) when the
  text after the last colon (not at position 0) parses as a Python float; otherwise the
  colon stays in the text and the 1.1 factor applies;
- ``\\(`` and ``\\)`` are literal parentheses; square brackets mean nothing;
- an unmatched ``)`` drives the nesting level below zero, so what follows is read as
  text until a ``(`` brings the level back to zero; an unclosed ``(`` stays literal.

Everything here is iterative: a prompt nested a thousand levels deep costs time,
not the interpreter's recursion limit.
"""

from __future__ import annotations

# Escaped parentheses are swapped for private-use characters while parsing, so the
# parser never sees them, and swapped back to plain parentheses afterwards.
_ESCAPES = (("\\)", "\ue000"), ("\\(", "\ue001"))
_UNESCAPES = (("\ue000", ")"), ("\ue001", "("))

#: Weight factor of one level of parentheses.
EMPHASIS = 1.1


def _escape(text: str) -> str:
    for old, new in _ESCAPES:
        text = text.replace(old, new)
    return text


def _unescape(text: str) -> str:
    for old, new in _UNESCAPES:
        text = text.replace(old, new)
    return text


def split_groups(text: str) -> list[str]:
    """Cut ``text`` into plain runs and top-level ``( ... )`` groups (parentheses kept).

    A group starts at a ``(`` seen at nesting level 0 and ends at the ``)`` that brings
    the level back to 0. A ``)`` at level 0 is ordinary text but lowers the level to -1,
    which is why ComfyUI stops recognising groups after an unmatched ``)``.
    """
    pieces: list[str] = []
    current: list[str] = []
    level = 0
    for char in text:
        if char == "(" and level == 0:
            if current:
                pieces.append("".join(current))
            current = ["("]
            level = 1
        elif char == "(":
            current.append(char)
            level += 1
        elif char == ")":
            level -= 1
            current.append(char)
            if level == 0:
                pieces.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        pieces.append("".join(current))
    return pieces


def _group_weight(inner: str, weight: float) -> tuple[str, float]:
    """The text inside one group and the weight it carries."""
    weight *= EMPHASIS
    colon = inner.rfind(":")
    if colon > 0:
        try:
            # Python's float() on purpose: ComfyUI accepts exactly what it accepts
            # (" 1.5", "-1", "1e1", "inf"), and an explicit weight replaces the product.
            return inner[:colon], float(inner[colon + 1 :])
        except ValueError:
            pass
    return inner, weight


def parse_prompt_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """Split a prompt into ``(segment, weight)`` pairs as ComfyUI's ``token_weights`` does.

    Segments come back in prompt order with escapes resolved (``\\(`` -> ``(``); empty
    segments are kept (ComfyUI's tokenizer drops them later).

    >>> parse_prompt_weights("a (cat:1.5) and ((dog))")
    [('a ', 1.0), ('cat', 1.5), (' and ', 1.0), ('dog', 1.2100000000000002)]
    """
    out: list[tuple[str, float]] = []
    # Work items: (text, weight, literal). Pushed in reverse so they pop in order.
    stack: list[tuple[str, float, bool]] = [(_escape(text), weight, False)]
    while stack:
        piece, piece_weight, literal = stack.pop()
        if literal:
            out.append((_unescape(piece), piece_weight))
            continue
        work: list[tuple[str, float, bool]] = []
        for part in split_groups(piece):
            if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
                inner, inner_weight = _group_weight(part[1:-1], piece_weight)
                work.append((inner, inner_weight, False))
            else:
                work.append((part, piece_weight, True))
        stack.extend(reversed(work))
    return out
