"""The order fillings are offered in: in Python compiling first, then parse-preserving, then
not merely an echo of a neighbouring line, then the engine's own order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from infill_engine.ranking import assigns_itself, best_first, echoes, python_compiles, top_level_statement

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


@pytest.mark.parametrize("prefix,text,suffix,no_op", [
    ("def f():\n    snmp_engine =", " snmp_engine", "\n", True),  # the rest of a typed line
    ("def f():\n", "    self._eof = self._eof  # keep\n", "    return\n", True),
    ("x = 1\n", "y = x;\n", "", False),
    ("def f():\n    total =", " total + 1", "\n", False),
    ("def f():\n    a = ", "b", " == a\n", False),  # a comparison, not `a = a`
])
def test_a_line_that_assigns_a_name_to_itself_does_nothing(prefix, text, suffix, no_op):
    assert assigns_itself(prefix, suffix, text) is no_op


def test_a_self_assignment_ranks_with_the_echoes():
    fills = [F(" snmp_engine"), F(" hlapi.SnmpEngine()")]
    out = best_first("def f(hlapi):\n    snmp_engine =", "\n    return snmp_engine\n", fills, "python")
    assert [f.text for f in out] == [" hlapi.SnmpEngine()", " snmp_engine"]


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


# The hole is the only line of an `if` body: without a filling the code is already broken, so
# tree-sitter's "no more errors than before" lets broken fillings through.
BROKEN_PREFIX = "import os\n\n\ndef f(xs):\n    for x in xs:\n        if x:\n"
BROKEN_SUFFIX = "    return xs\n\n\nclass C:\n    pass\n"


def test_python_fillings_that_do_not_compile_go_last():
    fills = [F("        try:\n"), F("            if x > 1:\n"), F("            break\n"), F("            yield x\n")]
    out = [f.text for f in best_first(BROKEN_PREFIX, BROKEN_SUFFIX, fills, "python")]
    assert out == ["            break\n", "            yield x\n", "        try:\n", "            if x > 1:\n"]


def test_compiling_needs_the_whole_statement_around_the_hole():
    start, end = top_level_statement(BROKEN_PREFIX, BROKEN_SUFFIX)
    assert BROKEN_PREFIX[start:].startswith("def f(xs):")
    assert BROKEN_SUFFIX[:end] == "    return xs\n\n\n"
    # `break` compiles only inside the loop the cut keeps; at the top level it would not.
    assert python_compiles(BROKEN_PREFIX[start:] + "            break\n" + BROKEN_SUFFIX[:end])
    assert not python_compiles("break\n")


@pytest.mark.parametrize("prefix, suffix, first_kept", [
    ("if a:\n    x = 1\nelse:\n", "\ny = 2\n", "if a:"),  # else continues the if
    ("try:\n    pass\nexcept E:\n", "", "try:"),
    ("x = f(\n    1,\n)\ndef g():\n", "", "def g"),  # a closing bracket at column 0 continues a line
    ("    deeply = 1\n", "", "    deeply"),  # no column-0 line at all: everything
])
def test_top_level_statement_start(prefix, suffix, first_kept):
    start, _ = top_level_statement(prefix, suffix)
    assert prefix[start:].startswith(first_kept)


def test_compile_warnings_are_not_failures_and_bad_bytes_are():
    assert python_compiles('x = "\\d"\n')  # an invalid escape warns, and compiles
    assert not python_compiles("x = 1\0\n")


def test_other_languages_are_not_compiled():
    fills = [F("let x = 1;\n"), F("x = 1\n")]  # both JavaScript; only the second also Python
    assert [f.text for f in best_first("", "", fills, "javascript")] == ["let x = 1;\n", "x = 1\n"]
    assert [f.text for f in best_first("", "", fills, "python")] == ["x = 1\n", "let x = 1;\n"]


def test_blank_goes_last_even_where_it_parses_better():
    fills = [F("\n"), F("        total += (\n")]  # blank parses better, and neither compiles
    assert [f.text for f in best_first(PREFIX, SUFFIX, fills, "python")] == ["        total += (\n", "\n"]
