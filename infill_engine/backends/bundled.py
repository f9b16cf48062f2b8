"""diffill's own model as a Backend, with the exact context cache."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from ..model import ContextCache, ModelConfig, Transformer
from ..precision import resolve_dtype
from ..tokenizer import CodeTokenizer

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class BundledBackend:
    """`prepare` runs the context once; each `hole_logits` is a forward over the hole only.

    A few recent context caches are kept (keyed by the context tokens and the hole's
    positions), so asking again about the same place — a retrigger, another candidate
    count, a repair after a fill — costs no prefill at all.
    """

    pad_trails = True  # trained with padding only after the hole's text
    selects_slots = True  # hole_logits(..., select=) returns only the open slots' logits

    def __init__(self, model: Transformer, tokenizer: CodeTokenizer, name: str, is_random: bool = False,
                 cache_entries: int = 4):
        self.model, self.tok, self.name, self.is_random = model.eval(), tokenizer, name, is_random
        self.mask_id, self.pad_id = tokenizer.mask_id, tokenizer.pad_id
        self.banned_ids = [tokenizer.mask_id, tokenizer.doc_id]
        self.max_len = model.cfg.max_seq_len
        self.vocab_size = model.cfg.vocab_size
        self.device = next(model.parameters()).device
        self._caches: OrderedDict[tuple, ContextCache] = OrderedDict()
        self._cache_entries = cache_entries

    @classmethod
    def from_directory(cls, directory: str | Path, device: str = "cpu", name: str | None = None,
                       precision: str = "auto") -> "BundledBackend":
        directory = Path(directory)
        model = Transformer.load(directory, device).to(resolve_dtype(precision, device))
        return cls(model, CodeTokenizer.load(directory / "tokenizer.json"), name or directory.name)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @classmethod
    def random(cls, cfg: ModelConfig, tokenizer: CodeTokenizer, seed: int = 0, device: str = "cpu",
               name: str = "random weights (untrained)") -> "BundledBackend":
        torch.manual_seed(seed)
        return cls(Transformer(cfg).to(device), tokenizer, name, is_random=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def prepare(self, ids: torch.Tensor, hole: torch.Tensor):
        positions = torch.arange(ids.shape[1], device=ids.device)
        context = ids[:1, ~hole]
        key = (context.cpu().numpy().tobytes(), hole.cpu().numpy().tobytes())
        if key in self._caches:
            self._caches.move_to_end(key)
        elif context.shape[1] > 0:
            self._caches[key] = self.model.prefill(context, positions[~hole])
            while len(self._caches) > self._cache_entries:
                self._caches.popitem(last=False)
        return self.model.hole_steps(self._caches.get(key), positions[hole]), hole

    @torch.no_grad()
    def hole_logits(self, state, ids: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        steps, hole = state
        # The sampler's softmax, entropies and scores run in fp32 whatever the weights are.
        return steps.logits(ids[:, hole], select).float()
