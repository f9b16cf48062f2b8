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


def step(logp: torch.Tensor, masked: torch.Tensor, settings: SamplerSettings, index: int, steps: torch.Tensor,
         generator: torch.Generator | None, greedy_rows: torch.Tensor | None = None, transfer: int | None = None):
    """One denoising step: (tokens [B, n], their probability [B, n], which slots to commit [B, n]).

    index counts steps from 0; steps [B] is each row's step budget for the upstream presets
    (the diffill strategies decide as they go).  transfer: the dream preset commits this many
    slots a step instead of its schedule (DreamOn's number_transfer_tokens, for a hole whose
    length changes as it denoises)."""
    if settings.strategy == "dream":
        return dream_step(logp, masked, settings, index, steps, generator, greedy_rows, transfer)
    if settings.strategy == "llada":
        return llada_step(logp, masked, settings, index, steps, generator, greedy_rows)
    tokens, p = propose(logp, settings, generator, greedy_rows)
    count = commit_count(masked, p, settings, index)
    return tokens, p, commit_most_certain(certainty(logp, p, settings.strategy), masked, count)


def plan_steps(masked: torch.Tensor, settings: SamplerSettings) -> torch.Tensor:
    """Each row's step budget [B] for the upstream presets: `steps`, else one per masked slot
    (upstream's steps = gen_length), never fewer than LLaDA's blocks (each needs one)."""
    if settings.steps is None:
        steps = masked.sum(-1).clamp(min=1)
    else:
        steps = torch.full_like(masked[:, 0], settings.steps, dtype=torch.long)
    if settings.strategy == "llada":
        steps = torch.maximum(steps, torch.full_like(steps, _blocks(masked.shape[1], settings)))
    return steps


# -- Dream's diffusion_generate -------------------------------------------------------------


def filter_logits(logits: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Nucleus then top-k filtering: dropped entries become the dtype's lowest value, as
    upstream does (not -inf), so a row never ends up all -inf."""
    lowest = torch.finfo(logits.dtype).min
    if top_p is not None and top_p < 1:
        ordered, order = logits.sort(-1, descending=True)
        beyond = ordered.softmax(-1).cumsum(-1) > top_p
        # keep the token that crosses top_p: shift right by one, the top token always stays
        beyond = torch.cat([torch.zeros_like(beyond[..., :1]), beyond[..., :-1]], dim=-1)
        logits = logits.masked_fill(torch.zeros_like(beyond).scatter(-1, order, beyond), lowest)
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, lowest)
    return logits


def dream_step(logp, masked, settings: SamplerSettings, index: int, steps, generator, greedy_rows, transfer=None):
    logits = logp / settings.temperature if settings.temperature > 0 else logp
    probs = filter_logits(logits, settings.top_p, settings.top_k).softmax(-1)
    conf, greedy = probs.max(-1)
    tokens = greedy
    if settings.temperature > 0:
        sampled = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(greedy.shape)
        tokens = sampled if greedy_rows is None else torch.where(greedy_rows[:, None], greedy, sampled)
        conf = probs.gather(-1, tokens[..., None]).squeeze(-1)
    if settings.alg == "topk_margin":
        top2 = probs.topk(2, dim=-1).values
        conf = top2[..., 0] - top2[..., 1]
    elif settings.alg == "entropy":
        conf = (probs * (probs + 1e-10).log()).sum(-1)
    p = logp.gather(-1, tokens[..., None]).squeeze(-1).exp()

    commit = torch.zeros_like(masked)
    for b in range(masked.shape[0]):
        total = int(steps[b])
        last = index >= total - 1 and transfer is None
        open_b = masked[b]
        if last:
            commit[b] = open_b
            continue
        if transfer is not None:
            count = min(transfer, int(open_b.sum()))
        else:
            # float32 as upstream: int() of this product decides whole tokens
            t = torch.linspace(1, settings.eps, total + 1)
            fraction = 1 - t[index + 1] / t[index]
            if settings.alg == "origin":
                draw = torch.rand(open_b.shape, generator=generator, device=open_b.device)
                commit[b] = open_b & (draw < fraction.item())
                continue
            count = int(open_b.sum().float() * fraction)
        if count == 0:
            continue
        score = conf[b].masked_fill(~open_b, -math.inf)
        if settings.alg_temp:
            picked = torch.multinomial((score / settings.alg_temp).softmax(-1), count, generator=generator)
        else:
            picked = score.topk(count).indices
        commit[b, picked] = True
    return tokens, p, commit & masked


# -- LLaDA's generate -------------------------------------------------------------------------


def _blocks(slots: int, settings: SamplerSettings) -> int:
    return -(-slots // (settings.block_length or slots))


def llada_step(logp, masked, settings: SamplerSettings, index: int, steps, generator, greedy_rows):
    n = masked.shape[1]
    length = settings.block_length or n
    blocks = _blocks(n, settings)
    if settings.temperature > 0:
        # Gumbel-max in float64 as upstream: argmax exp(logits) / (-log u) ** temperature
        u = torch.rand(logp.shape, generator=generator, dtype=torch.float64, device=logp.device)
        noisy = logp.double().exp() / (-u.log()) ** settings.temperature
        tokens = noisy.argmax(-1)
        if greedy_rows is not None:
            tokens = torch.where(greedy_rows[:, None], logp.argmax(-1), tokens)
    else:
        tokens = logp.argmax(-1)
    p = logp.gather(-1, tokens[..., None]).squeeze(-1).exp()
    if settings.remasking == "random":
        score = torch.rand(masked.shape, generator=generator, device=masked.device)
    else:
        score = p.clone()

    commit = torch.zeros_like(masked)
    slot = torch.arange(n, device=masked.device)
    for b in range(masked.shape[0]):
        per_block = max(1, int(steps[b]) // blocks)
        block, within = divmod(index, per_block)
        if block >= blocks:  # budget spent (steps not a multiple of the blocks): finish
            block, within = blocks - 1, per_block - 1
        in_block = masked[b] & (slot >= block * length) & (slot < (block + 1) * length)
        # An even split of the block's masks over its steps, the first steps taking the
        # remainder: the ceiling of what is left over the steps left is the same numbers.
        left = int(in_block.sum())
        count = -(-left // (per_block - within))
        if count:
            commit[b, score[b].masked_fill(~in_block, -math.inf).topk(count).indices] = True
    return tokens, p, commit
