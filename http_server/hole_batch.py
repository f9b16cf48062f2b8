"""Many requests' denoising loops sharing one forward.

`HoleLoop` is one request's masked-diffusion loop taken apart into steps (the same steps as
`Engine._denoise`: propose, count, commit; the bans, tied holes and the auto-length rule
included), so a scheduler can interleave many of them.  `forward_holes` runs the bundled
model once over the holes of several loops: each hole attends to its own cached context
and its own slots, padded to the batch's longest context and hole and masked so padding
is never seen.  The bundled model's attention rule (context sees only context) makes this
the same function as the request alone: in fp32 it gets the same tokens alone or in a batch
(the tests check); in bf16 padding changes the rounding, so a near-tie may fall either way.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch

from infill_engine import sampler
from infill_engine.backends.bundled import BundledBackend
from infill_engine.engine import CANDIDATE_TEMPERATURE, Engine, _settle_length
from infill_engine.model import rope_tables
from infill_engine.request import InfillRequest, InfillResult


def can_batch(engine: Engine) -> bool:
    """Only the bundled model's exact context cache lets holes of different requests share a forward."""
    return isinstance(engine.backend, BundledBackend)


class HoleLoop:
    """One request's denoising state between forwards."""

    def __init__(self, engine: Engine, req: InfillRequest):
        be = engine.backend
        req.validate(be.max_len)
        self.engine, self.req, self.t0 = engine, req, time.perf_counter()
        self.allow_pad = req.length is None
        slots = req.max_length if self.allow_pad else req.length
        pieces = [be.encode(t) for t in (req.prefix, *req.between, req.suffix)]
        self.layout = layout = engine._layout(pieces, slots)
        device = be.device
        B, n, k = req.candidates, layout.slots, layout.holes
        ids = layout.ids.to(device).repeat(B, 1)
        hole = layout.hole.to(device)
        self.cache, self.positions, _ = be.prepare(ids, hole)  # context prefill, or a cached one
        self.x = ids[0, hole].view(k, n)[0].repeat(B, 1)
        self.masked = self.x == be.mask_id
        self.conf = torch.where(self.masked, 0.0, 1.0)
        self.total = int(self.masked.sum())
        self.settings = req.sampler
        self.generator = torch.Generator(device=device).manual_seed(self.settings.seed)
        if B > 1 and self.settings.temperature == 0:
            self.settings = replace(self.settings, temperature=CANDIDATE_TEMPERATURE)
        self.greedy_rows = torch.arange(B, device=device) == 0 if req.sampler.temperature == 0 else None
        self.banned = list(be.banned_ids) + ([] if self.allow_pad or be.pad_id is None else [be.pad_id])
        self.pad_trails = self.allow_pad and be.pad_id is not None and be.pad_trails
        self.forwards = 0

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    @property
    def done(self) -> bool:
        return not bool(self.masked.any())

    def hole_ids(self) -> torch.Tensor:
        """[B, k*n]: the slots as the model sees them (every tied hole holds the same slots)."""
        return self.x.repeat(1, self.layout.holes)

    def advance(self, logits: torch.Tensor) -> None:
        """One step from this request's logits [B, k*n, V] (see Engine._denoise for the why of each line)."""
        be, device = self.engine.backend, self.x.device
        B, k, n = self.rows, self.layout.holes, self.layout.slots
        self.forwards += 1
        logits = logits.float().index_fill(-1, torch.tensor(self.banned, device=device), -math.inf)
        logp = torch.log_softmax(logits, -1).view(B, k, n, -1).mean(1).log_softmax(-1)
        if self.pad_trails and self.forwards == 1:
            self.x, self.conf, self.masked = _settle_length(logp, self.x, self.conf, self.masked, be.pad_id)
            self.banned.append(be.pad_id)
            logp[..., be.pad_id] = -math.inf
            logp = logp.log_softmax(-1)
        tokens, p = sampler.propose(logp, self.settings, self.generator, self.greedy_rows)
        count = sampler.commit_count(self.masked, p, self.settings, self.forwards - 1)
        commit = sampler.commit_most_certain(sampler.certainty(logp, p, self.settings.strategy), self.masked, count)
        self.x = torch.where(commit, tokens, self.x)
        self.conf = torch.where(commit, p, self.conf)
        self.masked &= ~commit
        if self.req.progress is not None:
            self.req.progress(1.0 - int(self.masked.sum()) / max(self.total, 1))
        if self.req.on_step is not None:
            self.req.on_step(self.forwards, [self.engine._show(row) for row in self.x])

    def result(self) -> InfillResult:
        candidates = [self.engine._candidate(self.x[b], self.conf[b]) for b in range(self.rows)]
        if self.req.candidates > 1:
            candidates = sorted(candidates, key=lambda c: -c.score)
        return InfillResult(candidates, self.forwards, self.layout.slots,
                            (time.perf_counter() - self.t0) * 1000, self.layout.context_cut)


class ContextBatch:
    """The padded context keys/values of a fixed set of loops, built once and reused for
    every step until a loop joins or leaves (copying every context each step would cost
    more than the forward on a small model)."""

    def __init__(self, loops: list[HoleLoop]):
        caches = [loop.cache for loop in loops]
        sample = next((c for c in caches if c is not None), None)
        rows = [loop.rows for loop in loops]
        R, C = sum(rows), max((c[0][0].shape[2] for c in caches if c is not None), default=0)
        self.ctx_valid = torch.zeros(R, C, dtype=torch.bool, device=loops[0].x.device)
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
def forward_holes(backend: BundledBackend, loops: list[HoleLoop], context: ContextBatch) -> list[torch.Tensor]:
    """One forward over every loop's hole -> each loop's logits [B_i, k_i*n_i, V]."""
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
