"""A stand-in for the engine that answers with fixed candidates, so the features' post-processing
and ranking rules (duplicate tails, indentation, syntax-error ranking, identifier checks) can be
checked exactly; `tiny` (conftest.py) runs the real denoising loop for the invariants."""

from __future__ import annotations

from infill_engine.request import Candidate, InfillRequest, InfillResult, TokenLikelihood


class ScriptedEngine:
    """Answers every infill with the given candidate texts (best score first)."""

    def __init__(self, *texts: str) -> None:
        self.texts = texts
        self.requests: list[InfillRequest] = []

    def infill(self, req: InfillRequest) -> InfillResult:
        self.requests.append(req)
        cands = [Candidate(t, [0.5] * len(t), -float(i)) for i, t in enumerate(self.texts)]
        return InfillResult(cands, forwards=1, hole_tokens=req.max_length, wall_ms=0.0)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def repair(self, prefix, middle, suffix, fraction=0.25, sampler=None) -> InfillResult:
        return InfillResult([Candidate(t, [], -float(i)) for i, t in enumerate(self.texts)], 1, 1, 0.0)

    def score(self, prefix, middle, suffix) -> list[TokenLikelihood]:
        out, at = [], 0
        for word in middle.split(" "):
            out.append(TokenLikelihood(at, at + len(word), word, 0.001 if word == "oops" else 0.9))
            at += len(word) + 1
        return out


def at(text: str, needle: str, delta: int = 0) -> int:
    return text.index(needle) + delta
