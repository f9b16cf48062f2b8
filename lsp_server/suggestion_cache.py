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

from .features.inline import Suggestion

WINDOW = 2000  # characters compared on each side of the cursor


class SuggestionCache:
    """Suggestions that insert at the cursor, remembered per document; served again while the
    user types them.

    >>> cache = SuggestionCache()
    >>> cache.put("u", "p", 1, [Suggestion(1, 1, "rint(x)")])
    >>> cache.get("u", "pri", 3)
    [Suggestion(start=3, end=3, text='nt(x)', syntax_ok=True, score=0.0)]
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        # (uri, prefix window, suffix window) -> (text, characters replaced after the cursor)
        # of each suggestion, best first.  A prefix window shorter than WINDOW means the
        # cursor was near the top: it then stands for the whole prefix.
        self._entries: OrderedDict[tuple[str, str, str], tuple[tuple[str, int], ...]] = OrderedDict()

    def put(self, uri: str, text: str, offset: int, suggestions: list[Suggestion]) -> None:
        """Remember the suggestions that insert at `offset` (replacing at most trailing blanks)."""
        kept = tuple((s.text, s.end - offset) for s in suggestions if s.start == offset and s.text)
        if not kept:
            return
        key = (uri, text[max(0, offset - WINDOW) : offset], text[offset : offset + WINDOW])
        self._entries[key] = kept
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, uri: str, text: str, offset: int) -> list[Suggestion] | None:
        """Suggestions still valid at `offset` in `text`, with the typed part cut off; None when
        nothing cached matches (an empty list: the user typed all of it)."""
        suffix = text[offset : offset + WINDOW]
        for key in reversed(self._entries):
            entry_uri, entry_prefix, entry_suffix = key
            if entry_uri != uri or entry_suffix != suffix:
                continue
            entries = self._entries[key]
            best = entries[0][0]
            # typed_len < len(best): something must be left to suggest.
            for typed_len in range(0, min(len(best), offset + 1)):
                origin = offset - typed_len  # where the cursor was when the entry was made
                if text[origin:offset] != best[:typed_len]:
                    continue
                if text[max(0, origin - WINDOW) : origin] == entry_prefix:
                    typed = best[:typed_len]
                    self._entries.move_to_end(key)
                    return [
                        Suggestion(offset, offset + replaces, suggested[typed_len:])
                        for suggested, replaces in entries
                        if suggested.startswith(typed) and len(suggested) > typed_len
                    ]
        return None

    def clear(self, uri: str | None = None) -> None:
        if uri is None:
            self._entries.clear()
            return
        for key in [k for k in self._entries if k[0] == uri]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
