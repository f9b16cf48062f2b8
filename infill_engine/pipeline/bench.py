"""`diffill bench`: engine speed on the current model, as ratios measured side by side.

Timings on a shared machine are noisy, so every comparison interleaves its contenders in
the same run (A, B, A, B, ...) and reports medians and their ratio, never a pass/fail.
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import accumulate
from pathlib import Path

import torch

from ..backends.bundled import BundledBackend
from ..request import InfillRequest, SamplerSettings

SAMPLERS = {
    "confidence (1/step)": SamplerSettings(strategy="confidence"),
    "entropy (1/step)": SamplerSettings(strategy="entropy"),
    "fixed 2/step": SamplerSettings(strategy="fixed", tokens_per_step=2),
    "fixed 4/step": SamplerSettings(strategy="fixed", tokens_per_step=4),
    "threshold 0.9": SamplerSettings(strategy="threshold", threshold=0.9),
    "threshold 0.7": SamplerSettings(strategy="threshold", threshold=0.7),
}


def holes_from_source(count: int) -> list[tuple[str, str, str]]:
    """(prefix, middle, suffix) holes cut from diffill's own source: whole lines and blocks,
    a fixed selection so runs are comparable."""
    files = sorted(Path(__file__).resolve().parents[1].rglob("*.py"))
    text = "\n".join(p.read_text() for p in files)
    lines = text.splitlines(keepends=True)
    starts = list(accumulate(map(len, lines), initial=0))
    holes, i = [], 40
    while len(holes) < count and i < len(lines) - 10:
        n = 1 if len(holes) % 2 == 0 else 4
        if lines[i].strip() and len(lines[i]) > 12:
            start = starts[i]
            middle = "".join(lines[i:i + n])
            holes.append((text[max(0, start - 1500):start], middle, text[start + len(middle):][:600]))
        i += 97
    return holes


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_cache(engine, context_tokens: int, hole_tokens: int, repeats: int) -> dict:
    """ms per denoising step with the context cache vs a full forward, at `context_tokens` of context."""
    if not isinstance(engine.backend, BundledBackend):
        return {"skipped": "the backend has no exact context cache"}
    model = engine.backend.model
    source = "\n".join(p.read_text() for p in sorted(Path(__file__).resolve().parents[1].rglob("*.py")))
    ctx = engine.backend.encode(source)[:context_tokens]
    L = len(ctx) + hole_tokens
    ids = torch.tensor([ctx[: len(ctx) // 2] + [engine.backend.mask_id] * hole_tokens + ctx[len(ctx) // 2:]])
    hole = torch.zeros(L, dtype=torch.bool)
    hole[len(ctx) // 2: len(ctx) // 2 + hole_tokens] = True
    positions = torch.arange(L)
    with torch.no_grad():
        cache = model.prefill(ids[:, ~hole], positions[~hole])
        cached, full, prefill = [], [], []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            cached.append(_median_ms(lambda: model.forward_hole(ids[:, hole], positions[hole], cache), 1))
            full.append(_median_ms(lambda: model(ids, hole), 1))
            prefill.append(_median_ms(lambda: model.prefill(ids[:, ~hole], positions[~hole]), 1))
    c, f, p = map(statistics.median, (cached, full, prefill))
    return {"context": len(ctx), "hole": hole_tokens, "cached_step_ms": c, "full_step_ms": f,
            "prefill_ms": p, "speedup": f / c}


def bench_samplers(engine, holes, length: str) -> dict:
    out = {}
    for name, settings in SAMPLERS.items():
        forwards = tokens = 0
        ms = 0.0
        for prefix, middle, suffix in holes:
            n = engine.count_tokens(middle)
            req = InfillRequest(prefix, suffix, length=n if length == "oracle" else None,
                                max_length=min(engine.backend.max_len // 3, max(16, 2 * n)), sampler=settings)
            result = engine.infill(req)
            forwards += result.forwards
            tokens += max(1, len(result.candidates[0].token_confidences))
            ms += result.wall_ms
        out[name] = {"forwards_per_token": forwards / tokens, "tokens_per_s": tokens / (ms / 1000),
                     "ms_per_hole": ms / len(holes)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--context", type=int, default=1024, help="context tokens for the cache comparison")
    ap.add_argument("--hole", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--holes", type=int, default=12, help="holes for the sampler comparison")
    ap.add_argument("--length", choices=["oracle", "auto"], default="oracle")
    args = ap.parse_args(argv)
    from ..engine import Engine

    engine = Engine.load(args.model, args.device)
    print(f"model: {engine.name}  threads: {torch.get_num_threads()}")
    c = bench_cache(engine, args.context, args.hole, args.repeats)
    if "skipped" in c:
        print(f"context cache: {c['skipped']}")
    else:
        print(f"context cache at {c['context']} context + {c['hole']} hole tokens (medians of {args.repeats}, "
              f"interleaved): cached step {c['cached_step_ms']:.1f} ms, full forward {c['full_step_ms']:.1f} ms "
              f"-> {c['speedup']:.1f}x; one-off prefill {c['prefill_ms']:.1f} ms")
    holes = holes_from_source(args.holes)
    print(f"samplers on {len(holes)} holes from diffill's own source ({args.length} length):")
    results = bench_samplers(engine, holes, args.length)
    base = results["confidence (1/step)"]
    print(f"  {'sampler':<22}{'forwards/token':>16}{'tokens/s':>10}{'ms/hole':>9}{'speed vs 1/step':>17}")
    for name, r in results.items():
        print(f"  {name:<22}{r['forwards_per_token']:>16.2f}{r['tokens_per_s']:>10.0f}{r['ms_per_hole']:>9.0f}"
              f"{r['tokens_per_s'] / base['tokens_per_s']:>16.1f}x")
    return 0
