"""Tree-sitter parsing for the languages diffill understands, in str offsets.

tree-sitter speaks UTF-8 bytes and (row, byte-column) points; everything above this module
(spans, scopes, the language server) speaks Python str offsets.  `TextOffsets` is the one place
that converts between the two, so non-ASCII text cannot shift a span by a few bytes.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import PurePosixPath
from typing import Callable
from urllib.parse import unquote, urlsplit

from tree_sitter import Language, Node, Parser, Query, QueryCursor, Tree

LANGUAGES = ("python", "javascript", "typescript", "tsx", "go", "rust")

_EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
}

# LSP languageIds (and our own names).  JSX needs no separate grammar: tree-sitter-javascript parses it.
_LANGUAGE_IDS = {
    "python": "python",
    "javascript": "javascript", "javascriptreact": "javascript", "jsx": "javascript",
    "typescript": "typescript",
    "typescriptreact": "tsx", "tsx": "tsx",
    "go": "go",
    "rust": "rust",
}


def language_for(name: str | None) -> str | None:
    """The grammar for an LSP languageId, a file path or a URI; None when diffill has none."""
    if not name:
        return None
    key = name.strip()
    if key.lower() in _LANGUAGE_IDS:
        return _LANGUAGE_IDS[key.lower()]
    if "://" in key:
        key = unquote(urlsplit(key).path)
    suffix = PurePosixPath(key.replace("\\", "/")).suffix.lower()
    return _EXTENSIONS.get(suffix)


def normalize_language(language: str | None) -> str | None:
    """Accept our grammar names as they are and anything `language_for` understands."""
    if language is None or language in LANGUAGES:
        return language
    return language_for(language)


@lru_cache(maxsize=None)
def ts_language(language: str) -> Language:
    """The tree-sitter Language for one of LANGUAGES (grammar wheels are imported on first use)."""
    if language == "python":
        import tree_sitter_python as grammar
        return Language(grammar.language())
    if language == "javascript":
        import tree_sitter_javascript as grammar
        return Language(grammar.language())
    if language in ("typescript", "tsx"):
        import tree_sitter_typescript as grammar
        return Language(grammar.language_tsx() if language == "tsx" else grammar.language_typescript())
    if language == "go":
        import tree_sitter_go as grammar
        return Language(grammar.language())
    if language == "rust":
        import tree_sitter_rust as grammar
        return Language(grammar.language())
    raise ValueError(f"no tree-sitter grammar for {language!r}; expected one of {', '.join(LANGUAGES)}")


# A Parser holds mutable C state, so each thread (the LSP server parses from worker threads) gets its own.
_thread_parsers = threading.local()


def ts_parser(language: str) -> Parser:
    parsers = _thread_parsers.__dict__.setdefault("parsers", {})
    if language not in parsers:
        parsers[language] = Parser(ts_language(language))
    return parsers[language]


@lru_cache(maxsize=None)
def ts_query(language: str, source: str) -> Query:
    return Query(ts_language(language), source)


def captures(language: str, query_source: str, node: Node) -> dict[str, list[Node]]:
    return QueryCursor(ts_query(language, query_source)).captures(node)


def has_node_type(language: str, node_type: str) -> bool:
    return ts_language(language).id_for_node_kind(node_type, True) is not None


_WIDE_CHAR = re.compile(r"[^\x00-\x7f]")


class TextOffsets:
    """Converts between str offsets and UTF-8 byte offsets of one text.

    Only non-ASCII characters shift the two apart, so we keep just their positions and the
    running count of extra bytes: O(#non-ASCII) memory, a bisect per conversion.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._chars: list[int] = []       # str offset of each non-ASCII char
        self._bytes: list[int] = []       # byte offset of each non-ASCII char
        self._extra: list[int] = []       # extra bytes up to and including that char
        extra = 0
        for match in _WIDE_CHAR.finditer(text):
            i = match.start()
            self._chars.append(i)
            self._bytes.append(i + extra)
            extra += len(match.group().encode("utf-8")) - 1
            self._extra.append(extra)

    def to_byte(self, offset: int) -> int:
        j = bisect_left(self._chars, offset)
        return offset + (self._extra[j - 1] if j else 0)

    def to_char(self, byte: int) -> int:
        j = bisect_right(self._bytes, byte)
        if j == 0:
            return byte
        k = j - 1
        width = self._extra[k] - (self._extra[k - 1] if k else 0) + 1
        if byte < self._bytes[k] + width:
            return self._chars[k]  # inside a multi-byte char: round down to its start
        return byte - self._extra[k]

    def point(self, offset: int) -> tuple[int, int]:
        """tree-sitter point (row, byte column) of a str offset."""
        row = self.text.count("\n", 0, offset)
        line_start = self.text.rfind("\n", 0, offset) + 1
        return row, self.to_byte(offset) - self.to_byte(line_start)


@dataclass(frozen=True)
class ParsedText:
    """A text, its language and its tree, with str-offset helpers for nodes."""

    text: str
    language: str
    tree: Tree
    offsets: TextOffsets
    source: bytes  # the UTF-8 text; not root.text, which starts at the first token

    @property
    def root(self) -> Node:
        return self.tree.root_node

    def byte(self, offset: int) -> int:
        return self.offsets.to_byte(offset)

    def char(self, byte: int) -> int:
        return self.offsets.to_char(byte)

    def span(self, node: Node) -> tuple[int, int]:
        return self.char(node.start_byte), self.char(node.end_byte)


def parse_text(text: str, language: str | None) -> ParsedText | None:
    """Parse `text` afresh; None for a language without a grammar."""
    language = normalize_language(language)
    if language is None:
        return None
    source = text.encode("utf-8")
    return ParsedText(text, language, ts_parser(language).parse(source), TextOffsets(text), source)


class Code:
    """Source text in a language, with its tree-sitter parse made once, on first use.

    What the syntax functions (spans, scopes) take, so that several questions about one text
    share one parse.  A document under edit hands over the parse it keeps up to date
    incrementally (`SyntaxDocument.code`); anyone else wraps their text: `Code(text, "python")`.
    Without a grammar (`language` None or unknown) `parsed` is None and the functions fall
    back to plain text.  Treat it as immutable: a feature may read it on another thread while
    the document moves on to a new Code.
    """

    __slots__ = ("text", "language", "_parsed", "_parse")

    def __init__(self, text: str, language: str | None, parsed: ParsedText | None = None,
                 parse: Callable[[], ParsedText] | None = None) -> None:
        self.text = text
        self.language = normalize_language(language)
        self._parsed = parsed
        self._parse = parse  # how to parse on first use, if not afresh (SyntaxDocument: incrementally)

    @property
    def parsed(self) -> ParsedText | None:
        if self._parsed is None and self.language is not None:
            self._parsed = self._parse() if self._parse is not None else parse_text(self.text, self.language)
        return self._parsed

    def error_count(self) -> int:
        """ERROR and MISSING nodes in the tree (0 without a grammar)."""
        parsed = self.parsed
        return error_nodes(parsed.root) if parsed is not None else 0

    def __repr__(self) -> str:
        return f"Code({self.text[:40]!r}{'...' if len(self.text) > 40 else ''}, {self.language!r})"


def error_nodes(node: Node) -> int:
    """ERROR plus MISSING nodes under `node`, visiting only subtrees that contain errors.

    Iterative: long operator chains nest thousands deep, past Python's recursion limit.
    """
    count = 0
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            count += 1
        if current.has_error:
            stack.extend(current.children)
    return count


MAX_PENDING_EDITS = 1000  # edits replayed onto the last tree; past this a fresh parse is as cheap


class SyntaxDocument:
    """A document's text plus its tree-sitter tree, updated incrementally; `code` is the current state.

    An edit does not parse: it records where the text changed (tree-sitter's edit
    coordinates), and the tree is built when a feature first asks for it — on the thread
    that asks (the model's, for model features), from the last tree built plus the edits
    since.  So a keystroke costs no parse on the server's event loop, and a burst of them
    costs one incremental parse.  While the text has syntax errors the tree comes from a
    fresh parse instead, so it is always exactly the tree `parse_text` would build.

    `language` None (or a language without a grammar) keeps the text only; `tree` is then None
    and `error_count()` is 0, so callers can treat every document alike.
    """

    def __init__(self, text: str, language: str | None) -> None:
        self.language = normalize_language(language)
        self._offsets = TextOffsets(text)
        self._edits: list[tuple] = []  # tree-sitter edits since the last tree built (`self._built`)
        self._built: ParsedText | None = None
        self.code = Code(text, self.language)

    @property
    def text(self) -> str:
        return self.code.text

    @property
    def tree(self) -> Tree | None:
        parsed = self.code.parsed
        return parsed.tree if parsed is not None else None

    def error_count(self) -> int:
        """Number of ERROR and MISSING nodes in the current tree."""
        return self.code.error_count()

    def apply_change(self, start: int, end: int, new_text: str) -> None:
        """Replace text[start:end] (str offsets) with `new_text`; the tree follows on first use."""
        if not 0 <= start <= end <= len(self.text):
            raise ValueError(f"edit range {start}..{end} is outside the document (length {len(self.text)})")
        text = self.text[:start] + new_text + self.text[end:]
        if self.language is None:
            self.code = Code(text, None)
            return
        if self.code._parsed is not None:  # built since the last edit (maybe on another thread)
            self._built, self._edits = self.code._parsed, []
        elif len(self._edits) >= MAX_PENDING_EDITS:  # nobody asked for a tree in ages: parse afresh when asked
            self._built, self._edits = None, []
        offsets = self._offsets
        start_byte, old_end_byte = offsets.to_byte(start), offsets.to_byte(end)
        start_point, old_end_point = offsets.point(start), offsets.point(end)
        inserted = new_text.encode("utf-8")
        last_newline = new_text.rfind("\n")
        if last_newline < 0:
            new_end_point = (start_point[0], start_point[1] + len(inserted))
        else:
            new_end_point = (start_point[0] + new_text.count("\n"),
                             len(new_text[last_newline + 1:].encode("utf-8")))
        if self._built is not None:
            self._edits.append((start_byte, old_end_byte, start_byte + len(inserted),
                                start_point, old_end_point, new_end_point))
        self._offsets = TextOffsets(text)
        self.code = Code(text, self.language, parse=partial(
            _reparse, self.language, text, self._offsets, self._built, tuple(self._edits)))


def _reparse(language: str, text: str, offsets: TextOffsets, built: ParsedText | None,
             edits: tuple[tuple, ...]) -> ParsedText:
    """The tree of `text`: `built`'s tree with `edits` applied, reparsed incrementally."""
    encoded = text.encode("utf-8")
    parser = ts_parser(language)
    if built is None:
        return ParsedText(text, language, parser.parse(encoded), offsets, encoded)
    # Edit a copy: the old tree belongs to an earlier Code, which a feature may still be reading.
    edited = built.tree.copy()
    for edit in edits:
        edited.edit(*edit)
    tree = parser.parse(encoded, edited)
    if tree.root_node.has_error:
        # Error recovery after an incremental parse can differ from a fresh parse of the same
        # text (other ERROR nodes, other counts).  syntax_ok compares this document's errors
        # with fresh parses of candidate texts, so broken code gets a fresh parse: exact
        # counts at the price of a full parse only while the text is broken.
        tree = parser.parse(encoded)
    return ParsedText(text, language, tree, offsets, encoded)


def identifier_node_at(parsed: ParsedText, offset: int) -> Node | None:
    """The identifier token under the cursor, else the one ending just before it."""
    p = parsed.byte(offset)
    root = parsed.root
    for q in (p, p - 1):  # under the cursor first, then the token that ends at the cursor
        if q < 0:
            continue
        node = root.descendant_for_byte_range(q, q + 1)
        if node is not None and node.child_count == 0 and node.type.endswith("identifier") \
                and node.start_byte <= q < node.end_byte:
            return node
    return None
