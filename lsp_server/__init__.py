"""diffill's language server (LSP over stdio or TCP); see `python -m lsp_server --help`."""
