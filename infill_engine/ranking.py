"""Which of the engine's fillings of a hole an editor offers first.

The engine orders its candidates by the model's own likelihood (`denoise.ranked`).  Two things
a small model gets wrong often enough to be worth a rule, each measured on HumanEval single
lines (see MODEL_CARD.md):

- a filling that breaks the parse is rarely right (tree-sitter, `syntax.spans.syntax_ok`;
  HumanEval single lines: 16 of 200 right against 10 of 200 by likelihood alone);
- a filling that only repeats a line next to the hole (`total = 0` again, under `total = 0`)
  is the likeliest text there and almost never what the user wants.  Control statements are
  exempt: a second `return False` or `break` a few lines on is ordinary code.
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence, TypeVar

from .syntax.parse import Code
from .syntax.spans import syntax_ok

NEAR_LINES = 3  # lines above and below the hole whose repetition counts as an echo
_CONTROL = re.compile(r"(return|break|continue|pass|raise|else|elif|try|finally|except)\b")


class Filling(Protocol):
    text: str


F = TypeVar("F", bound=Filling)


def echoes(prefix: str, suffix: str, text: str) -> bool:
    """True when every non-blank line of `text` is one of the NEAR_LINES non-blank lines on
    either side of the hole (compared without indentation), and not a control statement."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or any(_CONTROL.match(line) for line in lines):
        return False
    before = [line.strip() for line in prefix.splitlines() if line.strip()][-NEAR_LINES:]
    after = [line.strip() for line in suffix.splitlines() if line.strip()][:NEAR_LINES]
    near = set(before) | set(after)
    return all(line in near for line in lines)


def best_first(prefix: str, suffix: str, fillings: Sequence[F], language: str | None) -> list[F]:
    """`fillings` of the hole between prefix and suffix: those that parse no worse than the
    empty hole first, and within each group those that are not echoes; otherwise as given."""
    empty = Code(prefix + suffix, language)

    def key(f: F) -> tuple[bool, bool]:
        return not syntax_ok(empty, prefix + f.text + suffix), echoes(prefix, suffix, f.text)

    return sorted(fillings, key=key)  # stable: the engine's order within a group
