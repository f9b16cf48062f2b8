"""ServeConfig: everything `diffill serve --http` is told, as one object.

The CLI's flags and the environment become one of these; the app, the batcher and the
runner read only it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TOKENS_ENV = "DIFFILL_HTTP_TOKENS"  # comma-separated bearer tokens


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise: a model server is not for the open internet
    port: int = 8000
    model: str | None = None  # None: the bundled model; "tiny-random": random weights for plumbing tests
    device: str = "cpu"
    precision: str = "auto"
    tokens: frozenset[str] = field(default_factory=frozenset)  # empty: no auth
    max_body_bytes: int = 1 << 20  # 413 beyond this
    max_queue: int = 64  # waiting requests; 503 + Retry-After beyond this
    max_batch: int = 16  # requests sharing one forward; 1 turns batching off
    timeout_s: float = 60.0  # per request, queueing included; 504 after it
    retry_after_s: int = 1
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @property
    def auth(self) -> bool:
        return bool(self.tokens)


def load_tokens(token_file: str | None = None, environ: dict[str, str] | None = None) -> frozenset[str]:
    """Bearer tokens from a file (one a line, # comments) and/or $DIFFILL_HTTP_TOKENS."""
    environ = os.environ if environ is None else environ
    tokens = {t.strip() for t in environ.get(TOKENS_ENV, "").split(",") if t.strip()}
    if token_file:
        for line in Path(token_file).expanduser().read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                tokens.add(line)
    return frozenset(tokens)
