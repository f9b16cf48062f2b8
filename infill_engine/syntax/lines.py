"""Lines as editors count them: "\\r\\n", "\\r" and "\\n" each end a line (the LSP rule).

The one place that knows what a line break is, for the language server, the CLI and
the syntax-aware spans alike.  (tree-sitter's own rows count "\\n" only; parse.py keeps
that rule to itself.)
"""

from __future__ import annotations

import re

LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_lines(text: str, maxsplit: int = 0) -> list[str]:
    """The lines of `text` without their breaks ("a\\r\\nb\\n" -> ["a", "b", ""])."""
    return LINE_BREAK.split(text, maxsplit)


def line_starts(text: str) -> list[int]:
    """The offset where each line begins; the first is 0, one entry per line."""
    return [0, *(m.end() for m in LINE_BREAK.finditer(text))]


def line_span(text: str, offset: int) -> tuple[int, int]:
    """The line holding `offset`: from its first character to just before its line break.

    An offset at a line break belongs to the line the break ends; one outside the text is
    taken as its nearest end."""
    offset = max(0, min(offset, len(text)))
    # "\r" is looked for only within the "\n"-delimited stretch: a text without any "\r" must
    # not be scanned to its far end for every position.
    newline_before = text.rfind("\n", 0, offset)
    start = max(newline_before, text.rfind("\r", newline_before + 1, offset)) + 1
    newline_after = text.find("\n", offset)
    if newline_after < 0:
        newline_after = len(text)
    return_after = text.find("\r", offset, newline_after)
    return start, return_after if return_after >= 0 else newline_after
