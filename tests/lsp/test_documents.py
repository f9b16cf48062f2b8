"""Documents (positions, incremental sync, trees), settings and the suggestion cache."""

from __future__ import annotations

import random

import pytest
from lsprotocol import types

from infill_engine.syntax.parse import error_nodes, parse_text
from lsp_server.documents import MAX_FEATURE_CHARS, Document, DocumentStore, PositionOutOfRange, StaleVersion, UnknownDocument
from lsp_server.settings import Settings, merge_settings, settings_section
from lsp_server.features.inline import Suggestion
from lsp_server.suggestion_cache import WINDOW, SuggestionCache

UTF16 = types.PositionEncodingKind.Utf16
UTF8 = types.PositionEncodingKind.Utf8
UTF32 = types.PositionEncodingKind.Utf32


def doc(text: str, encoding: str = UTF16, language_id: str = "python", uri: str = "file:///t.py") -> Document:
    return Document(uri, language_id, 1, text, encoding)


def pos(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


def change(d: Document, sl: int, sc: int, el: int, ec: int, text: str) -> None:
    d.apply_change(types.TextDocumentContentChangePartial(
        range=types.Range(start=pos(sl, sc), end=pos(el, ec)), text=text))


# -- positions ---------------------------------------------------------------------------


def test_utf16_positions_count_surrogate_pairs_as_two_units():
    d = doc("a😀b = 1\nx")
    assert d.offset_at(pos(0, 0)) == 0
    assert d.offset_at(pos(0, 1)) == 1          # before the emoji
    assert d.offset_at(pos(0, 2)) == 1          # inside the pair: rounds down to its start
    assert d.offset_at(pos(0, 3)) == 2          # after the emoji (2 UTF-16 units)
    assert d.text[d.offset_at(pos(0, 3))] == "b"
    assert d.position_at(2) == pos(0, 3)
    assert d.offset_at(pos(1, 0)) == d.text.index("x")


def test_utf8_and_utf32_encodings():
    text = "é😀z\n"
    assert doc(text, UTF8).offset_at(pos(0, 6)) == 2  # é=2 bytes, 😀=4 bytes
    assert doc(text, UTF8).position_at(2) == pos(0, 6)
    assert doc(text, UTF32).offset_at(pos(0, 2)) == 2
    assert doc(text, UTF32).position_at(2) == pos(0, 2)


def test_crlf_and_cr_line_breaks():
    d = doc("a = 1\r\nb = 2\rc = 3")
    assert d.offset_at(pos(1, 0)) == d.text.index("b")
    assert d.offset_at(pos(2, 0)) == d.text.index("c")
    assert d.offset_at(pos(0, 99)) == d.text.index("\r")  # past the end of a line: its end
    assert d.position_at(d.text.index("\n")) == pos(0, 5)  # inside "\r\n": end of the line


def test_out_of_range_positions():
    d = doc("one\ntwo")
    with pytest.raises(PositionOutOfRange):
        d.offset_at(pos(5, 0))
    assert d.offset_at(pos(5, 0), clamp=True) == len(d.text)
    with pytest.raises(PositionOutOfRange):
        d.range_offsets(types.Range(start=pos(1, 2), end=pos(0, 1)))


def test_position_round_trip_on_random_unicode_text():
    rng = random.Random(3)
    alphabet = ["a", "é", "😀", "\n", "\r\n", " ", "中", "\t"]
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for encoding in (UTF16, UTF8, UTF32):
            d = doc(text, encoding)
            for offset in range(len(text) + 1):
                if offset and text[offset - 1] == "\r" and text[offset : offset + 1] == "\n":
                    continue  # inside a CRLF: not a position of its own
                assert d.offset_at(d.position_at(offset)) == offset


# -- incremental sync --------------------------------------------------------------------


def test_incremental_changes_keep_text_and_tree_in_step():
    d = doc("def f(x):\n    return x\n")
    change(d, 1, 11, 1, 12, "x + 1")
    assert d.text == "def f(x):\n    return x + 1\n"
    change(d, 2, 0, 2, 0, "\ny = f(😀)\n")
    change(d, 3, 6, 3, 8, "2")  # replaces the emoji (2 UTF-16 units)
    assert d.text == "def f(x):\n    return x + 1\n\ny = f(2)\n"
    assert d.code.text == d.text
    assert d.code.error_count() == 0
    change(d, 0, 7, 0, 9, "")  # "def f(x" : now broken
    assert d.code.error_count() == error_nodes(parse_text(d.text, "python").root) > 0


def test_random_incremental_edits_match_a_fresh_parse():
    rng = random.Random(7)
    d = doc("def f(a):\n    return a\n")
    pieces = ["x", "(", ")", ":", "\n", "    ", "def ", "return ", "é", "😀", "", "1 + 2"]
    for _ in range(200):
        a = rng.randint(0, len(d.text))
        b = rng.randint(a, min(len(d.text), a + 5))
        new = rng.choice(pieces)
        expected = d.text[:a] + new + d.text[b:]
        rng_ = d.range_of(a, b)
        d.apply_change(types.TextDocumentContentChangePartial(range=rng_, text=new))
        assert d.text == expected
        assert d.code.text == d.text
    assert d.code.error_count() == error_nodes(parse_text(d.text, "python").root)


def test_whole_document_change_and_clamped_ranges():
    d = doc("a = 1\n")
    d.apply_change(types.TextDocumentContentChangeWholeDocument(text="b = 2\n"))
    assert d.text == "b = 2\n"
    change(d, 9, 0, 9, 0, "c = 3\n")  # past the end: clamped to the end, never an exception
    assert d.text == "b = 2\nc = 3\n"


def test_store_versions_and_unknown_documents():
    store = DocumentStore()
    store.open(types.TextDocumentItem(uri="file:///a.py", language_id="python", version=3, text="x = 1\n"))
    with pytest.raises(UnknownDocument):
        store.get("file:///b.py")
    with pytest.raises(StaleVersion):
        store.get("file:///a.py", version=2)
    store.change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri="file:///a.py", version=4),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=pos(0, 4), end=pos(0, 5)), text="2")],
    ))
    assert store.get("file:///a.py", version=4).text == "x = 2\n"


def test_unsupported_documents_say_why():
    assert doc("x = 1\n").unsupported_reason() is None
    assert "binary" in doc("\x00\x01PNG").unsupported_reason()
    assert "surrogate" in doc("x = '\ud800'").unsupported_reason()
    assert "too large" in doc("x" * (MAX_FEATURE_CHARS + 1)).unsupported_reason()
    plain = doc("hello", language_id="plaintext", uri="file:///notes.txt")
    assert "no grammar" in plain.unsupported_reason()
    assert plain.code.parsed is None
    # the extension decides when the languageId is unknown
    assert doc("x = 1", language_id="", uri="file:///m.py").language == "python"
    assert doc("let x = 1;", language_id="typescriptreact", uri="file:///c.tsx").language == "tsx"


def test_large_document_still_syncs_without_a_tree():
    big = "x = 1\n" * (MAX_FEATURE_CHARS // 6 + 10)
    d = doc(big)
    assert d.code.parsed is None
    change(d, 3, 4, 3, 5, "2")
    assert d.text.splitlines()[3] == "x = 2"  # no tree, but sync stays right
    assert d.code.parsed is None


# -- settings ----------------------------------------------------------------------------


def test_settings_accept_valid_values():
    s, problems = merge_settings(Settings(), {
        "maxHoleTokens": 64, "threshold": 1, "candidates": 3, "device": "cuda:1", "model": "/models/x",
        "features": {"unlikelyHints": True, "rename": False},
    })
    assert problems == []
    assert (s.max_hole_tokens, s.threshold, s.candidates, s.device, s.model) == (64, 1.0, 3, "cuda:1", "/models/x")
    assert s.features.unlikely_hints and not s.features.rename and s.features.inline_completion


def test_lengths_reach_every_request_and_empty_means_the_model_settles_it():
    s, problems = merge_settings(Settings(), {"lengths": [3, 7]})
    assert problems == [] and s.infill.lengths == (3, 7) and s.action_infill.lengths == (3, 7)
    s, problems = merge_settings(s, {"lengths": []})
    assert problems == [] and s.infill.request("x = ", "\n").lengths == ()


def test_max_steps_caps_suggestions_and_actions_keep_their_own_cap():
    s, problems = merge_settings(Settings(), {"maxSteps": 3})
    assert problems == [] and s.infill.sampler.max_steps == 3
    assert s.action_infill.sampler.max_steps == Settings.action_max_steps


@pytest.mark.parametrize("raw,key", [
    ({"maxSteps": 0}, "maxSteps"),
    ({"maxHoleTokens": 0}, "maxHoleTokens"),
    ({"maxHoleTokens": "48"}, "maxHoleTokens"),
    ({"maxHoleTokens": True}, "maxHoleTokens"),
    ({"threshold": 0}, "threshold"),
    ({"threshold": 1.5}, "threshold"),
    ({"candidates": 9}, "candidates"),
    ({"device": "gpu"}, "device"),
    ({"model": ""}, "model"),
    ({"enabled": "yes"}, "enabled"),
    ({"features": {"rewrite": 1}}, "features.rewrite"),
    ({"features": {"teleport": True}}, "features.teleport"),
    ({"features": []}, "features"),
    ({"bogus": 1}, "bogus"),
    ({"lengths": [4, 0]}, "lengths"),
    ({"lengths": 8}, "lengths"),
    ({"lengths": [True]}, "lengths"),
])
def test_bad_settings_name_the_key_and_keep_the_previous_value(raw, key):
    previous = Settings(max_hole_tokens=20)
    s, problems = merge_settings(previous, raw)
    assert len(problems) == 1 and f"diffill.{key}" in problems[0]
    assert s == previous


def test_good_keys_apply_next_to_bad_ones():
    s, problems = merge_settings(Settings(), {"candidates": 0, "threshold": 0.5})
    assert s.candidates == 1 and s.threshold == 0.5 and len(problems) == 1


def test_settings_section():
    assert settings_section({"diffill": {"candidates": 2}}) == {"candidates": 2}
    assert settings_section({"candidates": 2}) == {"candidates": 2}
    assert settings_section({"python": {"x": 1}}) is None  # another tool's settings
    assert merge_settings(Settings(), "nope")[1]


# -- suggestion cache --------------------------------------------------------------------


def test_cache_serves_the_rest_while_the_user_types_it():
    cache = SuggestionCache()
    text = "def f(x):\n    return x\n\nprint(f(2))\n"
    cursor = text.index("print(") + len("pr")
    cache.put("u", text, cursor, [Suggestion(cursor, cursor, "int(f(2))")])
    assert cache.get("u", text, cursor) == [Suggestion(cursor, cursor, "int(f(2))")]
    typed = text[:cursor] + "in" + text[cursor:]
    hit = cache.get("u", typed, cursor + 2)
    assert hit == [Suggestion(cursor + 2, cursor + 2, "t(f(2))")]  # the 2 typed characters cut off
    # typing something else misses
    other = text[:cursor] + "ox" + text[cursor:]
    assert cache.get("u", other, cursor + 2) is None
    # a change after the cursor misses
    changed = text[:cursor] + text[cursor:].replace("f(2)", "f(3)")
    assert cache.get("u", changed, cursor) is None
    assert cache.get("other-uri", text, cursor) is None


def test_cache_near_top_requires_whole_prefix_and_far_edits_do_not_matter():
    cache = SuggestionCache()
    text = "x = 1\ny = \n"
    cursor = text.index("y = ") + 4
    cache.put("u", text, cursor, [Suggestion(cursor, cursor, "2")])
    assert cache.get("u", "z" + text, cursor + 1) is None  # prefix differs at the top of the file
    long_text = "#" * (WINDOW * 2) + "\n" + text
    c2 = long_text.index("y = ") + 4
    cache.put("u", long_text, c2, [Suggestion(c2, c2, "2")])
    edited = "!" + long_text  # an edit far above the window
    assert cache.get("u", edited, c2 + 1) == [Suggestion(c2 + 1, c2 + 1, "2")]


def test_cache_is_bounded():
    cache = SuggestionCache(capacity=3)
    for i in range(10):
        cache.put("u", f"text {i}", 5, [Suggestion(5, 5, "x")])
    assert len(cache) == 3
    cache.clear("u")
    assert len(cache) == 0
