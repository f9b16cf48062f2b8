"""Syntax-aware spans, identifiers and scopes on the real tree-sitter grammars."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infill_engine.syntax.parse import Code, SyntaxDocument, TextOffsets, error_nodes, language_for, parse_text, ts_parser
from infill_engine.syntax.scopes import occurrences
from infill_engine.syntax.spans import body_span, identifier_at, rewrite_span, syntax_ok

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_FILES = {p.name: p.read_text(encoding="utf-8") for p in sorted(SAMPLES.iterdir())}
SAMPLE_FILES["textwrap.py"] = inspect.getsource(textwrap)  # a real, larger file
SAMPLE_FILES["padded.js"] = "\n \n\t\n" + SAMPLE_FILES["sample.js"]  # the root node starts after the blanks

# Content tokens that have children in some grammars (escapes inside a string's text).
CONTENT_TYPES = {"string_content", "string_fragment", "interpreted_string_literal_content", "comment"}


def words(text: str, name: str) -> list[int]:
    """str offsets of the whole-word occurrences of `name`."""
    return [m.start() for m in re.finditer(rf"(?<![\w$]){re.escape(name)}(?![\w$])", text)]


def spans_of(text: str, name: str, picks: list[int]) -> list[tuple[int, int]]:
    found = words(text, name)
    return [(found[i], found[i] + len(name)) for i in picks]


def token_ranges(text: str, language: str) -> list[tuple[int, int]]:
    """str ranges of every token: leaves plus string/comment contents."""
    parsed = parse_text(text, language)
    ranges = []
    stack = [parsed.root]
    while stack:
        node = stack.pop()
        if node.child_count == 0 or node.type in CONTENT_TYPES:
            ranges.append(parsed.span(node))
        stack.extend(node.children)
    return ranges


TOKENS = {name: token_ranges(text, language_for(name)) for name, text in SAMPLE_FILES.items()}


# -- languages and offsets ---------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("a/b/x.py", "python"), ("file:///home/u/app.tsx", "tsx"), ("file:///w/My%20Proj/x.rs", "rust"),
    ("C:\\src\\main.go", "go"), ("lib.mjs", "javascript"), ("types.d.ts", "typescript"),
    ("python", "python"), ("typescriptreact", "tsx"), ("javascriptreact", "javascript"),
    ("TypeScript", "typescript"), ("go", "go"), ("rust", "rust"), ("notes.txt", None), ("haskell", None), ("", None),
])
def test_language_for(name, expected):
    assert language_for(name) == expected


def test_offsets_round_trip_with_unicode():
    text = "aé€😀b\n日本 = 'ñ'\n😀😀x"
    offsets = TextOffsets(text)
    for i in range(len(text) + 1):
        byte = len(text[:i].encode("utf-8"))
        assert offsets.to_byte(i) == byte
        assert offsets.to_char(byte) == i
    assert offsets.point(text.index("=")) == (1, len("日本 ".encode("utf-8")))


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_node_spans_are_str_offsets(name):
    text = SAMPLE_FILES[name]
    parsed = parse_text(text, language_for(name))
    stack = [parsed.root]
    while stack:
        node = stack.pop()
        start, end = parsed.span(node)
        assert text[start:end] == node.text.decode("utf-8")
        stack.extend(node.children)


def test_identifier_at_non_ascii():
    text = "naïve_total = 1\nprint(naïve_total)\n"
    end = text.index(" =")
    assert identifier_at(Code(text, "python"), 3) == (0, end)          # under the cursor
    assert identifier_at(Code(text, "python"), end) == (0, end)        # just after it
    assert identifier_at(Code(text, "python"), end + 1) is None         # on the space before `=`
    use = text.rindex("naïve_total")
    assert identifier_at(Code(text, "python"), use + 4) == (use, use + len("naïve_total"))
    assert identifier_at(Code(text, None), 3) is None


# -- rewrite_span ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rewrite_span_covers_selection_and_never_cuts_a_token(data):
    name = data.draw(st.sampled_from(sorted(SAMPLE_FILES)))
    text = SAMPLE_FILES[name]
    language = language_for(name)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + data.draw(st.sampled_from([5, 40, 400])))))
    a, b = rewrite_span(Code(text, language), start, end)
    assert 0 <= a <= start <= end <= b <= len(text)
    for lo, hi in TOKENS[name]:
        assert not lo < a < hi, f"span starts inside token {text[lo:hi]!r}"
        assert not lo < b < hi, f"span ends inside token {text[lo:hi]!r}"
    if start < end:
        assert rewrite_span(Code(text, language), a, b) == (a, b)  # already whole nodes: a fixed point


PY = '''def f(a, b):
    x = a + b * 2
    y = call(x, "s p", 3)
    return y
'''


@pytest.mark.parametrize("selection, expected", [
    ("+ b", "a + b * 2"),                                  # inside an expression: the whole expression
    ("x = a", "x = a + b * 2"),
    ("b * 2\n    y = ca", 'x = a + b * 2\n    y = call(x, "s p", 3)'),   # two statements, no indentation
    ('"s', '"s p"'),                                       # never half a string
    ('p", 3', '"s p", 3'),                                 # a run of arguments
    ("(x, ", '(x, "s p", 3)'),                             # a bracket makes it the whole argument list
    ("rn y", "return y"),
])
def test_rewrite_span_examples(selection, expected):
    start = PY.index(selection)
    a, b = rewrite_span(Code(PY, "python"), start, start + len(selection))
    assert PY[a:b] == expected


def test_rewrite_span_whole_line_selection_keeps_the_selection():
    start = PY.index("    x =")
    end = PY.index("    return")
    a, b = rewrite_span(Code(PY, "python"), start, end)
    assert (a, b) == (start, end)


def test_rewrite_span_braces_and_cursor():
    js = "function f() {\n  const a = 1;\n  g(a);\n  return a;\n}\n"
    start = js.index("1;")
    a, b = rewrite_span(Code(js, "javascript"), start, js.index("(a)"))
    assert js[a:b] == "const a = 1;\n  g(a);"
    # An empty selection stands for the statement under the cursor.
    a, b = rewrite_span(Code(js, "javascript"), js.index("(a)"), js.index("(a)"))
    assert js[a:b] == "g(a);"
    go = "package p\n\nfunc f() {\n\tx := 1\n\ty := x\n}\n"
    a, b = rewrite_span(Code(go, "go"), go.index("1"), go.index(":= x"))
    assert go[a:b] == "x := 1\n\ty := x"


def test_rewrite_span_after_leading_blank_lines():
    text = "\n\n    \nx = compute(a, b)\n"
    start = text.index("a,")
    a, b = rewrite_span(Code(text, "python"), start, start + 4)
    assert text[a:b] == "a, b"


def test_rewrite_span_unknown_language_widens_to_lines():
    text = "alpha beta\ngamma delta\nepsilon\n"
    a, b = rewrite_span(Code(text, None), text.index("beta"), text.index("delta"))
    assert text[a:b] == "alpha beta\ngamma delta"


# -- body_span ---------------------------------------------------------------------------


def body(text: str, language: str, at: str) -> str | None:
    span = body_span(Code(text, language), text.index(at))
    return None if span is None else text[span[0]:span[1]]


def test_body_span_python_placeholders():
    src = '''class C:
    def m(self):
        pass

    def n(self):
        """Doc."""
        ...

    def o(self):
        """Only a docstring."""

def t():
    # TODO: write it
    return None

def real(x):
    return x + 1
'''
    assert body(src, "python", "def m") == "pass"
    assert body(src, "python", "pass") == "pass"
    assert body(src, "python", "def n") == "..."                   # the docstring stays
    assert body(src, "python", "def t") == "# TODO: write it\n    return None"
    assert body(src, "python", "return x") == "return x + 1"          # not a placeholder: still its body
    span = body_span(Code(src, "python"), src.index("def o"))
    assert span[0] == span[1] == src.index('"""Only a docstring."""') + len('"""Only a docstring."""')
    # Cursor just after `pass` is still in that method.
    after_pass = src.index("pass") + len("pass")
    assert body_span(Code(src, "python"), after_pass) == (src.index("pass"), after_pass)
    assert body_span(Code("x = 1\n", "python"), 2) is None
    assert body_span(Code(src, None), 3) is None


def test_body_span_brace_languages():
    js = 'function f(a) {}\nclass K { m() { // TODO\n  return null;\n} }\nconst g = () => { throw new Error("not implemented"); };\n'
    assert body(js, "javascript", "a)") == ""
    assert body(js, "javascript", "m()") == " // TODO\n  return null;\n"
    assert body(js, "javascript", "throw") == ' throw new Error("not implemented"); '
    ts = "export function take(n: number): boolean {\n  // TODO\n}\n"
    assert body(ts, "typescript", "take") == "\n  // TODO\n"
    go = 'package main\n\nfunc f() int {\n\tpanic("not implemented")\n}\n'
    assert body(go, "go", "f()") == '\n\tpanic("not implemented")\n'
    rust = "impl A {\n    fn f(&self) -> i32 { todo!() }\n    fn g(&self) { let x = 1; }\n}\n"
    assert body(rust, "rust", "f(&") == " todo!() "
    assert body(rust, "rust", "x =") == " let x = 1; "


# -- occurrences -------------------------------------------------------------------------

PY_SCOPES = '''x = 1
count = 0

def f(x, y=x):
    """x in a docstring"""
    # x in a comment
    z = x + obj.x + count
    g(x=x)
    def inner():
        return x + z
    return inner

def h():
    x = 2
    global count
    count += x
    return "x"

class C:
    x = 3
    def m(self):
        self.x = x
        return self.x

print(x, [x for x in range(3)])
'''


def occ(text: str, language: str, name: str, nth: int) -> list[tuple[int, int]]:
    return occurrences(Code(text, language), words(text, name)[nth])


def test_occurrences_parameter_shadows_module_name_and_skips_strings_attributes_keywords():
    # f's parameter x: its uses in f and in the nested closure `inner`; not the docstring,
    # the comment, obj.x, the keyword name in g(x=...), nor h's local x.
    expected = spans_of(PY_SCOPES, "x", [1, 5, 8, 9])
    assert occ(PY_SCOPES, "python", "x", 1) == expected
    assert occ(PY_SCOPES, "python", "x", 9) == expected  # asked from the closure's use


def test_occurrences_same_local_in_two_functions_are_distinct():
    h_x = occ(PY_SCOPES, "python", "x", 10)
    assert [PY_SCOPES[s:e] for s, e in h_x] == ["x", "x"]
    assert h_x == spans_of(PY_SCOPES, "x", [10, 11])


def test_occurrences_module_name_used_in_functions_and_methods():
    # Module x: the default value y=x (evaluated outside f), the method's use (class bodies don't
    # leak into methods), and print(x, ...) — but not the comprehension's own x.
    found = occ(PY_SCOPES, "python", "x", 0)
    assert found == spans_of(PY_SCOPES, "x", [0, 2, 15, 17])
    # `global count` makes h's count the module's.
    assert occ(PY_SCOPES, "python", "count", 2) == spans_of(PY_SCOPES, "count", [0, 1, 2, 3])


def test_occurrences_attribute_and_non_identifier():
    attr = [PY_SCOPES.index("self.x") + 5, PY_SCOPES.rindex("self.x") + 5]
    assert occurrences(Code(PY_SCOPES, "python"), attr[0]) == [(a, a + 1) for a in attr]
    assert occurrences(Code(PY_SCOPES, "python"), PY_SCOPES.index("obj.x") + 4) == []  # not self: left alone
    assert occurrences(Code(PY_SCOPES, "python"), PY_SCOPES.index('"x"') + 1) == []    # inside a string
    assert occurrences(Code(PY_SCOPES, "python"), PY_SCOPES.index("# x") + 2) == []    # inside a comment
    assert occurrences(Code(PY_SCOPES, None), 0) == []


def test_occurrences_python_nonlocal_and_comprehension_walrus():
    src = "def outer():\n    n = 0\n    def bump():\n        nonlocal n\n        n += 1\n    return [m := n for _ in 'ab'], m\n"
    assert occ(src, "python", "n", 3) == spans_of(src, "n", [0, 1, 2, 3])
    assert occ(src, "python", "m", 0) == spans_of(src, "m", [0, 1])


def test_occurrences_javascript_function_locals_vs_module():
    js = 'const x = 1;\nfunction f(x) { let y = x + obj.x; return {x, y}; }\nfunction g() { return x + "x"; } // x\n'
    assert occ(js, "javascript", "x", 1) == spans_of(js, "x", [1, 2, 4])     # parameter, use, shorthand
    assert occ(js, "javascript", "x", 0) == spans_of(js, "x", [0, 5])        # module const and g's use


def test_occurrences_typescript_var_hoisting_and_export():
    ts = ("let total: number = 0;\n"
          "function add(total: number, n = total): number { var s = total; { var s2 = s; } return s2 + n; }\n"
          "export { total };\n")
    assert occ(ts, "typescript", "total", 0) == spans_of(ts, "total", [0, 4])
    assert occ(ts, "typescript", "total", 1) == spans_of(ts, "total", [1, 2, 3])
    assert occ(ts, "typescript", "s2", 1) == spans_of(ts, "s2", [0, 1])     # var escapes the block


def test_occurrences_go_parameter_vs_package_var():
    go = "package main\n\nvar n = 1\n\nfunc f(n int) int { m := n; return m + n }\n\nfunc g() int { x := T{n: n}; return x.n + n }\n"
    assert occ(go, "go", "n", 1) == spans_of(go, "n", [1, 2, 3])
    assert occ(go, "go", "n", 0) == spans_of(go, "n", [0, 5, 7])   # not the struct key nor x.n


def test_occurrences_rust_shadowing_let():
    rs = "static N: i32 = 1;\nfn f(n: i32) -> i32 { let m = n; let n = m + N; n }\nfn g() -> i32 { let n = 2; p.n + n + N }\n"
    assert occ(rs, "rust", "n", 0) == spans_of(rs, "n", [0, 1])    # parameter until the shadowing let
    assert occ(rs, "rust", "n", 3) == spans_of(rs, "n", [2, 3])
    assert occ(rs, "rust", "n", 4) == spans_of(rs, "n", [4, 6])    # g's own n, not the field p.n
    assert occ(rs, "rust", "N", 0) == spans_of(rs, "N", [0, 1, 2])


@pytest.mark.parametrize("name", ["sample.py", "sample.js", "sample.ts", "sample.go", "sample.rs"])
def test_occurrences_are_sorted_same_name_and_contain_the_cursor(name):
    text = SAMPLE_FILES[name]
    language = language_for(name)
    for start, end in TOKENS[name][::7]:
        ident = identifier_at(Code(text, language), start)
        found = occurrences(Code(text, language), start)
        if not found:
            continue
        assert found == sorted(set(found))
        assert all(e <= s2 for (_, e), (s2, _) in zip(found, found[1:]))
        assert ident in found
        assert {text[s:e] for s, e in found} == {text[ident[0]:ident[1]]}


# -- SyntaxDocument ----------------------------------------------------------------------

EDIT_PIECES = ["x", " ", "\n", "(", ")", ":", "{", "}", ";", ",", "=", "é", "😀", "日本", '"', "'", "#",
               "//", "def ", "fn ", "return ", "    ", "1", "let "]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_incremental_edits_match_a_fresh_parse(data):
    name = data.draw(st.sampled_from([n for n in sorted(SAMPLE_FILES) if n != "textwrap.py"]))
    language = language_for(name)
    document = SyntaxDocument(SAMPLE_FILES[name], language)
    for _ in range(data.draw(st.integers(1, 6))):
        n = len(document.text)
        start = data.draw(st.integers(0, n))
        end = data.draw(st.integers(start, min(n, start + 8)))
        inserted = "".join(data.draw(st.lists(st.sampled_from(EDIT_PIECES), max_size=4)))
        expected = document.text[:start] + inserted + document.text[end:]
        document.apply_change(start, end, inserted)
        assert document.text == expected
        fresh = ts_parser(language).parse(expected.encode("utf-8")).root_node
        assert str(document.tree.root_node) == str(fresh)
        assert document.error_count() == error_nodes(fresh)


def test_syntax_document_without_language_and_bad_ranges():
    document = SyntaxDocument("hello wörld", None)
    document.apply_change(6, 11, "there")
    assert (document.text, document.tree, document.error_count()) == ("hello there", None, 0)
    with pytest.raises(ValueError, match="outside the document"):
        document.apply_change(3, 99, "")
    typed = SyntaxDocument("x = 1\n", "python")
    typed.apply_change(5, 5, " +")
    assert typed.error_count() > 0
    typed.apply_change(7, 7, " 2")
    assert typed.text == "x = 1 + 2\n" and typed.error_count() == 0


# -- syntax_ok ---------------------------------------------------------------------------


def test_syntax_ok_detects_a_broken_edit():
    old = SAMPLE_FILES["sample.py"]
    at = old.index("subtotal = sum")
    start, end = rewrite_span(Code(old, "python"), at, at + len("subtotal = sum"))
    assert old[start:end] == "subtotal = sum(i.price for i in items)"
    assert syntax_ok(Code(old, "python"), old[:start] + "subtotal = sum(i.price * 2 for i in items)" + old[end:])
    assert not syntax_ok(Code(old, "python"), old[:start] + "subtotal = sum(i.price for i in" + old[end:])
    rs = SAMPLE_FILES["sample.rs"]
    assert not syntax_ok(Code(rs, "rust"), rs.replace("added += 1;", "added += ;", 1))
    assert syntax_ok(Code("x = (", None), "x = ((")
