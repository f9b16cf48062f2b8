"""What every feature shares: the code around a hole, the hooks into a model call, the edit back.

The model attends over ~1k tokens; handing it a whole large file would only cost
tokenizer time before the engine cuts it, so a feature gives it a window of whole lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from infill_engine.ranking import Ranking
from infill_engine.request import InfillOptions, InfillResult
from infill_engine.syntax.parse import Code

if TYPE_CHECKING:  # the engine pulls in torch; features only call it
    from infill_engine.engine import Engine

PREFIX_CHARS = 8000
SUFFIX_CHARS = 4000


class ActionError(Exception):
    """The feature does not apply here; the message says why, for the user."""


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    new_text: str


MAX_HOLE_TOKENS = 512  # the engine's limit for one hole


@dataclass
class Hooks:
    """What the server passes down to a model call: cancellation, progress, and the most
    tokens a hole may take however large the span it replaces (the actions' token bound)."""

    cancel: Callable[[], bool] | None = None
    progress: Callable[[float], None] | None = None
    max_tokens: int = MAX_HOLE_TOKENS


def context_around(text: str, start: int, end: int) -> tuple[str, str]:
    """Prefix and suffix of the hole text[start:end], trimmed to whole lines within
    PREFIX_CHARS / SUFFIX_CHARS."""
    prefix = text[max(0, start - PREFIX_CHARS) : start]
    if start > PREFIX_CHARS:
        cut = prefix.find("\n")
        prefix = prefix[cut + 1 :] if cut >= 0 else prefix
    suffix = text[end : end + SUFFIX_CHARS]
    if end + SUFFIX_CHARS < len(text):
        cut = suffix.rfind("\n")
        suffix = suffix[: cut + 1] if cut >= 0 else suffix
    return prefix, suffix


def infill(engine: Engine, text: str, start: int, end: int, options: InfillOptions, hooks: Hooks | None = None,
           between: tuple[str, ...] = ()) -> InfillResult:
    """Ask the engine to fill text[start:end] (tied holes: `between` separates them) from the
    windowed code around it."""
    hooks = hooks or Hooks()
    prefix, suffix = context_around(text, start, end)
    return engine.infill(options.request(prefix, suffix, between=between, cancel=hooks.cancel,
                                         progress=hooks.progress))


def best_text(code: Code, start: int, end: int, result: InfillResult, strip: bool) -> str:
    """The best candidate for code.text[start:end]: infill_engine.ranking's rule (fewest
    faults), then the model's score."""
    if not result.candidates:
        raise ActionError("the model returned no candidates")
    text = code.text
    rule = Ranking(text[:start], text[end:], code.language, baseline=code)
    texts = [(c.text.rstrip() if strip else c.text, c.score) for c in result.candidates]
    return min(texts, key=lambda t: (rule.key(t[0]), -t[1]))[0]
