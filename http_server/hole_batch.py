"""Many requests' denoising loops sharing one forward.

`HoleLoop` is one request's masked-diffusion loop taken apart into steps (the engine's own
`Denoiser`), so a scheduler can interleave many of them.  `forward_holes` runs the bundled
model once over the holes of several loops: each hole attends to its own cached context
and its own slots, padded to the batch's longest context and hole and masked so padding
is never seen.  The bundled model's attention rule (context sees only context) makes this
the same function as the request alone: in fp32 it gets the same tokens alone or in a batch
(the tests check); in bf16 padding changes the rounding, so a near-tie may fall either way.
A Dream or LLaDA checkpoint batches the same way (infill_engine/backends/hf_batch.py), with or
without its context cache, unless it grows and shrinks holes (DreamOn) or runs remote code.  A
cache refreshed per block (cache_block, the llada preset's blocks) is computed again by the loop
whose rows committed a block (`HoleLoop.advance` says so), and the batch pads it in again.
"""

from __future__ import annotations

import sys
import time

import torch

from infill_engine.backends.bundled import BundledBackend
from infill_engine.denoise import Denoiser
from infill_engine.engine import Engine
from infill_engine.model import rope_tables
from infill_engine.request import InfillRequest, InfillResult


def _checkpoint(backend) -> bool:
    """A Dream/LLaDA backend (hf.py), asked without importing transformers for the bundled model."""
    hf = sys.modules.get("infill_engine.backends.hf")
    return hf is not None and isinstance(backend, hf.HFBackend)


def can_batch(engine: Engine) -> bool:
    """The bundled model, and checkpoints on diffill's own model classes whose holes keep their
    length (a DreamOn hole resizes itself mid-loop, and with it its context)."""
    be = engine.backend
    if _checkpoint(be):
        return not be.remote_code and be.expand_id is None
    return isinstance(be, BundledBackend)


class HoleLoop:
    """One request's denoising state between forwards: the engine's own `Denoiser` (every row
    of it computed each step, finished ones too, so a batch's context layout stays fixed
    until a request joins or leaves), with the context prefilled once."""

    def __init__(self, engine: Engine, req: InfillRequest):
        be = engine.backend
        self.t0 = time.perf_counter()
        layout, lengths, _ = engine.plan(req)  # no edits: can_batch keeps DreamOn out
        self.denoiser = Denoiser(be, layout, req, lengths)
        self.layout = layout
        self.backend = be
        # or a cached prefill, of the rows as the model sees them (padding rows in place)
        state = be.prepare(self.denoiser.sequences(None), self.denoiser.hole)
        self.counts: list[int] | None = None  # open slots a row, read after a step when its context refreshes
        if self.denoiser.refresh_block is not None:
            self.denoiser.context_computed(self.denoiser.open_counts())
        if _checkpoint(be):
            self.state, self.cache, self.positions = state, None, None
        else:
            self.state = None
            steps, _ = state
            self.cache, self.positions = steps.cache, steps.positions

    @property
    def rows(self) -> int:
        return self.denoiser.x.shape[0]

    @property
    def done(self) -> bool:
        return self.denoiser.done if self.counts is None else not any(self.counts)

    def hole_ids(self) -> torch.Tensor:
        return self.denoiser.slots()

    def advance(self, logits: torch.Tensor) -> bool:
        """One step; True when rows committed a block and their cached context was computed
        again (Fast-dLLM's refresh): the batch's padded copy of it (ContextBatch) is then stale."""
        self.denoiser.advance(logits)
        if self.denoiser.refresh_block is None:
            return False
        self.counts = self.denoiser.open_counts()  # the step's read-back, which `done` reuses
        stale = self.denoiser.stale_rows(self.counts)
        if stale:
            rows = torch.tensor(stale, device=self.denoiser.x.device)
            self.backend.refresh(self.state, self.denoiser.sequences(None), rows)
        return bool(stale)

    def result(self) -> InfillResult:
        return self.denoiser.result(self.t0)


class ContextBatch:
    """The padded context keys/values of a fixed set of loops, built once and reused for
    every step until a loop joins or leaves (copying every context each step would cost
    more than the forward on a small model)."""

    def __init__(self, loops: list[HoleLoop]):
        self.checkpoint = None
        if _checkpoint(loops[0].backend):
            from infill_engine.backends.hf_batch import batch_context

            self.checkpoint = batch_context(loops[0].backend, [loop.state for loop in loops],
                                            [loop.rows for loop in loops])
            return
        caches = [loop.cache for loop in loops]
        sample = next((c for c in caches if c is not None), None)
        rows = [loop.rows for loop in loops]
        R, C = sum(rows), max((c[0][0].shape[2] for c in caches if c is not None), default=0)
        self.ctx_valid = torch.zeros(R, C, dtype=torch.bool, device=loops[0].positions.device)
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if sample is None:
            return
        H, D = sample[0][0].shape[1], sample[0][0].shape[3]
        like = sample[0][0]
        self.kv = [(like.new_zeros(R, H, C, D), like.new_zeros(R, H, C, D)) for _ in sample]
        r = 0
        for cache, b in zip(caches, rows):
            if cache is not None:
                c = cache[0][0].shape[2]
                self.ctx_valid[r:r + b, :c] = True
                for (K, V), (k, v) in zip(self.kv, cache):
                    K[r:r + b, :, :c] = k
                    V[r:r + b, :, :c] = v
            r += b


@torch.no_grad()
def forward_holes(backend, loops: list[HoleLoop], context: ContextBatch) -> list[torch.Tensor]:
    """One forward over every loop's hole -> each loop's logits [B_i, k_i*n_i, V]."""
    if context.checkpoint is not None:
        from infill_engine.backends.hf_batch import batch_hole_logits

        return batch_hole_logits(backend, [loop.state for loop in loops],
                                 [loop.denoiser.sequences(None) for loop in loops], context.checkpoint)
    model = backend.model
    holes = [loop.hole_ids() for loop in loops]
    R, N = sum(h.shape[0] for h in holes), max(h.shape[1] for h in holes)
    device = holes[0].device
    ids = torch.full((R, N), backend.mask_id, dtype=torch.long, device=device)
    positions = torch.zeros(R, N, dtype=torch.long, device=device)
    hole_valid = torch.zeros(R, N, dtype=torch.bool, device=device)
    r = 0
    for loop, h in zip(loops, holes):
        b, m = h.shape
        ids[r:r + b, :m] = h
        positions[r:r + b, :m] = loop.positions
        hole_valid[r:r + b, :m] = True
        r += b
    # Every query (padding ones too) sees its row's real context and real hole slots.
    mask = torch.cat([context.ctx_valid, hole_valid], 1)[:, None, None, :]
    cos, sin = rope_tables(positions, model.cfg.head_dim, model.cfg.rope_theta)
    x = model.embed(ids)
    for i, block in enumerate(model.blocks):  # Transformer.forward_hole, with the padding masked out
        x, _ = block(x, cos, sin, mask, context.kv[i] if context.kv is not None else None)
    logits = model.logits(x)
    out, r = [], 0
    for h in holes:
        b, m = h.shape
        out.append(logits[r:r + b, :m])
        r += b
    return out
