"""Rename and suggest a name without a client: exactly the in-scope occurrences, valid names only."""

from __future__ import annotations

import pytest

from infill_engine.syntax import scopes
from infill_engine.syntax.parse import Code
from lsp_server.features.context import ActionError
from lsp_server.features.naming import is_identifier, prepare_rename, rename, suggest_name
from tests.lsp.features.scripted import ScriptedEngine, at
from tests.lsp.harness import SHADOW


def test_rename_edits_exactly_the_in_scope_occurrences():
    inner = [i for i in range(len(SHADOW)) if SHADOW.startswith("count", i)][1:4]
    edits = rename(Code(SHADOW, "python"), inner[0] + 2, "acc")
    assert [(e.start, e.end) for e in edits] == [(i, i + 5) for i in inner]
    outer = rename(Code(SHADOW, "python"), 0, "limit")
    assert [e.start for e in outer] == [0, SHADOW.rindex("count")]


def test_rename_rejects_invalid_names():
    for bad in ("1abc", "two words", "def", ""):
        with pytest.raises(ActionError):
            rename(Code(SHADOW, "python"), 0, bad)
    assert is_identifier("$el", "javascript") and not is_identifier("$el", "python")


def test_prepare_rename():
    assert prepare_rename(Code(SHADOW, "python"), 2) == (0, 5)
    assert prepare_rename(Code(SHADOW, "python"), SHADOW.index("10")) is None


def test_suggest_name_ties_all_occurrences_and_skips_invalid_names():
    inner = [i for i in range(len(SHADOW)) if SHADOW.startswith("count", i)][1:4]
    engine = ScriptedEngine("def", " count", "total ")
    edits = suggest_name(engine, Code(SHADOW, "python"), inner[1])
    assert [(e.start, e.end, e.new_text) for e in edits] == [(i, i + 5, "total") for i in inner]
    req = engine.requests[0]
    assert req.between == tuple(SHADOW[inner[k] + 5 : inner[k + 1]] for k in range(2))
    assert req.prefix.endswith("    ") and req.suffix.startswith("\n\n\nprint")


def test_suggest_name_with_the_tiny_model_edits_only_occurrences(tiny):
    offset = at(SHADOW, "values") + 1
    occurrences = scopes.occurrences(Code(SHADOW, "python"), offset)
    try:
        edits = suggest_name(tiny, Code(SHADOW, "python"), offset)
    except ActionError as exc:
        assert "no better name" in str(exc)  # random weights rarely produce an identifier
        return
    assert [(e.start, e.end) for e in edits] == occurrences
    assert len({e.new_text for e in edits}) == 1 and is_identifier(edits[0].new_text, "python")
