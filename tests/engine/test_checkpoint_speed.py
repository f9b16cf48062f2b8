"""A checkpoint's denoising step on the device: nothing in it waits for the device, rows
that finish early leave the context cache's batch, and the compiled step (torch.compile at
fixed shapes, backends/compiled.py) gets eager's tokens, or says why it ran eager."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from infill_engine.backends.checkpoint import load_hf_backend
from infill_engine.backends.compiled import CompiledStep, bucket_keys, bucket_rows
from infill_engine.denoise import Denoiser
from infill_engine.engine import Engine
from infill_engine.pipeline import checkpoint_bench
from infill_engine.request import InfillRequest, SamplerSettings

from .test_hf_backends import write_dream, write_llada

FIXED_2 = SamplerSettings(strategy="fixed", tokens_per_step=2)
# Ops that, on a GPU, make the host wait for the queue: a number read back (item, bool), a
# bool-mask index (its size is a count on the device), a tensor made from a Python list.
READS = {"_local_scalar_dense", "nonzero", "masked_select", "lift_fresh", "lift_fresh_copy"}


class DeviceReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        bool_index = name.startswith("index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for a in args if isinstance(a, (list, tuple)) for i in a)
        if name in READS or bool_index:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def checkpoints(tmp_path, family: str, **options):
    directory = tmp_path / family
    (write_dream if family == "dream" else write_llada)(directory)
    exact = load_hf_backend(str(directory))
    cached = checkpoint_bench.sibling(exact, approximate_cache=True, **options)
    return exact, cached


def hole_layout(backend, context: int, hole: int):
    return checkpoint_bench.layout(backend, context, hole, seed=3)


# The upstream presets' schedules too: Dream's int(m (1 - s/t)) from a table made once a
# request, LLaDA's blocks from the step budget, both as tensors.
STEP_SAMPLERS = [
    FIXED_2,
    SamplerSettings(strategy="dream", steps=3),
    SamplerSettings(strategy="dream", alg="origin", steps=3),
    SamplerSettings(strategy="dream", alg="maskgit_plus", alg_temp=0.5, temperature=0.7, top_p=0.9, top_k=20),
    SamplerSettings(strategy="llada", block_length=2, steps=4),
    SamplerSettings(strategy="llada", block_length=4, remasking="random", temperature=0.5),
]


@pytest.mark.parametrize("settings", STEP_SAMPLERS, ids=["fixed", "dream", "dream-origin", "dream-alg-temp",
                                                         "llada", "llada-random"])
@pytest.mark.parametrize("family", ["dream", "llada"])
def test_a_step_reads_nothing_back_from_the_device(tmp_path, family, settings):
    exact, cached = checkpoints(tmp_path, family)
    refreshed = checkpoint_bench.sibling(exact, approximate_cache=True, cache_block=2)
    for backend in (exact, cached, refreshed):
        req = InfillRequest("", length=6, candidates=2, sampler=settings)
        loop = Denoiser(backend, hole_layout(backend, 20, 6), req)
        state = backend.prepare(loop.ids, loop.hole)
        with torch.no_grad(), DeviceReads() as reads:
            for _ in range(2):
                loop.advance(backend.hole_logits(state, loop.sequences(None)))
                if backend.cache_block:  # every row committed a block: a refresh, on the device too
                    backend.refresh(state, loop.sequences(None), None, logits=True)
        assert reads.seen == [], (backend.approximate_cache, reads.seen)
        assert loop.open_rows() == [0, 1]  # the step's one read-back, outside it


@pytest.mark.parametrize("family", ["dream", "llada"])
def test_cached_rows_that_finish_first_leave_the_batch(tmp_path, family):
    exact, cached = checkpoints(tmp_path, family)
    ids = hole_layout(cached, 20, 6).ids.repeat(3, 1)
    hole = ids[0] == cached.mask_id
    ids[1, hole.nonzero()[-2:, 0]] = 7  # each row's hole differs, so each row's context cache does
    state = cached.prepare(ids, hole)
    rows = torch.tensor([0, 2])
    alone = cached.hole_logits(cached.select_rows(state, rows), ids[rows])
    assert torch.equal(alone, cached.hole_logits(state, ids)[rows])
    # Auto length tries one row per length; the short ones finish first (this raised before).
    result = Engine(cached).infill(InfillRequest("def f(", "):", max_length=8, lengths=(2, 5, 8), heal=False))
    assert result.forwards == 8 and result.candidates


@pytest.mark.parametrize("family", ["dream", "llada"])
def test_compiled_refresh_gets_eager_refresh_tokens(tmp_path, family):
    """The refresh's pass runs the compiled context graph (all rows, at prepare's shape) and
    writes the compiled step's padded copy: an auto length's rows, finishing apart, get the
    eager refresh's tokens (cudagraphs mode: on a CPU the same capture without graphs)."""
    exact = checkpoints(tmp_path, family)[0]
    eager = checkpoint_bench.sibling(exact, approximate_cache=True, cache_block=1)
    compiled = checkpoint_bench.sibling(exact, approximate_cache=True, cache_block=1, compile="cudagraphs")
    req = InfillRequest("def f(", "):", max_length=6, lengths=(2, 4, 6), sampler=SamplerSettings(strategy="confidence"),
                        heal=False)  # the slots as asked: the refresh count below counts them
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the eager fallback warns: fail with its reason
        got = Engine(compiled).infill(req)
    want = Engine(eager).infill(req)
    assert [c.text for c in got.candidates] == [c.text for c in want.candidates]
    assert compiled.compiled.error is None and compiled.compiled_context.error is None
    assert compiled.compiled_context.compiled_calls == 6  # prepare, then a refresh before each later step


def test_buckets():
    assert [bucket_rows(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    assert [bucket_keys(n) for n in (1, 128, 129, 1000)] == [128, 128, 256, 1024]


# (family, context cache, rows): five compiles (a cached case compiles its context pass too)
@pytest.mark.parametrize("family,cache,batch", [("dream", True, 3), ("dream", False, 1), ("llada", True, 1)])
def test_compiled_step_gets_eager_tokens(tmp_path, family, cache, batch):
    """Real inductor on this CPU (reduce-overhead's graphs need a GPU): rows padded 3 -> 4,
    the context pass's 27 tokens and the step's 21 context keys to 128.  A compile that cannot run here fails the test with its reason."""
    eager = checkpoints(tmp_path, family)[cache]
    compiled = checkpoint_bench.sibling(eager, cache, compile="reduce-overhead")
    where = hole_layout(eager, 21, 6)
    req = InfillRequest("", length=6, candidates=batch, sampler=FIXED_2)
    want = Engine(eager)._denoise(where, req).x
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the eager fallback warns: fail with its reason
        got = Engine(compiled)._denoise(where, req).x
    assert compiled.compiled.error is None and compiled.compiled_context.error is None
    assert compiled.compiled.compiled_calls == 3  # every step compiled, none ran eager
    assert compiled.compiled_context.compiled_calls == int(cache)
    assert torch.equal(got, want)


def test_a_failed_compile_runs_eager_and_says_why():
    def fn(x):
        torch._dynamo.graph_break()  # fullgraph: a break is a failure, not a half-compiled step
        return x * 2

    step = CompiledStep(fn, "reduce-overhead", torch.device("cpu"))
    with pytest.warns(RuntimeWarning, match="running eager"):
        assert torch.equal(step(torch.ones(2)), torch.full((2,), 2.0))
    assert step.error and step.compiled_calls == 0
    assert torch.equal(step(torch.ones(3)), torch.full((3,), 2.0))  # eager from then on, no new warning


def test_unknown_compile_mode_is_refused():
    from infill_engine.request import InfillError

    with pytest.raises(InfillError, match="compile mode"):
        CompiledStep(lambda x: x, "fast", torch.device("cpu"))


@pytest.mark.parametrize("family,cache", [("dream", True), ("dream", False), ("llada", True), ("llada", "refresh")])
def test_requests_of_different_lengths_batch_as_they_run_alone(tmp_path, family, cache):
    """The HTTP server's batched forward (http_server/hole_batch.py) over a checkpoint: two
    requests with different context and hole lengths (one auto length, its rows finishing
    apart), padded into one forward a step, get the tokens each gets alone."""
    from http_server.hole_batch import ContextBatch, HoleLoop, can_batch, forward_holes

    exact, cached = checkpoints(tmp_path, family)
    backend = {False: exact, True: cached}.get(cache) or checkpoint_bench.sibling(exact, True, cache_block=2)
    engine = Engine(backend)
    assert can_batch(engine)
    reqs = [InfillRequest("def add(a, b):\n    return ", "\n", length=5, sampler=FIXED_2),
            InfillRequest("x = 1\n", "print(x)\n", max_length=6, lengths=(2, 6),
                          sampler=SamplerSettings(strategy="confidence"))]
    loops = [HoleLoop(engine, r) for r in reqs]
    assert len({loop.layout.ids.shape[0] for loop in loops}) == 2
    active, refreshes = list(loops), 0
    while active:
        for loop, logits in zip(active, forward_holes(engine.backend, active, ContextBatch(active))):
            refreshes += loop.advance(logits)
        active = [loop for loop in active if not loop.done]
    assert (refreshes > 0) == (cache == "refresh")
    for req, loop in zip(reqs, loops):
        alone, batched = engine.infill(req), loop.result()
        assert [c.text for c in batched.candidates] == [c.text for c in alone.candidates]
        for b, a in zip(batched.candidates, alone.candidates):
            assert b.token_confidences == pytest.approx(a.token_confidences, abs=1e-4)
        assert batched.forwards == alone.forwards
