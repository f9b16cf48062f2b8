"""The engine's public contract: what a caller asks for and what it gets back.

Plain Python, no torch and no LSP types, so the language server, the CLI and the
evaluation harness all speak the same small vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, get_args

Strategy = Literal["threshold", "confidence", "entropy", "margin", "fixed"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

# Hole lengths an auto-length request tries, one batch row each (those up to its max_length).
# Dense where the lines a small model gets right are (2-10 tokens), sparse beyond, for blocks.
# Measured on 300 held-out lines of the validation split (seed 1, 32 slots, shipped v2 model,
# picked non-blank and syntax-preserving first, then most likely): exact line 34 of 300 with
# the lengths up to 28 here, 21 with only 3, 5, 7, 9, 12, 16, 20, 24, and 0 when the model
# settles the length itself after its first forward.
SEARCH_LENGTHS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 32, 48, 64, 96, 128)


class InfillError(ValueError):
    """A request the engine cannot serve; the message tells the user what to change."""


class InfillCancelled(Exception):
    """Raised between denoising steps when the request's cancel check returns True."""


@dataclass(frozen=True)
class SamplerSettings:
    """How masked slots are committed.

    strategy:
      confidence / entropy / margin — one token per step, the most certain by that measure
        (the quality baseline: forwards == hole tokens);
      threshold — Fast-dLLM: commit every slot whose top-1 probability exceeds `threshold`,
        at least one per step (adaptive number of forwards);
      fixed — commit `tokens_per_step` slots per step, most confident first.
    max_steps caps the forwards; when the cap is near, the sampler commits more per step so
    the hole is always complete.  temperature 0 is greedy; seed makes sampling repeatable.
    """

    strategy: Strategy = "threshold"
    threshold: float = 0.9
    tokens_per_step: int = 2
    max_steps: int | None = None
    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InfillError(f"unknown sampler strategy {self.strategy!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise InfillError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.tokens_per_step < 1:
            raise InfillError("tokens_per_step must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise InfillError("max_steps must be at least 1")
        if self.temperature < 0:
            raise InfillError("temperature must be >= 0")


@dataclass(frozen=True)
class InfillOptions:
    """What a caller chooses once for many requests: the most tokens an auto-length hole may
    take, which lengths it tries (`InfillRequest.lengths`), how many candidates, and how to
    sample.  The language server's Settings and the CLI's flags become one of these; each
    feature adjusts it (`dataclasses.replace`) and turns it into an `InfillRequest` with
    `request()`."""

    max_length: int = 48
    candidates: int = 1
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    lengths: tuple[int, ...] = SEARCH_LENGTHS

    def request(self, prefix: str, suffix: str = "", **fields) -> "InfillRequest":
        return InfillRequest(prefix, suffix, max_length=self.max_length, candidates=self.candidates,
                             sampler=self.sampler, lengths=self.lengths, **fields)


@dataclass
class InfillRequest:
    """Fill the hole between `prefix` and `suffix`.

    length: a fixed number of hole tokens, or None for "auto": the engine opens
      `max_length` slots and the model fills the ones it does not need with padding,
      which is dropped (models without a padding scheme fall back to `max_length`).
    lengths: how "auto" finds the length on a model with trailing padding.  Each length up
      to max_length becomes one row of the batch, its slots after that length padding from
      the start; every row is decoded and the candidates come back most likely first (mean
      log-probability), one per length — `candidates` does not apply.  Callers that know the
      language re-rank by syntax.  Empty: the model settles the length itself after its
      first forward (one row per candidate; cheaper, but small models misjudge it badly).
    between: text between *tied holes*.  With between=("b",) the document is
      prefix + H + "b" + H + suffix and every H receives the same text (rename).
    cancel: polled before every forward; returning True raises InfillCancelled.
    progress: called after every step with the fraction of hole tokens committed.
    """

    prefix: str
    suffix: str = ""
    length: int | None = None
    max_length: int = InfillOptions.max_length
    candidates: int = InfillOptions.candidates
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    lengths: tuple[int, ...] = InfillOptions.lengths
    between: tuple[str, ...] = ()
    cancel: Callable[[], bool] | None = None
    progress: Callable[[float], None] | None = None
    on_step: Callable[[int, list[str]], None] | None = None  # (step, texts so far, masks shown) for --show-steps

    def validate(self, limit: int) -> None:
        if not isinstance(self.prefix, str) or not isinstance(self.suffix, str):
            raise InfillError("prefix and suffix must be text (decode bytes first)")
        if self.length is not None and not 1 <= self.length <= limit:
            raise InfillError(f"hole length must be between 1 and {limit} tokens, got {self.length}")
        if not 1 <= self.max_length <= limit:
            raise InfillError(f"max_length must be between 1 and {limit} tokens, got {self.max_length}")
        if any(not isinstance(n, int) or n < 1 for n in self.lengths):
            raise InfillError(f"search lengths must be positive token counts, got {self.lengths}")
        if not 1 <= self.candidates <= 16:
            raise InfillError(f"candidates must be between 1 and 16, got {self.candidates}")


@dataclass
class Candidate:
    text: str
    token_confidences: list[float]  # probability of each committed (non-padding) token when it was committed
    score: float  # mean log-probability of the committed tokens: higher is more likely


@dataclass
class InfillResult:
    candidates: list[Candidate]
    forwards: int  # model forwards over the hole (the context prefill is not counted)
    hole_tokens: int  # slots opened per hole
    wall_ms: float
    context_cut: int = 0  # context tokens dropped to fit the model window

    @property
    def text(self) -> str:
        return self.candidates[0].text if self.candidates else ""


@dataclass
class TokenLikelihood:
    """How likely the model finds one token of existing code (for repair hints)."""

    start: int  # character offsets into the scored text
    end: int
    text: str
    probability: float
