"""One request's masked-diffusion loop, a step at a time.

`Engine.infill` drives one `Denoiser` to the end with its backend's forwards; the HTTP
server interleaves many, one shared forward per step (http_server/hole_batch.py).  Either
way a step is the same: bans, the tied holes' vote, the auto-length rule, propose, commit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from . import sampler
from .backends.base import Backend
from .request import Candidate, InfillRequest, InfillResult

# Extra candidates beyond the first are sampled at this temperature when the request is
# greedy: n identical greedy candidates would be no choice at all.
CANDIDATE_TEMPERATURE = 0.8


@dataclass
class Layout:
    ids: torch.Tensor  # [L] with mask_id in every hole slot
    hole: torch.Tensor  # [L] bool
    holes: int  # number of tied holes
    slots: int  # slots per hole
    context_cut: int  # context tokens dropped to fit the window


class Denoiser:
    """The rows of one request (candidates, or one per length tried) between forwards.

    With `lengths`, row b's slots from lengths[b] on are padding from the start and the rest
    must be text; a row that is done leaves `live`, so its caller can stop computing it.
    Without, an auto-length request (`req.length is None`) settles its length after the
    first forward (`settle_length`)."""

    def __init__(self, backend: Backend, layout: Layout, req: InfillRequest, lengths: tuple[int, ...] = ()):
        self.backend, self.layout, self.req = backend, layout, req
        device = backend.device
        B, n, k = len(lengths) or req.candidates, layout.slots, layout.holes
        self.ids = layout.ids.to(device).repeat(B, 1)  # the whole sequences, hole slots rewritten each step
        self.hole = layout.hole.to(device)
        x = self.ids[0, self.hole].view(k, n)[0].repeat(B, 1)  # the slots of one hole (tied holes share them)
        if lengths:
            beyond = torch.arange(n, device=device)[None, :] >= torch.tensor(lengths, device=device)[:, None]
            x = x.masked_fill(beyond, backend.pad_id)
        self.x, self.masked = x, x == backend.mask_id
        self.conf = torch.where(self.masked, 0.0, 1.0)
        self.total = int(self.masked.sum())
        self.forwards = 0
        self.settings = req.sampler
        self.generator = torch.Generator(device=device).manual_seed(req.sampler.seed)
        if B > 1 and req.sampler.temperature == 0 and not lengths:
            self.settings = replace(req.sampler, temperature=CANDIDATE_TEMPERATURE)
        self.greedy_rows = torch.arange(B, device=device) == 0 if req.sampler.temperature == 0 else None
        # Padding may be predicted only where the model settles an auto length itself; a
        # length row's padding is already in place and a fixed length has none.
        allow_pad = req.length is None and not lengths
        self.banned = list(backend.banned_ids) + ([] if allow_pad or backend.pad_id is None else [backend.pad_id])
        self.settles = allow_pad and backend.pad_id is not None and backend.pad_trails

    @property
    def done(self) -> bool:
        return not bool(self.masked.any())

    @property
    def live(self) -> torch.Tensor:
        """[B] bool: rows with slots still masked."""
        return self.masked.any(-1)

    def slots(self) -> torch.Tensor:
        """[B, k*n]: every row's hole slots as the model sees them (tied holes hold the same)."""
        return self.x.repeat(1, self.layout.holes)

    def sequences(self, rows: torch.Tensor) -> torch.Tensor:
        """[rows, L]: the chosen rows' whole sequences with the slots committed so far."""
        self.ids[:, self.hole] = self.slots()
        return self.ids[rows]

    def advance(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """One step from the logits [R, k*n, V] of `rows` ([B] bool; None: every row)."""
        be, device = self.backend, self.x.device
        rows = torch.ones(self.x.shape[0], dtype=torch.bool, device=device) if rows is None else rows
        k, n = self.layout.holes, self.layout.slots
        self.forwards += 1
        # Bans go in before the softmax, so confidences and entropies are those of the
        # distribution actually sampled (after it, a banned favourite would leave every
        # allowed token looking unsure).  Tied holes vote together: the mean of their
        # log-probabilities, normalised again.
        # (out of place: a checkpoint's logits may be an inference-mode tensor)
        logits = logits.float().index_fill(-1, torch.tensor(self.banned, device=device), -math.inf)
        logp = torch.log_softmax(logits, -1).view(logits.shape[0], k, n, -1).mean(1).log_softmax(-1)
        if self.settles and self.forwards == 1:  # every row is open at the first step
            self.x, self.conf, self.masked = settle_length(logp, self.x, self.conf, self.masked, be.pad_id)
            self.banned.append(be.pad_id)  # the rest of the hole is text
            logp[..., be.pad_id] = -math.inf
            logp = logp.log_softmax(-1)
        greedy = None if self.greedy_rows is None else self.greedy_rows[rows]
        tokens, p = sampler.propose(logp, self.settings, self.generator, greedy)
        open_ = self.masked[rows]
        count = sampler.commit_count(open_, p, self.settings, self.forwards - 1)
        commit = open_ & sampler.commit_most_certain(sampler.certainty(logp, p, self.settings.strategy), open_, count)
        self.x[rows] = torch.where(commit, tokens, self.x[rows])
        self.conf[rows] = torch.where(commit, p, self.conf[rows])
        self.masked[rows] = open_ & ~commit
        if self.req.progress is not None:
            self.req.progress(1.0 - int(self.masked.sum()) / max(self.total, 1))
        if self.req.on_step is not None:
            self.req.on_step(self.forwards, [self._show(row) for row in self.x])

    def result(self, started: float) -> InfillResult:
        """The rows as candidates, most likely first (`started`: time.perf_counter() at the request)."""
        candidates = [self._candidate(self.x[b], self.conf[b]) for b in range(self.x.shape[0])]
        if len(candidates) > 1:
            # Most likely first; the greedy one (or the shortest length) wins ties.  Blank text
            # goes last whatever its score: a few newlines are the likeliest filling of almost
            # any hole (71 of 300 held-out lines picked one), and never what a user asked for.
            candidates = sorted(candidates, key=lambda c: (not c.text.strip(), -c.score))
        return InfillResult(candidates, self.forwards, self.layout.slots, (time.perf_counter() - started) * 1000,
                            self.layout.context_cut)

    def _candidate(self, slots: torch.Tensor, conf: torch.Tensor) -> Candidate:
        pad = self.backend.pad_id
        keep = slots != pad if pad is not None else torch.ones_like(slots, dtype=torch.bool)
        ids, probs = slots[keep].tolist(), conf[keep].tolist()
        score = sum(math.log(max(p, 1e-9)) for p in probs) / max(len(probs), 1)
        return Candidate(self.backend.decode(ids), probs, score)

    def _show(self, row: torch.Tensor) -> str:
        """A partly denoised hole as text, with masked slots drawn as a block character."""
        out, run = [], []
        for t in row.tolist():
            if t == self.backend.mask_id:
                out.append(self.backend.decode(run))
                run = []
                out.append("\u2591")
            elif t != self.backend.pad_id:
                run.append(t)
        out.append(self.backend.decode(run))
        return "".join(out)


def settle_length(logp, x, conf, masked, pad_id: int):
    """Decide an auto-length hole's length from the first forward.

    The model was trained with padding only after the hole's text, so the expected number
    of text slots is the sum over slots of P(not padding).  Fixing the length up front
    (rather than letting pads be committed one by one) keeps a weak or uncertain model from
    committing padding at the first slot and returning nothing; it also settles every
    padding slot in one step."""
    text_slots = (1 - logp[..., pad_id].exp()).sum(-1).round().clamp(min=1).long()  # [B]
    after = torch.arange(x.shape[1], device=x.device)[None, :] >= text_slots[:, None]
    after &= masked
    return torch.where(after, pad_id, x), torch.where(after, 1.0, conf), masked & ~after
