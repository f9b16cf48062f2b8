"""What the server does, as plain functions over text and str offsets: no LSP types here.

Each feature takes a `Code` (the document's text, language and tree-sitter parse, which
`Document.code` keeps up to date), offsets, an engine and the `InfillOptions` the settings
chose, and returns plain results: `Suggestion`s for inline completion, `Edit`s (start,
end, new text) into that same text for everything else.  server.py translates positions
and wraps results; everything here is testable without a client (tests/lsp/features/).

- context.py: the text around a hole, the hooks into a model call, the Edit that comes back;
- inline.py: inline completion (the rest of a line, or a block on a blank line);
- actions.py: the code actions (rewrite, fill body, repair, suggest a name), one table;
- naming.py: rename and suggest a name;
- hints.py: stretches of code the model finds unlikely.

Invariant kept by every function: an edit never reaches outside the span the feature is
about (the cursor's line for inline completion, the widened selection for a rewrite, the
body for fill-in, the identifier's occurrences for naming).
"""
