"""What the server does, as plain functions over text and str offsets.

No LSP types here: each action takes the document text, offsets and an engine, and
returns plain edits (start, end, new text) into that same text.  The handlers in
server.py translate positions and wrap the edits; everything here is testable without a
client (tests/test_lsp_actions.py).

Invariant kept by every function: an edit never reaches outside the span the action is
about (the cursor's line for inline completion, the widened selection for a rewrite, the
body for fill-in, the identifier's occurrences for naming).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from infill_engine.syntax import spans
from infill_engine.request import InfillRequest, InfillResult, SamplerSettings

if TYPE_CHECKING:  # the engine pulls in torch; this module only calls it
    from infill_engine.engine import Engine

# How much text around a hole the engine is given.  The model attends over ~1k tokens;
# handing it a whole large file would only cost tokenizer time before the engine cuts it.
PREFIX_CHARS = 8000
SUFFIX_CHARS = 4000

LINE_HOLE_TOKENS = 32  # the rest of one line rarely needs more
NAME_HOLE_TOKENS = 8
BODY_BUDGET_FACTOR = 2  # a body gets twice the per-hole budget of an inline block (48 -> 96 by default)
HINT_PROBABILITY = 0.02  # tokens the model finds less likely than this get an "unlikely" hint

CancelCheck = Callable[[], bool]
ProgressHook = Callable[[float], None]


class ActionError(Exception):
    """The action does not apply here; the message says why, for the user."""


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    new_text: str


@dataclass(frozen=True)
class InlineSuggestion:
    start: int  # replaces text[start:end]; both on the cursor's line
    end: int
    text: str
    syntax_ok: bool
    score: float


@dataclass(frozen=True)
class Hint:
    start: int
    end: int
    probability: float


@dataclass
class Hooks:
    """What the server passes down to a model call: cancellation and progress."""

    cancel: CancelCheck | None = None
    progress: ProgressHook | None = None


# -- context ---------------------------------------------------------------------------


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


def line_bounds(text: str, offset: int) -> tuple[int, int]:
    """Start and end (before the line break) of the line holding `offset`."""
    start = max(text.rfind("\n", 0, offset), text.rfind("\r", 0, offset)) + 1
    end = offset
    while end < len(text) and text[end] not in "\r\n":
        end += 1
    return start, end


def _sampler(threshold: float) -> SamplerSettings:
    return SamplerSettings(strategy="threshold", threshold=threshold)


def _infill(engine: Engine, prefix: str, suffix: str, max_length: int, candidates: int, threshold: float,
            hooks: Hooks, between: tuple[str, ...] = ()) -> InfillResult:
    request = InfillRequest(
        prefix=prefix,
        suffix=suffix,
        length=None,
        max_length=max_length,
        candidates=candidates,
        sampler=_sampler(threshold),
        between=between,
        cancel=hooks.cancel,
        progress=hooks.progress,
    )
    return engine.infill(request)


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


# -- inline completion -----------------------------------------------------------------


def is_block_position(text: str, offset: int) -> bool:
    """An empty (or whitespace-only) line: the place for a multi-line block."""
    start, end = line_bounds(text, offset)
    return not text[start:end].strip()


def complete_inline(
    engine: Engine,
    text: str,
    offset: int,
    language: str,
    *,
    max_tokens: int = 48,
    candidates: int = 1,
    threshold: float = 0.9,
    hooks: Hooks | None = None,
) -> list[InlineSuggestion]:
    """Infill at the cursor from the code before and after it.

    On a blank line: a multi-line block (up to `max_tokens`) with the indentation the
    surrounding code needs.  Mid-line: the rest of the line only, never repeating what
    already follows the cursor.  Best first; candidates that add syntax errors come last.
    """
    hooks = hooks or Hooks()
    line_start, line_end = line_bounds(text, offset)
    block = is_block_position(text, offset)
    prefix, suffix = context_around(text, offset, offset)
    budget = max_tokens if block else min(max_tokens, LINE_HOLE_TOKENS)
    result = _infill(engine, prefix, suffix, budget, candidates, threshold, hooks)

    suggestions: dict[tuple[int, int, str], InlineSuggestion] = {}
    order: dict[tuple[int, int, str], tuple[int, int]] = {}
    for rank, candidate in enumerate(result.candidates):
        if block:
            variants = _block_variants(text, offset, line_start, line_end, candidate.text)
        else:
            variants = _line_variants(text, offset, line_end, candidate.text)
        for variant_rank, (start, end, insert) in enumerate(variants):
            key = (start, end, insert)
            if key in suggestions:
                continue
            spliced = text[:start] + insert + text[end:]
            ok = spans.syntax_ok(text, spliced, language)
            suggestions[key] = InlineSuggestion(start, end, insert, ok, candidate.score)
            order[key] = (rank, variant_rank)
    # Syntax-preserving first; then the engine's order (best candidate first), then each
    # candidate's preferred variant.
    ranked = sorted(suggestions, key=lambda k: (not suggestions[k].syntax_ok, order[k]))
    return [suggestions[k] for k in ranked[:candidates]]


def _line_variants(text: str, offset: int, line_end: int, generated: str) -> list[tuple[int, int, str]]:
    """Mid-line: the hole is the rest of the line.  Variants of one generated text:
    its first line with a tail that duplicates the text after the cursor cut off, and
    the first line as generated (syntax decides which is right: in `print(|)` the model's
    own `)` may or may not be the one that already follows)."""
    first = re.split(r"\r\n|\r|\n", generated, maxsplit=1)[0]
    after = text[offset:line_end]
    if not after.strip():
        first = first.rstrip()
    if not first.strip():
        return []
    out: list[str] = []
    trimmed = _strip_duplicate_tail(first, after)
    if trimmed.strip():
        out.append(trimmed)
    if trimmed != first and not _repeats_after(first, after):
        out.append(first)
    return [(offset, offset, insert) for insert in out]


def _strip_duplicate_tail(first: str, after: str) -> str:
    """Cut the longest tail of `first` that is a leading part of the text after the
    cursor (ignoring the whitespace between them): `foo(x)` before `)` -> `foo(x`."""
    stripped_after = after.strip()
    if not stripped_after:
        return first
    body = first.rstrip()
    for k in range(min(len(body), len(stripped_after)), 0, -1):
        if body.endswith(stripped_after[:k]):
            return body[: len(body) - k]
    return first


def _repeats_after(first: str, after: str) -> bool:
    """True when `first` ends with everything that follows the cursor on the line and
    that is real code (a name, a literal): inserting it would show that text twice.
    Closing punctuation alone (`)`, `]:`) is no repetition: the model's own `)` may
    close a call it opened, and the syntax check tells the two cases apart."""
    tail = after.strip()
    return bool(tail) and first.rstrip().endswith(tail) and any(ch.isalnum() for ch in tail)


def _block_variants(text: str, offset: int, line_start: int, line_end: int, generated: str) -> list[tuple[int, int, str]]:
    """Blank line: a block of whole lines.  Returns the block as generated and, if its
    indentation differs from what the neighbouring lines imply, a re-indented copy.
    Both replace the blank line (a single-line range, as inline completion requires)."""
    before = text[line_start:offset]
    block = (before + generated).rstrip()
    lines = re.split(r"\r\n|\r|\n", block)
    while lines and not lines[0].strip():
        lines.pop(0)
    lines = _drop_repeated_following_lines(lines, text[line_end:])
    if not lines:
        return []
    newline = "\r\n" if "\r\n" in text[max(0, line_start - 2) : line_end + 2] else "\n"
    variants = [lines]
    expected = _expected_indent(text, line_start, line_end)
    actual = _indent_of(lines[0])
    if expected is not None and expected != actual:
        reindented = _reindent(lines, actual, expected)
        # Shallower than the code below it, the block would cut that code off from its
        # enclosing block: then the re-indented copy goes first.  Otherwise the model's
        # own indentation (which saw the context) goes first.
        following = [ln for ln in re.split(r"\r\n|\r|\n", text[line_end:]) if ln.strip()]
        if following and len(actual) < len(_indent_of(following[0])):
            variants.insert(0, reindented)
        else:
            variants.append(reindented)
    out = []
    for variant in variants:
        full = newline.join(variant)
        if full.startswith(before):
            # A pure insertion at the cursor: what every client renders as ghost text.
            out.append((offset, line_end, full[len(before) :]))
        else:
            out.append((line_start, line_end, full))
    return out


def _drop_repeated_following_lines(lines: list[str], following: str) -> list[str]:
    """Drop trailing lines of the block that repeat the code right after the blank line
    (a model that "completes" by copying the suffix would otherwise duplicate it)."""
    after = [ln.strip() for ln in re.split(r"\r\n|\r|\n", following) if ln.strip()][: len(lines)]
    for k in range(min(len(lines), len(after)), 0, -1):
        if [ln.strip() for ln in lines[-k:]] == after[:k]:
            return lines[:-k]
    return lines


_OPENERS = (":", "{", "(", "[")


def _expected_indent(text: str, line_start: int, line_end: int) -> str | None:
    """The indentation a new line here needs: the next code line's, or one level deeper
    than the previous line's when that line opens a block."""
    prev_lines = [ln for ln in re.split(r"\r\n|\r|\n", text[:line_start]) if ln.strip()]
    next_lines = [ln for ln in re.split(r"\r\n|\r|\n", text[line_end:]) if ln.strip()]
    prev = prev_lines[-1] if prev_lines else None
    nxt = next_lines[0] if next_lines else None
    if prev is not None and prev.rstrip().endswith(_OPENERS):
        unit = "\t" if _indent_of(prev).startswith("\t") or (nxt and _indent_of(nxt).startswith("\t")) else "    "
        deeper = _indent_of(prev) + unit
        if nxt is not None and len(_indent_of(nxt)) > len(_indent_of(prev)):
            return _indent_of(nxt)
        return deeper
    if nxt is not None:
        return _indent_of(nxt)
    if prev is not None:
        return _indent_of(prev)
    return None


def _reindent(lines: list[str], actual: str, expected: str) -> list[str]:
    out = []
    for line in lines:
        if line.startswith(actual):
            out.append(expected + line[len(actual) :] if line.strip() else line)
        else:  # a line less indented than the first: leave its relative layout alone
            out.append(line)
    return out


# -- code actions ----------------------------------------------------------------------

REWRITE, FILL_BODY, REPAIR, SUGGEST_NAME = "rewrite", "fillBody", "repair", "suggestName"


def available_actions(text: str, language: str, start: int, end: int) -> list[tuple[str, str]]:
    """(action, title) for the code actions that apply to the selection [start, end).

    Cheap (tree-sitter only): the model runs when the user picks one (codeAction/resolve).
    """
    offered: list[tuple[str, str]] = []
    selected = end > start and bool(text[start:end].strip())
    if selected:
        offered.append((REWRITE, "diffill: Rewrite selection"))
    if spans.body_span(text, language, start) is not None:
        offered.append((FILL_BODY, "diffill: Fill in body"))
    if selected:
        offered.append((REPAIR, "diffill: Repair"))
    ident = spans.identifier_at(text, language, start)
    if ident is not None and spans.occurrences(text, language, start):
        offered.append((SUGGEST_NAME, f"diffill: Suggest a name for `{text[ident[0]:ident[1]]}`"))
    return offered



def _best_text(text: str, start: int, end: int, language: str, result: InfillResult, strip: bool) -> str:
    """The best candidate for text[start:end]: syntax-preserving ones first, then by score."""
    if not result.candidates:
        raise ActionError("the model returned no candidates")
    best: tuple[bool, float, str] | None = None
    for candidate in result.candidates:
        new = candidate.text.rstrip() if strip else candidate.text
        ok = spans.syntax_ok(text, text[:start] + new + text[end:], language)
        key = (ok, candidate.score, new)
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None
    return best[2]


def _hole_budget(engine: Engine, original: str, floor: int) -> int:
    # A regenerated span may come out longer than the original: leave it room.
    return max(1, min(512, max(floor, int(engine.count_tokens(original) * 1.5) + 8)))


def rewrite(engine: Engine, text: str, language: str, start: int, end: int, *, max_tokens: int = 48,
            candidates: int = 1, threshold: float = 0.9, hooks: Hooks | None = None) -> Edit:
    """Regenerate the selection, widened to whole syntax nodes, from its surroundings.
    The edit covers exactly the widened span."""
    s, e = spans.rewrite_span(text, language, start, end)
    if s >= e:
        raise ActionError("nothing to rewrite: select some code")
    original = text[s:e]
    prefix, suffix = context_around(text, s, e)
    result = _infill(engine, prefix, suffix, _hole_budget(engine, original, max_tokens),
                     max(candidates, 2), threshold, hooks or Hooks())
    return Edit(s, e, _best_text(text, s, e, language, result, strip=not original[-1:].isspace()))


def fill_body(engine: Engine, text: str, language: str, offset: int, *, max_tokens: int = 48,
              candidates: int = 1, threshold: float = 0.9, hooks: Hooks | None = None) -> Edit:
    """Fill the body (`pass`, `...`, a TODO) of the function/class/block under the cursor."""
    span = spans.body_span(text, language, offset)
    if span is None:
        raise ActionError("no body to fill here: put the cursor in a function, class or block whose body is `pass`, `...` or a TODO")
    s, e = span
    prefix, suffix = context_around(text, s, e)
    result = _infill(engine, prefix, suffix, min(512, max_tokens * BODY_BUDGET_FACTOR),
                     max(candidates, 2), threshold, hooks or Hooks())
    return Edit(s, e, _best_text(text, s, e, language, result, strip=not text[s:e][-1:].isspace()))


def repair(engine: Engine, text: str, language: str, start: int, end: int, *, fraction: float = 0.25,
           threshold: float = 0.9) -> Edit:
    """Re-mask the selection's least likely tokens and refill them."""
    if start >= end or not text[start:end].strip():
        raise ActionError("nothing to repair: select some code")
    prefix, suffix = context_around(text, start, end)
    result = engine.repair(prefix, text[start:end], suffix, fraction, _sampler(threshold))
    return Edit(start, end, _best_text(text, start, end, language, result, strip=False))


def unlikely_hints(engine: Engine, text: str, start: int, end: int, *, below: float = HINT_PROBABILITY) -> list[Hint]:
    """Stretches of text[start:end] the model finds unlikely, merged when adjacent."""
    if start >= end:
        return []
    prefix, suffix = context_around(text, start, end)
    hints: list[Hint] = []
    for token in engine.score(prefix, text[start:end], suffix):
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


# -- names -----------------------------------------------------------------------------

_IDENTIFIER = {
    "javascript": re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$"),
    "typescript": re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$"),
    "tsx": re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$"),
}
_PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_identifier(name: str, language: str) -> bool:
    if language == "python":
        return name.isidentifier() and not keyword.iskeyword(name)
    return bool(_IDENTIFIER.get(language, _PLAIN_IDENTIFIER).match(name))


def prepare_rename(text: str, language: str, offset: int) -> tuple[int, int] | None:
    """The identifier under the cursor, if it can be renamed."""
    span = spans.identifier_at(text, language, offset)
    if span is None or not spans.occurrences(text, language, offset):
        return None
    return span


def rename(text: str, language: str, offset: int, new_name: str) -> list[Edit]:
    """Edits renaming every in-scope occurrence of the identifier under the cursor."""
    if not is_identifier(new_name, language):
        raise ActionError(f"{new_name!r} is not a valid {language} identifier")
    found = spans.occurrences(text, language, offset)
    if not found:
        raise ActionError("no identifier to rename here")
    return [Edit(s, e, new_name) for s, e in sorted(found)]


def suggest_name(engine: Engine, text: str, language: str, offset: int, *, candidates: int = 4,
                 threshold: float = 0.9, hooks: Hooks | None = None) -> list[Edit]:
    """Mask every in-scope occurrence of the identifier as one tied hole, so the model
    picks a single name that fits all of them; returns the edits renaming them."""
    found = sorted(spans.occurrences(text, language, offset))
    if not found:
        raise ActionError("no identifier here to name")
    current = text[found[0][0] : found[0][1]]
    first, last = found[0][0], found[-1][1]
    prefix, _ = context_around(text, first, first)
    _, suffix = context_around(text, last, last)
    between = tuple(text[found[i][1] : found[i + 1][0]] for i in range(len(found) - 1))
    result = _infill(engine, prefix, suffix, NAME_HOLE_TOKENS, max(candidates, 4), threshold,
                     hooks or Hooks(), between=between)
    names = [c.text.strip() for c in sorted(result.candidates, key=lambda c: -c.score)]
    valid = [n for n in names if is_identifier(n, language)]
    better = [n for n in valid if n != current]
    if not better:
        shown = ", ".join(repr(n) for n in names[:3]) or "nothing"
        raise ActionError(f"no better name than `{current}` found (the model proposed {shown})")
    return [Edit(s, e, better[0]) for s, e in found]
