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
from dataclasses import replace
from typing import Callable

import torch

from .backends import load_backend, tiny_random
from .backends.base import Backend
from .denoise import CANDIDATE_TEMPERATURE, Denoiser, Layout, ranked
from .healing import TokenTexts, heal_text
from .request import (PRESET_DEFAULTS, Candidate, InfillCancelled, InfillError, InfillRequest, InfillResult,
                      SamplerSettings, TokenLikelihood)

# A hole whose model grows and shrinks it (DreamOn) starts with this many masks, as
# DreamOn's own examples do, and may grow up to the request's max_length.
EDIT_START_SLOTS = 4


class Engine:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._lock = threading.Lock()  # one denoising loop at a time: backends keep per-request state
        self._texts: TokenTexts | None = None  # each token's text, for token healing

    @property
    def is_random(self) -> bool:
        return self.backend.is_random

    @property
    def name(self) -> str:
        return self.backend.name + (" [RANDOM WEIGHTS: untrained, output is noise]" if self.is_random else "")

    @classmethod
    def load(cls, model: str | None = None, device: str = "cpu", trust_remote_code: bool = False,
             allow_network: bool = False, approximate_cache: bool = False, precision: str = "auto",
             compile: str | None = None, cache_block: int | None = None) -> "Engine":
        """The engine over `backends.load_backend(...)` (see there for what `model` and `compile` may be)."""
        return cls(load_backend(model, device, trust_remote_code, allow_network, approximate_cache, precision,
                                compile, cache_block))

    @classmethod
    def tiny_random(cls, seed: int = 0) -> "Engine":
        """The engine over `backends.tiny_random(seed)`: the plumbing in milliseconds."""
        return cls(tiny_random(seed))

    # -- public API ---------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.backend.encode(text))

    def infill(self, req: InfillRequest) -> InfillResult:
        t0 = time.perf_counter()
        layout, lengths, edits = self.plan(req)
        with self._lock, torch.no_grad():
            if edits:
                return self._denoise_edits(layout, req, t0)
            return self._denoise(layout, req, lengths).result(t0)

    def score(self, prefix: str, middle: str, suffix: str, groups: int = 4,
              cancel: Callable[[], bool] | None = None) -> list[TokenLikelihood]:
        """Probability of each token of `middle` with it (and every `groups`-th neighbour) masked.

        Masking every token alone would cost one forward per token; interleaved groups cost
        `groups` forwards, batched into one call, and still leave most neighbours visible.
        With `cancel` (polled before each group; True raises InfillCancelled) the groups run
        one forward each instead, so a background caller can give way to a keystroke within
        a quarter of the job."""
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
        hole = layout.hole.to(ids.device)
        with self._lock, torch.no_grad():
            if cancel is None:
                logits = self.backend.hole_logits(self.backend.prepare(ids, hole), ids)
            else:
                parts = []
                for g in range(groups):
                    if cancel():
                        raise InfillCancelled()
                    row = ids[g : g + 1]
                    parts.append(self.backend.hole_logits(self.backend.prepare(row, hole), row))
                logits = torch.cat(parts)
            logp = torch.log_softmax(logits.float(), -1)
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
            return self._denoise(layout, req).result(t0)

    def plan(self, req: InfillRequest) -> tuple[Layout, tuple[int, ...], bool]:
        """A valid request's layout, the lengths its rows try, and whether the model grows and
        shrinks the hole itself (DreamOn) — what `infill` and the HTTP batcher both start from."""
        req.validate(self.backend.max_len)
        fixed = req.length is not None
        edits = not fixed and getattr(self.backend, "expand_id", None) is not None
        slots = req.length if fixed else min(EDIT_START_SLOTS, req.max_length) if edits else req.max_length
        lengths = () if fixed or edits else self._search_lengths(req)
        if lengths:
            # The longest row needs no more: every slot beyond it would be padding in every row,
            # paid for at every step, and a short row buried in padding is unlike the holes the
            # model was trained on (up to ~3 pads per text token).
            slots = max(lengths)
        pieces = [self.backend.encode(t) for t in (req.prefix, *req.between, req.suffix)]
        # Not for a fixed length (it counts the tokens as given) nor tied holes; nor for the
        # upstream presets, which lay the input out exactly as Dream's and LLaDA's own code do.
        heals = req.heal and not fixed and not req.between and req.sampler.strategy not in PRESET_DEFAULTS
        heal = heal_text(req.prefix, pieces[0], self.backend.decode, self.backend.banned_ids) if heals else ""
        if not heal:
            return self._layout(pieces, slots), lengths, edits
        # The hole takes the prefix's last token back, in the slots and lengths asked for: one
        # slot more per row cost the language server ~6 % of a keystroke, and the lengths are a
        # coarse search anyway.
        layout = self._layout([pieces[0][:-1], *pieces[1:]], slots)
        first_ids = self._token_texts().starting_with(heal)
        return replace(layout, heal=heal, first_ids=first_ids), lengths, edits

    def _token_texts(self) -> TokenTexts:
        if self._texts is None:
            self._texts = TokenTexts(self.backend.decode, self.backend.vocab_size)
        return self._texts

    # -- internals ---------------------------------------------------------------------------
    def _search_lengths(self, req: InfillRequest) -> tuple[int, ...]:
        """The lengths an auto-length request tries, one row each; () when the model has no
        trailing-padding scheme (it fills all max_length slots) or none fits max_length."""
        if self.backend.pad_id is None or not self.backend.pad_trails:
            return ()
        return tuple(sorted({n for n in req.lengths if n <= req.max_length}))

    def _layout(self, pieces: list[list[int]], slots: int) -> Layout:
        """prefix H between_1 H ... suffix, cut to the window; nearest context kept; inside
        the backend's frame (tokens the model was trained to see first and last), if any."""
        prefix, *between, suffix = pieces
        lead, frame_end = getattr(self.backend, "frame", ((), ()))
        holes = len(between) + 1
        fixed = holes * slots + sum(map(len, between)) + len(lead) + len(frame_end)
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
        ids = [*lead, *prefix]
        hole = [False] * len(ids)
        for i in range(holes):
            ids += [mask] * slots
            hole += [True] * slots
            tail = between[i] if i < len(between) else suffix
            ids += tail
            hole += [False] * len(tail)
        ids += frame_end
        hole += [False] * len(frame_end)
        return Layout(torch.tensor(ids, dtype=torch.long), torch.tensor(hole), holes, slots, cut)

    def _denoise(self, layout: Layout, req: InfillRequest, lengths: tuple[int, ...] = (),
                 edit_cap: int | None = None) -> Denoiser:
        """The masked-diffusion loop: one forward over the open rows per step (two with LLaDA's
        guidance) until no slot is masked; the context is prepared again when an edit resized
        the hole, and a cached context computed again for rows that committed a block."""
        be = self.backend
        loop = Denoiser(be, layout, req, lengths, edit_cap)
        state = blind = None
        # A backend whose prepared state is per row (a checkpoint's context cache) is told
        # which rows a step computes once some have finished.
        narrow = getattr(be, "select_rows", None)
        # The open rows' index on the device (None: every row), made again only when a row
        # finishes: a tensor made from a list is a copy to the device that waits for its queue.
        open_before, rows = list(range(loop.x.shape[0])), None
        while True:
            counts = loop.open_counts()  # the step's one read-back from the device
            open_rows = [b for b, n in enumerate(counts) if n]
            if not open_rows:
                break
            if open_rows != open_before:
                open_before, rows = open_rows, torch.tensor(open_rows, device=loop.x.device)
            if req.cancel is not None and req.cancel():
                raise InfillCancelled()
            if state is None or loop.resized:
                # the sequences as the model sees them: a length row's padding is in place
                # from the start, and a cached context computed without it is stale at step one
                state = be.prepare(loop.sequences(None), loop.hole)
                blind = be.prepare(loop.sequences(None, blind=True), loop.hole) if loop.guided else None
                loop.resized = False
                loop.context_computed(counts)
            logits = None
            if stale := loop.stale_rows(counts):  # a block committed: its context from the tokens now
                # the open rows' index, already on the device, unless rows fell out of step
                which = rows if stale == open_rows else torch.tensor(stale, device=loop.x.device)
                # Every open row refreshed: the refresh's pass over the whole sequences has this
                # step's logits already (one forward a block fewer); None where it cannot say.
                reuse = stale == open_rows and blind is None
                logits = be.refresh(state, loop.sequences(None), which, logits=reuse)
                if blind is not None:
                    be.refresh(blind, loop.sequences(None, blind=True), which)
            now, blind_now = state, blind
            if rows is not None and narrow is not None:
                now, blind_now = narrow(state, rows), None if blind is None else narrow(blind, rows)
            select = loop.open_slots(rows) if getattr(be, "selects_slots", False) else None
            kw = {} if select is None else {"select": select}
            if logits is None:
                logits = be.hole_logits(now, loop.sequences(rows), **kw)
            unconditional = be.hole_logits(blind_now, loop.sequences(rows, blind=True), **kw) if loop.guided else None
            loop.advance(logits, rows, unconditional, select)
        return loop

    def _denoise_edits(self, layout: Layout, req: InfillRequest, t0: float) -> InfillResult:
        """DreamOn's variable length: one loop per candidate (each grows or shrinks its hole
        its own way, so they cannot share a batch), the first greedy if the request is."""
        room = (self.backend.max_len - len(layout.ids)) // layout.holes
        cap = max(layout.slots, min(req.max_length, layout.slots + room))
        candidates, forwards, slots = [], 0, 0
        for c in range(req.candidates):
            settings = req.sampler
            if c:
                settings = replace(settings, seed=settings.seed + c,
                                   temperature=settings.temperature or CANDIDATE_TEMPERATURE)
            loop = self._denoise(layout, replace(req, candidates=1, sampler=settings), edit_cap=cap)
            candidates += loop.result(t0).candidates
            forwards, slots = forwards + loop.forwards, max(slots, loop.x.shape[1])
        return InfillResult(ranked(candidates), forwards, slots, (time.perf_counter() - t0) * 1000,
                            layout.context_cut)
