"""Stretches of existing code the model finds unlikely (the "unlikely code here" hints).

lsp_server/hints.py decides when to ask (after a pause in typing, around the last edit)
and publishes the answer as diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .context import context_around

if TYPE_CHECKING:
    from infill_engine.engine import Engine

HINT_PROBABILITY = 0.02  # tokens the model finds less likely than this get an "unlikely" hint


@dataclass(frozen=True)
class Hint:
    start: int
    end: int
    probability: float


def unlikely_hints(engine: Engine, text: str, start: int, end: int, *, below: float = HINT_PROBABILITY,
                   cancel: Callable[[], bool] | None = None) -> list[Hint]:
    """Stretches of text[start:end] the model finds unlikely, merged when adjacent.  `cancel`
    is polled between the model's forwards (InfillCancelled): a keystroke need not wait for
    the whole job."""
    if start >= end:
        return []
    prefix, suffix = context_around(text, start, end)
    hints: list[Hint] = []
    scored = engine.score(prefix, text[start:end], suffix, cancel=cancel) if cancel else engine.score(
        prefix, text[start:end], suffix)
    for token in scored:
        if token.probability >= below or not token.text.strip():
            continue
        s, e = start + token.start, start + token.end
        # Leading/trailing whitespace of a token is not what looks wrong.
        s += len(token.text) - len(token.text.lstrip())
        e -= len(token.text) - len(token.text.rstrip())
        if s >= e or e > end:
            continue
        if hints and text[hints[-1].end : s].strip() == "" and "\n" not in text[hints[-1].end : s]:
            last = hints.pop()
            hints.append(Hint(last.start, e, min(last.probability, token.probability)))
        else:
            hints.append(Hint(s, e, token.probability))
    return hints
