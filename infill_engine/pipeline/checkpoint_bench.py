"""`diffill bench --model DIR` for a Dream or LLaDA checkpoint: one 64-token infill at ~1k
context, timed several ways side by side and printed as ratios to the plain loop.

Speed does not depend on the weights, so DIR may hold only a config.json (shapes/ has the
Qwen2-0.5B, Qwen2-7B and LLaDA-8B layouts): the network is then built with random weights
of that shape, on the device, without reading or writing gigabytes.  Contenders:

  vanilla      every step a full forward over context + hole (exact), 1 token a step
  cache        the context's keys/values reused across steps (Fast-dLLM dual cache, one block)
  fixed 4      4 tokens committed a step (random weights are never confident enough for the
               threshold rule, so fixed-k stands in for what threshold decoding saves)
  threshold    Fast-dLLM's rule at 0.9, as a user would run it
and batch 8 (eight holes decoded together) against batch 1.
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
from ..engine import Engine, Layout
from ..request import InfillRequest, SamplerSettings

SHAPES = Path(__file__).with_name("shapes")

# (name, cached context, sampler, batch)
CONTENDERS = [
    ("vanilla 1/step", False, SamplerSettings(strategy="confidence"), 1),
    ("cache 1/step", True, SamplerSettings(strategy="confidence"), 1),
    ("vanilla fixed 4", False, SamplerSettings(strategy="fixed", tokens_per_step=4), 1),
    ("cache fixed 4", True, SamplerSettings(strategy="fixed", tokens_per_step=4), 1),
    ("threshold 0.9", False, SamplerSettings(strategy="threshold", threshold=0.9), 1),
    ("vanilla 1/step x8", False, SamplerSettings(strategy="confidence"), 8),
    ("cache fixed 4 x8", True, SamplerSettings(strategy="fixed", tokens_per_step=4), 8),
]


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
        cached = HFBackend(exact.name, exact.model, exact.tokenizer, exact.spec, exact.device, exact.dtype,
                           approximate_cache=True)
        cached.generation_defaults = exact.generation_defaults
        return exact, cached
    exact = random_backend(directory, device, approximate_cache=False)
    return exact, random_backend(directory, device, approximate_cache=True, model=exact.model)


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
          contenders=CONTENDERS) -> dict:
    """{name: {"ms_per_forward", "tokens_per_s", "forwards"}} plus "model"; medians of
    `repeats` rounds, each round running every contender once (interleaved)."""
    exact, cached = backends(directory, device)
    engines = {False: Engine(exact), True: Engine(cached)}
    where = layout(exact, context, hole)
    times: dict[str, list[float]] = {name: [] for name, *_ in contenders}
    forwards: dict[str, int] = {}

    def once(name, use_cache, settings, batch) -> float:
        engine = engines[use_cache]
        req = InfillRequest("", length=hole, candidates=batch, sampler=settings)
        _sync(exact.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            f = engine._denoise(where, req).forwards
        _sync(exact.device)
        forwards[name] = f
        return time.perf_counter() - t0

    for contender in contenders:  # warm-up: kernels, allocator, compiled paths
        once(*contender)
    for _ in range(repeats):
        for contender in contenders:
            times[contender[0]].append(once(*contender))
    model = f"{exact.name} ({exact.spec.family}, {exact.dtype}, {exact.device})"
    out = {"model": model, "context": context, "hole": hole}
    for name, _, _, batch in contenders:
        seconds = statistics.median(times[name])
        out[name] = {"ms_per_forward": seconds * 1000 / forwards[name], "tokens_per_s": batch * hole / seconds,
                     "forwards": forwards[name], "batch": batch}
    return out


def print_table(r: dict) -> None:
    base = r["vanilla 1/step"]
    print(f"model: {r['model']}  {r['hole']}-token infill at {r['context']} context tokens "
          f"(threads {torch.get_num_threads()}); ms/forward is wall time / forwards, the cache's context pass included")
    print(f"  {'way':<20}{'batch':>6}{'forwards':>9}{'ms/forward':>12}{'tokens/s':>10}{'vs vanilla':>12}")
    for name, row in r.items():
        if not isinstance(row, dict):
            continue
        print(f"  {name:<20}{row['batch']:>6}{row['forwards']:>9}{row['ms_per_forward']:>12.1f}"
              f"{row['tokens_per_s']:>10.1f}{row['tokens_per_s'] / base['tokens_per_s']:>11.2f}x")


def is_checkpoint(model: str | None) -> bool:
    """A Dream/LLaDA checkpoint directory (weights or config only), not diffill's own format."""
    if model is None or not (Path(model) / "config.json").is_file():
        return False
    try:
        detect_family(read_config(Path(model)))
    except Exception:
        return False
    return True
