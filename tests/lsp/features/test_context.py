"""The code around a hole that a feature hands the engine."""

from __future__ import annotations

from lsp_server.features.context import PREFIX_CHARS, SUFFIX_CHARS, context_around


def test_context_is_windowed_at_line_boundaries():
    text = "a = 1\n" * 5000
    prefix, suffix = context_around(text, len(text) // 2, len(text) // 2)
    assert len(prefix) <= PREFIX_CHARS and prefix.startswith("a = 1")
    assert len(suffix) <= SUFFIX_CHARS and suffix.endswith("\n")
