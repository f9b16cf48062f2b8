"""Inline completion without a client: the rest of a line mid-line, a re-indented block on a blank
line, syntax-breaking candidates last, ranges on the cursor's line."""

from __future__ import annotations

from infill_engine.request import InfillOptions
from infill_engine.syntax import spans
from infill_engine.syntax.lines import line_span
from infill_engine.syntax.parse import Code
from lsp_server.features.inline import LINE_HOLE_TOKENS, Suggestion, complete_inline, is_block_position
from tests.lsp.features.scripted import ScriptedEngine, at
from tests.lsp.harness import SOURCE


def assert_on_cursor_line(text: str, cursor: int, s: Suggestion) -> None:
    line_start, line_end = line_span(text, cursor)
    assert line_start <= s.start <= cursor <= s.end <= line_end, (s, cursor)


def test_mid_line_cuts_at_the_first_newline():
    text = "x = compute(\n"
    cursor = len("x = compute(")
    [s] = complete_inline(ScriptedEngine("1, 2)\nmore = 3\n"), Code(text, "python"), cursor)
    assert (s.start, s.end, s.text) == (cursor, cursor, "1, 2)")
    assert s.syntax_ok


def test_mid_line_drops_a_tail_that_repeats_the_text_after_the_cursor():
    text = "print()\n"
    cursor = text.index(")")
    [s] = complete_inline(ScriptedEngine("area(2))"), Code(text, "python"), cursor)
    assert s.text == "area(2)" and s.syntax_ok  # not "area(2))" + ")"
    spliced = text[: s.start] + s.text + text[s.end :]
    assert spliced == "print(area(2))\n"


def test_mid_line_keeps_the_models_own_closing_bracket_when_syntax_needs_it():
    text = "print()\n"
    cursor = text.index(")")
    # "foo(x)" ends with ")" = the start of what follows; cutting it would unbalance the call.
    suggestions = complete_inline(ScriptedEngine("foo(x)"), Code(text, "python"), cursor, InfillOptions(candidates=2))
    assert suggestions[0].text == "foo(x)" and suggestions[0].syntax_ok
    assert all(not s.syntax_ok for s in suggestions[1:])


def test_mid_line_never_offers_the_rest_of_the_line_again():
    text = "total = area(radius)\n"
    cursor = text.index("area")
    assert complete_inline(ScriptedEngine("area(radius)"), Code(text, "python"), cursor) == []


def test_candidates_that_break_the_syntax_rank_last():
    text = "value = \nprint(value)\n"
    cursor = len("value = ")
    out = complete_inline(ScriptedEngine("(((", "42"), Code(text, "python"), cursor, InfillOptions(candidates=2))
    assert [s.text for s in out] == ["42", "((("]
    assert out[0].syntax_ok and not out[1].syntax_ok


def test_blank_line_gets_a_multi_line_block_with_the_right_indentation():
    text = "def f(xs):\n    total = 0\n\n    return total\n"
    cursor = text.index("\n\n") + 1  # column 0 of the blank line inside the function
    engine = ScriptedEngine("for x in xs:\n    total += x\n    return total")
    out = complete_inline(engine, Code(text, "python"), cursor, InfillOptions(candidates=3))
    best = out[0]
    assert best.syntax_ok
    assert best.text == "    for x in xs:\n        total += x"  # re-indented, repeated `return total` dropped
    assert "\n" not in text[best.start : best.end]  # single-line range
    spliced = text[: best.start] + best.text + text[best.end :]
    assert spans.syntax_ok(Code(text, "python"), spliced)
    assert engine.requests[0].max_length == 48  # a block may use the whole budget


def test_blank_line_with_typed_indentation_is_a_pure_insertion():
    text = "def f(xs):\n    \n"
    cursor = text.index("    \n") + 4
    [s] = complete_inline(ScriptedEngine("return sum(xs)\n\n"), Code(text, "python"), cursor)
    assert (s.start, s.end, s.text) == (cursor, cursor, "return sum(xs)")


def test_block_suggestions_use_the_documents_line_endings():
    text = "def f(xs):\r\n\r\n    return 1\r\n"
    cursor = text.index("\r\n\r\n") + 2
    [s] = complete_inline(ScriptedEngine("    a = 1\n    b = 2"), Code(text, "python"), cursor)
    assert s.text == "    a = 1\r\n    b = 2"


def test_line_mode_budget_is_capped():
    engine = ScriptedEngine("1")
    complete_inline(engine, Code("x = \n", "python"), 4, InfillOptions(max_length=200))
    assert engine.requests[0].max_length == LINE_HOLE_TOKENS
    assert engine.requests[0].prefix == "x = " and engine.requests[0].suffix == "\n"


def test_inline_invariants_with_the_tiny_model(tiny):
    for needle, delta in [("radius ** 2", 0), ("\n\n\ndef todo", 1), ("print(", 6), ("total = ", 8)]:
        cursor = at(SOURCE, needle, delta)
        for s in complete_inline(tiny, Code(SOURCE, "python"), cursor, InfillOptions(max_length=8, candidates=2)):
            assert_on_cursor_line(SOURCE, cursor, s)
            assert s.text
            if not is_block_position(SOURCE, cursor):
                assert "\n" not in s.text


def test_a_suggestion_that_repeats_a_neighbouring_line_ranks_after_one_that_does_not():
    text = "def f(xs):\n    total = 0\n    for x in xs:\n\n    return total\n"
    cursor = text.index("\n\n") + 1
    out = complete_inline(ScriptedEngine("total = 0", "total += x"), Code(text, "python"), cursor,
                          InfillOptions(candidates=6))
    # Each text comes indented and as written; at column 0 of the loop body only the indented
    # ones compile.  Among those the echo goes second.
    assert [s.text for s in out] == ["        total += x", "        total = 0", "total += x", "total = 0"]
    assert all(s.syntax_ok for s in out)  # tree-sitter, lenient with indentation, passes all four
