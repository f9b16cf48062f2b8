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
    # Token healing (healing.py): the prefix's last token, taken back into the hole; its first
    # slot may hold only `first_ids` (the tokens that begin with `heal`), and every candidate
    # comes back without `heal`.
    heal: str = ""
    first_ids: tuple[int, ...] = ()


class Denoiser:
    """The rows of one request (candidates, or one per length tried) between forwards.

    With `lengths`, row b's slots from lengths[b] on are padding from the start and the rest
    must be text; a row that is done leaves `live`, so its caller can stop computing it.
    Without, an auto-length request (`req.length is None`) settles its length after the
    first forward (`settle_length`).  With `edit_cap` (one row, a model with <|expand|>,
    DreamOn): a committed expand becomes two masks and a committed delete leaves the hole,
    which stays within edit_cap slots; `resized` tells the caller to prepare the context
    again.  `guided` (LLaDA's cfg_scale): each step also takes the logits of the same hole
    with every context token masked (`sequences(rows, blind=True)`)."""

    def __init__(self, backend: Backend, layout: Layout, req: InfillRequest, lengths: tuple[int, ...] = (),
                 edit_cap: int | None = None):
        self.backend, self.layout, self.req = backend, layout, req
        device = backend.device
        B, n, k = len(lengths) or req.candidates, layout.slots, layout.holes
        self.ids = layout.ids.to(device).repeat(B, 1)  # the whole sequences, hole slots rewritten each step
        self.hole = layout.hole.to(device)
        self.hole_at = self.hole.nonzero().flatten()  # index, not bool mask: a bool index_put waits for the GPU
        x = self.ids[0, self.hole].view(k, n)[0].repeat(B, 1)  # the slots of one hole (tied holes share them)
        if lengths:
            beyond = torch.arange(n, device=device)[None, :] >= torch.tensor(lengths, device=device)[:, None]
            x = x.masked_fill(beyond, backend.pad_id)
        self.x, self.masked = x, x == backend.mask_id
        self.conf = torch.where(self.masked, 0.0, 1.0)
        self.total = int(self.masked.sum())
        self.forwards = self.step = 0
        # A checkpoint's generation_config.json fills what the request leaves unset.
        self.settings = req.sampler.with_defaults(getattr(backend, "generation_defaults", {}))
        self.generator = torch.Generator(device=device).manual_seed(self.settings.seed)
        if B > 1 and self.settings.temperature == 0 and not lengths:
            self.settings = replace(self.settings, temperature=CANDIDATE_TEMPERATURE)
        self.greedy_rows = torch.arange(B, device=device) == 0 if req.sampler.temperature == 0 else None
        # Padding may be predicted only where the model settles an auto length itself; a
        # length row's padding is already in place and a fixed length has none.
        allow_pad = req.length is None and not lengths and edit_cap is None
        banned = list(backend.banned_ids) + ([] if allow_pad or backend.pad_id is None else [backend.pad_id])
        self.edit_cap = edit_cap
        self.edit_ids = (backend.expand_id, getattr(backend, "delete_id", None)) if edit_cap is not None else ()
        self.banned = [i for i in banned if i not in self.edit_ids]
        self.settles = allow_pad and backend.pad_id is not None and backend.pad_trails
        self.guided = self.settings.strategy == "llada" and bool(self.settings.cfg_scale)
        self.steps = sampler.plan_steps(self.masked, self.settings)  # each row's budget (upstream presets)
        # Dream's schedule, made here once (a read of the budgets) so that a step reads nothing
        self.fractions = (sampler.dream_fractions(self.steps.tolist(), self.settings.eps, device)
                          if self.settings.strategy == "dream" else None)
        self.resized = False
        # A context cache computed again every `refresh_block` committed slots (hf.py's
        # refresh_block); each row's open slots when its context was last computed.
        block_of = getattr(backend, "refresh_block", None)
        self.refresh_block: int | None = block_of(self.settings) if block_of is not None else None
        self._open_at_refresh: list[int] = []
        self.refreshes = 0  # steps that computed some rows' context again (a full forward each)
        self._banned_at: tuple[tuple[int, ...], torch.Tensor] | None = None  # bans as a device tensor, reused
        self._banned_tensor(self.banned, device)  # made here, not in the first step
        self._first_bias = None  # token healing: 0 for the first slot's allowed ids, -inf elsewhere
        if layout.heal:
            self._first_bias = torch.full((backend.vocab_size,), -math.inf, device=device)
            self._first_bias[torch.tensor(layout.first_ids, dtype=torch.long, device=device)] = 0.0

    @property
    def done(self) -> bool:
        return not bool(self.masked.any())

    def open_rows(self) -> list[int]:
        """The rows with slots still masked, read back once: a step's only wait for the device."""
        return [b for b, n in enumerate(self.open_counts()) if n]

    def open_counts(self) -> list[int]:
        """Each row's slots still masked, read back once (what `open_rows` reads, with the
        counts a context refresh needs)."""
        return self.masked.sum(-1).tolist()

    def context_computed(self, counts: list[int]) -> None:
        """The backend prepared every row's context from the sequences as they are now."""
        self._open_at_refresh = list(counts)

    def stale_rows(self, counts: list[int]) -> list[int]:
        """The open rows that committed `refresh_block` slots or more since their context was
        computed (`counts`: open_counts() of this step); they count as computed again."""
        if self.refresh_block is None:
            return []
        stale = [b for b, n in enumerate(counts) if n and self._open_at_refresh[b] - n >= self.refresh_block]
        for b in stale:
            self._open_at_refresh[b] = counts[b]
        self.refreshes += bool(stale)
        return stale

    def slots(self) -> torch.Tensor:
        """[B, k*n]: every row's hole slots as the model sees them (tied holes hold the same)."""
        return self.x.repeat(1, self.layout.holes)

    def sequences(self, rows: torch.Tensor | None, blind: bool = False) -> torch.Tensor:
        """[rows, L]: the chosen rows' (None: all) whole sequences with the slots committed so
        far; `blind`: every context token masked (the unconditional pass of LLaDA's guidance)."""
        self.ids[:, self.hole_at] = self.x if self.layout.holes == 1 else self.slots()  # one hole: no copy first
        ids = self.ids if rows is None else self.ids[rows]
        return ids.masked_fill(~self.hole, self.backend.mask_id) if blind else ids

    def open_slots(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[R, k*n] bool: the chosen rows' (None: all) slots still masked, in every tied hole:
        the only logits a step reads (`select` of a backend's hole_logits)."""
        masked = self.masked if rows is None else self.masked[rows]
        return masked.repeat(1, self.layout.holes)

    def advance(self, logits: torch.Tensor, rows: torch.Tensor | None = None,
                unconditional: torch.Tensor | None = None, select: torch.Tensor | None = None) -> None:
        """One step from the logits [R, k*n, V] of `rows` ([B] bool, or [R] row indices; None:
        every row), and for a guided loop those of the blind pass.  With `select`
        (`open_slots(rows)`), the logits are those slots' only, packed [select.sum(), V].
        Nothing here waits for the device unless a callback, a length edit or `select` (a
        bool index) needs a number."""
        be, device = self.backend, self.x.device
        k, n = self.layout.holes, self.x.shape[1]
        self.forwards += 1
        self.step += 1
        logits = logits.float()
        if unconditional is not None:
            unconditional = unconditional.float()
            logits = unconditional + (self.settings.cfg_scale + 1) * (logits - unconditional)
            logits = logits.nan_to_num(nan=-math.inf)  # -inf - -inf where a backend folded a token away
            self.forwards += 1
        # Bans go in before the softmax, so confidences and entropies are those of the
        # distribution actually sampled (after it, a banned favourite would leave every
        # allowed token looking unsure).  Tied holes vote together: the mean of their
        # log-probabilities, normalised again.  A hole at its cap cannot expand.
        # (out of place: a checkpoint's logits may be an inference-mode tensor)
        full = self.edit_cap is not None and n >= self.edit_cap
        banned = self.banned + list(self.edit_ids[:1]) * full
        logits = logits.index_fill(-1, self._banned_tensor(banned, device), -math.inf)
        logp = torch.log_softmax(logits, -1)
        if select is not None:  # closed slots get a uniform guess: never read, but every row keeps its shape
            dense = logp.new_full((*select.shape, logp.shape[-1]), -math.log(logp.shape[-1]))
            dense[select] = logp
            logp = dense
        if k > 1:
            logp = logp.view(logp.shape[0], k, n, -1).mean(1).log_softmax(-1)
        if self._first_bias is not None:  # a healed hole (one hole only): its first token is bound
            # in place: logp is this step's own tensor, and a copy of all of it costs ms a step
            logp[:, 0] = (logp[:, 0] + self._first_bias).log_softmax(-1)
        if self.settles and self.step == 1:  # every row is open at the first step
            self.x, self.conf, self.masked = settle_length(logp, self.x, self.conf, self.masked, be.pad_id)
            self.banned.append(be.pad_id)  # the rest of the hole is text
            logp[..., be.pad_id] = -math.inf
            logp = logp.log_softmax(-1)
        def pick(t):  # every row needs no indexing (an index with a bool mask waits for the device)
            return t if rows is None or t is None else t[rows]

        open_ = pick(self.masked)
        tokens, p, chosen = sampler.step(logp, open_, self.settings, self.step - 1, pick(self.steps), self.generator,
                                         pick(self.greedy_rows), transfer=1 if self.edit_cap is not None else None,
                                         fractions=pick(self.fractions))
        commit = open_ & chosen
        if rows is None:
            self.x = torch.where(commit, tokens, self.x)
            self.conf = torch.where(commit, p, self.conf)
            self.masked = open_ & ~commit
        else:
            self.x[rows] = torch.where(commit, tokens, self.x[rows])
            self.conf[rows] = torch.where(commit, p, self.conf[rows])
            self.masked[rows] = open_ & ~commit
        if self.edit_cap is not None and any(bool((self.x == i).any()) for i in self.edit_ids if i is not None):
            self.x, self.conf, self.masked = edit_length(self.x, self.conf, be.mask_id, *self.edit_ids, cap=self.edit_cap)
            ids, self.hole = resize_holes(self.ids[0], self.hole, self.x.shape[1], be.mask_id)
            self.ids, self.hole_at, self.resized = ids[None], self.hole.nonzero().flatten(), True
        if self.req.progress is not None:
            self.req.progress(1.0 - int(self.masked.sum()) / max(self.total, 1))
        if self.req.on_step is not None:
            self.req.on_step(self.step, [self._show(row) for row in self.x])

    def _banned_tensor(self, banned: list[int], device: torch.device) -> torch.Tensor:
        """The banned ids on the device, built again only when the list changes (a tensor made
        from a list each step is a host-to-device copy that waits for the queue)."""
        key = tuple(banned)
        if self._banned_at is None or self._banned_at[0] != key:
            self._banned_at = (key, torch.tensor(banned, device=device, dtype=torch.long))
        return self._banned_at[1]

    def result(self, started: float) -> InfillResult:
        """The rows as candidates, most likely first (`started`: time.perf_counter() at the request)."""
        candidates = ranked([self._candidate(self.x[b], self.conf[b]) for b in range(self.x.shape[0])])
        return InfillResult(candidates, self.forwards, self.x.shape[1], (time.perf_counter() - started) * 1000,
                            self.layout.context_cut)

    def _candidate(self, slots: torch.Tensor, conf: torch.Tensor) -> Candidate:
        pad = self.backend.pad_id
        keep = slots != pad if pad is not None else torch.ones_like(slots, dtype=torch.bool)
        ids, probs = slots[keep].tolist(), conf[keep].tolist()
        score = sum(math.log(max(p, 1e-9)) for p in probs) / max(len(probs), 1)
        return Candidate(self._unhealed(self.backend.decode(ids)), probs, score)

    def _unhealed(self, text: str) -> str:
        """A healed hole's text without the part the prefix already has."""
        heal = self.layout.heal
        return text[len(heal):] if text.startswith(heal) else text

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
        return self._unhealed("".join(out))


def ranked(candidates: list[Candidate]) -> list[Candidate]:
    """Most likely first; the first given (the greedy one, or the shortest length) wins ties.
    Blank text goes last whatever its score: a few newlines are the likeliest filling of almost
    any hole (71 of 300 held-out lines picked one), and never what a user asked for."""
    return sorted(candidates, key=lambda c: (not c.text.strip(), -c.score))


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


def edit_length(x, conf, mask_id: int, expand_id: int, delete_id: int | None, cap: int):
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


def resize_holes(ids: torch.Tensor, hole: torch.Tensor, slots: int, mask_id: int):
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
