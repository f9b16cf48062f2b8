"""`python -m lsp_server`: the language server, as `diffill serve` (LSP over stdio, or `--tcp HOST:PORT`)."""

import sys

from .cli import serve

if __name__ == "__main__":
    sys.exit(serve())
