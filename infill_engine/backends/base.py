"""What the engine needs from a model: tokens in, logits at the hole out.

A backend hides how a model attends and what it caches.  The engine builds one
sequence (context tokens with mask slots at the holes), calls `prepare` once, then
`hole_logits` once per denoising step with the slots it has committed so far.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Backend(Protocol):
    name: str  # shown to users: "diffill-small (bundled)", "Dream-Coder-v0-7B", ...
    mask_id: int
    pad_id: int | None  # fills slots a hole does not need (auto length); None: no such scheme
    banned_ids: list[int]  # never committed into a hole (mask, bos, ...)
    max_len: int  # tokens the model attends over: context + hole
    vocab_size: int  # the logits' last dimension
    device: torch.device
    pad_trails: bool  # trained with padding only after a hole's text: an auto-length hole's length is settled up front
    is_random: bool  # untrained weights: the output is noise, and users are told so
    # Optional: `selects_slots = True` means hole_logits takes `select` [B, H] bool (the slots
    # still open) and returns only their logits, packed [select.sum(), V]: the output layer and
    # the softmax are most of a small model's step, and most slots are committed or padding.

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def prepare(self, ids: torch.Tensor, hole: torch.Tensor) -> object:
        """ids [B, L] long (mask_id in the hole); hole [L] bool. Returns per-request state
        (for a cached backend: the context's keys and values)."""
        ...

    def hole_logits(self, state: object, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] with the current hole contents. Returns float logits [B, H, V] for
        the H = hole.sum() hole positions, in sequence order."""
        ...
