"""diffill's tests, laid out like the packages they test: engine/, syntax/, pipeline/, lsp/ (with
features/), editors/.  A package, so shared helpers import by their full name
(`from tests.lsp.harness import ...`) wherever the test file sits."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
