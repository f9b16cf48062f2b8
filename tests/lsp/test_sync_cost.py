"""The cost of a keystroke must not grow with the document (issue 14.4): incremental
didChanges on a document of two million lines are absorbed about as fast as on a small one."""

from __future__ import annotations

import time

from tests.lsp.harness import RawServer

CHANGES = 10


def seconds_for_changes(raw: RawServer, uri: str, text: str) -> float:
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
                                              "contentChanges": [{"range": {"start": at, "end": at}, "text": "#"}]})
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
