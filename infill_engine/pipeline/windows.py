"""Dense training batches cut from a token stream, laid out for mask-free attention.

Each example is `seq_len` slots: `n_context` context tokens followed by `seq_len - n_context`
hole slots, the same split for the whole batch.  Positions (RoPE) are the slots' places in
the *logical* sequence — the file as the engine would lay it out, each hole's slots (its text,
then trailing `<pad>`s) where the hole is — so the physical order is free, and putting
context first turns the one attention rule (context sees context, hole sees everything) into
two attention calls without a mask (`Transformer.hidden_split`).

Two kinds of batch:
  plain — the whole window is the hole (plain masked diffusion: it teaches the language);
  holes — whole lines (some starting mid-line, at a token boundary) become holes, several
          per window, with trailing `<pad>` slots: the product's own task, many times per
          forward.  Each hole is padded like an auto-length hole at inference: text first,
          then `<pad>`s the model learns to predict.
Hole slots are masked with probability t, antithetic across the batch (t_i = (u + i/B) mod 1),
which lowers the gradient's variance; the loss falls on the masked slots.

Because the tokenizer is line-local, a hole cut at line starts holds exactly the tokens the
engine gets by encoding prefix, middle and suffix apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ..tokenizer import NEWLINE, CodeTokenizer

PLAIN_FRACTION = 0.45  # batches that are one whole-window hole
HOLE_FRACTION = (0.2, 0.8)  # hole slots / seq_len in hole batches, drawn per batch
MIDLINE_START = 0.25  # holes that start at a token inside their first line (inline completion)
MAX_HOLE_LINES = 16
TEXT_SHARE = (0.3, 1.0)  # of a hole batch's slots that hole text aims to fill; <pad> the rest
PAD_RATIO = 3.0  # a hole opens up to this many pads per text token (an auto hole: 32 slots, ~10 text)


@dataclass
class DenseBatch:
    ids: torch.Tensor  # [B, L] input: context tokens, then hole slots with <mask> where masked
    targets: torch.Tensor  # [B, L] the true tokens (<pad> for a hole's spare slots)
    positions: torch.Tensor  # [B, L] place of each slot in the logical sequence
    masked: torch.Tensor  # [B, L] bool: loss positions (masked hole slots)
    n_context: int  # the first n_context slots of every example are context

    def to(self, device: str | torch.device) -> "DenseBatch":
        return DenseBatch(self.ids.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
                          self.positions.to(device, non_blocking=True), self.masked.to(device, non_blocking=True),
                          self.n_context)

    def text_loss_fraction(self, pad_id: int) -> float:
        """Share of all positions whose loss is on a text token (not a <pad> target)."""
        return float((self.masked & (self.targets != pad_id)).float().mean())


def line_end_table(tok: CodeTokenizer) -> np.ndarray:
    """bool [vocab]: the token ends a line (with a line-local tokenizer only the last character can be "\\n")."""
    table = np.zeros(tok.vocab_size, dtype=bool)
    for piece, i in tok.tok.get_vocab().items():
        table[i] = piece.endswith(NEWLINE)
    return table


class WindowSampler:
    def __init__(self, tokens: np.ndarray, tok: CodeTokenizer, seq_len: int, seed: int = 0,
                 plain_fraction: float = PLAIN_FRACTION):
        if len(tokens) < 4 * seq_len:
            raise ValueError(f"a stream of {len(tokens)} tokens is too short for windows of {seq_len}")
        self.tokens, self.seq_len, self.plain_fraction = tokens, seq_len, plain_fraction
        self.pad_id, self.mask_id = tok.pad_id, tok.mask_id
        self.line_end = line_end_table(tok)
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)

    # -- one example ---------------------------------------------------------------------------
    def _window(self, length: int) -> np.ndarray:
        """`length` tokens starting at a line start, drawn uniformly from the stream."""
        start = self.rng.randrange(len(self.tokens) - length - 2 * self.seq_len)
        ahead = np.asarray(self.tokens[start:start + 2 * self.seq_len + length])
        ends = np.flatnonzero(self.line_end[ahead[: 2 * self.seq_len]])
        first = int(ends[0]) + 1 if len(ends) else 0
        return ahead[first:first + length].astype(np.int64)

    def _lines(self, window: np.ndarray) -> list[tuple[int, int]]:
        ends = np.flatnonzero(self.line_end[window]) + 1
        bounds = [0, *ends.tolist()]
        if bounds[-1] < len(window):
            bounds.append(len(window))
        return list(zip(bounds[:-1], bounds[1:]))

    def _holes_example(self, n_context: int, n_hole: int):
        """Cut one window into context ranges and holes: (window, ctx, holes, hole text tokens).
        ctx: [(start, end)] token ranges; holes: [(start, end, j)], the hole sitting before ctx[j].
        Every token of the window goes to the context or a hole and hole text never exceeds
        n_hole, so the context always reaches n_context before the lines run out."""
        window = self._window(n_context + n_hole)
        lines = self._lines(window)
        mean_run = self.rng.choice((1, 1, 2, 4))  # lines per hole: mostly single lines
        want = n_hole * self.rng.uniform(*TEXT_SHARE)  # the rest of the hole slots are <pad>
        share = want / (n_context + want)  # of the lines that should be hole text
        p_start = min(0.9, share / ((1 - share) * mean_run))  # a context line is followed by a hole
        ctx, holes, n_ctx, n_text, i = [], [], 0, 0, 0
        after_hole = False
        while n_ctx < n_context:
            if not after_hole and n_text < n_hole and self.rng.random() < p_start:
                run = min(MAX_HOLE_LINES, int(self.np_rng.geometric(1 / mean_run)), len(lines) - i)
                s = lines[i][0]
                if self.rng.random() < MIDLINE_START and lines[i][1] - s > 2:
                    cut = self.rng.randrange(s + 1, lines[i][1] - 1)
                    if cut - s <= n_context - n_ctx:
                        ctx.append((s, cut))
                        n_ctx, s = n_ctx + cut - s, cut
                while run and lines[i + run - 1][1] - s > n_hole - n_text:
                    run -= 1  # only whole lines: a hole never ends inside a line
                if run:
                    e = lines[i + run - 1][1]
                    holes.append((s, e, len(ctx)))
                    n_text += e - s
                    i += run
                    after_hole = True
                    continue
                lines[i] = (s, lines[i][1])  # no hole after all: the rest of the line is context
            s, e = lines[i]
            take = min(e - s, n_context - n_ctx)
            ctx.append((s, s + take))
            n_ctx += take
            i += 1
            after_hole = False
        return window, ctx, holes, n_text

    def _layout(self, window, ctx, holes, n_text, n_hole):
        """Logical sequence: context ranges with each hole (text, then its pads) in its place."""
        pads = n_hole - n_text
        # Each hole draws its own canvas, as an auto-length hole at inference does (32 slots for a
        # line of ~10 tokens): pads in proportion to a random multiple of its text, so the model
        # learns where a line ends from the line, not from the size of the hole.
        wants = np.array([self.rng.uniform(0, PAD_RATIO) * (e - s) for s, e, _ in holes])
        weights = wants / wants.sum() if holes and wants.sum() > 0 else np.ones(len(holes)) / max(1, len(holes))
        share = self.np_rng.multinomial(pads, weights) if holes else []
        ctx_ids, ctx_pos, hole_ids, hole_pos = [], [], [], []
        pos = 0
        after = {h[2]: k for k, h in enumerate(holes)}  # hole k sits before ctx range h[2]
        for j in range(len(ctx) + 1):
            if j in after:
                k = after[j]
                s, e, _ = holes[k]
                n = e - s + int(share[k])
                hole_ids.append(np.concatenate([window[s:e], np.full(int(share[k]), self.pad_id)]))
                hole_pos.append(np.arange(pos, pos + n))
                pos += n
            if j < len(ctx):
                s, e = ctx[j]
                ctx_ids.append(window[s:e])
                ctx_pos.append(np.arange(pos, pos + e - s))
                pos += e - s
        if not holes:  # no line fitted: one all-pad hole at the end keeps the shapes
            hole_ids.append(np.full(n_hole, self.pad_id))
            hole_pos.append(np.arange(pos, pos + n_hole))
        cat = np.concatenate
        return cat(ctx_ids + hole_ids), cat(ctx_pos + hole_pos)

    # -- batches -------------------------------------------------------------------------------
    def batch(self, batch_size: int) -> DenseBatch:
        L = self.seq_len
        if self.rng.random() < self.plain_fraction:
            n_context = 0
            targets = np.stack([self._window(L) for _ in range(batch_size)])
            positions = np.broadcast_to(np.arange(L), (batch_size, L)).copy()
        else:
            n_hole = max(1, int(L * self.rng.uniform(*HOLE_FRACTION)))
            n_context = L - n_hole
            rows = [self._layout(*self._holes_example(n_context, n_hole), n_hole) for _ in range(batch_size)]
            targets = np.stack([r[0] for r in rows])
            positions = np.stack([r[1] for r in rows])
        targets_t = torch.from_numpy(targets)
        u = self.rng.random()
        t = torch.tensor([(u + i / batch_size) % 1.0 for i in range(batch_size)]).clamp(min=0.02)
        in_hole = torch.zeros(batch_size, L, dtype=torch.bool)
        in_hole[:, n_context:] = True
        masked = in_hole & (torch.rand(batch_size, L) < t[:, None])
        none = ~masked.any(1)  # every example carries signal
        masked[none, n_context] = True
        ids = torch.where(masked, torch.full_like(targets_t, self.mask_id), targets_t)
        return DenseBatch(ids, targets_t, torch.from_numpy(positions), masked, n_context)
