"""Names: rename an identifier everywhere it is in scope, or let the model suggest one.

Which identifiers are "the same variable" is infill_engine.syntax.scopes' business; this
module checks names and turns occurrences into edits.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from infill_engine.request import InfillOptions
from infill_engine.syntax.parse import Code
from infill_engine.syntax.scopes import occurrences
from infill_engine.syntax.spans import identifier_at

from .context import ActionError, Edit, Hooks, infill

if TYPE_CHECKING:
    from infill_engine.engine import Engine

NAME_HOLE_TOKENS = 8
NAME_CANDIDATES = 4  # the model proposes at least this many names; the first valid new one wins

_IDENTIFIER = {
    "javascript": re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$"),
    "typescript": re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$"),
    "tsx": re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$"),
}
_PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_identifier(name: str, language: str | None) -> bool:
    if language == "python":
        return name.isidentifier() and not keyword.iskeyword(name)
    return bool(_IDENTIFIER.get(language or "", _PLAIN_IDENTIFIER).match(name))


def prepare_rename(code: Code, offset: int) -> tuple[int, int] | None:
    """The identifier under the cursor, if it can be renamed."""
    span = identifier_at(code, offset)
    if span is None or not occurrences(code, offset):
        return None
    return span


def rename(code: Code, offset: int, new_name: str) -> list[Edit]:
    """Edits renaming every in-scope occurrence of the identifier under the cursor."""
    if not is_identifier(new_name, code.language):
        raise ActionError(f"{new_name!r} is not a valid {code.language} identifier")
    found = occurrences(code, offset)
    if not found:
        raise ActionError("no identifier to rename here")
    return [Edit(s, e, new_name) for s, e in sorted(found)]


def suggest_name(engine: Engine, code: Code, offset: int, options: InfillOptions = InfillOptions(),
                 hooks: Hooks | None = None) -> list[Edit]:
    """Mask every in-scope occurrence of the identifier as one tied hole, so the model
    picks a single name that fits all of them; returns the edits renaming them."""
    found = sorted(occurrences(code, offset))
    if not found:
        raise ActionError("no identifier here to name")
    text = code.text
    current = text[found[0][0] : found[0][1]]
    between = tuple(text[found[i][1] : found[i + 1][0]] for i in range(len(found) - 1))
    # Every name length gets a row (a one-token name too); each row is a candidate.
    options = replace(options, max_length=NAME_HOLE_TOKENS, candidates=max(options.candidates, NAME_CANDIDATES),
                      lengths=tuple(range(1, NAME_HOLE_TOKENS + 1)))
    result = infill(engine, text, found[0][0], found[-1][1], options, hooks, between=between)
    names = [c.text.strip() for c in sorted(result.candidates, key=lambda c: -c.score)]
    valid = [n for n in names if is_identifier(n, code.language)]
    better = [n for n in valid if n != current]
    if not better:
        shown = ", ".join(repr(n) for n in names[:3]) or "nothing"
        raise ActionError(f"no better name than `{current}` found (the model proposed {shown})")
    return [Edit(s, e, better[0]) for s, e in found]
