"""The engine's public contract: what a caller asks for and what it gets back.

Plain Python, no torch and no LSP types, so the language server, the CLI and the
evaluation harness all speak the same small vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Literal, get_args

Strategy = Literal["threshold", "confidence", "entropy", "margin", "fixed", "dream", "llada"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
DREAM_ALGS = ("maskgit_plus", "entropy", "topk_margin", "origin")
LLADA_REMASKING = ("low_confidence", "random")

# What an upstream preset uses where neither the request nor the checkpoint's
# generation_config.json says.  Dream's README and model cards sample with alg "entropy"
# and eps 1e-3; LLaDA's generate() defaults to low_confidence remasking without guidance.
# steps None: one forward per masked slot (upstream's steps = gen_length); block_length
# None: the whole hole is one block.
PRESET_DEFAULTS: dict[str, dict[str, object]] = {
    "dream": {"steps": None, "eps": 1e-3, "alg": "entropy", "alg_temp": None, "top_p": None, "top_k": None},
    "llada": {"steps": None, "block_length": None, "remasking": "low_confidence", "cfg_scale": 0.0},
}

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
      fixed — commit `tokens_per_step` slots per step, most confident first;
      dream — Dream's diffusion_generate schedule: timesteps linspace(1, eps, steps + 1), and
        at step i int(masked * (1 - t[i+1] / t[i])) slots (the rest at the last step), ranked
        by `alg` (maskgit_plus: top-1 probability, entropy, topk_margin; origin: each slot
        with that probability at random), `alg_temp` > 0 samples which slots; tokens from
        temperature / top_p / top_k;
      llada — LLaDA's generate: the hole in blocks of `block_length` slots, left to right,
        steps shared evenly by the blocks and each block's masks spread evenly over its steps,
        ranked by `remasking` (low_confidence or random); Gumbel-max sampling at temperature;
        cfg_scale > 0 adds an unconditional pass with the context masked.
    max_steps caps the forwards; when the cap is near, the sampler commits more per step so
    the hole is always complete (not for the upstream presets: they finish in `steps`).
    temperature 0 is greedy; seed makes sampling repeatable.  A preset field left None
    takes the checkpoint's generation_config.json value, else PRESET_DEFAULTS.
    """

    strategy: Strategy = "threshold"
    threshold: float = 0.9
    tokens_per_step: int = 2
    max_steps: int | None = None
    temperature: float = 0.0
    seed: int = 0
    # upstream presets (strategy "dream" / "llada"); None: the checkpoint's or the preset's default
    steps: int | None = None
    eps: float | None = None
    alg: str | None = None
    alg_temp: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    block_length: int | None = None
    remasking: str | None = None
    cfg_scale: float | None = None

    def with_defaults(self, generation_config: dict) -> "SamplerSettings":
        """The preset's unset fields from the checkpoint's generation_config.json, then PRESET_DEFAULTS."""
        preset = PRESET_DEFAULTS.get(self.strategy)
        if preset is None:
            return self
        filled = {}
        for name, default in preset.items():
            if getattr(self, name) is None:
                filled[name] = generation_config.get(name, default)
        return replace(self, **filled) if filled else self

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InfillError(f"unknown sampler strategy {self.strategy!r}")
        if self.alg is not None and self.alg not in DREAM_ALGS:
            raise InfillError(f"alg must be one of {', '.join(DREAM_ALGS)}, got {self.alg!r}")
        if self.remasking is not None and self.remasking not in LLADA_REMASKING:
            raise InfillError(f"remasking must be one of {', '.join(LLADA_REMASKING)}, got {self.remasking!r}")
        for name in ("steps", "block_length", "top_k"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InfillError(f"{name} must be at least 1")
        if self.eps is not None and not 0.0 <= self.eps < 1.0:
            raise InfillError(f"eps must be in [0, 1), got {self.eps}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise InfillError(f"top_p must be in (0, 1], got {self.top_p}")
        if (self.alg_temp or 0) < 0 or (self.cfg_scale or 0) < 0:
            raise InfillError("alg_temp and cfg_scale must be >= 0")
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
    heal: bool = True  # token healing where the prefix stops mid-line (healing.py); off only to measure it

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
