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
         generator: torch.Generator | None, greedy_rows: torch.Tensor | None = None, transfer: int | None = None,
         fractions: torch.Tensor | None = None):
    """One denoising step: (tokens [B, n], their probability [B, n], which slots to commit [B, n]).

    index counts steps from 0; steps [B] is each row's step budget for the upstream presets
    (the diffill strategies decide as they go); fractions [B, S] the dream preset's schedule
    (`dream_fractions`).  transfer: the dream preset commits this many slots a step instead
    of its schedule (DreamOn's number_transfer_tokens, for a hole whose length changes as it
    denoises).  Every strategy decides on the device: nothing here waits for it."""
    if settings.strategy == "dream":
        if fractions is None:
            fractions = dream_fractions(steps.tolist(), settings.eps, logp.device)
        return dream_step(logp, masked, settings, index, steps, fractions, generator, greedy_rows, transfer)
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


def dream_fractions(steps: list[int], eps: float, device: torch.device) -> torch.Tensor:
    """[B, S] the share of a row's masked slots that Dream's step i commits, 1 - t[i+1] / t[i]
    for t = linspace(1, eps, steps[b] + 1), S = max(steps); made once a request on the host,
    in float32 as upstream (int() of the product with the mask count decides whole tokens),
    so a step needs no number from the device.  Past a row's own steps: 1 (never read)."""
    table = torch.ones(len(steps), max(steps))
    for b, total in enumerate(steps):
        t = torch.linspace(1, eps, total + 1)
        table[b, :total] = 1 - t[1:] / t[:-1]
    return table.to(device)


def dream_step(logp, masked, settings: SamplerSettings, index: int, steps, fractions, generator, greedy_rows,
               transfer=None):
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

    open_slots = masked.sum(-1)
    # a row's last step commits whatever is still masked (not with transfer: DreamOn's hole
    # changes length, so it has no last step)
    last = (index >= steps - 1) & (transfer is None)
    if transfer is not None:
        count = open_slots.clamp(max=transfer)
    else:
        fraction = fractions[:, min(index, fractions.shape[1] - 1)]
        if settings.alg == "origin":  # each slot with that probability, a random count
            draw = torch.rand(masked.shape, generator=generator, device=masked.device)
            commit = masked & ((draw < fraction[:, None]) | last[:, None])
            return tokens, p, commit
        count = (open_slots.float() * fraction).long()  # int() of a float32 product, as upstream
    count = torch.where(last, open_slots, count)
    score = conf
    if settings.alg_temp:
        # Which slots, sampled in proportion to softmax(conf / alg_temp) without replacement:
        # the top `count` of the scores plus Gumbel noise (Gumbel-top-k) is that draw, with no
        # count read back for torch.multinomial.
        u = torch.rand(conf.shape, generator=generator, device=conf.device).clamp(min=1e-20)
        score = conf / settings.alg_temp - (-u.log()).log()
    return tokens, p, commit_most_certain(score, masked, count)


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

    # The block each row is in and its step within the block, for every row at once.
    per_block = (steps // blocks).clamp(min=1)
    block, within = index // per_block, index % per_block
    spent = block >= blocks  # budget spent (steps not a multiple of the blocks): finish
    block = torch.where(spent, blocks - 1, block)
    within = torch.where(spent, per_block - 1, within)
    slot = torch.arange(n, device=masked.device)
    first = (block * length)[:, None]
    in_block = masked & (slot >= first) & (slot < first + length)
    # An even split of the block's masks over its steps, the first steps taking the
    # remainder: the ceiling of what is left over the steps left is the same numbers.
    steps_left = per_block - within
    count = (in_block.sum(-1) + steps_left - 1) // steps_left
    return tokens, p, commit_most_certain(score, in_block, count)
