"""Serve an inline suggestion again while the user types its own leading characters.

After the server suggests "rint(x)" at `p|`, the user usually types "r", "i", ... and the
editor asks again at every keystroke.  The document then differs from the one the
suggestion was made for only by those typed characters, so the rest of the suggestion
("int(x)", "nt(x)", ...) is still the model's answer and needs no new model call.

An entry remembers a window of text on each side of the cursor.  A lookup matches when
the text after the cursor is unchanged and the text before it is the entry's, followed by
a leading part of the suggestion.  (Windows, not whole documents: lookups stay cheap for
large files, and an edit far above the cursor hardly changes the answer.)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

WINDOW = 2000  # characters compared on each side of the cursor


@dataclass(frozen=True)
class Entry:
    text: str  # inserted at the cursor
    replaces: int = 0  # characters after the cursor it replaces (trailing blanks of the line)


@dataclass(frozen=True)
class CachedSuggestion:
    entries: tuple[Entry, ...]  # candidates, best first, with the typed part cut off
    typed: int  # how many of their leading characters the user has typed since


class SuggestionCache:
    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        # (uri, prefix window, suffix window) -> candidates.  A prefix window shorter than
        # WINDOW means the cursor was near the top: it then stands for the whole prefix.
        self._entries: OrderedDict[tuple[str, str, str], tuple[Entry, ...]] = OrderedDict()

    def put(self, uri: str, text: str, offset: int, entries: list[Entry] | tuple[Entry, ...]) -> None:
        kept = tuple(e for e in entries if e.text)
        if not kept:
            return
        key = (uri, text[max(0, offset - WINDOW) : offset], text[offset : offset + WINDOW])
        self._entries[key] = kept
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, uri: str, text: str, offset: int) -> CachedSuggestion | None:
        """Candidates still valid at `offset` in `text`, with the typed part cut off."""
        suffix = text[offset : offset + WINDOW]
        for key in reversed(self._entries):
            entry_uri, entry_prefix, entry_suffix = key
            if entry_uri != uri or entry_suffix != suffix:
                continue
            entries = self._entries[key]
            best = entries[0].text
            # typed_len < len(best): something must be left to suggest.
            for typed_len in range(0, min(len(best), offset + 1)):
                origin = offset - typed_len  # where the cursor was when the entry was made
                if text[origin:offset] != best[:typed_len]:
                    continue
                if text[max(0, origin - WINDOW) : origin] == entry_prefix:
                    typed = best[:typed_len]
                    remaining = tuple(
                        Entry(e.text[typed_len:], e.replaces)
                        for e in entries
                        if e.text.startswith(typed) and len(e.text) > typed_len
                    )
                    self._entries.move_to_end(key)
                    return CachedSuggestion(remaining, typed_len)
        return None

    def clear(self, uri: str | None = None) -> None:
        if uri is None:
            self._entries.clear()
            return
        for key in [k for k in self._entries if k[0] == uri]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
