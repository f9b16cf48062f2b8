"""`diffill`: fill, bench, serve, eval, corpus, train."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .request import InfillCancelled, InfillError, InfillRequest, SamplerSettings

USAGE = """diffill <command> [options]

commands:
  fill FILE --at LINE:COL       print the text the model infills at that point (1-based)
  fill FILE --select L1:L2      print lines L1..L2 (widened to whole syntax nodes) rewritten
  bench                         engine speed on the current model (ratios measured side by side)
  serve                         the language server (LSP over stdio, or --tcp HOST:PORT)
  eval                          HumanEval-Infilling pass@1, executed in a sandbox
  corpus                        build the training corpus from installed permissive packages
  shards                        tokenize the corpus once into token streams (fits the tokenizer)
  train                         train the bundled model
"""


class CliError(Exception):
    pass


def read_source(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 are replaced (and said so) rather than refused."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    if b"\0" in raw[:8000]:
        raise CliError(f"{path} looks binary (it contains NUL bytes); diffill fills source text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        print(f"diffill: {path} is not valid UTF-8 (first bad byte at offset {exc.start}); "
              "undecodable bytes were replaced with U+FFFD", file=sys.stderr)
        return raw.decode("utf-8", errors="replace")


def offset_of(text: str, line: int, col: int) -> int:
    """1-based LINE:COL (COL counts characters) -> str offset; COL may be one past the line's end."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise CliError(f"line {line} is outside the file (1..{len(lines)})")
    if not 1 <= col <= len(lines[line - 1]) + 1:
        raise CliError(f"column {col} is outside line {line} (1..{len(lines[line - 1]) + 1})")
    return sum(len(x) + 1 for x in lines[: line - 1]) + col - 1


def _pair(value: str, what: str) -> tuple[int, int]:
    try:
        a, b = value.split(":")
        return int(a), int(b)
    except ValueError:
        raise CliError(f"{what} must look like N:M, got {value!r}") from None


def _sampler_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=None, help="model directory or hub id (default: the bundled model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--allow-network", action="store_true", help="let --model be fetched from the hub")
    ap.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own Python code")
    ap.add_argument("--approximate-cache", action="store_true",
                    help="Dream/LLaDA: reuse the context's keys/values across steps (faster, approximate)")
    ap.add_argument("--strategy", default="threshold",
                    choices=["threshold", "confidence", "entropy", "margin", "fixed"])
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--tokens-per-step", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)


def fill(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="diffill fill", description="Infill or rewrite code in FILE.")
    ap.add_argument("file", type=Path)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--at", help="LINE:COL (1-based) of the hole")
    where.add_argument("--select", help="L1:L2 (1-based, inclusive) lines to rewrite")
    ap.add_argument("--length", type=int, default=None, help="exact hole length in tokens (default: auto)")
    ap.add_argument("--max-length", type=int, default=48, help="most tokens an auto-length hole may take")
    ap.add_argument("--show-steps", action="store_true", help="print the denoising progression on stderr")
    _sampler_args(ap)
    args = ap.parse_args(argv)
    text = read_source(args.file)
    from .engine import Engine

    engine = Engine.load(args.model, args.device, args.trust_remote_code, args.allow_network,
                         args.approximate_cache)
    if engine.is_random:
        print(f"diffill: warning: {engine.name}", file=sys.stderr)
    sampler = SamplerSettings(strategy=args.strategy, threshold=args.threshold,
                              tokens_per_step=args.tokens_per_step, temperature=args.temperature, seed=args.seed)
    on_step = None
    if args.show_steps:
        def on_step(step: int, texts: list[str]) -> None:
            print(f"--- step {step} ---\n{texts[0]}", file=sys.stderr)

    if args.at:
        offset = offset_of(text, *_pair(args.at, "--at"))
        result = engine.infill(InfillRequest(text[:offset], text[offset:], length=args.length,
                                             max_length=args.max_length, sampler=sampler, on_step=on_step))
        if result.context_cut:
            print(f"diffill: context cut by {result.context_cut} tokens to fit the model window", file=sys.stderr)
        sys.stdout.write(result.text)
        return 0
    return _rewrite_lines(engine, text, args, sampler, on_step)


def _rewrite_lines(engine, text: str, args, sampler: SamplerSettings, on_step) -> int:
    from .syntax import spans

    first, last = _pair(args.select, "--select")
    n_lines = text.count("\n") + 1
    if not 1 <= first <= last <= n_lines:
        raise CliError(f"--select {first}:{last} must satisfy 1 <= L1 <= L2 <= {n_lines}")
    start = offset_of(text, first, 1)
    end = offset_of(text, last, len(text.split("\n")[last - 1]) + 1)
    start, end = spans.rewrite_span(text, spans.language_for(str(args.file)), start, end)
    budget = min(engine.backend.max_len // 2, max(args.max_length, int(engine.count_tokens(text[start:end]) * 1.5)))
    result = engine.infill(InfillRequest(text[:start], text[end:], length=args.length, max_length=budget,
                                         sampler=sampler, on_step=on_step))
    lead = text[text.rfind("\n", 0, start) + 1:start]  # the widened span may start after indentation
    sys.stdout.write(lead + result.text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "fill":
            return fill(rest)
        if command == "bench":
            from .pipeline.bench import main as bench_main
            return bench_main(rest)
        if command == "serve":
            from lsp_server.__main__ import main as serve_main
            return serve_main(rest)
        if command == "eval":
            from .pipeline.evaluate import main as eval_main
            return eval_main(rest)
        if command == "corpus":
            from .pipeline.corpus import main as corpus_main
            return corpus_main(rest)
        if command == "shards":
            from .pipeline.shards import main as shards_main
            return shards_main(rest)
        if command == "train":
            from .pipeline.train import main as train_main
            return train_main(rest)
    except (CliError, InfillError) as exc:
        print(f"diffill {command}: error: {exc}", file=sys.stderr)
        return 2
    except InfillCancelled:
        return 130
    except KeyboardInterrupt:
        return 130
    print(f"diffill: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
