"""Open documents: text, version, language, and the tree-sitter tree kept in step.

LSP positions count lines and *code units* of the negotiated encoding (UTF-16 unless the
client offered another); everything behind this module works on Python str offsets.
Conversion happens here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lsprotocol import types

from infill_engine.syntax.lines import line_span
from infill_engine.syntax.parse import Code, SyntaxDocument, language_for

from .line_index import LineIndex

# Past this size a document keeps its text (so sync stays correct) but gets no syntax
# tree and no model features: a 10 MB file is almost always generated or data, and a
# tree-sitter parse plus tokenizing it on every keystroke would stall the server.
MAX_FEATURE_CHARS = 1_000_000


class DocumentError(Exception):
    """A request about a document the server cannot serve (unknown, stale, out of range)."""


class UnknownDocument(DocumentError):
    pass


class StaleVersion(DocumentError):
    pass


class PositionOutOfRange(DocumentError):
    pass


def _units(text: str, encoding: str) -> int:
    """Length of `text` in code units of `encoding`."""
    if text.isascii() or encoding == types.PositionEncodingKind.Utf32:
        return len(text)
    if encoding == types.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _chars_for_units(line: str, units: int, encoding: str) -> int:
    """How many characters of `line` the first `units` code units cover (rounded down
    when `units` falls inside a character, e.g. between the halves of a surrogate pair)."""
    if line.isascii() or encoding == types.PositionEncodingKind.Utf32:
        return min(units, len(line))
    used = 0
    for i, ch in enumerate(line):
        cp = ord(ch)
        if encoding == types.PositionEncodingKind.Utf8:
            width = 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
        else:
            width = 2 if cp > 0xFFFF else 1
        if used + width > units:
            return i
        used += width
    return len(line)


def language_name(language_id: str, uri: str) -> str | None:
    """The grammar name for a document, from its languageId or, failing that, its extension."""
    return language_for(language_id) or language_for(uri)


_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Document:
    uri: str
    language_id: str
    version: int
    text: str
    encoding: str = types.PositionEncodingKind.Utf16
    language: str | None = None  # grammar name; None: no grammar (plain text, unknown language)
    _syntax: SyntaxDocument | None = field(default=None, repr=False)  # None while features are off for it
    lines: LineIndex = field(init=False, repr=False)  # where each line starts, kept in step with edits
    _reason: tuple[str | None] | None = field(default=None, repr=False)  # cached unsupported_reason()

    def __post_init__(self) -> None:
        self.language = language_name(self.language_id, self.uri)
        self.lines = LineIndex(self.text)
        self._reparse()

    # -- what features may do with this document ---------------------------------------

    @property
    def code(self) -> Code:
        """The text with its language and tree-sitter tree, kept in step with every change
        (incrementally): what the features take.  Without features (see unsupported_reason)
        it is the text alone."""
        return self._syntax.code if self._syntax is not None else Code(self.text, None)

    def unsupported_reason(self) -> str | None:
        """Why model and syntax features are off for this document, or None if they are on."""
        if self._reason is None:
            self._reason = (self._find_reason(),)
        return self._reason[0]

    def _find_reason(self) -> str | None:
        if len(self.text) > MAX_FEATURE_CHARS:
            return f"{self.uri} is too large ({len(self.text):,} characters; the limit is {MAX_FEATURE_CHARS:,})"
        # NUL never appears in source code; a client that opens an image or a .pyc as text
        # sends it, and the model must not be fed such bytes.
        if "\x00" in self.text:
            return f"{self.uri} looks binary (contains NUL characters); diffill ignores it"
        # Lone surrogates (JSON "\ud800") cannot be encoded for tree-sitter or the tokenizer.
        if _SURROGATE.search(self.text):
            return f"{self.uri} contains invalid Unicode (unpaired surrogates); diffill ignores it"
        if self.language is None:
            return (f"no grammar for language {self.language_id!r} ({self.uri}); "
                    "diffill supports python, javascript, typescript, go and rust")
        return None

    # -- positions -----------------------------------------------------------------------

    def line_bounds(self, line: int) -> tuple[int, int]:
        """Start and end (before the line break) of `line`."""
        return line_span(self.text, self.lines.start(line))

    def offset_at(self, position: types.Position, *, clamp: bool = False) -> int:
        """str offset of an LSP position.

        A character past the end of its line means the end of the line (as the spec says);
        a line past the end raises PositionOutOfRange unless `clamp` (then: end of text).
        """
        line, character = position.line, position.character
        if line < 0 or character < 0:
            if not clamp:
                raise PositionOutOfRange(f"negative position {line}:{character}")
            line, character = max(line, 0), max(character, 0)
        if line >= len(self.lines):
            if not clamp:
                raise PositionOutOfRange(
                    f"line {line} is past the end of {self.uri} ({len(self.lines)} lines)"
                )
            return len(self.text)
        start, end = self.line_bounds(line)
        return start + _chars_for_units(self.text[start:end], character, self.encoding)

    def position_at(self, offset: int) -> types.Position:
        offset = max(0, min(offset, len(self.text)))
        line = self.lines.line_of(offset)
        start, end = self.line_bounds(line)
        offset = min(offset, end)  # an offset inside "\r\n" belongs to the line's end
        return types.Position(line=line, character=_units(self.text[start:offset], self.encoding))

    def range_offsets(self, rng: types.Range, *, clamp: bool = False) -> tuple[int, int]:
        start = self.offset_at(rng.start, clamp=clamp)
        end = self.offset_at(rng.end, clamp=clamp)
        if end < start:
            if not clamp:
                raise PositionOutOfRange(f"range end {rng.end} is before its start {rng.start}")
            start, end = end, start
        return start, end

    def range_of(self, start: int, end: int) -> types.Range:
        return types.Range(start=self.position_at(start), end=self.position_at(end))

    # -- changes -------------------------------------------------------------------------

    def apply_change(self, change: types.TextDocumentContentChangeEvent) -> None:
        if isinstance(change, types.TextDocumentContentChangeWholeDocument) or getattr(change, "range", None) is None:
            self.text = change.text
            self.lines = LineIndex(self.text)
            self._reparse()
            return
        # A range past the end means the client and we disagree already; clamping keeps
        # the text a valid string and the next full sync (or reopen) repairs it.
        start, end = self.range_offsets(change.range, clamp=True)
        self.text = self.text[:start] + change.text + self.text[end:]
        self.lines.replace(self.text, start, end, len(change.text))  # work for the edit's lines only
        self._reason = None
        if self._syntax is not None and self.unsupported_reason() is None:
            self._syntax.apply_change(start, end, change.text)  # no parse now: the tree follows on first use
        else:
            self._reparse()

    def _reparse(self) -> None:
        self._reason = None
        self._syntax = None
        if self.unsupported_reason() is None:
            self._syntax = SyntaxDocument(self.text, self.language)


class DocumentStore:
    """The open documents of one session, keyed by URI."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}
        self.encoding: str = types.PositionEncodingKind.Utf16

    def open(self, item: types.TextDocumentItem) -> Document:
        doc = Document(item.uri, item.language_id, item.version, item.text, self.encoding)
        self._docs[item.uri] = doc
        return doc

    def change(self, params: types.DidChangeTextDocumentParams) -> Document:
        doc = self.get(params.text_document.uri)
        for change in params.content_changes:
            doc.apply_change(change)
        doc.version = params.text_document.version
        return doc

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def get(self, uri: str, version: int | None = None) -> Document:
        doc = self._docs.get(uri)
        if doc is None:
            raise UnknownDocument(f"{uri} is not open (send textDocument/didOpen first)")
        if version is not None and version != doc.version:
            raise StaleVersion(f"{uri} is at version {doc.version}, the request was for version {version}")
        return doc

    def __contains__(self, uri: str) -> bool:
        return uri in self._docs
