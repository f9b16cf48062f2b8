"""`diffill bench`: engine speed on the current model, as ratios measured side by side.

Timings on a shared machine are noisy, so every comparison interleaves its contenders in
the same run (A, B, A, B, ...) and reports medians and their ratio, never a pass/fail.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from itertools import accumulate
from pathlib import Path

import torch
import torch.nn.functional as F

from ..backends.bundled import BundledBackend
from ..precision import PRECISIONS
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


def bench_precision(model: str | None, device: str, holes, context_tokens: int, repeats: int) -> dict:
    """fp32 against bf16 on the same weights, interleaved: prefill and hole-step ms, and how many
    holes get the same greedy completion from both."""
    from ..engine import Engine
    from ..precision import cpu_has_native_bf16, resolve_dtype

    engines = {name: Engine.load(model, device, precision=name) for name in ("fp32", "bf16")}
    timing = {name: bench_cache(e, context_tokens, 32, repeats) for name, e in engines.items()}
    same = 0
    for prefix, middle, suffix in holes:
        req = InfillRequest(prefix, suffix, length=engines["fp32"].count_tokens(middle))
        same += engines["fp32"].infill(req).text == engines["bf16"].infill(req).text
    return {"timing": timing, "same": same, "holes": len(holes), "native_bf16": cpu_has_native_bf16(),
            "auto": "bf16" if resolve_dtype("auto", device) == torch.bfloat16 else "fp32"}


def _print_precision(p: dict) -> None:
    f, b = p["timing"]["fp32"], p["timing"]["bf16"]
    if "skipped" in f:
        print(f"precision: {f['skipped']}")
        return
    print(f"precision (same weights, {f['context']} context tokens): "
          f"prefill fp32 {f['prefill_ms']:.1f} ms / bf16 {b['prefill_ms']:.1f} ms "
          f"-> bf16 {f['prefill_ms'] / b['prefill_ms']:.2f}x; "
          f"hole step fp32 {f['cached_step_ms']:.1f} / bf16 {b['cached_step_ms']:.1f} ms "
          f"-> {f['cached_step_ms'] / b['cached_step_ms']:.2f}x")
    print(f"  same greedy completion on {p['same']}/{p['holes']} holes; native bf16 on this CPU: "
          f"{'yes' if p['native_bf16'] else 'no'}; 'auto' runs {p['auto']}")


def bench_training(dim: int, layers: int, heads: int, batch: int, seq_len: int, repeats: int,
                   compile: bool = False) -> dict:
    """Training tokens/s of one shape, several ways side by side (interleaved).  Each way is a
    whole training step: forward, cross-entropy on the hole slots, backward, gradient clip,
    AdamW.  Ways: fp32 or bf16 autocast; the hole rule as a boolean attention mask (v1's
    layout) or as two mask-free attention calls over [context | hole] (`hidden_split`); AdamW
    as one fused kernel instead of a loop over the parameters (torch's CPU default); and with
    `compile`, `diffill train`'s own compiled forward and loss, whose build time is reported
    apart, not in tokens/s.  Half of each sequence is hole; ids and targets are random (the
    content does not matter for speed)."""
    from ..model import ModelConfig, Transformer
    from .train import slot_loss

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=8192, dim=dim, n_layers=layers, n_heads=heads,
                      ffn_hidden=64 * round(8 * dim / 3 / 64), max_seq_len=max(1024, seq_len))
    model = Transformer(cfg)
    ids = torch.randint(3, cfg.vocab_size, (batch, seq_len))
    targets = torch.randint(3, cfg.vocab_size, (batch, seq_len))
    n_context = seq_len // 2
    hole = torch.zeros(batch, seq_len, dtype=torch.bool)
    hole[:, n_context:] = True
    positions = torch.arange(seq_len).expand(batch, -1)
    rows, cols = hole.nonzero(as_tuple=True)
    weight = torch.full(rows.shape, 1.0 / rows.numel())

    def masked_loss(model, *_):
        return F.cross_entropy(model.logits(model.hidden(ids, hole)[hole]).float(), targets[hole]), None

    # name: (loss function, autocast to bf16, fused AdamW)
    ways = {"fp32 masked": (masked_loss, False, False), "fp32 split": (slot_loss, False, False),
            "bf16 masked": (masked_loss, True, False), "bf16 split": (slot_loss, True, False),
            "bf16 split fused-adamw": (slot_loss, True, True)}
    if compile:  # as `diffill train` compiles it
        ways["bf16 split fused-adamw compiled"] = (torch.compile(slot_loss, dynamic=True), True, True)
    # A tiny learning rate: the weights barely move, so every way times the same model.
    opts = {fused: torch.optim.AdamW(model.parameters(), lr=1e-7, fused=fused) for fused in (False, True)}

    def step(name: str) -> None:
        loss_fn, bf16, fused = ways[name]
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss, _ = loss_fn(model, ids, positions, n_context, rows, cols, targets[rows, cols], weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opts[fused].step()
        opts[fused].zero_grad(set_to_none=True)

    build_s = {}
    for name in ways:  # warm-up; for the compiled way this is the build
        build_s[name] = _median_ms(lambda: step(name), 1) / 1000
    times = {name: [] for name in ways}
    for _ in range(repeats):
        for name in ways:
            times[name].append(_median_ms(lambda: step(name), 1))
    return {"tokens_per_s": {name: batch * seq_len / (statistics.median(t) / 1000) for name, t in times.items()},
            "compile_s": {name: s for name, s in build_s.items() if "compiled" in name}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="diffill's format, or a Dream/LLaDA checkpoint directory "
                    "(a config.json alone benchmarks random weights of its shape; see pipeline/shapes/)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--context", type=int, default=1024, help="context tokens for the cache comparison")
    ap.add_argument("--hole", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--holes", type=int, default=12, help="holes for the sampler comparison")
    ap.add_argument("--length", choices=["oracle", "auto"], default="oracle")
    ap.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="for the cache and sampler figures; fp32 and bf16 are always compared side by side")
    ap.add_argument("--train", action="store_true",
                    help="training speed instead: whole steps, fp32/bf16 x masked/split attention, fused AdamW, "
                         "and with --compile diffill train's compiled step, side by side")
    ap.add_argument("--shape", default="192,6,3,16,384", help="--train: dim,layers,heads,batch,seq_len")
    ap.add_argument("--compile", nargs="?", const="reduce-overhead", default=None, metavar="MODE",
                    help="--train: also the compiled training step (build time printed apart).  "
                         "Dream/LLaDA checkpoint: also the cache fixed-4 rows with the hole step under torch.compile "
                         "(reduce-overhead: inductor + CUDA graphs; cudagraphs: graphs of the eager kernels, "
                         "compiles faster; default)")
    ap.add_argument("--compiled-only", action="store_true",
                    help="with --compile: only vanilla 1/step and cache fixed 4 beside the compiled rows")
    args = ap.parse_args(argv)
    if args.train:
        dim, layers, heads, batch, seq_len = map(int, args.shape.split(","))
        r = bench_training(dim, layers, heads, batch, seq_len, max(1, args.repeats // 5), compile=bool(args.compile))
        base = r["tokens_per_s"]["fp32 masked"]
        print(f"training tokens/s (a whole step: forward, backward, AdamW), d{dim}x{layers} h{heads}, "
              f"batch {batch} x {seq_len}, threads {torch.get_num_threads()} (medians, interleaved):")
        for name, rate in r["tokens_per_s"].items():
            built = f"   (first step, build included: {r['compile_s'][name]:.0f} s)" if name in r["compile_s"] else ""
            print(f"  {name:<32}{rate:>10.0f} tokens/s   {rate / base:.2f}x{built}")
        return 0
    from . import checkpoint_bench

    if checkpoint_bench.is_checkpoint(args.model):  # Dream / LLaDA, weights or config only
        hole = args.hole if args.hole != ap.get_default("hole") else 64
        checkpoint_bench.print_table(checkpoint_bench.bench(Path(args.model), args.device, args.context, hole,
                                                            max(1, min(args.repeats, 3)), compile=args.compile,
                                                            compiled_only=args.compiled_only))
        return 0
    from ..engine import Engine

    engine = Engine.load(args.model, args.device, precision=args.precision)
    dtype = getattr(engine.backend, "dtype", None)
    print(f"model: {engine.name}  threads: {torch.get_num_threads()}  dtype: {dtype}")
    c = bench_cache(engine, args.context, args.hole, args.repeats)
    if "skipped" in c:
        print(f"context cache: {c['skipped']}")
    else:
        print(f"context cache at {c['context']} context + {c['hole']} hole tokens (medians of {args.repeats}, "
              f"interleaved): cached step {c['cached_step_ms']:.1f} ms, full forward {c['full_step_ms']:.1f} ms "
              f"-> {c['speedup']:.1f}x; one-off prefill {c['prefill_ms']:.1f} ms")
    holes = holes_from_source(args.holes)
    if isinstance(engine.backend, BundledBackend):
        _print_precision(bench_precision(args.model, args.device, holes, args.context, args.repeats))
    print(f"samplers on {len(holes)} holes from diffill's own source ({args.length} length):")
    results = bench_samplers(engine, holes, args.length)
    base = results["confidence (1/step)"]
    print(f"  {'sampler':<22}{'forwards/token':>16}{'tokens/s':>10}{'ms/hole':>9}{'speed vs 1/step':>17}")
    for name, r in results.items():
        print(f"  {name:<22}{r['forwards_per_token']:>16.2f}{r['tokens_per_s']:>10.0f}{r['ms_per_hole']:>9.0f}"
              f"{r['tokens_per_s'] / base['tokens_per_s']:>16.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
