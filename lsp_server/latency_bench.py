"""Keystroke -> inline suggestion latency, measured through the real server over stdio.

What a user feels: they type one character, the editor sends `didChange` and then
`textDocument/inlineCompletion`, and waits for the answer.  The clock runs from sending
the change to receiving the suggestion.  Two paths:

- cold: a 1-line hole (the user has typed the first characters of a statement line in a
  ~1k-token Python file); every keystroke is at a new place, so the model runs;
- cache hit: the user then types the first character of the suggestion they were shown;
  the server answers from its suggestion cache without running the model.

`python -m lsp_server.latency_bench [--model tiny-random|PATH] [--iterations N]`
(the CLI exposes it as `diffill bench --lsp`).  Prints p50/p95 for both paths and, with
--json, writes them to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import fnmatch
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from .settings import Settings

URI = "file:///bench/sample.py"


def sample_document(target_tokens: int = 1000) -> str:
    """About `target_tokens` tokens of real Python: the start of the stdlib's fnmatch.py
    (present wherever Python is; code-dense, not mostly docstrings), cut at a line boundary."""
    source = Path(fnmatch.__file__).read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    count = _token_counter()
    text = ""
    for line in lines:
        if count(text + line) > target_tokens:
            break
        text += line
    return text


def _token_counter():
    """Token counts from the bundled tokenizer (no torch needed); ~3.5 chars per token if
    it is not available."""
    try:
        from infill_engine.tokenizer import CodeTokenizer

        tok = CodeTokenizer.load(Path(__file__).resolve().parents[1] / "infill_engine" / "weights" / "tokenizer.json")
        return lambda text: len(tok.encode(text))
    except Exception:
        return lambda text: int(len(text) / 3.5)


def hole_lines(text: str, limit: int) -> list[int]:
    """Lines to complete: code statements (not comments, docstrings or blank lines) from
    the middle of the file, where there is context on both sides."""
    lines = text.split("\n")
    picked = []
    in_string = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.count('"""') % 2 == 1:
            in_string = not in_string
            continue
        if in_string or len(stripped) < 10 or stripped.startswith(("#", "@", '"', "'")):
            continue
        if len(lines) // 5 <= i <= len(lines) * 4 // 5:
            picked.append(i)
    step = max(1, len(picked) // max(limit, 1))
    return picked[::step][:limit]


@dataclass
class Report:
    model: str
    is_random: bool
    device: str
    document_tokens: int
    iterations: int
    cold_ms: list[float] = field(default_factory=list)
    cache_ms: list[float] = field(default_factory=list)
    cache_hits: int = 0
    empty: int = 0
    start_to_ready_ms: float | None = None  # process start -> the "ready" status
    start_to_first_ms: float | None = None  # process start -> the first suggestion (model loaded)

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("cold_ms", "cache_ms")}
        for name, values in (("cold", self.cold_ms), ("cache_hit", self.cache_ms)):
            out[f"{name}_p50_ms"] = round(percentile(values, 50), 1) if values else None
            out[f"{name}_p95_ms"] = round(percentile(values, 95), 1) if values else None
            out[f"{name}_n"] = len(values)
        out["machine"] = f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
        return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


class BenchClient(LanguageClient):
    def __init__(self) -> None:
        super().__init__("diffill-latency-bench", "0.1.0")
        self.version = 0
        self.ready_at: float | None = None  # perf_counter() of the first "ready" status
        for method in (types.WINDOW_LOG_MESSAGE, types.WINDOW_SHOW_MESSAGE,
                       types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS, types.PROGRESS):
            self.feature(method)(lambda *args: None)

        @self.feature("diffill/status")
        def status(params: Any) -> None:
            if self.ready_at is None and getattr(params, "state", None) == "ready":
                self.ready_at = time.perf_counter()

    def set_text(self, text: str) -> None:
        self.version += 1
        self.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=self.version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    def type_char(self, at: types.Position, char: str) -> None:
        self.version += 1
        self.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=self.version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text=char)]))

    async def suggest(self, at: types.Position) -> types.InlineCompletionList | None:
        return await self.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=at,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))

    async def status(self) -> dict:
        return await self.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))


async def run(args: argparse.Namespace) -> Report:
    """Start the server, open a ~`args.tokens`-token Python file, and time keystrokes in it."""
    client = BenchClient()
    text = sample_document(args.tokens)
    started = time.perf_counter()
    await client.start_io(sys.executable, "-m", "lsp_server", env=_server_env(args.model))
    try:
        await _open(client, text, _initialization_options(args))
        first = time.perf_counter()
        status = await client.status()
        report = Report(status["model"], status["isRandom"], status["device"],
                        _token_counter()(text), args.iterations)
        report.start_to_first_ms = round((first - started) * 1000, 1)
        if client.ready_at is not None:
            report.start_to_ready_ms = round((client.ready_at - started) * 1000, 1)
        lines = text.split("\n")
        for line_no in hole_lines(text, args.iterations):
            await _time_keystrokes(client, report, lines, line_no)
        await client.shutdown_async(None)
        client.exit(None)
        await asyncio.wait_for(client._server.wait(), 30)
        return report
    finally:
        if client._server is not None and client._server.returncode is None:
            client._server.kill()
        await client.stop()


def _server_env(model: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DIFFILL_MODEL", None)
    if model == "tiny-random":
        env["DIFFILL_MODEL"] = "tiny-random"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _initialization_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"device": args.device, "candidates": 1}
    if args.model and args.model != "tiny-random":
        options["model"] = args.model
    return options


async def _open(client: BenchClient, text: str, options: dict[str, Any]) -> None:
    """Initialize, open the document and ask once, which loads the model (not timed)."""
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities())),
        initialization_options=options))
    client.initialized(types.InitializedParams())
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=URI, language_id="python", version=0, text=text)))
    await client.suggest(types.Position(line=0, character=0))


async def _time_keystrokes(client: BenchClient, report: Report, lines: list[str], line_no: int) -> None:
    """The user has typed two characters of line `line_no` and types the third (cold: the
    model runs), then the first character of the suggestion shown (served from the cache)."""
    line = lines[line_no]
    indent = len(line) - len(line.lstrip())
    typed = indent + 2
    client.set_text("\n".join(lines[:line_no] + [line[:typed]] + lines[line_no + 1:]))
    await client.status()  # a round trip: the server has applied the change
    t0 = time.perf_counter()
    client.type_char(types.Position(line=line_no, character=typed), line[typed])
    cursor = types.Position(line=line_no, character=typed + 1)
    result = await client.suggest(cursor)
    report.cold_ms.append((time.perf_counter() - t0) * 1000)
    items = result.items if result else []
    if not items or items[0].range.start != cursor or not items[0].insert_text:
        report.empty += 1
        return
    suggestion = items[0].insert_text
    t0 = time.perf_counter()
    client.type_char(cursor, suggestion[0])
    result = await client.suggest(types.Position(line=line_no, character=cursor.character + 1))
    elapsed = (time.perf_counter() - t0) * 1000
    if len(suggestion) > 1:
        report.cache_ms.append(elapsed)
        if result and result.items and result.items[0].insert_text == suggestion[1:]:
            report.cache_hits += 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffill bench --lsp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="tiny-random, a model path / hub id, or nothing for the bundled model")
    parser.add_argument("--device", default=Settings.device)
    parser.add_argument("--iterations", type=int, default=30, help="keystrokes per path (default 30)")
    parser.add_argument("--tokens", type=int, default=1000, help="size of the Python file in tokens (default 1000)")
    parser.add_argument("--json", dest="json_path", help="also write the summary to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iterations < 1:
        print("--iterations must be at least 1", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(run(args))
    except Exception as exc:  # a benchmark that cannot run says why, without a traceback
        print(f"latency benchmark failed: {exc}", file=sys.stderr)
        return 1
    summary = report.summary()
    random_note = " (RANDOM WEIGHTS)" if report.is_random else ""
    print(f"model: {report.model}{random_note} on {report.device}; file: {report.document_tokens} tokens; "
          f"{summary['machine']}")
    print(f"process start → ready: {report.start_to_ready_ms} ms; → first suggestion: {report.start_to_first_ms} ms")
    print(f"cold keystroke -> suggestion: p50 {summary['cold_p50_ms']} ms, p95 {summary['cold_p95_ms']} ms "
          f"(n={summary['cold_n']}, {report.empty} empty)")
    print(f"cache hit:                    p50 {summary['cache_hit_p50_ms']} ms, p95 {summary['cache_hit_p95_ms']} ms "
          f"(n={summary['cache_hit_n']}, {report.cache_hits} served from the cache)")
    if report.cold_ms:
        print(f"cold mean {statistics.mean(report.cold_ms):.1f} ms")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
