"""HumanEval-Infilling evaluation: fill every hole with the engine, run the tests, count.

Protocol (as in the HumanEval-Infilling paper and the diffusion-coder reports):
the program `prompt + completion + suffix + "\\n" + test + "check(entry_point)"` is run in a
sandboxed subprocess (see sandbox.py); pass@1 is the fraction that run to the end.
The completion is text the engine returned, never trimmed or fixed: its first candidate
that leaves the program parsing no worse than the empty hole and does not merely repeat a
neighbouring line (`ranking.best_first`, as the editors rank suggestions), else its first.
One attempt is run per problem.

Length modes:
  auto   — the model is never told the true length: it gets `max_length` slots (32 for the
           single-line file, 128 for the multi-line one by default); each of `lengths` up to
           that is tried as one row, the rest of its slots padding (InfillRequest.lengths);
  oracle — the hole gets exactly as many slots as the canonical solution has tokens
           (`engine.count_tokens(canonical_solution)`; tokenized on its own, so at a boundary
           it can differ by a token from how the same text tokenizes inside the file).

`--limit N` evaluates a fixed, model-independent sample (see `select_problems`): a
seeded stratified draw that spreads the N problems over all 164 HumanEval tasks instead
of taking the first few tasks' many variants.  Samples are nested: the first 50 of a
100-problem sample are the 50-problem sample, so small runs preview big ones.

Model work runs on the calling thread one problem at a time; test programs run in a
thread pool of subprocesses, overlapping with the next problem's inference.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol, Sequence

from tqdm import tqdm

from infill_engine.pipeline.sandbox import ExecOutcome, build_program, protections, run_program
from infill_engine.precision import PRECISIONS
from infill_engine.request import InfillError, InfillOptions, InfillRequest, InfillResult, SamplerSettings
from infill_engine.ranking import best_first

LengthMode = Literal["auto", "oracle"]

DATA_FILES = {
    "single": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi": "HumanEval-MultiLineInfilling.jsonl.gz",
}
DATA_ENV = "DIFFILL_HUMANEVAL_DIR"
REQUIRED_FIELDS = ("task_id", "entry_point", "prompt", "suffix", "canonical_solution", "test")


class EvalEngine(Protocol):
    """The part of infill_engine.engine.Engine the evaluator uses."""

    name: str

    def infill(self, req: InfillRequest) -> InfillResult: ...

    def count_tokens(self, text: str) -> int: ...


@dataclasses.dataclass(frozen=True)
class Problem:
    task_id: str
    entry_point: str
    prompt: str  # code before the hole
    suffix: str  # code after the hole
    canonical_solution: str  # the hole's true text
    test: str

    @property
    def task(self) -> str:
        """The HumanEval task a variant belongs to: 'SingleLineInfilling/HumanEval/7/L3' -> 'HumanEval/7'."""
        parts = self.task_id.split("/")
        return "/".join(parts[1:3]) if len(parts) >= 3 else self.task_id


# ---------------------------------------------------------------------------------------- data


def humaneval_dirs() -> list[Path]:
    """Where the `single`/`multi` shorthands look, first match wins."""
    repo = Path(__file__).resolve().parents[2]
    dirs = [Path(os.environ[DATA_ENV]).expanduser()] if os.environ.get(DATA_ENV) else []
    for base in (repo, repo.parent, Path.cwd(), Path.cwd().parent):
        dirs.append(base / "shared" / "data" / "humaneval-infilling")
    return list(dict.fromkeys(dirs))


def resolve_data(spec: str) -> Path:
    """A path to a .jsonl(.gz) file, or the shorthand 'single' / 'multi'."""
    if spec in DATA_FILES:
        for d in humaneval_dirs():
            if (d / DATA_FILES[spec]).is_file():
                return d / DATA_FILES[spec]
        looked = "\n  ".join(str(d) for d in humaneval_dirs())
        raise ValueError(
            f"cannot find {DATA_FILES[spec]}; looked in:\n  {looked}\n"
            f"set {DATA_ENV} to the folder holding the HumanEval-Infilling files, or pass --data PATH"
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"no such data file: {path} (or use --data single / --data multi)")
    return path


def load_problems(path: str | Path) -> list[Problem]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    problems = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                missing = [k for k in REQUIRED_FIELDS if not isinstance(row.get(k), str)]
                if missing:
                    raise ValueError(f"{path.name} line {lineno}: missing or non-text field(s) {missing}")
                problems.append(Problem(**{k: row[k] for k in REQUIRED_FIELDS}))
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not problems:
        raise ValueError(f"{path} holds no problems")
    return problems


def select_problems(problems: Sequence[Problem], limit: int | None, seed: int = 0, method: str = "stratified") -> list[Problem]:
    """The problems a `--limit` run evaluates; deterministic for a given file, limit and seed.

    first:      the first `limit` problems of the file (they cover only the first few tasks).
    stratified: shuffle the tasks and each task's variants with `random.Random(seed)`, then
                take one variant per task, round after round (the second round draws each
                task's second variant, and so on) until `limit` are chosen.  With limit <= 164
                every chosen problem is from a different task; the choice is returned in file
                order.  Each sample is a prefix of the larger ones.
    """
    if limit is None or limit >= len(problems):
        return list(problems)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if method == "first":
        return list(problems[:limit])
    if method != "stratified":
        raise ValueError(f"unknown sample method {method!r} (use 'stratified' or 'first')")
    rng = random.Random(seed)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        by_task[p.task].append(i)
    tasks = sorted(by_task)
    rng.shuffle(tasks)
    for t in tasks:
        rng.shuffle(by_task[t])
    chosen: list[int] = []
    round_ = 0
    while len(chosen) < limit:
        for t in tasks:
            if round_ < len(by_task[t]):
                chosen.append(by_task[t][round_])
                if len(chosen) == limit:
                    break
        round_ += 1
    return [problems[i] for i in sorted(chosen)]


def default_max_length(data_path: str | Path) -> int:
    """Slots opened in auto mode: enough for nearly every single line / multi-line hole."""
    name = Path(data_path).name.lower()
    if "singleline" in name:
        return 32
    if "multiline" in name:
        return 128
    return 64


# ---------------------------------------------------------------------------------------- run


@dataclasses.dataclass
class _Tally:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    done: int = 0
    passed: int = 0


def evaluate(
    engine: EvalEngine,
    data_path: str | Path,
    limit: int | None = None,
    length: LengthMode = "auto",
    sampler: SamplerSettings = SamplerSettings(),
    max_length: int | None = None,
    progress: bool = True,
    *,
    lengths: tuple[int, ...] = InfillOptions.lengths,
    sample: str = "stratified",
    seed: int = 0,
    timeout_s: float = 5.0,
    memory_mb: int = 1024,
    workers: int | None = None,
    out: str | Path | None = None,
) -> dict:
    """Evaluate `engine` on a HumanEval-Infilling file; returns (and writes to `out`) the report."""
    if length not in ("auto", "oracle"):
        raise ValueError(f"length must be 'auto' or 'oracle', got {length!r}")
    data_path = Path(data_path)
    all_problems = load_problems(data_path)
    problems = select_problems(all_problems, limit, seed, sample)
    max_len = max_length if max_length is not None else default_max_length(data_path)
    if max_len < 1:
        raise ValueError(f"max_length must be at least 1, got {max_len}")

    records: list[dict] = []
    futures: list[Future[ExecOutcome] | None] = []
    tally = _Tally()

    def finished(fut: Future[ExecOutcome]) -> None:
        with tally.lock:
            tally.done += 1
            tally.passed += bool(not fut.cancelled() and fut.exception() is None and fut.result().passed)

    started = time.perf_counter()
    bar = tqdm(total=len(problems), desc=f"eval {data_path.name}", unit="problem", disable=not progress, file=sys.stderr)
    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="diffill-exec")
    try:
        for p in problems:
            oracle_tokens = engine.count_tokens(p.canonical_solution)
            slots = max(1, oracle_tokens) if length == "oracle" else None
            req = InfillRequest(
                prefix=p.prompt,
                suffix=p.suffix,
                length=slots,
                max_length=max(max_len, slots or 0),
                sampler=sampler,
                lengths=lengths,
            )
            rec: dict = {"task_id": p.task_id, "passed": False, "reason": "", "completion": "",
                         "forwards": 0, "tokens": 0, "slots": slots or max_len, "oracle_tokens": oracle_tokens,
                         "ms": 0.0, "exec_ms": 0.0}  # fmt: skip
            t0 = time.perf_counter()
            try:
                result = engine.infill(req)
            except InfillError as e:  # e.g. a prompt the model cannot take: a failed problem, not a crash
                rec["ms"] = (time.perf_counter() - t0) * 1000
                rec["reason"] = f"infill error: {e}"
                records.append(rec)
                futures.append(None)
                with tally.lock:
                    tally.done += 1
            else:
                rec["ms"] = (time.perf_counter() - t0) * 1000
                best = best_first(p.prompt, p.suffix, result.candidates, "python")[0]
                completion = best.text
                rec.update(
                    completion=completion,
                    forwards=result.forwards,
                    tokens=len(best.token_confidences),
                    slots=result.hole_tokens,
                    context_cut=result.context_cut,
                    # the engine's order: another ranking rule can be tried by running tests only
                    candidates=[c.text for c in result.candidates],
                )
                program = build_program(p.prompt, completion, p.suffix, p.test, p.entry_point)
                fut = pool.submit(run_program, program, timeout_s, memory_mb)
                fut.add_done_callback(finished)
                records.append(rec)
                futures.append(fut)
            bar.update(1)
            with tally.lock:
                if tally.done:
                    bar.set_postfix_str(f"pass@1={tally.passed / tally.done:.3f} ({tally.passed}/{tally.done})")
        for rec, fut in zip(records, futures):
            if fut is not None:
                outcome = fut.result()
                rec.update(passed=outcome.passed, reason=outcome.reason, exec_ms=round(outcome.wall_ms, 1))
        done_passed = sum(r["passed"] for r in records)
        bar.set_postfix_str(f"pass@1={done_passed / max(1, len(records)):.3f} ({done_passed}/{len(records)})")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()

    for rec in records:
        rec["ms"] = round(rec["ms"], 1)
    n = len(records)
    passed = sum(r["passed"] for r in records)
    forwards = sum(r["forwards"] for r in records)
    tokens = sum(r["tokens"] for r in records)
    slots_total = sum(r["slots"] for r in records if r["forwards"])
    ms = [r["ms"] for r in records]
    report = {
        "pass@1": passed / n,
        "n": n,
        "passed": passed,
        "model": engine.name,
        "model_is_random": bool(getattr(engine, "is_random", False)),
        "data": data_path.name,
        "length": length,
        "max_length": max_len,
        "lengths": list(lengths) if length == "auto" else None,
        "selection": {"limit": limit, "method": sample if limit is not None and limit < len(all_problems) else "all",
                      "seed": seed, "of": len(all_problems)},  # fmt: skip
        "sampler": dataclasses.asdict(sampler),
        "forwards": forwards,
        "tokens": tokens,  # committed non-padding hole tokens
        "forwards_per_token": forwards / tokens if tokens else None,
        "tokens_per_forward": tokens / forwards if forwards else None,
        "forwards_per_slot": forwards / slots_total if slots_total else None,  # slots include padding (auto)
        "longer_than_max_length": sum(r["oracle_tokens"] > max_len for r in records) if length == "auto" else 0,
        "median_ms": statistics.median(ms) if ms else None,  # model time per problem, execution excluded
        "mean_ms": statistics.fmean(ms) if ms else None,
        "wall_s": round(time.perf_counter() - started, 2),
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
        "reasons": dict(Counter(_reason_kind(r["reason"]) for r in records).most_common()),
        "problems": records,
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _reason_kind(reason: str) -> str:
    """'NameError: name x is not defined' -> 'NameError', for the summary table."""
    if reason.startswith("infill error"):
        return "infill error"
    head = reason.split(":", 1)[0]
    return head if head else reason


# ---------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="diffill eval",
        description="Score a model on HumanEval-Infilling (pass@1; programs run in a sandboxed subprocess).",
    )
    ap.add_argument("--data", required=True,
                    help="a .jsonl(.gz) file, or 'single' / 'multi' (found via $%s or ../shared/data), "
                         "or 'lines': held-out lines of the corpus's validation files, or 'midline': the rest "
                         "of such lines from a random character (see heldout.py)" % DATA_ENV)
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="for --data lines / midline")
    ap.add_argument("--limit", type=int, default=None, help="evaluate N problems (a fixed stratified sample)")
    ap.add_argument("--sample", choices=("stratified", "first"), default="stratified",
                    help="how --limit picks problems (default: stratified over all tasks)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    ap.add_argument("--length", choices=("auto", "oracle"), default="auto",
                    help="auto: the model gets --max-length slots and pads; oracle: the true token count")
    ap.add_argument("--max-length", type=int, default=None,
                    help="slots in auto mode (default 32 single-line, 128 multi-line)")
    ap.add_argument("--lengths", type=_lengths, default=InfillOptions.lengths,
                    help="auto mode: hole lengths to try, comma-separated, or 'settle' to let the model "
                         "fix the length after its first forward (default: %(default)s)")
    ap.add_argument("--out", default=None, help="write the JSON report here")
    ap.add_argument("--model", default=None, help="model directory or checkpoint (default: the bundled model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=PRECISIONS, default="auto", help="for diffill's own models")
    ap.add_argument("--trust-remote-code", action="store_true",
                    help="allow a checkpoint's own Python code to run (only for checkpoints you trust)")
    ap.add_argument("--strategy", choices=("confidence", "entropy", "margin", "threshold", "fixed"),
                    default=SamplerSettings.strategy)
    ap.add_argument("--threshold", type=float, default=SamplerSettings.threshold)
    ap.add_argument("--tokens-per-step", type=int, default=SamplerSettings.tokens_per_step)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=SamplerSettings.temperature)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per test program (default 5)")
    ap.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per test program")
    ap.add_argument("--workers", type=int, default=None, help="test programs run at once (default: CPU count)")
    ap.add_argument("--no-progress", action="store_true")
    return ap  # fmt: skip


def _lengths(value: str) -> tuple[int, ...]:
    if value == "settle":
        return ()
    try:
        lengths = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected token counts like 4,8,16 or 'settle', got {value!r}") from None
    if any(n < 1 for n in lengths):
        raise argparse.ArgumentTypeError("lengths must be at least 1")
    return lengths


def main(argv: list[str] | None = None) -> int:
    """`diffill eval ...`; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        # Arguments first, then the data: a bad argument is reported wherever the data lives.
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit must be at least 1")
        if args.timeout <= 0 or args.memory_mb < 64:
            raise ValueError("--timeout must be positive and --memory-mb at least 64")
        data = None if args.data in ("lines", "midline") else resolve_data(args.data)
        sampler = SamplerSettings(strategy=args.strategy, threshold=args.threshold,
                                  tokens_per_step=args.tokens_per_step, max_steps=args.max_steps,
                                  temperature=args.temperature)  # fmt: skip
        from infill_engine.engine import Engine  # torch import deferred: bad arguments fail fast

        engine = Engine.load(args.model, device=args.device, trust_remote_code=args.trust_remote_code,
                             precision=args.precision)
        if getattr(engine, "is_random", False):
            print(f"warning: {engine.name} has random (untrained) weights; its score means nothing", file=sys.stderr)
        if data is None:
            return _report_held_out(engine, args, sampler)
        for line in protections().describe():  # which sandbox protections hold on this machine
            print(f"sandbox: {line}", file=sys.stderr)
        report = evaluate(
            engine, data, limit=args.limit, length=args.length, sampler=sampler, max_length=args.max_length,
            lengths=args.lengths, progress=not args.no_progress, sample=args.sample, seed=args.seed, timeout_s=args.timeout,
            memory_mb=args.memory_mb, workers=args.workers, out=args.out,
        )  # fmt: skip
    except (ValueError, OSError) as e:  # InfillError is a ValueError
        print(f"diffill eval: error: {e}", file=sys.stderr)
        return 2
    fpt = report["forwards_per_token"]
    print(f"model: {report['model']}   data: {report['data']} ({report['n']} of {report['selection']['of']})")
    print(f"length: {report['length']} (max {report['max_length']})   sampler: {args.strategy}"
          + (f" tau={args.threshold}" if args.strategy == "threshold" else ""))  # fmt: skip
    print(f"forwards/token: {fpt:.3f}" if fpt is not None else "forwards/token: n/a",
          f"  median: {report['median_ms']:.0f} ms/problem   failures: "
          + ", ".join(f"{k} {v}" for k, v in report["reasons"].items() if k != "passed"))  # fmt: skip
    if args.out:
        print(f"report: {args.out}")
    print(f"pass@1 = {report['pass@1']:.3f} ({report['passed']}/{report['n']})")
    return 0


def _report_held_out(engine, args, sampler: SamplerSettings) -> int:
    """--data lines or midline: the corpus's validation files (heldout.py)."""
    from .heldout import evaluate_lines, evaluate_midline

    run = evaluate_lines if args.data == "lines" else evaluate_midline
    r = run(engine, args.corpus, n=args.limit or 100, seed=args.seed, sampler=sampler, out=args.out,
            lengths=args.lengths)
    if args.data == "midline":
        print(f"model: {r['model']}   held-out lines, cut at a random character: {r['lines']} (seed {r['seed']})")
        print(f"rest of the line exact: healed {r['healed_exact']}/{r['lines']}   "
              f"without healing {r['unhealed_exact']}/{r['lines']}")
        return 0
    print(f"model: {r['model']}   held-out lines: {r['lines']} (seed {r['seed']})")
    print(f"CE/token {r['ce_per_token']:.3f}   first-step top-1 {r['first_step_top1']:.1%}   "
          f"exact line {r['exact']:.1%} ({r['exact_count']}/{r['lines']})   tokens/forward {r['tokens_per_forward']}")
    print(f"auto length: exact line {r['auto_exact']:.1%}   length off by {r['auto_length_error']} tokens on average")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
