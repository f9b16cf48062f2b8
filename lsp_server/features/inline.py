"""Inline completion: the model's filling at the cursor, shaped into suggestions an editor can show.

On a blank line: a multi-line block with the indentation the surrounding code needs.
Mid-line: the rest of the line only, never repeating what already follows the cursor.
Every suggestion replaces a range on the cursor's line (inline completion's rule).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from infill_engine.ranking import Faults, Ranking
from infill_engine.request import InfillOptions
from infill_engine.syntax.lines import line_span, split_lines
from infill_engine.syntax.parse import Code

from .context import Hooks, infill

if TYPE_CHECKING:
    from infill_engine.engine import Engine

# The rest of one line rarely needs more, and every length tried is a batch row paid for at
# every step: of 300 held-out lines the bundled model got 33 exactly right, none longer than 9
# tokens (a third of the lines are longer than 14).  A blank line's block keeps max_length.
LINE_HOLE_TOKENS = 16


@dataclass(frozen=True)
class Suggestion:
    """Insert `text` in place of text[start:end] (both on the cursor's line)."""

    start: int
    end: int
    text: str
    syntax_ok: bool = True  # the document parses no worse with it
    score: float = 0.0  # the engine's mean log-probability (0.0 when served from the cache)


def is_block_position(text: str, offset: int) -> bool:
    """An empty (or whitespace-only) line: the place for a multi-line block."""
    start, end = line_span(text, offset)
    return not text[start:end].strip()


def complete_inline(engine: Engine, code: Code, offset: int, options: InfillOptions = InfillOptions(),
                    hooks: Hooks | None = None) -> list[Suggestion]:
    """Infill at the cursor from the code before and after it; at most `options.candidates`
    suggestions, best first, the ones that add syntax errors last.

    A block may take `options.max_length` tokens; the rest of a line at most LINE_HOLE_TOKENS."""
    text = code.text
    line_start, line_end = line_span(text, offset)
    block = is_block_position(text, offset)
    budget = options.max_length if block else min(options.max_length, LINE_HOLE_TOKENS)
    result = infill(engine, text, offset, offset, replace(options, max_length=budget), hooks)

    suggestions: dict[tuple[int, int, str], Suggestion] = {}
    order: dict[tuple[int, int, str], tuple[Faults, int, int]] = {}
    rules: dict[tuple[int, int], Ranking] = {}
    for rank, candidate in enumerate(result.candidates):
        if block:
            variants = _block_variants(text, offset, line_start, line_end, candidate.text)
        else:
            variants = _line_variants(text, offset, line_end, candidate.text)
        for variant_rank, key in enumerate(variants):
            if key in suggestions:
                continue
            start, end, insert = key
            if (start, end) not in rules:
                rules[start, end] = Ranking(text[:start], text[end:], code.language, baseline=code)
            fails = rules[start, end].key(insert)
            suggestions[key] = Suggestion(start, end, insert, not fails.parses_worse, candidate.score)
            order[key] = (fails, rank, variant_rank)
    # infill_engine.ranking's rule on the shaped suggestions (fewest Faults first); then the
    # engine's order (best candidate first), then each candidate's preferred variant.
    ranked = sorted(suggestions, key=order.__getitem__)
    return [suggestions[k] for k in ranked[: options.candidates]]


def _line_variants(text: str, offset: int, line_end: int, generated: str) -> list[tuple[int, int, str]]:
    """Mid-line: the hole is the rest of the line.  Variants of one generated text:
    its first line with a tail that duplicates the text after the cursor cut off, and
    the first line as generated (syntax decides which is right: in `print(|)` the model's
    own `)` may or may not be the one that already follows)."""
    first = split_lines(generated, maxsplit=1)[0]
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
    lines = split_lines((before + generated).rstrip())
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
        following = _code_lines(text[line_end:])
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


def _code_lines(text: str) -> list[str]:
    """The lines of `text` that hold something besides whitespace."""
    return [ln for ln in split_lines(text) if ln.strip()]


def _drop_repeated_following_lines(lines: list[str], following: str) -> list[str]:
    """Drop trailing lines of the block that repeat the code right after the blank line
    (a model that "completes" by copying the suffix would otherwise duplicate it)."""
    after = [ln.strip() for ln in _code_lines(following)][: len(lines)]
    for k in range(min(len(lines), len(after)), 0, -1):
        if [ln.strip() for ln in lines[-k:]] == after[:k]:
            return lines[:-k]
    return lines


_OPENERS = (":", "{", "(", "[")


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _expected_indent(text: str, line_start: int, line_end: int) -> str | None:
    """The indentation a new line here needs: the next code line's, or one level deeper
    than the previous line's when that line opens a block."""
    prev_lines, next_lines = _code_lines(text[:line_start]), _code_lines(text[line_end:])
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
