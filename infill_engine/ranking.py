"""Which of the engine's fillings of a hole an editor offers first.

The engine orders its candidates by the model's own likelihood (`denoise.ranked`).  Two things
a small model gets wrong often enough to be worth a rule, each measured on HumanEval single
lines (see MODEL_CARD.md):

- a filling that breaks the parse is rarely right (tree-sitter, `syntax.spans.syntax_ok`;
  HumanEval single lines: 16 of 200 right against 10 of 200 by likelihood alone);
- in Python, a filling that CPython will not compile is rarely right either.  tree-sitter
  recovers from errors and only counts them, so where the hole already leaves the code broken
  (an empty block) it lets `try:` with no `except`, or an `if` with no body, through as "no
  worse"; `compile()` of the hole's top-level statement does not (HumanEval single lines,
  length by search: 158 of 1,033 right against 143 without it);
- in Python, a filling that names something the file never mentions (`greatest_divisoror(a, b)`,
  `new_distance = None` where the code after it reads `distance`) is usually wrong: a small
  model invents names.  Attributes (after a dot), builtins and keywords do not count;
- a filling that only repeats a line next to the hole (`total = 0` again, under `total = 0`)
  is the likeliest text there and almost never what the user wants.  Control statements are
  exempt: a second `return False` or `break` a few lines on is ordinary code.  Nor is a line
  that assigns a name to itself (`snmp_engine = snmp_engine`, after the user typed
  `snmp_engine =`): it does nothing.
"""

from __future__ import annotations

import builtins
import io
import keyword
import re
import tokenize
import warnings
from typing import NamedTuple, Protocol, Sequence, TypeVar

from .syntax.parse import Code
from .syntax.spans import syntax_ok

NEAR_LINES = 3  # lines above and below the hole whose repetition counts as an echo
_CONTROL = re.compile(r"(return|break|continue|pass|raise|else|elif|try|finally|except)\b")


class Filling(Protocol):
    text: str


F = TypeVar("F", bound=Filling)


def echoes(prefix: str, suffix: str, text: str) -> bool:
    """True when every non-blank line of `text` is one of the NEAR_LINES non-blank lines on
    either side of the hole (compared without indentation), and not a control statement."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or any(_CONTROL.match(line) for line in lines):
        return False
    before = [line.strip() for line in prefix.splitlines() if line.strip()][-NEAR_LINES:]
    after = [line.strip() for line in suffix.splitlines() if line.strip()][:NEAR_LINES]
    near = set(before) | set(after)
    return all(line in near for line in lines)


_SELF_ASSIGNMENT = re.compile(r"\s*([\w.]+)\s*=\s*\1\s*;?\s*(#.*)?")


def assigns_itself(prefix: str, suffix: str, text: str) -> bool:
    """True when a line the filling makes (with the rest of its first and last lines) is
    `name = name`."""
    made = prefix[prefix.rfind("\n") + 1:] + text + suffix.split("\n", 1)[0]
    return any(_SELF_ASSIGNMENT.fullmatch(line) for line in made.split("\n"))


# A line at column 0 that continues the statement above it rather than starting one.
_CONTINUES = re.compile(r"[\s#)\]}]|(else|elif|except|finally)\b")


def top_level_statement(prefix: str, suffix: str) -> tuple[int, int]:
    """(start in prefix, end in suffix) of the top-level statement around a hole between
    prefix and suffix: from the last line of prefix that starts one at column 0 to the first
    such line of suffix after the hole's own line.  A guess from indentation (a column-0 line
    inside a triple-quoted string fools it); a wrong cut only makes every filling fail alike."""
    start = 0
    for m in re.finditer(r"^(?=\S)", prefix, re.M):
        if not _CONTINUES.match(prefix, m.start()):
            start = m.start()
    end = len(suffix)
    first_line_end = suffix.find("\n")
    if first_line_end >= 0:
        for m in re.finditer(r"^(?=\S)", suffix[first_line_end + 1:], re.M):
            if not _CONTINUES.match(suffix, first_line_end + 1 + m.start()):
                end = first_line_end + 1 + m.start()
                break
    return start, end


def python_compiles(source: str) -> bool:
    """Whether CPython compiles `source` (nothing runs).  Warnings such as an invalid escape
    in a string are not failures and are not printed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(source, "<filling>", "exec", dont_inherit=True)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return False


def compiles_with(prefix: str, suffix: str, language: str | None):
    """A test of one filling: does the hole's top-level statement compile with it?  Python
    only (None elsewhere).  Compiling the statement, not the file, keeps it well under a
    millisecond in a long file."""
    if language != "python":
        return None
    start, end = top_level_statement(prefix, suffix)
    before, after = prefix[start:], suffix[:end]
    return lambda text: python_compiles(before + text + after)


_ALWAYS_KNOWN = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)


_IDENTIFIER = re.compile(r"[^\W\d]\w*")


def python_names(source: str, bare: bool = False) -> set[str]:
    """The identifiers a filling uses (`bare`: not those right after a dot, i.e. attributes).
    Python's own tokenizer, so strings and comments do not count; where it gives up (an
    unclosed bracket) the names up to there."""
    names: set[str] = set()
    previous = ""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME and not (bare and previous == "."):
                names.add(tok.string)
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT):
                previous = tok.string
    except (tokenize.TokenError, SyntaxError):
        pass
    return names


class Faults(NamedTuple):
    """What counts against a filling, most serious first: sorting by it puts the best first."""

    blank: bool
    does_not_compile: bool  # Python only
    parses_worse: bool
    echoes: bool  # repeats a neighbouring line, or assigns a name to itself
    invents_a_name: bool  # Python only


class Ranking:
    """The rule, for the fillings of one place: `key(text)` sorts the best first.

    `baseline`: the code a filling must parse no worse than (default: the empty hole)."""

    def __init__(self, prefix: str, suffix: str, language: str | None, baseline: Code | None = None):
        self.prefix, self.suffix = prefix, suffix
        self.baseline = baseline if baseline is not None else Code(prefix + suffix, language)
        self._compiles = compiles_with(prefix, suffix, language)
        # What the file mentions anywhere, docstrings and comments too: a regex, since the
        # code after a hole, cut mid-block, is not something Python's tokenizer accepts.
        self._known = (set(_IDENTIFIER.findall(prefix)) | set(_IDENTIFIER.findall(suffix)) | _ALWAYS_KNOWN
                       if language == "python" else None)

    def key(self, text: str) -> Faults:
        """The filling's faults; blank is never what was asked for, however well it compiles
        (as `denoise.ranked`)."""
        return Faults(blank=not text.strip(),
                      does_not_compile=self._compiles is not None and not self._compiles(text),
                      parses_worse=not syntax_ok(self.baseline, self.prefix + text + self.suffix),
                      echoes=echoes(self.prefix, self.suffix, text) or assigns_itself(self.prefix, self.suffix, text),
                      invents_a_name=self._known is not None and not python_names(text, bare=True) <= self._known)


def best_first(prefix: str, suffix: str, fillings: Sequence[F], language: str | None) -> list[F]:
    """`fillings` of the hole between prefix and suffix, those with the fewest `Faults` first;
    otherwise as given."""
    rule = Ranking(prefix, suffix, language)
    return sorted(fillings, key=lambda f: rule.key(f.text))  # stable: the engine's order within a group
