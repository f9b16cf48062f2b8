"""The code actions without a client: each edit covers exactly its span, candidates that parse win."""

from __future__ import annotations

import pytest

from infill_engine.request import InfillOptions
from infill_engine.syntax import spans
from infill_engine.syntax.parse import Code
from lsp_server.features.actions import (FILL_BODY, REPAIR, REWRITE, SUGGEST_NAME, available_actions, fill_body,
                                         repair, rewrite)
from lsp_server.features.context import ActionError
from tests.lsp.features.scripted import ScriptedEngine, at
from tests.lsp.harness import SOURCE


def test_rewrite_covers_exactly_the_widened_span_and_prefers_parsing_candidates():
    start = at(SOURCE, "pi * rad")
    end = start + 6  # "pi * r": part of an expression
    widened = spans.rewrite_span(Code(SOURCE, "python"), start, end)
    edit = rewrite(ScriptedEngine("math.pi * (radius +", "radius * radius * math.pi"), Code(SOURCE, "python"), start, end)
    assert (edit.start, edit.end) == widened
    assert widened[0] <= start and end <= widened[1]
    assert edit.new_text == "radius * radius * math.pi"  # the better-scored one does not parse


def test_rewrite_with_the_tiny_model_stays_inside_the_widened_span(tiny):
    start, end = at(SOURCE, "label = f"), at(SOURCE, "return label")
    widened = spans.rewrite_span(Code(SOURCE, "python"), start, end)
    edit = rewrite(tiny, Code(SOURCE, "python"), start, end, InfillOptions(max_length=8))
    assert (edit.start, edit.end) == widened


def test_fill_body_replaces_the_placeholder():
    offset = at(SOURCE, "def todo") + 5
    edit = fill_body(ScriptedEngine("return [x for x in items]"), Code(SOURCE, "python"), offset)
    assert SOURCE[edit.start : edit.end] == "pass"
    assert edit.new_text == "return [x for x in items]"


def test_fill_body_without_a_body_says_why():
    with pytest.raises(ActionError, match="no body"):
        fill_body(ScriptedEngine("x"), Code("x = 1\n", "python"), 2)


def test_repair_keeps_to_the_selection():
    text = "y = oops + 1\n"
    edit = repair(ScriptedEngine("x + 1"), Code(text, "python"), 4, 12)
    assert (edit.start, edit.end, edit.new_text) == (4, 12, "x + 1")
    with pytest.raises(ActionError):
        repair(ScriptedEngine("x"), Code(text, "python"), 3, 3)


def test_available_actions():
    titles = dict(available_actions(Code(SOURCE, "python"), at(SOURCE, "total ="), at(SOURCE, "total =") + 5))
    assert set(titles) == {REWRITE, FILL_BODY, REPAIR, SUGGEST_NAME}
    assert titles[SUGGEST_NAME] == "diffill: Suggest a name for `total`"
    blank = at(SOURCE, "\n\n\ndef area") + 1
    assert available_actions(Code(SOURCE, "python"), blank, blank) == []
