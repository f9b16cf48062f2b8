"""The cost of a keystroke must not grow with the document (issue 14.4): incremental
didChanges on a document of two million lines, or on a source file just under the size
limit for syntax features, are absorbed about as fast as on a small one."""

from __future__ import annotations

import time

from lsp_server.documents import MAX_FEATURE_CHARS
from tests.lsp.harness import RawServer

CHANGES = 10


def seconds_for_changes(raw: RawServer, uri: str, text: str, typed: str = "#") -> float:
    """Time from the first of CHANGES one-character edits to the answer of a request sent after
    them (the server handles messages in order, so the answer comes after the last change)."""
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                         "text": text}})
    barrier = {"command": "diffill.status", "arguments": []}
    raw.request(f"{uri}-open", "workspace/executeCommand", barrier)
    raw.responses({f"{uri}-open"})
    line = text.count("\n") // 2
    t0 = time.perf_counter()
    for i in range(CHANGES):
        at = {"line": line, "character": 0}
        raw.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2 + i},
                                              "contentChanges": [{"range": {"start": at, "end": at}, "text": typed}]})
    raw.request(uri, "workspace/executeCommand", barrier)
    assert uri in raw.responses({uri}, timeout=600)
    return time.perf_counter() - t0


def test_a_keystroke_costs_about_the_same_in_a_huge_document():
    raw = RawServer()
    try:
        raw.initialize({"enabled": False})  # sync only: no model work beside the edits
        small = seconds_for_changes(raw, "file:///small.py", "x = 1\n" * 100)
        huge = seconds_for_changes(raw, "file:///huge.py", "\n" * 2_000_000)  # 2 MB, 2,000,000 lines
        # Before the line index, every change rebuilt two million line starts (~0.5 s here).
        assert huge < 10 * small + 0.5, f"{CHANGES} changes: {huge:.3f} s on 2M lines vs {small:.3f} s on 100"
    finally:
        raw.kill()


def test_a_keystroke_in_a_large_broken_source_file_costs_no_parse():
    # Just under MAX_FEATURE_CHARS, so the document has a tree; each "(" leaves the text
    # broken, which used to cost an incremental and a fresh parse of the whole file per
    # keystroke on the event loop (1.5 s each here).  Now the tree is built when asked for.
    unit = "def f{i}(a, b):\n    return a + b * {i}\n\n"
    text = "".join(unit.format(i=i) for i in range(MAX_FEATURE_CHARS // len(unit.format(i=99999))))
    assert 0.9 * MAX_FEATURE_CHARS < len(text) <= MAX_FEATURE_CHARS
    raw = RawServer()
    try:
        raw.initialize({"enabled": False})
        small = seconds_for_changes(raw, "file:///small.py", "x = 1\n" * 100, typed="(")
        large = seconds_for_changes(raw, "file:///large.py", text, typed="(")
        assert large < 10 * small + 0.5, f"{CHANGES} changes: {large:.3f} s on {len(text):,} chars vs {small:.3f} s"
    finally:
        raw.kill()
