"""`diffill bench --model DIR` for a Dream or LLaDA checkpoint: one 64-token infill at ~1k
context, timed several ways side by side and printed as ratios to the plain loop.

Speed does not depend on the weights, so DIR may hold only a config.json (shapes/ has the
Qwen2-0.5B, Qwen2-7B and LLaDA-8B layouts): the network is then built with random weights
of that shape, on the device, without reading or writing gigabytes.  Contenders:

  vanilla      every step a full forward over context + hole (exact), 1 token a step
  cache        the context's keys/values reused across steps (Fast-dLLM dual cache, one block)
  cache+refresh  the same, computed again each time a quarter of the hole is committed
               (Fast-dLLM's per-block refresh, REFRESH_BLOCKS blocks): a full forward a block, which
               also gives that step's logits (its hole forward is skipped)
  fixed 4      4 tokens committed a step (random weights are never confident enough for the
               threshold rule, so fixed-k stands in for what threshold decoding saves)
  threshold    Fast-dLLM's rule at 0.9, as a user would run it
  compiled     (--compile MODE) the cache's hole step and context pass under torch.compile
               at fixed shapes, CUDA graphs on a GPU (backends/compiled.py); compiling is
               the warm-up's business and is reported apart, with how many tokens came out
               as eager's
and batch 8 (eight holes decoded together) against batch 1.  `compiled_only` keeps the rows a
compiled run is compared with (vanilla 1/step, cache fixed 4, both batches), so a GPU script
can give compiling a run of its own.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models

from ..backends import dream, llada
from ..backends.checkpoint import _device, detect_family, load_hf_backend, read_config
from ..backends.hf import HFBackend
from ..denoise import Denoiser
from ..engine import Engine, Layout
from ..request import InfillRequest, SamplerSettings

SHAPES = Path(__file__).with_name("shapes")

FIXED_4 = SamplerSettings(strategy="fixed", tokens_per_step=4)
REFRESH_BLOCKS = 4  # cache+refresh: the hole in this many blocks (a 64-token hole: 16 a block)
# (name, context cache: False, True or "refresh", sampler, batch, compiled)
CONTENDERS = [
    ("vanilla 1/step", False, SamplerSettings(strategy="confidence"), 1, False),
    ("cache 1/step", True, SamplerSettings(strategy="confidence"), 1, False),
    ("vanilla fixed 4", False, FIXED_4, 1, False),
    ("cache fixed 4", True, FIXED_4, 1, False),
    ("cache+refresh fixed 4", "refresh", FIXED_4, 1, False),
    ("threshold 0.9", False, SamplerSettings(strategy="threshold", threshold=0.9), 1, False),
    ("vanilla 1/step x8", False, SamplerSettings(strategy="confidence"), 8, False),
    ("cache fixed 4 x8", True, FIXED_4, 8, False),
]
COMPILED = [
    ("cache fixed 4 compiled", True, FIXED_4, 1, True),
    ("cache fixed 4 compiled x8", True, FIXED_4, 8, True),
]
# What a compiled run keeps to compare with: the base of the ratios, and the same way eager.
COMPILED_ONLY = ("vanilla 1/step", "cache fixed 4", "cache fixed 4 x8")


def random_backend(directory: Path, device: str, approximate_cache: bool, model=None) -> HFBackend:
    """An HFBackend of the checkpoint's shape with random weights (or `model`, to share one)."""
    config = read_config(directory)
    family = detect_family(config)
    dev = _device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    # The bench never encodes text: a one-word tokenizer stands in for the real one.
    tokenizer = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    spec = dream.describe(config, tokenizer) if family == "dream" else llada.describe(config, tokenizer)
    if model is None:
        with torch.device("meta"):
            model = spec.model_class(spec.config)
        model = model.to_empty(device=dev).to(dtype)
        generator = torch.Generator(device=dev).manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02, generator=generator)
        rotary = model.model.rotary_emb
        model.model.rotary_emb = type(rotary)(config=model.config).to(dev)
        for module in model.modules():
            if hasattr(module, "is_causal"):
                module.is_causal = False
        model.eval()
    backend = HFBackend(directory.name, model, tokenizer, spec, dev, dtype, approximate_cache=approximate_cache)
    backend.banned_ids = [backend.mask_id]  # the stand-in tokenizer would ban the whole vocabulary
    backend.is_random = True
    return backend


def backends(directory: Path, device: str) -> tuple[HFBackend, HFBackend]:
    """(exact, cached) over one set of weights: the checkpoint's own, or random of its shape."""
    if any(directory.glob("*.safetensors")):
        exact = load_hf_backend(str(directory), device=device)
        return exact, sibling(exact, approximate_cache=True)
    exact = random_backend(directory, device, approximate_cache=False)
    return exact, random_backend(directory, device, approximate_cache=True, model=exact.model)


def sibling(backend: HFBackend, approximate_cache: bool, compile: str | None = None,
            cache_block: int | None = None) -> HFBackend:
    """Another backend over the same model and tokens, cached, refreshed and compiled as asked."""
    out = HFBackend(backend.name, backend.model, backend.tokenizer, backend.spec, backend.device, backend.dtype,
                    approximate_cache=approximate_cache, compile=compile, cache_block=cache_block)
    out.generation_defaults, out.banned_ids, out.is_random = (backend.generation_defaults, backend.banned_ids,
                                                              backend.is_random)
    return out


def layout(backend: HFBackend, context: int, hole: int, seed: int = 0) -> Layout:
    """Random ordinary tokens around a hole in the middle."""
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(0, min(backend.mask_id, backend.vocab_size) - 1, (context,), generator=g)
    half = context // 2
    ids = torch.cat([ctx[:half], torch.full((hole,), backend.mask_id), ctx[half:]])
    where = torch.zeros(len(ids), dtype=torch.bool)
    where[half : half + hole] = True
    return Layout(ids, where, 1, hole, 0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(directory: Path, device: str = "cpu", context: int = 1024, hole: int = 64, repeats: int = 3,
          contenders=CONTENDERS, compile: str | None = None, compiled_only: bool = False) -> dict:
    """{name: {"ms_per_forward", "tokens_per_s", "forwards"}} plus "model"; medians of
    `repeats` rounds, each round running every contender once (interleaved).  compile: also
    the COMPILED rows, with that torch.compile mode (then "compile" says how it went)."""
    exact, cached = backends(directory, device)
    engines = {(False, False): Engine(exact), (True, False): Engine(cached),
               ("refresh", False): Engine(sibling(cached, True, cache_block=max(1, hole // REFRESH_BLOCKS)))}
    if compile is not None:
        engines[True, True] = Engine(sibling(cached, approximate_cache=True, compile=compile))
        contenders = [c for c in contenders if not compiled_only or c[0] in COMPILED_ONLY] + COMPILED
    where = layout(exact, context, hole)
    times: dict[str, list[float]] = {name: [] for name, *_ in contenders}
    forwards: dict[str, int] = {}
    refreshes: dict[str, int] = {}
    tokens: dict[str, torch.Tensor] = {}

    def once(name, use_cache, settings, batch, compiled) -> float:
        engine = engines[use_cache, compiled]
        req = InfillRequest("", length=hole, candidates=batch, sampler=settings)
        _sync(exact.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            loop = engine._denoise(where, req)
        _sync(exact.device)
        forwards[name], tokens[name], refreshes[name] = loop.forwards, loop.x, loop.refreshes
        return time.perf_counter() - t0

    warmup = {contender[0]: once(*contender) for contender in contenders}  # kernels, allocator, compiling
    for _ in range(repeats):
        for contender in contenders:
            times[contender[0]].append(once(*contender))
    model = f"{exact.name} ({exact.spec.family}, {exact.dtype}, {exact.device})"
    out = {"model": model, "context": context, "hole": hole}
    if compile is not None:
        step, context_pass = engines[True, True].backend.compiled, engines[True, True].backend.compiled_context
        same = [(tokens[name] == tokens[name.replace(" compiled", "")]) for name, *_ in COMPILED
                if name.replace(" compiled", "") in tokens]
        out["compile"] = {"mode": compile, "error": step.error or context_pass.error,
                          "compiled_calls": step.compiled_calls, "context_calls": context_pass.compiled_calls,
                          "first_run_s": {name: warmup[name] for name, *_ in COMPILED},
                          "same_tokens": (sum(int(s.sum()) for s in same), sum(s.numel() for s in same)),
                          "phases_ms": {way: phases(engines[True, way].backend, where, hole, repeats + 2)
                                        for way in (False, True)}}
    for name, _, _, batch, _ in contenders:
        seconds = statistics.median(times[name])
        out[name] = {"ms_per_forward": seconds * 1000 / forwards[name], "tokens_per_s": batch * hole / seconds,
                     "forwards": forwards[name], "batch": batch, "refreshes": refreshes[name]}
    return out


def phases(backend: HFBackend, where: Layout, hole: int, repeats: int) -> tuple[float, float]:
    """(context pass, one step) in ms at batch 1, medians: where a cached request's time goes."""
    loop = Denoiser(backend, where, InfillRequest("", length=hole, sampler=FIXED_4))
    context, step = [], []
    with torch.no_grad():
        for _ in range(repeats):
            _sync(backend.device)
            t0 = time.perf_counter()
            state = backend.prepare(loop.ids, loop.hole)
            _sync(backend.device)
            t1 = time.perf_counter()
            backend.hole_logits(state, loop.sequences(None))
            _sync(backend.device)
            context.append((t1 - t0) * 1000)
            step.append((time.perf_counter() - t1) * 1000)
    return statistics.median(context), statistics.median(step)


def print_table(r: dict) -> None:
    base = r["vanilla 1/step"]
    print(f"model: {r['model']}  {r['hole']}-token infill at {r['context']} context tokens "
          f"(threads {torch.get_num_threads()}); ms/forward is wall time / forwards, the cache's context pass included")
    print(f"  {'way':<26}{'batch':>6}{'forwards':>9}{'ms/forward':>12}{'tokens/s':>10}{'vs vanilla':>12}")
    for name, row in r.items():
        if not isinstance(row, dict) or "batch" not in row:
            continue
        print(f"  {name:<26}{row['batch']:>6}{row['forwards']:>9}{row['ms_per_forward']:>12.1f}"
              f"{row['tokens_per_s']:>10.1f}{row['tokens_per_s'] / base['tokens_per_s']:>11.2f}x")
    for name, row in r.items():
        if isinstance(row, dict) and row.get("refreshes"):
            print(f"  {name}: the context computed again {row['refreshes']} times (a full forward each, "
                  f"counted in its ms/forward)")
    c = r.get("compile")
    if c is not None:
        first = ", ".join(f"{name} {s:.1f} s" for name, s in c["first_run_s"].items())
        same, total = c["same_tokens"]
        state = (f"fell back to eager: {c['error']}" if c["error"] else
                 f"{c['compiled_calls']} compiled steps, {c['context_calls']} compiled context passes")
        print(f"compile {c['mode']}: {state}; first run (compiling) {first}; "
              f"tokens as eager cache fixed 4: {same}/{total}")
        (ec, es), (cc, cs) = c["phases_ms"][False], c["phases_ms"][True]
        print(f"batch 1, ms: context pass eager {ec:.1f}, compiled {cc:.1f}; hole forward eager {es:.1f}, "
              f"compiled {cs:.1f} (the rest of a step is the sampler's)")


def is_checkpoint(model: str | None) -> bool:
    """A Dream/LLaDA checkpoint directory (weights or config only), not diffill's own format."""
    if model is None or not (Path(model) / "config.json").is_file():
        return False
    try:
        detect_family(read_config(Path(model)))
    except Exception:
        return False
    return True
