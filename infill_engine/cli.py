"""The engine's commands: fill, bench, eval, corpus, train.

The `diffill` console script is `lsp_server.cli`, which adds `serve` and `bench --lsp` and
hands every other command to `main` here; `python -m infill_engine.cli` runs these alone.
Flag defaults come from the request dataclasses, so the CLI and the server agree.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import replace
from pathlib import Path

from .request import (DREAM_ALGS, LLADA_REMASKING, STRATEGIES, InfillCancelled, InfillError, InfillOptions,
                      SamplerSettings)

COMMANDS_HELP = """\
  fill FILE --at LINE:COL       print the text the model infills at that point (1-based)
  fill FILE --select L1:L2      print lines L1..L2 (widened to whole syntax nodes) rewritten
  bench                         engine speed on the current model (ratios measured side by side)
  eval                          HumanEval-Infilling pass@1, executed in a sandbox
  corpus                        build the training corpus from installed permissive packages
  shards                        tokenize the corpus once into token streams (fits the tokenizer)
  train                         train the bundled model
"""

# Model-making commands: each module's main(argv), imported only when its command runs.
PIPELINE_COMMANDS = {
    "bench": "infill_engine.pipeline.bench",
    "eval": "infill_engine.pipeline.evaluate",
    "corpus": "infill_engine.pipeline.corpus",
    "shards": "infill_engine.pipeline.shards",
    "train": "infill_engine.pipeline.train",
}


def usage(more_commands: str = "") -> str:
    return f"diffill <command> [options]\n\ncommands:\n{COMMANDS_HELP}{more_commands}"


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
    from .syntax.lines import line_starts, line_span

    starts = line_starts(text)
    if not 1 <= line <= len(starts):
        raise CliError(f"line {line} is outside the file (1..{len(starts)})")
    start, end = line_span(text, starts[line - 1])
    if not 1 <= col <= end - start + 1:
        raise CliError(f"column {col} is outside line {line} (1..{end - start + 1})")
    return start + col - 1


def _pair(value: str, what: str) -> tuple[int, int]:
    try:
        a, b = value.split(":")
        return int(a), int(b)
    except ValueError:
        raise CliError(f"{what} must look like N:M, got {value!r}") from None


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=None, help="model directory or hub id (default: the bundled model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--allow-network", action="store_true", help="let --model be fetched from the hub")
    ap.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own Python code")
    ap.add_argument("--approximate-cache", action="store_true",
                    help="Dream/LLaDA: reuse the context's keys/values across steps (faster, approximate)")
    ap.add_argument("--cache-block", type=int, default=None, metavar="N",
                    help="Dream/LLaDA: the --approximate-cache computed again every N committed tokens "
                         "(Fast-dLLM's per-block refresh; implies --approximate-cache; the llada preset "
                         "refreshes at each --block-length block by itself)")
    ap.add_argument("--compile", nargs="?", const="reduce-overhead", default=None, metavar="MODE",
                    help="Dream/LLaDA on a GPU: the hole step under torch.compile, CUDA graphs (default mode "
                         "reduce-overhead; cudagraphs compiles faster); each new shape compiles first")


def add_sampler_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--strategy", default=SamplerSettings.strategy, choices=STRATEGIES)
    ap.add_argument("--threshold", type=float, default=SamplerSettings.threshold)
    ap.add_argument("--tokens-per-step", type=int, default=SamplerSettings.tokens_per_step)
    ap.add_argument("--temperature", type=float, default=SamplerSettings.temperature)
    ap.add_argument("--seed", type=int, default=SamplerSettings.seed)
    preset = ap.add_argument_group("upstream presets (--strategy dream / llada; unset: the checkpoint's "
                                   "generation_config.json, else the preset's default)")
    preset.add_argument("--steps", type=int, help="forwards over the hole (default: one per slot)")
    preset.add_argument("--eps", type=float, help="dream: the last timestep (default 1e-3)")
    preset.add_argument("--alg", choices=DREAM_ALGS, help="dream: which slots first (default entropy)")
    preset.add_argument("--alg-temp", type=float, help="dream: > 0 samples which slots commit")
    preset.add_argument("--top-p", type=float, help="dream: nucleus sampling")
    preset.add_argument("--top-k", type=int, help="dream: top-k sampling")
    preset.add_argument("--block-length", type=int, help="llada: semi-autoregressive blocks (default: one)")
    preset.add_argument("--remasking", choices=LLADA_REMASKING, help="llada: default low_confidence")
    preset.add_argument("--cfg-scale", type=float, help="llada: classifier-free guidance (default 0)")


PRESET_FIELDS = ("steps", "eps", "alg", "alg_temp", "top_p", "top_k", "block_length", "remasking", "cfg_scale")


def sampler_settings(args: argparse.Namespace) -> SamplerSettings:
    preset = {name: getattr(args, name, None) for name in PRESET_FIELDS}
    return SamplerSettings(strategy=args.strategy, threshold=args.threshold, tokens_per_step=args.tokens_per_step,
                           temperature=args.temperature, seed=args.seed, **preset)


def fill(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="diffill fill", description="Infill or rewrite code in FILE.")
    ap.add_argument("file", type=Path)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--at", help="LINE:COL (1-based) of the hole")
    where.add_argument("--select", help="L1:L2 (1-based, inclusive) lines to rewrite")
    ap.add_argument("--length", type=int, default=None, help="exact hole length in tokens (default: auto)")
    ap.add_argument("--max-length", type=int, default=InfillOptions.max_length,
                    help="most tokens an auto-length hole may take")
    ap.add_argument("--show-steps", action="store_true", help="print the denoising progression on stderr")
    add_model_arguments(ap)
    add_sampler_arguments(ap)
    args = ap.parse_args(argv)
    text = read_source(args.file)
    from .engine import Engine

    engine = Engine.load(args.model, args.device, args.trust_remote_code, args.allow_network,
                         args.approximate_cache or args.cache_block is not None, compile=args.compile,
                         cache_block=args.cache_block)
    if engine.is_random:
        print(f"diffill: warning: {engine.name}", file=sys.stderr)
    options = InfillOptions(max_length=args.max_length, sampler=sampler_settings(args))
    steps: list[list[str]] = []
    on_step = (lambda step, texts: steps.append(texts)) if args.show_steps else None
    if args.at:
        from .ranking import best_first
        from .syntax.parse import language_for

        offset = offset_of(text, *_pair(args.at, "--at"))
        prefix, suffix = text[:offset], text[offset:]
        result = engine.infill(options.request(prefix, suffix, length=args.length, on_step=on_step))
        best = best_first(prefix, suffix, result.candidates, language_for(str(args.file)))[0]
        if result.context_cut:
            print(f"diffill: context cut by {result.context_cut} tokens to fit the model window", file=sys.stderr)
        _print_steps(steps, best.text)
        sys.stdout.write(best.text)
        return 0
    return _rewrite_lines(engine, text, args, options, on_step, steps)


def _print_steps(steps: list[list[str]], chosen: str) -> None:
    """The denoising steps of the batch row that became the answer (an auto-length hole
    decodes one row per length at once)."""
    if not steps:
        return
    row = next((b for b, final in enumerate(steps[-1]) if final == chosen), 0)
    for step, texts in enumerate(steps, 1):
        if step == 1 or texts[row] != steps[step - 2][row]:
            print(f"--- step {step} ---\n{texts[row]}", file=sys.stderr)


def _rewrite_lines(engine, text: str, args, options: InfillOptions, on_step, steps: list[list[str]]) -> int:
    from .ranking import best_first
    from .syntax import spans
    from .syntax.lines import line_span, line_starts
    from .syntax.parse import Code, language_for

    first, last = _pair(args.select, "--select")
    n_lines = len(line_starts(text))
    if not 1 <= first <= last <= n_lines:
        raise CliError(f"--select {first}:{last} must satisfy 1 <= L1 <= L2 <= {n_lines}")
    start = offset_of(text, first, 1)
    end = line_span(text, offset_of(text, last, 1))[1]
    code = Code(text, language_for(str(args.file)))
    start, end = spans.rewrite_span(code, start, end)
    budget = min(engine.backend.max_len // 2, max(args.max_length, int(engine.count_tokens(text[start:end]) * 1.5)))
    options = replace(options, max_length=budget)
    result = engine.infill(options.request(text[:start], text[end:], length=args.length, on_step=on_step))
    best = best_first(text[:start], text[end:], result.candidates, code.language)[0]
    _print_steps(steps, best.text)
    lead = text[line_span(text, start)[0]:start]  # the widened span may start after indentation
    sys.stdout.write(lead + best.text + "\n")
    return 0


def main(argv: list[str] | None = None, more_commands: str = "") -> int:
    """Run one command; `more_commands` are listed in the usage too (the console script's own)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(more_commands))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "fill":
            return fill(rest)
        if command in PIPELINE_COMMANDS:
            return importlib.import_module(PIPELINE_COMMANDS[command]).main(rest)
    except (CliError, InfillError) as exc:
        print(f"diffill {command}: error: {exc}", file=sys.stderr)
        return 2
    except (InfillCancelled, KeyboardInterrupt):
        return 130
    print(f"diffill: unknown command {command!r}\n\n{usage(more_commands)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
