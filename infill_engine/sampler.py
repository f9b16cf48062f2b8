"""Which masked slots to commit at a denoising step, and to what.

Every function here works on one step's log-probabilities `logp` [B, n, V] and the
`masked` [B, n] slots still open; nothing here knows about models or text.
"""

from __future__ import annotations

import math

import torch

from .request import SamplerSettings


def propose(logp: torch.Tensor, settings: SamplerSettings, generator: torch.Generator | None,
            greedy_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A token for every slot and its probability: argmax at temperature 0, else a sample.

    greedy_rows [B] bool forces argmax on some rows (the first candidate stays greedy)."""
    greedy = logp.argmax(-1)
    if settings.temperature > 0:
        probs = torch.softmax(logp / settings.temperature, dim=-1)
        sampled = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(greedy.shape)
        tokens = sampled if greedy_rows is None else torch.where(greedy_rows[:, None], greedy, sampled)
    else:
        tokens = greedy
    return tokens, logp.gather(-1, tokens[..., None]).squeeze(-1).exp()


def certainty(logp: torch.Tensor, confidence: torch.Tensor, strategy: str) -> torch.Tensor:
    """Higher is more certain: top-1 probability, negative entropy, or top-1 minus top-2 margin."""
    if strategy == "entropy":
        return (logp.exp() * logp).nan_to_num().sum(-1)
    if strategy == "margin":
        top2 = logp.topk(2, dim=-1).values.exp()
        return top2[..., 0] - top2[..., 1]
    return confidence


def commit_count(masked: torch.Tensor, confidence: torch.Tensor, settings: SamplerSettings,
                 steps_taken: int) -> torch.Tensor:
    """How many slots each row commits this step [B]: at least one, and enough to finish within max_steps."""
    open_slots = masked.sum(-1)
    if settings.strategy == "threshold":
        count = ((confidence > settings.threshold) & masked).sum(-1)
    elif settings.strategy == "fixed":
        count = torch.full_like(open_slots, settings.tokens_per_step)
    else:
        count = torch.ones_like(open_slots)
    if settings.max_steps is not None:
        steps_left = max(1, settings.max_steps - steps_taken)
        count = torch.maximum(count, torch.ceil(open_slots / steps_left).long())
    return torch.minimum(count.clamp(min=1), open_slots)


def commit_most_certain(score: torch.Tensor, masked: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The `count[b]` most certain open slots of each row, as a bool mask [B, n]."""
    score = score.masked_fill(~masked, -math.inf)
    order = score.argsort(dim=-1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return masked & (rank < count[:, None])
