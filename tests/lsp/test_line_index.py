"""LineIndex: line starts kept in step with edits, checked against a rebuild from the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from infill_engine.syntax.lines import line_starts
from lsp_server import line_index
from lsp_server.line_index import LineIndex

# Line breaks of every kind, so edits join and split "\r\n" pairs at their edges.
CHUNK = st.text(alphabet="ab\r\n", max_size=12)


def check(index: LineIndex, text: str) -> None:
    starts = line_starts(text)
    assert len(index) == len(starts)
    assert [index.start(i) for i in range(len(starts))] == starts
    for offset in range(len(text) + 1):
        line = index.line_of(offset)
        assert starts[line] <= offset and (line + 1 == len(starts) or offset < starts[line + 1])


@settings(max_examples=300, deadline=None)
@given(st.lists(CHUNK, max_size=8).map("".join),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), CHUNK), max_size=12),
       st.sampled_from([1, 2, 512]))
def test_edits_keep_the_index_equal_to_a_rebuild(text: str, edits, block: int):
    old_block, line_index.BLOCK = line_index.BLOCK, block  # tiny blocks: edits cross block edges
    try:
        index = LineIndex(text)
        for a, b, new in edits:
            start, end = sorted((a % (len(text) + 1), b % (len(text) + 1)))
            text = text[:start] + new + text[end:]
            index.replace(text, start, end, len(new))
            check(index, text)
    finally:
        line_index.BLOCK = old_block
