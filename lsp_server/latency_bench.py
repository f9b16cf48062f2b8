"""Keystroke -> inline suggestion latency, measured through the real server over stdio.

What a user feels: they type one character, the editor sends `didChange` and then
`textDocument/inlineCompletion`, and waits for the answer.  The clock runs from sending
the change to receiving the suggestion.  Two paths:

- cold: a 1-line hole (the user has typed the first characters of a statement line in a
  ~1k-token Python file); every keystroke is at a new place, so the model runs;
- cache hit: the user then types the first character of the suggestion they were shown;
  the server answers from its suggestion cache without running the model.

`python -m lsp_server.latency_bench [--model tiny-random|PATH] [--iterations N] [--load N]`
(the CLI exposes it as `diffill bench --lsp`).  Prints p50/p95 for both paths and, with
--json, writes them to a file.

`--load N` measures the same keystrokes twice in one run: idle, then with N CPU-burning
processes beside the server (an editor, a browser and a build on a laptop), and prints both
with their ratio.  The machine is the same and the minutes are adjacent, so the ratio means
something even on a noisy shared host where the absolute figures drift.  The burners are plain
`while True: pass` processes at the server's own priority; they stop when the loaded pass ends
(and on their own after BURNER_MAX_S, should the benchmark die).

`--hints` turns on the unlikely-code hints and pauses before each cold keystroke just long
enough for a hint job to start (the pause is not timed), so every keystroke arrives while the
model is busy with background work: what a user who stops to think and types again sees.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import fnmatch
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from .hints import HINT_MIN_DELAY_S
from .settings import Settings

URI = "file:///bench/sample.py"
BURNER_MAX_S = 600
LOAD_GOAL = 3.0  # issue 14.6: loaded p50 within 3x idle with one busy core


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
    load: int = 0  # CPU burners beside the server in the loaded pass (0: no loaded pass)
    hints: bool = False  # unlikely-code hints on, each keystroke arriving while a hint job runs
    cold_ms: list[float] = field(default_factory=list)
    cache_ms: list[float] = field(default_factory=list)
    loaded_cold_ms: list[float] = field(default_factory=list)
    loaded_cache_ms: list[float] = field(default_factory=list)
    cache_hits: int = 0
    empty: int = 0
    start_to_ready_ms: float | None = None  # process start -> the "ready" status
    start_to_first_ms: float | None = None  # process start -> the first suggestion (model loaded)

    def summary(self) -> dict[str, Any]:
        lists = ("cold_ms", "cache_ms", "loaded_cold_ms", "loaded_cache_ms")
        out = {k: v for k, v in asdict(self).items() if k not in lists}
        for name in lists:
            values = getattr(self, name)
            name = name[: -len("_ms")].replace("cache", "cache_hit")
            if name.startswith("loaded") and not self.load:
                continue
            out[f"{name}_p50_ms"] = round(percentile(values, 50), 1) if values else None
            out[f"{name}_p95_ms"] = round(percentile(values, 95), 1) if values else None
            out[f"{name}_n"] = len(values)
        if self.load and self.cold_ms and self.loaded_cold_ms:
            out["loaded_cold_p50_ratio"] = round(percentile(self.loaded_cold_ms, 50) / percentile(self.cold_ms, 50), 2)
            out["loaded_cold_p95_ratio"] = round(percentile(self.loaded_cold_ms, 95) / percentile(self.cold_ms, 95), 2)
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
                        _token_counter()(text), args.iterations, args.load, args.hints)
        report.start_to_first_ms = round((first - started) * 1000, 1)
        if client.ready_at is not None:
            report.start_to_ready_ms = round((client.ready_at - started) * 1000, 1)
        lines = text.split("\n")
        holes = hole_lines(text, args.iterations)
        for line_no in holes:
            await _time_keystrokes(client, report, lines, line_no, report.cold_ms, report.cache_ms)
        if args.load:
            # The same keystrokes in a document one comment longer: same work for the model, but
            # no answer is in the suggestion cache from the idle pass.
            shifted = ["# the same keystrokes, under load"] + lines
            with cpu_burners(args.load):
                for line_no in holes:
                    await _time_keystrokes(client, report, shifted, line_no + 1, report.loaded_cold_ms,
                                           report.loaded_cache_ms, count_hits=False)
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


def _lengths(value: str) -> list[int]:
    return [] if value == "settle" else [int(v) for v in value.split(",")]


def _initialization_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"device": args.device, "candidates": 1}
    if args.hints:
        options["features"] = {"unlikelyHints": True}
    if args.lengths is not None:
        options["lengths"] = args.lengths
    if args.max_steps is not None:
        options["maxSteps"] = args.max_steps
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


@contextlib.contextmanager
def cpu_burners(n: int) -> Iterator[list[subprocess.Popen]]:
    """N processes that each keep one core busy while the block runs; ended on the way out."""
    burn = f"import time\nend = time.monotonic() + {BURNER_MAX_S}\nwhile time.monotonic() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-I", "-S", "-c", burn], stdin=subprocess.DEVNULL)
             for _ in range(n)]
    try:
        time.sleep(0.5)  # let the scheduler see them as the hogs they are before the clock runs
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


async def _time_keystrokes(client: BenchClient, report: Report, lines: list[str], line_no: int,
                           cold_ms: list[float], cache_ms: list[float], count_hits: bool = True) -> None:
    """The user has typed two characters of line `line_no` and types the third (cold: the
    model runs), then the first character of the suggestion shown (served from the cache)."""
    line = lines[line_no]
    indent = len(line) - len(line.lstrip())
    typed = indent + 2
    client.set_text("\n".join(lines[:line_no] + [line[:typed]] + lines[line_no + 1:]))
    await client.status()  # a round trip: the server has applied the change
    if report.hints:
        await asyncio.sleep(HINT_MIN_DELAY_S + 0.1)  # the user pauses; the hint job for the change starts
    t0 = time.perf_counter()
    client.type_char(types.Position(line=line_no, character=typed), line[typed])
    cursor = types.Position(line=line_no, character=typed + 1)
    result = await client.suggest(cursor)
    cold_ms.append((time.perf_counter() - t0) * 1000)
    items = result.items if result else []
    if not items or items[0].range.start != cursor or not items[0].insert_text:
        report.empty += count_hits
        return
    suggestion = items[0].insert_text
    t0 = time.perf_counter()
    client.type_char(cursor, suggestion[0])
    result = await client.suggest(types.Position(line=line_no, character=cursor.character + 1))
    elapsed = (time.perf_counter() - t0) * 1000
    if len(suggestion) > 1:
        cache_ms.append(elapsed)
        if count_hits and result and result.items and result.items[0].insert_text == suggestion[1:]:
            report.cache_hits += 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffill bench --lsp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="tiny-random, a model path / hub id, or nothing for the bundled model")
    parser.add_argument("--device", default=Settings.device)
    parser.add_argument("--iterations", type=int, default=30, help="keystrokes per path (default 30)")
    parser.add_argument("--tokens", type=int, default=1000, help="size of the Python file in tokens (default 1000)")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="also time the keystrokes with N CPU-burning processes beside the server")
    parser.add_argument("--hints", action="store_true",
                        help="hints on; each keystroke arrives while a hint job runs")
    parser.add_argument("--lengths", type=_lengths, default=None,
                        help="hole lengths an inline suggestion tries, comma-separated, or 'settle' for the "
                             "model's own length rule (default: the server's diffill.lengths)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="model steps per suggestion (default: the server's diffill.maxSteps)")
    parser.add_argument("--json", dest="json_path", help="also write the summary to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iterations < 1:
        print("--iterations must be at least 1", file=sys.stderr)
        return 2
    if not 0 <= args.load <= 4 * (os.cpu_count() or 1):
        print("--load must be between 0 and 4x the CPU count", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(run(args))
    except Exception as exc:  # a benchmark that cannot run says why, without a traceback
        print(f"latency benchmark failed: {exc}", file=sys.stderr)
        return 1
    summary = report.summary()
    random_note = " (RANDOM WEIGHTS)" if report.is_random else ""
    print(f"model: {report.model}{random_note} on {report.device}; file: {report.document_tokens} tokens; "
          f"{summary['machine']}" + ("; hints on, keystrokes during hint jobs" if report.hints else ""))
    print(f"process start → ready: {report.start_to_ready_ms} ms; → first suggestion: {report.start_to_first_ms} ms")
    print(f"cold keystroke -> suggestion: p50 {summary['cold_p50_ms']} ms, p95 {summary['cold_p95_ms']} ms "
          f"(n={summary['cold_n']}, {report.empty} empty)")
    print(f"cache hit:                    p50 {summary['cache_hit_p50_ms']} ms, p95 {summary['cache_hit_p95_ms']} ms "
          f"(n={summary['cache_hit_n']}, {report.cache_hits} served from the cache)")
    if report.cold_ms:
        print(f"cold mean {statistics.mean(report.cold_ms):.1f} ms")
    if args.load:
        print(f"loaded ({args.load} CPU burner{'s' if args.load > 1 else ''}, {os.cpu_count()} cores): "
              f"cold p50 {summary['loaded_cold_p50_ms']} ms, p95 {summary['loaded_cold_p95_ms']} ms "
              f"(n={summary['loaded_cold_n']}); cache hit p50 {summary['loaded_cache_hit_p50_ms']} ms, "
              f"p95 {summary['loaded_cache_hit_p95_ms']} ms")
        if "loaded_cold_p50_ratio" in summary:
            p50_ratio = summary["loaded_cold_p50_ratio"]
            verdict = "meets" if p50_ratio <= LOAD_GOAL else "misses"
            print(f"loaded / idle, cold: p50 x{p50_ratio}, p95 x{summary['loaded_cold_p95_ratio']} "
                  f"({verdict} the goal p50 <= {LOAD_GOAL:g}x idle)")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
