"""Lines by the editors' rule: one helper for splitting and one for the line around an offset."""

from __future__ import annotations

from infill_engine.syntax.lines import line_span, line_starts, split_lines


def test_line_span():
    text = "ab\ncdé\n\nx"
    assert line_span(text, 4) == (3, 6)
    assert line_span(text, 6) == (3, 6)   # at the newline: still that line
    assert line_span(text, 7) == (7, 7)   # the blank line
    assert line_span(text, 99) == (8, 9)


def test_every_line_break_ends_a_line():
    text = "a\r\nb\rc\nd"
    assert split_lines(text) == ["a", "b", "c", "d"]
    assert split_lines(text, 1) == ["a", "b\rc\nd"]
    assert line_starts(text) == [0, 3, 5, 7]
    assert [line_span(text, s) for s in line_starts(text)] == [(0, 1), (3, 4), (5, 6), (7, 8)]
    assert line_span(text, 2) == (2, 2)  # between "\r" and "\n": an empty stretch, never both halves
