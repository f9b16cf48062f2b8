"""The code actions: rewrite a selection, fill in a body, repair, suggest a name.

`ACTIONS` is the one table of them: what the server advertises, which switch turns each
off, which command runs it for clients that cannot resolve code actions lazily, and the
function that computes its edits.  Offering them is cheap (tree-sitter only); the model
runs when the user picks one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

from infill_engine.request import InfillOptions
from infill_engine.syntax.parse import Code
from infill_engine.syntax.scopes import occurrences
from infill_engine.syntax.spans import body_span, identifier_at, rewrite_span

from .context import MAX_HOLE_TOKENS, ActionError, Edit, Hooks, best_text, context_around, infill
from .naming import suggest_name

if TYPE_CHECKING:
    from infill_engine.engine import Engine

REWRITE, FILL_BODY, REPAIR, SUGGEST_NAME = "rewrite", "fillBody", "repair", "suggestName"

BODY_BUDGET_FACTOR = 2  # a body gets twice the per-hole budget of an inline block (48 -> 96 by default)
REWRITE_CANDIDATES = 2  # a rewrite or a body picks the best of at least two


def rewrite(engine: Engine, code: Code, start: int, end: int, options: InfillOptions = InfillOptions(),
            hooks: Hooks | None = None) -> Edit:
    """Regenerate the selection, widened to whole syntax nodes, from its surroundings.
    The edit covers exactly the widened span."""
    s, e = rewrite_span(code, start, end)
    if s >= e:
        raise ActionError("nothing to rewrite: select some code")
    original = code.text[s:e]
    hooks = hooks or Hooks()
    # A regenerated span may come out longer than the original: leave it room.
    budget = max(1, min(hooks.max_tokens, max(options.max_length, int(engine.count_tokens(original) * 1.5) + 8)))
    options = replace(options, max_length=budget, candidates=max(options.candidates, REWRITE_CANDIDATES))
    result = infill(engine, code.text, s, e, options, hooks)
    return Edit(s, e, best_text(code, s, e, result, strip=not original[-1:].isspace()))


def fill_body(engine: Engine, code: Code, offset: int, options: InfillOptions = InfillOptions(),
              hooks: Hooks | None = None) -> Edit:
    """Fill the body (`pass`, `...`, a TODO) of the function/class/block under the cursor."""
    span = body_span(code, offset)
    if span is None:
        raise ActionError("no body to fill here: put the cursor in a function, class or block whose body is "
                          "`pass`, `...` or a TODO")
    s, e = span
    hooks = hooks or Hooks()
    options = replace(options, max_length=max(1, min(hooks.max_tokens, options.max_length * BODY_BUDGET_FACTOR)),
                      candidates=max(options.candidates, REWRITE_CANDIDATES))
    result = infill(engine, code.text, s, e, options, hooks)
    return Edit(s, e, best_text(code, s, e, result, strip=not code.text[s:e][-1:].isspace()))


def repair(engine: Engine, code: Code, start: int, end: int, options: InfillOptions = InfillOptions(), *,
           fraction: float = 0.25, max_tokens: int = MAX_HOLE_TOKENS) -> Edit:
    """Re-mask the selection's least likely tokens and refill them."""
    text = code.text
    if start >= end or not text[start:end].strip():
        raise ActionError("nothing to repair: select some code")
    # Repair scores and refills the whole selection, so the selection is what is bounded.
    if (tokens := engine.count_tokens(text[start:end])) > max_tokens:
        raise ActionError(f"the selection is too long to repair ({tokens} tokens; diffill.actionMaxTokens "
                          f"is {max_tokens}): select less")
    prefix, suffix = context_around(text, start, end)
    result = engine.repair(prefix, text[start:end], suffix, fraction, options.sampler)
    return Edit(start, end, best_text(code, start, end, result, strip=False))


# -- the table ----------------------------------------------------------------------------

Run = Callable[["Engine", Code, int, int, InfillOptions, Hooks], list[Edit]]


@dataclass(frozen=True)
class Action:
    kind: str  # the action's id in code action data and in messages
    title: str
    lsp_kind: str  # its LSP CodeActionKind: "refactor.rewrite" or "quickfix"
    feature: str  # the Settings.features switch that turns it off
    command: str  # workspace/executeCommand id, for clients that cannot resolve code actions lazily
    takes_range: bool  # the command's argument and the action's input: a range (else a position)
    applies: Callable[[Code, int, int], str | None]  # None: not here; else what to add to the title
    run: Run  # the edits, computed with the model (on the model thread)


def _selected(code: Code, start: int, end: int) -> str | None:
    return "" if end > start and code.text[start:end].strip() else None


def _has_body(code: Code, start: int, end: int) -> str | None:
    return "" if body_span(code, start) is not None else None


def _names_identifier(code: Code, start: int, end: int) -> str | None:
    ident = identifier_at(code, start)
    if ident is None or not occurrences(code, start):
        return None
    return f" for `{code.text[ident[0]:ident[1]]}`"


# Every action run the same way: (engine, code, start, end, options, hooks) -> edits.

def _run_rewrite(engine, code, start, end, options, hooks) -> list[Edit]:
    return [rewrite(engine, code, start, end, options, hooks)]


def _run_fill_body(engine, code, start, end, options, hooks) -> list[Edit]:
    return [fill_body(engine, code, start, options, hooks)]


def _run_repair(engine, code, start, end, options, hooks) -> list[Edit]:
    return [repair(engine, code, start, end, options, max_tokens=hooks.max_tokens if hooks else MAX_HOLE_TOKENS)]


def _run_suggest_name(engine, code, start, end, options, hooks) -> list[Edit]:
    return suggest_name(engine, code, start, options, hooks)


ACTIONS: dict[str, Action] = {a.kind: a for a in [
    Action(REWRITE, "diffill: Rewrite selection", "refactor.rewrite", "rewrite", "diffill.rewriteSelection", True,
           _selected, _run_rewrite),
    Action(FILL_BODY, "diffill: Fill in body", "refactor.rewrite", "fill_body", "diffill.fillBody", False,
           _has_body, _run_fill_body),
    Action(REPAIR, "diffill: Repair", "quickfix", "repair", "diffill.repair", True,
           _selected, _run_repair),
    Action(SUGGEST_NAME, "diffill: Suggest a name", "refactor.rewrite", "suggest_name", "diffill.suggestName", False,
           _names_identifier, _run_suggest_name),
]}  # fmt: skip


def available_actions(code: Code, start: int, end: int) -> list[tuple[str, str]]:
    """(kind, title) of the actions that apply to the selection [start, end), in table order."""
    offered = []
    for action in ACTIONS.values():
        detail = action.applies(code, start, end)
        if detail is not None:
            offered.append((action.kind, action.title + detail))
    return offered
