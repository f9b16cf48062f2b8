"""Unlikely-code hints without a client."""

from __future__ import annotations

from lsp_server.features.hints import HINT_PROBABILITY, unlikely_hints
from tests.lsp.features.scripted import ScriptedEngine, at
from tests.lsp.harness import SOURCE


def test_unlikely_hints_mark_unlikely_tokens_inside_the_span():
    text = "a = 1\ny = oops + 1\n"
    start, end = text.index("y"), len(text) - 1
    [hint] = unlikely_hints(ScriptedEngine(), text, start, end)
    assert text[hint.start : hint.end] == "oops" and hint.probability < HINT_PROBABILITY


def test_unlikely_hints_with_the_tiny_model_stay_in_range(tiny):
    start, end = at(SOURCE, "def describe"), at(SOURCE, "def todo")
    for h in unlikely_hints(tiny, SOURCE, start, end, below=0.5):
        assert start <= h.start < h.end <= end and SOURCE[h.start : h.end].strip()
