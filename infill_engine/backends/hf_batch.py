"""Several requests' holes in one forward of a Dream or LLaDA checkpoint (the HTTP server's
continuous batching, http_server/hole_batch.py).

Requests differ in context and hole length, so every row is padded to the batch's longest
and the padding is masked out as keys (the dtype's lowest in the additive mask: its exp()
is exactly 0); padded queries are computed and dropped.  Each row keeps its own positions.
With the context cache, each row attends to its own frozen context (padded to the longest)
then to its own hole tokens; without, each row is its whole sequence.  A row's logits are
then those of the request alone, up to the rounding of longer reductions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hf import FrozenKV, HFBackend, HoleState


@dataclass
class BatchContext:
    """The frozen contexts of a fixed set of requests, padded once and reused every step
    until one joins or leaves (copying them each step would cost more than a small model's step)."""

    kv: tuple | None  # per layer (k, v) [R, heads, C, d]; None without the context cache
    valid: torch.Tensor  # [R, C] real context keys


def batch_context(backend: HFBackend, states: list[HoleState], rows: list[int]) -> BatchContext:
    """states: each request's prepared state; rows: how many batch rows each has."""
    device, R = backend.device, sum(rows)
    if states[0].context is None:
        return BatchContext(None, torch.zeros(R, 0, dtype=torch.bool, device=device))
    layers = [s.context.layers for s in states]
    C = max(ls[0][0].shape[2] for ls in layers)
    valid = torch.zeros(R, C, dtype=torch.bool, device=device)
    kv = []
    for i in range(len(layers[0])):
        k0 = layers[0][i][0]
        K = k0.new_zeros(R, k0.shape[1], C, k0.shape[3])
        V = torch.zeros_like(K)
        r = 0
        for ls, b in zip(layers, rows):
            k, v = ls[i]
            K[r : r + b, :, : k.shape[2]], V[r : r + b, :, : k.shape[2]] = k, v
            valid[r : r + b, : k.shape[2]] = True
            r += b
        kv.append((K, V))
    return BatchContext(tuple(kv), valid)


@torch.inference_mode()
def batch_hole_logits(backend: HFBackend, states: list[HoleState], seqs: list[torch.Tensor],
                      context: BatchContext) -> list[torch.Tensor]:
    """One forward over every request's rows: seqs[i] [B_i, L_i] the whole sequences as the
    engine keeps them.  Returns each request's hole logits [B_i, H_i, V]."""
    device = backend.device
    tokens = [s if st.active is None else s[:, st.active] for st, s in zip(states, seqs)]
    where = [torch.arange(s.shape[1], device=device) if st.active is None else st.active
             for st, s in zip(states, seqs)]
    R, N = sum(t.shape[0] for t in tokens), max(t.shape[1] for t in tokens)
    ids = torch.zeros(R, N, dtype=torch.long, device=device)
    positions = torch.zeros(R, N, dtype=torch.long, device=device)
    valid = torch.zeros(R, N, dtype=torch.bool, device=device)
    r = 0
    for t, p in zip(tokens, where):
        b, n = t.shape
        ids[r : r + b, :n], positions[r : r + b, :n], valid[r : r + b, :n] = t.to(device), p, True
        r += b
    keys = torch.cat([context.valid, valid], 1)  # the frozen context first, as FrozenKV puts it
    lowest = torch.finfo(backend.dtype).min
    mask = torch.zeros(R, 1, N, keys.shape[1], dtype=backend.dtype, device=device)
    mask.masked_fill_(~keys[:, None, None, :], lowest)
    hidden = backend._layers(ids, positions, mask, FrozenKV(context.kv) if context.kv is not None else None)
    out, r = [], 0
    for st, t in zip(states, tokens):
        b = t.shape[0]
        out.append(backend._head(hidden[r : r + b, st.positions]))
        r += b
    return out
