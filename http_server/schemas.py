"""Request bodies, checked by pydantic so a bad field is answered 422 with its name."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from infill_engine.request import InfillOptions, SamplerSettings


class SamplerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Literal["threshold", "confidence", "entropy", "margin", "fixed"] = SamplerSettings.strategy
    threshold: float = Field(SamplerSettings.threshold, gt=0, le=1)
    tokens_per_step: int = Field(SamplerSettings.tokens_per_step, ge=1)
    max_steps: int | None = Field(None, ge=1)
    temperature: float = Field(SamplerSettings.temperature, ge=0)
    seed: int = SamplerSettings.seed

    def settings(self) -> SamplerSettings:
        return SamplerSettings(**self.model_dump())


class InfillBody(BaseModel):
    """POST /v1/infill: fill the hole between prefix and suffix."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored
    prefix: str
    suffix: str = ""
    max_tokens: int = Field(InfillOptions.max_length, ge=1, description="most tokens an auto-length hole takes")
    length: Literal["auto"] | int = "auto"
    lengths: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: list(InfillOptions.lengths), max_length=32,
        description="auto length: the hole lengths tried, one candidate each (empty: the model settles it)")
    candidates: int = Field(1, ge=1, le=16)
    between: list[str] = Field(default_factory=list, description="text between tied holes (rename)")
    sampler: SamplerBody = Field(default_factory=SamplerBody)
    stream: bool = False


class ScoreBody(BaseModel):
    """POST /v1/score: how likely the model finds each token of `middle` (the language server's hints)."""

    model_config = ConfigDict(extra="forbid")
    prefix: str
    middle: str
    suffix: str = ""


class RepairBody(ScoreBody):
    """POST /v1/repair: re-mask the least likely `fraction` of middle's tokens and refill them."""

    fraction: float = Field(0.25, gt=0, le=1)
    sampler: SamplerBody = Field(default_factory=SamplerBody)


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class CompletionBody(BaseModel):
    """POST /v1/completions in OpenAI's shape; prompt + suffix is the fill-in-the-middle form.
    Fields a diffusion model has no use for (logprobs, presence_penalty, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str | list[str]
    suffix: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
