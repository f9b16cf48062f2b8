"""Which text to mask: syntax-aware spans for rewrite, fill-body and naming, and syntax checks.

Every function takes a `Code` (text, language, parse) and works in Python str offsets into its
text.  Each degrades gracefully when the language has no grammar (None or unknown): whole lines
for spans, no body, plain-word identifiers aren't guessed (identifier_at returns None), and
syntax_ok says True.  Which identifiers belong together for a rename is scopes.py's business.

Span convention for statements: a span begins where the first node begins (after its indentation)
and ends where the last node ends (before the newline).  The indentation stays in the prefix, so
the model continues at the right column, and the newline stays in the suffix.  When the user's
selection reaches further (whole lines selected, say), the span grows to cover the selection too:
a span always covers what was selected.
"""

from __future__ import annotations

import re

from tree_sitter import Node

from .lines import line_span
from .parse import Code, ParsedText, identifier_node_at


# Nodes whose children form a run that may be rewritten in part: statement lists and
# comma-separated lists.  Selecting two statements of a block rewrites those two, not the block.
_SEQUENCES = frozenset({
    # statement and member lists
    "module", "block", "program", "source_file", "statement_block", "statement_list", "class_body",
    "declaration_list", "field_declaration_list", "enum_variant_list", "match_block", "switch_body",
    "switch_case", "switch_default", "interface_body", "object_type", "enum_body",
    # comma-separated lists
    "argument_list", "arguments", "parameters", "formal_parameters", "parameter_list", "lambda_parameters",
    "list", "array", "tuple", "dictionary", "set", "object", "expression_list", "literal_value",
    "tuple_expression", "array_expression", "type_arguments", "type_parameters", "named_imports",
    "import_spec_list", "field_initializer_list", "pattern_list", "tuple_pattern", "list_pattern",
    "array_pattern", "object_pattern", "with_clause",
})

# Where a statement lives; the cursor's statement is the ancestor whose parent is one of these.
_STATEMENT_CONTAINERS = frozenset({
    "module", "block", "program", "source_file", "statement_block", "statement_list", "class_body",
    "declaration_list", "switch_case", "switch_default",
})

# Punctuation that may sit inside a run of siblings without making the run less complete.
_SEPARATORS = frozenset({",", ";"})
# The text of a string or comment is one token even where a grammar gives it children
# (escape sequences, interpolations' text): a boundary between two escapes is still inside it.
_TEXT_TOKENS = frozenset({"string_content", "string_fragment", "interpreted_string_literal_content", "comment"})

_WHITESPACE = b" \t\r\n\f\v"


def _clamp_selection(text: str, start: int, end: int) -> tuple[int, int]:
    start, end = sorted((max(0, min(start, len(text))), max(0, min(end, len(text)))))
    return start, end


def rewrite_span(code: Code, start: int, end: int) -> tuple[int, int]:
    """Widen the selection [start, end) to whole syntax nodes.

    The result is the smallest run of complete siblings that covers the selection: whole
    statements (or declarations, list items, arguments) when the selection spans several, the
    complete expression when it lies inside one, never part of a token.  An empty selection
    stands for the statement under the cursor (or stays empty on a blank spot).  Without a
    grammar the selection widens to whole lines.
    """
    text, parsed = code.text, code.parsed
    start, end = _clamp_selection(text, start, end)
    if parsed is None:
        line_start = line_span(text, start)[0]
        line_end = line_span(text, end - 1 if end > start else end)[1]
        return line_start, max(line_end, end)
    if start == end:
        return _statement_at(parsed, start)
    a, b = parsed.byte(start), parsed.byte(end)
    source = parsed.source
    while True:
        lo, hi = a, b
        while lo < hi and source[lo] in _WHITESPACE:
            lo += 1
        while hi > lo and source[hi - 1] in _WHITESPACE:
            hi -= 1
        if lo < hi:
            lo, hi = _cover(parsed.root, lo, hi)
        new_a, new_b = min(lo, a), max(hi, b)
        # Trimmed whitespace can belong to a string; never leave a boundary inside a token.
        token = _token_cut_at(parsed.root, source, new_a)
        if token is not None:
            new_a = token.start_byte
        token = _token_cut_at(parsed.root, source, new_b)
        if token is not None:
            new_b = token.end_byte
        if (new_a, new_b) == (a, b):
            return parsed.char(a), parsed.char(b)
        a, b = new_a, new_b


def _smallest_containing(root: Node, a: int, b: int) -> Node:
    """The deepest node whose range contains the non-empty byte range [a, b)."""
    node = root
    while True:
        for child in node.children:
            if child.start_byte <= a and b <= child.end_byte and child.start_byte < child.end_byte:
                node = child
                break
        else:
            return node


def _cover(root: Node, a: int, b: int) -> tuple[int, int]:
    """Byte range of the whole nodes that cover [a, b) (a < b, no whitespace at either end)."""
    node = _smallest_containing(root, a, b)
    # A keyword or operator alone is no unit to rewrite; its construct is.
    while not node.is_named and node.parent is not None:
        node = node.parent
    if node.type in _SEQUENCES:
        kids = [c for c in node.children if c.start_byte < b and c.end_byte > a]
        # A run of named siblings (and separators) is complete; brackets or keywords are not.
        if kids and all(k.is_named or k.type in _SEPARATORS for k in kids):
            return kids[0].start_byte, kids[-1].end_byte
    return node.start_byte, node.end_byte


def _token_cut_at(root: Node, source: bytes, p: int) -> Node | None:
    """The token (leaf, or a node with text its children don't cover) strictly containing byte p."""
    node = root
    while True:
        inner = next((c for c in node.children if c.start_byte < p < c.end_byte), None)
        if inner is not None and inner.type in _TEXT_TOKENS:
            return inner
        if inner is not None:
            node = inner
            continue
        if not node.start_byte < p < node.end_byte:
            return None
        if node.child_count == 0:
            return node
        if any(c.start_byte == p or c.end_byte == p for c in node.children):
            return None
        # p falls between children: inside a token only if that gap holds text (string contents
        # in grammars that don't make a node of them), not if it is whitespace between tokens.
        gap_start = max((c.end_byte for c in node.children if c.end_byte <= p), default=node.start_byte)
        gap_end = min((c.start_byte for c in node.children if c.start_byte >= p), default=node.end_byte)
        return node if source[gap_start:gap_end].strip() else None


def _nodes_at(root: Node, p: int) -> list[Node]:
    """Ancestors of byte position p, innermost first; a node ending exactly at p counts when
    nothing starts there (the cursor just after `pass` is still in that function)."""
    chain = [root]
    node = root
    while True:
        children = node.children
        inner = next((c for c in children if c.start_byte <= p < c.end_byte), None)
        if inner is None:
            inner = next((c for c in children if c.start_byte < p == c.end_byte), None)
        if inner is None:
            return chain[::-1]
        chain.append(inner)
        node = inner


def _statement_at(parsed: ParsedText, offset: int) -> tuple[int, int]:
    p = parsed.byte(offset)
    node = _token_cut_at(parsed.root, parsed.source, p)
    if node is None:
        node = _nodes_at(parsed.root, p)[0]
        if node.child_count or node == parsed.root:
            return offset, offset  # blank spot between statements: nothing to widen to
    while node.parent is not None and node.parent.type not in _STATEMENT_CONTAINERS:
        node = node.parent
    return parsed.span(node)


# ---------------------------------------------------------------------------------------------
# Function bodies

_DEFINITIONS = frozenset({
    "function_definition", "class_definition",                                       # python
    "function_declaration", "function_expression", "function", "generator_function_declaration",
    "generator_function", "arrow_function", "method_definition", "class_declaration", "class",
    "abstract_class_declaration",                                                    # js / ts
    "method_declaration", "func_literal",                                            # go
    "function_item", "closure_expression", "impl_item", "trait_item", "mod_item",    # rust
})

_BLOCKS = frozenset({
    "block", "statement_block", "class_body", "declaration_list",
})

# Statements that say "not written yet".
_PLACEHOLDER = re.compile(
    r"""^(?:
        pass | \.\.\. | raise\s+NotImplementedError\b.*
      | todo!\s*\(.*\) | unimplemented!\s*\(.*\)
      | throw\s+new\s+Error\s*\(.*(?:implement|todo).*\)
      | panic\s*\(.*(?:implement|todo).*\)
    );?$""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_TODO = re.compile(r"\b(?:TODO|FIXME|XXX)\b")
_TRIVIAL_RETURN = re.compile(r"^return(?:\s+(?:None|null|undefined|nil|0|\"\"|''|\[\]|\{\}))?;?$")


def body_span(code: Code, offset: int) -> tuple[int, int] | None:
    """The body to fill for the innermost definition (function, method, class) around `offset`.

    Of the enclosing definitions the innermost placeholder body (`pass`, `...`, a TODO comment,
    `{}`, `todo!()` ...) wins, else the innermost body; outside any definition, the innermost
    block.  Python: from the first statement after the docstring to the end of the block (an
    empty span after the docstring when it is the whole body).  Brace languages: the text
    strictly between the braces.  None when no definition or block encloses `offset`.
    """
    parsed = code.parsed
    if parsed is None:
        return None
    chain = _nodes_at(parsed.root, parsed.byte(max(0, min(offset, len(code.text)))))
    bodies = []
    for node in chain:
        if node.type in _DEFINITIONS:
            body = node.child_by_field_name("body")
            if body is not None and (body.type in _BLOCKS or node.type == "class_definition"):
                bodies.append((node, body))
    if not bodies:
        block = next((n for n in chain if n.type in _BLOCKS), None)
        if block is None:
            return None
        span, _ = _body_contents(parsed, block.parent, block)
        return span
    first = None
    for definition, body in bodies:
        span, placeholder = _body_contents(parsed, definition, body)
        if placeholder:
            return span
        first = first or span
    return first


def _body_contents(parsed: ParsedText, owner: Node | None, body: Node) -> tuple[tuple[int, int], bool]:
    """(span of the body's contents, whether the body is a placeholder)."""
    if parsed.language == "python":
        return _python_body(parsed, owner, body)
    items = []
    for child in body.named_children:
        # Go wraps a block's statements in a statement_list.
        items.extend(child.named_children if child.type == "statement_list" else [child])
    if not body.children:
        return parsed.span(body), True
    open_brace, close_brace = body.children[0], body.children[-1]
    start = open_brace.end_byte if open_brace.type == "{" else body.start_byte
    end = close_brace.start_byte if close_brace.type == "}" and close_brace.end_byte > start else body.end_byte
    return (parsed.char(start), parsed.char(end)), _is_placeholder(items)


def _python_body(parsed: ParsedText, owner: Node | None, body: Node) -> tuple[tuple[int, int], bool]:
    items = list(body.named_children)
    # Comments between `:` and the first statement belong to the definition node, not the block.
    if owner is not None:
        items = [c for c in owner.children if c.type == "comment" and c.start_byte < body.start_byte] + items
    docstring_end = None
    if owner is not None and owner.type in ("function_definition", "class_definition"):
        first_statement = next((c for c in items if c.type != "comment"), None)
        if (first_statement is not None and first_statement.type == "expression_statement"
                and first_statement.named_child_count == 1 and first_statement.named_children[0].type == "string"):
            docstring_end = first_statement.end_byte
            items = [c for c in items if c.start_byte >= docstring_end]
    if not items:
        at = parsed.char(docstring_end if docstring_end is not None else body.end_byte)
        return (at, at), True
    return (parsed.char(items[0].start_byte), parsed.char(max(c.end_byte for c in items))), _is_placeholder(items)


def _is_placeholder(items: list[Node]) -> bool:
    """Only placeholder statements and comments (or nothing); with a TODO comment, a trivial
    `return` counts as a placeholder too (`// TODO` then `return null;`)."""
    todo = any(item.type.endswith("comment") and _TODO.search(_text(item)) for item in items)
    for item in items:
        if item.type.endswith("comment"):
            continue
        statement = _text(item).strip()
        if not (_PLACEHOLDER.match(statement) or (todo and _TRIVIAL_RETURN.match(statement))):
            return False
    return True


def _text(node: Node) -> str:
    return node.text.decode("utf-8", "replace") if node.text else ""


# ---------------------------------------------------------------------------------------------
# Identifiers and syntax checks


def identifier_at(code: Code, offset: int) -> tuple[int, int] | None:
    """Span of the identifier under the cursor, or just before it (`foo|(`); None if there is none."""
    parsed = code.parsed
    if parsed is None:
        return None
    node = identifier_node_at(parsed, max(0, min(offset, len(code.text))))
    return parsed.span(node) if node is not None else None


def syntax_ok(old: Code, new: str) -> bool:
    """True when the text `new` (old's text, edited) has no more ERROR/MISSING nodes than `old`
    (no grammar: always True)."""
    if old.language is None:
        return True
    return Code(new, old.language).error_count() <= old.error_count()
