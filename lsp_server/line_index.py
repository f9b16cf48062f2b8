"""Where each line of an open document starts, kept in step with its edits.

Rebuilding the list of line starts after every keystroke costs a scan of the whole text
(0.1 s for 10 MB, 0.3 s for two million short lines here; seconds on a slow host), and shifting every later start by the
edit's length still costs one Python operation per line.  So the starts sit in blocks of
at most BLOCK, each relative to its block's base offset: an edit rewrites the blocks it
touches and moves the bases after it — about a thousand numbers for two million lines.

Line breaks are "\\r\\n", "\\r" and "\\n" (infill_engine.syntax.lines, the LSP rule).
"""

from __future__ import annotations

import bisect

from infill_engine.syntax.lines import LINE_BREAK, line_starts

BLOCK = 2048


class LineIndex:
    def __init__(self, text: str) -> None:
        self._bases: list[int] = []
        self._blocks: list[list[int]] = []  # line starts, relative to the block's base (so each begins with 0)
        self._rechunk(0, 0, line_starts(text))

    def __len__(self) -> int:
        """The number of lines (a text without line breaks has one)."""
        return self._first_line[-1] + len(self._blocks[-1])

    def start(self, line: int) -> int:
        """Offset of the first character of `line` (0 <= line < len(self))."""
        b = bisect.bisect_right(self._first_line, line) - 1
        return self._bases[b] + self._blocks[b][line - self._first_line[b]]

    def line_of(self, offset: int) -> int:
        """The line holding `offset` (an offset at a line's start belongs to that line)."""
        b = max(0, bisect.bisect_right(self._bases, offset) - 1)
        return self._first_line[b] + bisect.bisect_right(self._blocks[b], offset - self._bases[b]) - 1

    def replace(self, new_text: str, start: int, end: int, inserted: int) -> None:
        """Update after text[start:end] became `inserted` characters; `new_text` is the
        text after the edit.

        Whether offset p starts a line depends on the characters at p-1 and p only, so the
        starts in [start, end + 1] (old offsets) may change — "\\r" + "\\n" can join or split
        at either edge — and are recomputed from the new text; those after move by the
        edit's length."""
        lo, hi, delta = max(start, 1), end + 1, inserted - (end - start)
        first = max(0, bisect.bisect_right(self._bases, lo) - 1)
        last = max(first, bisect.bisect_right(self._bases, hi) - 1)
        old = [self._bases[b] + r for b in range(first, last + 1) for r in self._blocks[b]]
        window_end = start + inserted + 1  # new offsets: starts in [lo, window_end] are recomputed
        fresh = [m.end() for m in LINE_BREAK.finditer(new_text, lo - 1, window_end + 1)]
        starts = ([s for s in old if s < lo] + [s for s in fresh if s <= window_end]
                  + [s + delta for s in old if s > hi])
        for b in range(last + 1, len(self._bases)):
            self._bases[b] += delta
        self._rechunk(first, last + 1, starts)

    def _rechunk(self, first: int, stop: int, starts: list[int]) -> None:
        """Blocks [first, stop) become `starts` (absolute, sorted), BLOCK at a time."""
        chunks = [starts[i : i + BLOCK] for i in range(0, len(starts), BLOCK)]
        self._bases[first:stop] = [c[0] for c in chunks]
        self._blocks[first:stop] = [[s - c[0] for s in c] for c in chunks]
        # Which line each block starts with, for start(): O(blocks), about a thousand for two million lines.
        self._first_line = [0]
        for block in self._blocks[:-1]:
            self._first_line.append(self._first_line[-1] + len(block))
