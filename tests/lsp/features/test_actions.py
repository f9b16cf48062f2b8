"""The actions layer without a client: plain text and offsets in, plain edits out.

Two engines: `ScriptedEngine` returns fixed candidates so the post-processing and ranking
rules (duplicate tails, indentation, syntax-error ranking, identifier checks) can be
checked exactly; Engine.tiny_random() runs the real denoising loop to check the
invariants (edits stay inside their span, ranges stay on one line) on real output.
"""

from __future__ import annotations

import pytest

from infill_engine.syntax import spans
from infill_engine.engine import Engine
from infill_engine.request import Candidate, InfillRequest, InfillResult, TokenLikelihood
from lsp_server import actions
from tests.lsp.harness import SHADOW, SOURCE



class ScriptedEngine:
    """Answers every infill with the given candidate texts (best score first)."""

    def __init__(self, *texts: str) -> None:
        self.texts = texts
        self.requests: list[InfillRequest] = []

    def infill(self, req: InfillRequest) -> InfillResult:
        self.requests.append(req)
        cands = [Candidate(t, [0.5] * len(t), -float(i)) for i, t in enumerate(self.texts)]
        return InfillResult(cands, forwards=1, hole_tokens=req.max_length, wall_ms=0.0)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def repair(self, prefix, middle, suffix, fraction=0.25, sampler=None) -> InfillResult:
        return InfillResult([Candidate(t, [], -float(i)) for i, t in enumerate(self.texts)], 1, 1, 0.0)

    def score(self, prefix, middle, suffix) -> list[TokenLikelihood]:
        out, at = [], 0
        for word in middle.split(" "):
            out.append(TokenLikelihood(at, at + len(word), word, 0.001 if word == "oops" else 0.9))
            at += len(word) + 1
        return out


@pytest.fixture(scope="module")
def tiny() -> Engine:
    return Engine.tiny_random()


def at(text: str, needle: str, delta: int = 0) -> int:
    return text.index(needle) + delta


def assert_on_cursor_line(text: str, cursor: int, s: actions.InlineSuggestion) -> None:
    line_start, line_end = actions.line_bounds(text, cursor)
    assert line_start <= s.start <= cursor <= s.end <= line_end, (s, cursor)


# -- inline completion: mid-line ---------------------------------------------------------


def test_mid_line_cuts_at_the_first_newline():
    text = "x = compute(\n"
    cursor = len("x = compute(")
    [s] = actions.complete_inline(ScriptedEngine("1, 2)\nmore = 3\n"), text, cursor, "python")
    assert (s.start, s.end, s.text) == (cursor, cursor, "1, 2)")
    assert s.syntax_ok


def test_mid_line_drops_a_tail_that_repeats_the_text_after_the_cursor():
    text = "print()\n"
    cursor = text.index(")")
    [s] = actions.complete_inline(ScriptedEngine("area(2))"), text, cursor, "python")
    assert s.text == "area(2)" and s.syntax_ok  # not "area(2))" + ")"
    spliced = text[: s.start] + s.text + text[s.end :]
    assert spliced == "print(area(2))\n"


def test_mid_line_keeps_the_models_own_closing_bracket_when_syntax_needs_it():
    text = "print()\n"
    cursor = text.index(")")
    # "foo(x)" ends with ")" = the start of what follows; cutting it would unbalance the call.
    suggestions = actions.complete_inline(ScriptedEngine("foo(x)"), text, cursor, "python", candidates=2)
    assert suggestions[0].text == "foo(x)" and suggestions[0].syntax_ok
    assert all(not s.syntax_ok for s in suggestions[1:])


def test_mid_line_never_offers_the_rest_of_the_line_again():
    text = "total = area(radius)\n"
    cursor = text.index("area")
    assert actions.complete_inline(ScriptedEngine("area(radius)"), text, cursor, "python") == []


def test_candidates_that_break_the_syntax_rank_last():
    text = "value = \nprint(value)\n"
    cursor = len("value = ")
    out = actions.complete_inline(ScriptedEngine("(((", "42"), text, cursor, "python", candidates=2)
    assert [s.text for s in out] == ["42", "((("]
    assert out[0].syntax_ok and not out[1].syntax_ok


# -- inline completion: blank line -------------------------------------------------------


def test_blank_line_gets_a_multi_line_block_with_the_right_indentation():
    text = "def f(xs):\n    total = 0\n\n    return total\n"
    cursor = text.index("\n\n") + 1  # column 0 of the blank line inside the function
    engine = ScriptedEngine("for x in xs:\n    total += x\n    return total")
    out = actions.complete_inline(engine, text, cursor, "python", candidates=3)
    best = out[0]
    assert best.syntax_ok
    assert best.text == "    for x in xs:\n        total += x"  # re-indented, repeated `return total` dropped
    assert "\n" not in text[best.start : best.end]  # single-line range
    spliced = text[: best.start] + best.text + text[best.end :]
    assert spans.syntax_ok(text, spliced, "python")
    assert engine.requests[0].max_length == 48  # a block may use the whole budget


def test_blank_line_with_typed_indentation_is_a_pure_insertion():
    text = "def f(xs):\n    \n"
    cursor = text.index("    \n") + 4
    [s] = actions.complete_inline(ScriptedEngine("return sum(xs)\n\n"), text, cursor, "python")
    assert (s.start, s.end, s.text) == (cursor, cursor, "return sum(xs)")


def test_block_suggestions_use_the_documents_line_endings():
    text = "def f(xs):\r\n\r\n    return 1\r\n"
    cursor = text.index("\r\n\r\n") + 2
    [s] = actions.complete_inline(ScriptedEngine("    a = 1\n    b = 2"), text, cursor, "python")
    assert s.text == "    a = 1\r\n    b = 2"


def test_line_mode_budget_is_capped():
    engine = ScriptedEngine("1")
    actions.complete_inline(engine, "x = \n", 4, "python", max_tokens=200)
    assert engine.requests[0].max_length == actions.LINE_HOLE_TOKENS
    assert engine.requests[0].prefix == "x = " and engine.requests[0].suffix == "\n"


def test_context_is_windowed_at_line_boundaries():
    text = "a = 1\n" * 5000
    prefix, suffix = actions.context_around(text, len(text) // 2, len(text) // 2)
    assert len(prefix) <= actions.PREFIX_CHARS and prefix.startswith("a = 1")
    assert len(suffix) <= actions.SUFFIX_CHARS and suffix.endswith("\n")


def test_inline_invariants_with_the_tiny_model(tiny):
    for needle, delta in [("radius ** 2", 0), ("\n\n\ndef todo", 1), ("print(", 6), ("total = ", 8)]:
        cursor = at(SOURCE, needle, delta)
        for s in actions.complete_inline(tiny, SOURCE, cursor, "python", max_tokens=8, candidates=2):
            assert_on_cursor_line(SOURCE, cursor, s)
            assert s.text
            if not actions.is_block_position(SOURCE, cursor):
                assert "\n" not in s.text


# -- code actions ------------------------------------------------------------------------


def test_rewrite_covers_exactly_the_widened_span_and_prefers_parsing_candidates():
    start = at(SOURCE, "pi * rad")
    end = start + 6  # "pi * r": part of an expression
    widened = spans.rewrite_span(SOURCE, "python", start, end)
    edit = actions.rewrite(ScriptedEngine("math.pi * (radius +", "radius * radius * math.pi"), SOURCE, "python", start, end)
    assert (edit.start, edit.end) == widened
    assert widened[0] <= start and end <= widened[1]
    assert edit.new_text == "radius * radius * math.pi"  # the better-scored one does not parse


def test_rewrite_with_the_tiny_model_stays_inside_the_widened_span(tiny):
    start, end = at(SOURCE, "label = f"), at(SOURCE, "return label")
    widened = spans.rewrite_span(SOURCE, "python", start, end)
    edit = actions.rewrite(tiny, SOURCE, "python", start, end, max_tokens=8)
    assert (edit.start, edit.end) == widened


def test_fill_body_replaces_the_placeholder():
    offset = at(SOURCE, "def todo") + 5
    edit = actions.fill_body(ScriptedEngine("return [x for x in items]"), SOURCE, "python", offset)
    assert SOURCE[edit.start : edit.end] == "pass"
    assert edit.new_text == "return [x for x in items]"


def test_fill_body_without_a_body_says_why():
    with pytest.raises(actions.ActionError, match="no body"):
        actions.fill_body(ScriptedEngine("x"), "x = 1\n", "python", 2)


def test_repair_keeps_to_the_selection():
    text = "y = oops + 1\n"
    edit = actions.repair(ScriptedEngine("x + 1"), text, "python", 4, 12)
    assert (edit.start, edit.end, edit.new_text) == (4, 12, "x + 1")
    with pytest.raises(actions.ActionError):
        actions.repair(ScriptedEngine("x"), text, "python", 3, 3)


def test_unlikely_hints_mark_unlikely_tokens_inside_the_span():
    text = "a = 1\ny = oops + 1\n"
    start, end = text.index("y"), len(text) - 1
    [hint] = actions.unlikely_hints(ScriptedEngine(), text, start, end)
    assert text[hint.start : hint.end] == "oops" and hint.probability < actions.HINT_PROBABILITY


def test_unlikely_hints_with_the_tiny_model_stay_in_range(tiny):
    start, end = at(SOURCE, "def describe"), at(SOURCE, "def todo")
    for h in actions.unlikely_hints(tiny, SOURCE, start, end, below=0.5):
        assert start <= h.start < h.end <= end and SOURCE[h.start : h.end].strip()


def test_available_actions():
    titles = dict(actions.available_actions(SOURCE, "python", at(SOURCE, "total ="), at(SOURCE, "total =") + 5))
    assert set(titles) == {actions.REWRITE, actions.FILL_BODY, actions.REPAIR, actions.SUGGEST_NAME}
    assert titles[actions.SUGGEST_NAME] == "diffill: Suggest a name for `total`"
    blank = at(SOURCE, "\n\n\ndef area") + 1
    assert actions.available_actions(SOURCE, "python", blank, blank) == []


# -- names -------------------------------------------------------------------------------

def test_rename_edits_exactly_the_in_scope_occurrences():
    inner = [i for i in range(len(SHADOW)) if SHADOW.startswith("count", i)][1:4]
    edits = actions.rename(SHADOW, "python", inner[0] + 2, "acc")
    assert [(e.start, e.end) for e in edits] == [(i, i + 5) for i in inner]
    outer = actions.rename(SHADOW, "python", 0, "limit")
    assert [e.start for e in outer] == [0, SHADOW.rindex("count")]


def test_rename_rejects_invalid_names():
    for bad in ("1abc", "two words", "def", ""):
        with pytest.raises(actions.ActionError):
            actions.rename(SHADOW, "python", 0, bad)
    assert actions.is_identifier("$el", "javascript") and not actions.is_identifier("$el", "python")


def test_prepare_rename():
    assert actions.prepare_rename(SHADOW, "python", 2) == (0, 5)
    assert actions.prepare_rename(SHADOW, "python", SHADOW.index("10")) is None


def test_suggest_name_ties_all_occurrences_and_skips_invalid_names():
    inner = [i for i in range(len(SHADOW)) if SHADOW.startswith("count", i)][1:4]
    engine = ScriptedEngine("def", " count", "total ")
    edits = actions.suggest_name(engine, SHADOW, "python", inner[1])
    assert [(e.start, e.end, e.new_text) for e in edits] == [(i, i + 5, "total") for i in inner]
    req = engine.requests[0]
    assert req.between == tuple(SHADOW[inner[k] + 5 : inner[k + 1]] for k in range(2))
    assert req.prefix.endswith("    ") and req.suffix.startswith("\n\n\nprint")


def test_suggest_name_with_the_tiny_model_edits_only_occurrences(tiny):
    offset = at(SHADOW, "values") + 1
    occurrences = spans.occurrences(SHADOW, "python", offset)
    try:
        edits = actions.suggest_name(tiny, SHADOW, "python", offset)
    except actions.ActionError as exc:
        assert "no better name" in str(exc)  # random weights rarely produce an identifier
        return
    assert [(e.start, e.end) for e in edits] == occurrences
    assert len({e.new_text for e in edits}) == 1 and actions.is_identifier(edits[0].new_text, "python")
