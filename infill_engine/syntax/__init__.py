"""Editor-facing code understanding on tree-sitter: parsing, syntax-aware spans, scopes.

A leaf: it imports nothing else of diffill, and the engine core never imports it."""
