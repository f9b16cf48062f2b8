"""The order fillings are offered in: parse-preserving first, then not merely an echo of a
neighbouring line, then the engine's own order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from infill_engine.ranking import best_first, echoes

PREFIX = "def count_words(lines):\n    total = 0\n    for line in lines:\n"
SUFFIX = "    return total\n"


@dataclass
class F:
    text: str


@pytest.mark.parametrize("text, echo", [
    ("        total = 0\n", True),  # two lines up, other indentation: still the same line
    ("        total += len(line.split())\n", False),
    ("    total = 0\n    total = 0\n", True),  # every line an echo
    ("    total = 0\n    total += 1\n", False),  # one new line is something new
    ("        return total\n", False),  # a control statement may well repeat
    ("\n\n", False),  # blank is the engine's business (it ranks blank last)
])
def test_echoes(text, echo):
    assert echoes(PREFIX, SUFFIX, text) is echo


def test_only_the_nearest_lines_count():
    far = "x = compute()\n" + "a = 1\n" * 4
    assert not echoes(far, "", "x = compute()\n")
    assert echoes(far, "", "a = 1\n")


def test_best_first_orders_syntax_then_echo_then_engine_order():
    fills = [F("        total = 0\n"), F("        total += (\n"), F("        total += len(line)\n"), F("        x = 1\n")]
    out = best_first(PREFIX, SUFFIX, fills, "python")
    assert [f.text for f in out] == ["        total += len(line)\n", "        x = 1\n", "        total = 0\n",
                                     "        total += (\n"]


def test_without_a_grammar_only_echoes_move():
    fills = [F("total = 0\n"), F("total += (\n")]
    assert [f.text for f in best_first(PREFIX, SUFFIX, fills, None)] == ["total += (\n", "total = 0\n"]
