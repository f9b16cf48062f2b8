"""The infilling engine: text in, filled holes out.

`Engine.infill` lays out prefix + hole slots + suffix (several slots groups for tied
holes), cuts the context to the model's window keeping the code nearest the hole, and
runs the masked-diffusion loop: one forward over the hole per step, the sampler commits
some slots, repeat until no slot is masked.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace

import torch

from . import sampler
from .backends import load_backend, tiny_random
from .backends.base import Backend
from .request import (Candidate, InfillCancelled, InfillError, InfillRequest, InfillResult, SamplerSettings,
                      TokenLikelihood)

# Extra candidates beyond the first are sampled at this temperature when the request is
# greedy: n identical greedy candidates would be no choice at all.
CANDIDATE_TEMPERATURE = 0.8
# A hole whose model grows and shrinks it (DreamOn) starts with this many masks, as
# DreamOn's own examples do, and may grow up to the request's max_length.
EDIT_START_SLOTS = 4


@dataclass
class Layout:
    ids: torch.Tensor  # [L] with mask_id in every hole slot
    hole: torch.Tensor  # [L] bool
    holes: int  # number of tied holes
    slots: int  # slots per hole
    context_cut: int  # context tokens dropped to fit the window


class Engine:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._lock = threading.Lock()  # one denoising loop at a time: backends keep per-request state

    @property
    def is_random(self) -> bool:
        return self.backend.is_random

    @property
    def name(self) -> str:
        return self.backend.name + (" [RANDOM WEIGHTS: untrained, output is noise]" if self.is_random else "")

    @classmethod
    def load(cls, model: str | None = None, device: str = "cpu", trust_remote_code: bool = False,
             allow_network: bool = False, approximate_cache: bool = False, precision: str = "auto") -> "Engine":
        """The engine over `backends.load_backend(...)` (see there for what `model` may be)."""
        return cls(load_backend(model, device, trust_remote_code, allow_network, approximate_cache, precision))

    @classmethod
    def tiny_random(cls, seed: int = 0) -> "Engine":
        """The engine over `backends.tiny_random(seed)`: the plumbing in milliseconds."""
        return cls(tiny_random(seed))

    # -- public API ---------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.backend.encode(text))

    def infill(self, req: InfillRequest) -> InfillResult:
        req.validate(self.backend.max_len)
        t0 = time.perf_counter()
        fixed = req.length is not None
        edits = not fixed and getattr(self.backend, "expand_id", None) is not None
        slots = req.length if fixed else min(EDIT_START_SLOTS, req.max_length) if edits else req.max_length
        lengths = () if fixed or edits else self._search_lengths(req)
        pieces = [self.backend.encode(t) for t in (req.prefix, *req.between, req.suffix)]
        layout = self._layout(pieces, slots)
        with self._lock, torch.no_grad():
            if edits:
                x, conf, forwards = self._denoise_edits(layout, req)
            else:
                x, conf, forwards = self._denoise(layout, req, allow_pad=not fixed, lengths=lengths)
        candidates = [self._candidate(x[b], conf[b]) for b in range(x.shape[0])]
        if len(candidates) > 1:
            # Most likely first; the greedy one (or the shortest length) wins ties.  Blank text
            # goes last whatever its score: a few newlines are the likeliest filling of almost
            # any hole (71 of 300 held-out lines picked one), and never what a user asked for.
            candidates = sorted(candidates, key=lambda c: (not c.text.strip(), -c.score))
        return InfillResult(candidates, forwards, x.shape[1], (time.perf_counter() - t0) * 1000, layout.context_cut)

    def score(self, prefix: str, middle: str, suffix: str, groups: int = 4) -> list[TokenLikelihood]:
        """Probability of each token of `middle` with it (and every `groups`-th neighbour) masked.

        Masking every token alone would cost one forward per token; interleaved groups cost
        `groups` forwards, batched into one call, and still leave most neighbours visible."""
        mid = self.backend.encode(middle)
        if not mid:
            return []
        layout = self._layout([self.backend.encode(prefix), self.backend.encode(suffix)], len(mid))
        n = len(mid)
        truth = torch.tensor(mid, device=self.backend.device)
        groups = min(groups, n)
        which = torch.arange(n, device=truth.device) % groups
        rows = torch.stack([torch.where(which == g, self.backend.mask_id, truth) for g in range(groups)])
        ids = layout.ids.to(self.backend.device).repeat(groups, 1)
        ids[:, layout.hole] = rows
        with self._lock, torch.no_grad():
            state = self.backend.prepare(ids, layout.hole.to(ids.device))
            logp = torch.log_softmax(self.backend.hole_logits(state, ids).float(), -1)
        probs = logp.gather(-1, truth.expand(groups, n)[..., None]).squeeze(-1).exp()
        prob = probs[which, torch.arange(n)]
        out, offset = [], 0
        for i, tid in enumerate(mid):
            piece = self.backend.decode(mid[: i + 1])[offset:]
            out.append(TokenLikelihood(offset, offset + len(piece), piece, float(prob[i])))
            offset += len(piece)
        return out

    def repair(self, prefix: str, middle: str, suffix: str, fraction: float = 0.25,
               sampler_settings: SamplerSettings | None = None) -> InfillResult:
        """Re-mask the least likely `fraction` of middle's tokens and let the model refill them."""
        t0 = time.perf_counter()
        likelihoods = self.score(prefix, middle, suffix)
        if not likelihoods:
            return InfillResult([Candidate(middle, [], 0.0)], 0, 0, 0.0)
        mid = self.backend.encode(middle)
        k = max(1, math.ceil(fraction * len(mid)))
        worst = sorted(range(len(mid)), key=lambda i: likelihoods[i].probability)[:k]
        layout = self._layout([self.backend.encode(prefix), self.backend.encode(suffix)], len(mid))
        start = torch.tensor(mid)
        start[worst] = self.backend.mask_id
        layout.ids[layout.hole] = start
        req = InfillRequest(prefix, suffix, length=len(mid), sampler=sampler_settings or SamplerSettings())
        with self._lock, torch.no_grad():
            x, conf, forwards = self._denoise(layout, req, allow_pad=False)
        result = InfillResult([self._candidate(x[0], conf[0])], forwards, len(mid),
                              (time.perf_counter() - t0) * 1000, layout.context_cut)
        return result

    # -- internals ---------------------------------------------------------------------------
    def _search_lengths(self, req: InfillRequest) -> tuple[int, ...]:
        """The lengths an auto-length request tries, one row each; () when the model has no
        trailing-padding scheme (it fills all max_length slots) or none fits max_length."""
        if self.backend.pad_id is None or not self.backend.pad_trails:
            return ()
        return tuple(sorted({n for n in req.lengths if n <= req.max_length}))

    def _layout(self, pieces: list[list[int]], slots: int) -> Layout:
        """prefix H between_1 H ... suffix, cut to the window; nearest context kept."""
        prefix, *between, suffix = pieces
        holes = len(between) + 1
        fixed = holes * slots + sum(map(len, between))
        room = self.backend.max_len - fixed
        if room < 0:
            raise InfillError(f"{holes} holes of {slots} tokens do not fit the model window of "
                              f"{self.backend.max_len} tokens; ask for fewer tokens")
        # The prefix usually says more about the hole than the suffix: give it 3/4 of the room
        # unless the suffix is shorter than its quarter.
        keep_suffix = min(len(suffix), max(room - len(prefix), room // 4))
        keep_prefix = min(len(prefix), room - keep_suffix)
        cut = len(prefix) - keep_prefix + len(suffix) - keep_suffix
        prefix, suffix = prefix[len(prefix) - keep_prefix:], suffix[:keep_suffix]
        mask = self.backend.mask_id
        ids, hole = list(prefix), [False] * len(prefix)
        for i in range(holes):
            ids += [mask] * slots
            hole += [True] * slots
            tail = between[i] if i < len(between) else suffix
            ids += tail
            hole += [False] * len(tail)
        return Layout(torch.tensor(ids, dtype=torch.long), torch.tensor(hole), holes, slots, cut)

    def _denoise_edits(self, layout: Layout, req: InfillRequest):
        """DreamOn's variable length: one `_denoise` per candidate (each grows or shrinks its
        hole its own way, so they cannot share a batch), the first greedy if the request is."""
        room = (self.backend.max_len - len(layout.ids)) // layout.holes
        cap = max(layout.slots, min(req.max_length, layout.slots + room))
        rows, forwards = [], 0
        for c in range(req.candidates):
            settings = req.sampler
            if c:
                settings = replace(settings, seed=settings.seed + c,
                                   temperature=settings.temperature or CANDIDATE_TEMPERATURE)
            x, conf, f = self._denoise(layout, replace(req, candidates=1, sampler=settings), allow_pad=False,
                                       edit_cap=cap)
            rows.append((x[0], conf[0]))
            forwards += f
        n = max(x.shape[0] for x, _ in rows)
        pad = self.backend.pad_id if self.backend.pad_id is not None else self.backend.mask_id
        x = torch.stack([torch.cat([x, x.new_full((n - len(x),), pad)]) for x, _ in rows])
        conf = torch.stack([torch.cat([p, p.new_ones(n - len(p))]) for _, p in rows])
        return x, conf, forwards

    def _denoise(self, layout: Layout, req: InfillRequest, allow_pad: bool, lengths: tuple[int, ...] = (),
                 edit_cap: int | None = None):
        """The masked-diffusion loop.  Returns (slots [B, n], confidences [B, n], forwards).

        With `lengths`, row b's slots from lengths[b] on are padding from the start and the
        rest must be text; a row that is done drops out of the batch (short rows are cheap).
        With `edit_cap` (one row, a model with <|expand|>): a committed expand becomes two
        masks and a committed delete leaves the hole, which stays within edit_cap slots."""
        be = self.backend
        settings = req.sampler.with_defaults(getattr(be, "generation_defaults", {}))
        device = be.device
        B, n, k = len(lengths) or req.candidates, layout.slots, layout.holes
        ids = layout.ids.to(device).repeat(B, 1)
        hole = layout.hole.to(device)
        x = ids[0, hole].view(k, n)[0].repeat(B, 1)  # the slots of one hole (all tied holes share them)
        if lengths:
            beyond = torch.arange(n, device=device)[None, :] >= torch.tensor(lengths, device=device)[:, None]
            x = x.masked_fill(beyond, be.pad_id)
        masked = x == be.mask_id
        conf = torch.where(masked, 0.0, 1.0)
        generator = torch.Generator(device=device).manual_seed(settings.seed)
        if B > 1 and settings.temperature == 0 and not lengths:
            settings = replace(settings, temperature=CANDIDATE_TEMPERATURE)
        greedy_rows = torch.arange(B, device=device) == 0 if req.sampler.temperature == 0 else None
        allow_pad = allow_pad and not lengths  # a length row's padding is already in place
        banned = list(be.banned_ids) + ([] if allow_pad or be.pad_id is None else [be.pad_id])
        edit_ids = (be.expand_id, getattr(be, "delete_id", None)) if edit_cap is not None else ()
        banned = [i for i in banned if i not in edit_ids]
        pad_trails = allow_pad and be.pad_id is not None and be.pad_trails
        state = be.prepare(ids, hole)
        # LLaDA's classifier-free guidance: the same hole with every context token masked.
        guided = settings.strategy == "llada" and bool(settings.cfg_scale)
        blind = ids.masked_fill(~hole, be.mask_id) if guided else None
        blind_state = be.prepare(blind, hole) if guided else None
        steps = sampler.plan_steps(masked, settings)
        forwards, step, total = 0, 0, masked.sum().item()
        while masked.any():
            if req.cancel is not None and req.cancel():
                raise InfillCancelled()
            live = masked.any(-1)
            ids[:, hole] = x.repeat(1, k)
            logits = be.hole_logits(state, ids[live]).float()
            forwards += 1
            if guided:
                blind[:, hole] = x.repeat(1, k)
                unconditional = be.hole_logits(blind_state, blind[live]).float()
                logits = unconditional + (settings.cfg_scale + 1) * (logits - unconditional)
                logits = logits.nan_to_num(nan=-math.inf)  # -inf - -inf where a backend folded a token away
                forwards += 1
            step += 1
            # Bans go in before the softmax, so confidences and entropies are those of the
            # distribution actually sampled (after it, a banned favourite would leave every
            # allowed token looking unsure).  Tied holes vote together: the mean of their
            # log-probabilities, normalised again.
            # (out of place: a checkpoint's logits may be an inference-mode tensor)
            full = edit_cap is not None and n >= edit_cap  # no room to grow: expand is banned too
            logits = logits.index_fill(-1, torch.tensor(banned + list(edit_ids[:1]) * full, device=device), -math.inf)
            logp = torch.log_softmax(logits, -1).view(logits.shape[0], k, n, -1).mean(1).log_softmax(-1)
            if pad_trails and step == 1:
                x, conf, masked = _settle_length(logp, x, conf, masked, be.pad_id)
                banned.append(be.pad_id)  # the rest of the hole is text
                logp[..., be.pad_id] = -math.inf
                logp = logp.log_softmax(-1)
            tokens, p, chosen = sampler.step(logp, masked[live], settings, step - 1, steps[live], generator,
                                             None if greedy_rows is None else greedy_rows[live],
                                             transfer=1 if edit_cap is not None else None)
            commit = torch.zeros_like(masked)
            commit[live] = chosen
            x[live] = torch.where(commit[live], tokens, x[live])
            conf[live] = torch.where(commit[live], p, conf[live])
            masked &= ~commit
            if edit_cap is not None and any((x == i).any() for i in edit_ids if i is not None):
                x, conf, masked = _edit_length(x, conf, be.mask_id, *edit_ids, cap=edit_cap)
                ids, hole = _resize_holes(ids[0], hole, x.shape[1], be.mask_id)
                ids, n = ids[None], x.shape[1]
                if masked.any():
                    state = be.prepare(ids, hole)
                    if guided:
                        blind = ids.masked_fill(~hole, be.mask_id)
                        blind_state = be.prepare(blind, hole)
            if req.progress is not None:
                req.progress(1.0 - masked.sum().item() / max(total, 1))
            if req.on_step is not None:
                req.on_step(step, [self._show(row) for row in x])
        return x, conf, forwards

    def _candidate(self, slots: torch.Tensor, conf: torch.Tensor) -> Candidate:
        keep = slots != self.backend.pad_id if self.backend.pad_id is not None else torch.ones_like(slots, dtype=bool)
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


def _settle_length(logp, x, conf, masked, pad_id: int):
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


def _edit_length(x, conf, mask_id: int, expand_id: int, delete_id: int | None, cap: int):
    """DreamOn's edits on one row: an expand slot becomes two masks, a delete slot goes.

    Expands beyond `cap` slots (several in one step near the cap) reopen their slot as one mask."""
    out_x, out_conf = [], []
    room = cap - x.shape[1]
    for t, p in zip(x[0].tolist(), conf[0].tolist()):
        if t == expand_id:
            grow = room > 0
            room -= grow
            out_x += [mask_id] * (1 + grow)
            out_conf += [0.0] * (1 + grow)
        elif t != delete_id:
            out_x.append(t)
            out_conf.append(p)
    x = torch.tensor([out_x], dtype=x.dtype, device=x.device)
    return x, torch.tensor([out_conf], dtype=conf.dtype, device=conf.device), x == mask_id


def _resize_holes(ids: torch.Tensor, hole: torch.Tensor, slots: int, mask_id: int):
    """ids [L] and hole [L] with every hole run (tied holes) resized to `slots` masks."""
    out, where, inside = [], [], False
    for t, h in zip(ids.tolist(), hole.tolist()):
        if h and not inside:
            out += [mask_id] * slots
            where += [True] * slots
        elif not h:
            out.append(t)
            where.append(False)
        inside = h
    return torch.tensor(out, device=ids.device), torch.tensor(where, device=hole.device)
